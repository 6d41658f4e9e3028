//! Signed envelope properties: round trips, tamper detection, key scoping, validity
//! windows and clock skew.

use bytes::Bytes;
use proptest::prelude::*;
use prost::Message as _;
use sentra_core::{
    AgentId, Batch, Bucket, Error, Histogram, IpPrefix, KeyId, Labels, MemoryKeyring, Method,
    MetricName, Nonce, Sample, SecretKey, Seq, Signer, UnixMillis, Validity, Value, Verifier,
    WgDevice, WgPeer, WgPublicKey, proto,
};

const NOW: i64 = 1_760_000_000_000;

fn agent(s: &str) -> AgentId {
    AgentId::new(s).unwrap()
}

fn keyring_with(agent_id: &AgentId, key_id: u32, secret: &SecretKey, v: Validity) -> MemoryKeyring {
    let mut k = MemoryKeyring::new();
    k.insert(agent_id.clone(), KeyId::new(key_id), secret, v);
    k
}

fn sample_batch(agent_id: AgentId, seq: u64) -> Batch {
    let mut b = Batch::new(
        agent_id,
        Seq::new(seq).unwrap(),
        UnixMillis::from_millis(NOW),
    );
    b.samples.push(Sample::new(
        MetricName::new("node_load1").unwrap(),
        Labels::from_pairs([("host", "edge-01")]).unwrap(),
        UnixMillis::from_millis(NOW - 5),
        Value::Gauge(0.25),
    ));
    b.samples.push(Sample::new(
        MetricName::new("rpc_latency_seconds").unwrap(),
        Labels::new(),
        UnixMillis::from_millis(NOW - 5),
        Value::Histogram(
            Histogram::new(
                vec![
                    Bucket {
                        upper_bound: 0.1,
                        cumulative_count: 3,
                    },
                    Bucket {
                        upper_bound: 1.0,
                        cumulative_count: 7,
                    },
                ],
                9,
                4.5,
            )
            .unwrap(),
        ),
    ));
    b.wg_devices.push(
        WgDevice::new("wg0", 4)
            .with_public_key(WgPublicKey::from_bytes([9; 32]))
            .with_listen_port(51820)
            .with_peers(vec![
                WgPeer::new(WgPublicKey::from_bytes([3; 32]))
                    .with_endpoint("192.0.2.1:51820".parse::<std::net::SocketAddr>().unwrap())
                    .with_allowed_ips(vec!["10.0.0.0/24".parse::<IpPrefix>().unwrap()])
                    .with_last_handshake(UnixMillis::from_millis(NOW - 30_000))
                    .with_transfer(1234, 5678)
                    .with_persistent_keepalive_s(25)
                    .with_preshared_key(true),
            ]),
    );
    b
}

#[test]
fn valid_envelope_verifies_and_decodes() {
    let a = agent("edge-01");
    let secret = SecretKey::from_bytes([1; 32]);
    let signer = Signer::new(a.clone(), KeyId::new(7), &secret);
    let batch = sample_batch(a.clone(), 42);
    let env = signer.sign_batch(&batch, batch.created, Nonce::random());
    let keyring = keyring_with(&a, 7, &secret, Validity::always());
    let v = Verifier::new()
        .verify(&env, Method::Push, UnixMillis::from_millis(NOW), &keyring)
        .unwrap();
    assert_eq!(v.seq().get(), 42);
    assert_eq!(v.key_id(), KeyId::new(7));
    assert_eq!(v.decode_batch().unwrap(), batch);
}

/// Every single-bit flip anywhere in the encoded envelope must fail: to decode, to verify,
/// or to decode the payload consistently. None may yield a verified, decoded batch that
/// differs from the original.
#[test]
fn every_single_bit_flip_fails() {
    let a = agent("edge-01");
    let secret = SecretKey::from_bytes([1; 32]);
    let signer = Signer::new(a.clone(), KeyId::new(1), &secret);
    let env = signer.sign_batch(
        &sample_batch(a.clone(), 5),
        UnixMillis::from_millis(NOW),
        Nonce::from_bytes([4; 16]),
    );
    let bytes = env.encode_to_vec();
    let keyring = keyring_with(&a, 1, &secret, Validity::always());
    let verifier = Verifier::new();
    let mut flips = 0;
    for byte in 0..bytes.len() {
        for bit in 0..8 {
            let mut m = bytes.clone();
            m[byte] ^= 1 << bit;
            flips += 1;
            let Ok(decoded) = proto::SignedBatch::decode(m.as_slice()) else {
                continue;
            };
            if decoded == env {
                // A flip inside a varint's redundant encoding cannot happen with prost's
                // canonical output, but if the message is unchanged it is not a forgery.
                continue;
            }
            let r = verifier.verify(
                &decoded,
                Method::Push,
                UnixMillis::from_millis(NOW),
                &keyring,
            );
            assert!(r.is_err(), "bit {bit} of byte {byte} verified");
        }
    }
    assert_eq!(flips, bytes.len() * 8);
}

#[test]
fn reencoded_payload_is_rejected() {
    // Same logical batch, different bytes (fields in another order, an unknown field
    // appended): protobuf is not canonical, so the signature must cover bytes, not meaning.
    let a = agent("edge-01");
    let secret = SecretKey::from_bytes([1; 32]);
    let signer = Signer::new(a.clone(), KeyId::new(1), &secret);
    let batch = sample_batch(a.clone(), 5);
    let mut env = signer.sign_batch(&batch, batch.created, Nonce::from_bytes([4; 16]));
    let mut reencoded = Vec::new();
    let wire = batch.to_proto();
    // seq (field 2) first, then the rest: a valid but different encoding.
    prost::encoding::uint64::encode(2, &wire.seq, &mut reencoded);
    let mut rest = wire.clone();
    rest.seq = 0;
    rest.encode(&mut reencoded).unwrap();
    assert_ne!(reencoded, env.payload.to_vec());
    assert_eq!(
        proto::MetricBatch::decode(reencoded.as_slice()).unwrap(),
        wire
    );
    env.payload = Bytes::from(reencoded);
    let keyring = keyring_with(&a, 1, &secret, Validity::always());
    let r = Verifier::new().verify(&env, Method::Push, UnixMillis::from_millis(NOW), &keyring);
    assert!(matches!(r, Err(Error::BadTag)), "{r:?}");
}

#[test]
fn agent_a_key_cannot_sign_for_agent_b() {
    let a = agent("agent-a");
    let b = agent("agent-b");
    let key_a = SecretKey::from_bytes([0xa; 32]);
    let key_b = SecretKey::from_bytes([0xb; 32]);
    let mut keyring = MemoryKeyring::new();
    keyring.insert(a.clone(), KeyId::new(1), &key_a, Validity::always());
    keyring.insert(b.clone(), KeyId::new(1), &key_b, Validity::always());
    // A signs a batch claiming to be B, with A's key.
    let forger = Signer::new(b.clone(), KeyId::new(1), &key_a);
    let env = forger.sign_batch(
        &sample_batch(b, 1),
        UnixMillis::from_millis(NOW),
        Nonce::random(),
    );
    let r = Verifier::new().verify(&env, Method::Push, UnixMillis::from_millis(NOW), &keyring);
    assert!(matches!(r, Err(Error::BadTag)), "{r:?}");
    // And A's genuine envelope re-labelled as B fails too.
    let genuine = Signer::new(a.clone(), KeyId::new(1), &key_a).sign_batch(
        &sample_batch(a, 1),
        UnixMillis::from_millis(NOW),
        Nonce::random(),
    );
    let mut relabelled = genuine;
    relabelled.agent_id = "agent-b".into();
    let r = Verifier::new().verify(
        &relabelled,
        Method::Push,
        UnixMillis::from_millis(NOW),
        &keyring,
    );
    assert!(matches!(r, Err(Error::BadTag)), "{r:?}");
}

#[test]
fn payload_claiming_another_agent_is_rejected_after_verify() {
    let a = agent("agent-a");
    let secret = SecretKey::from_bytes([1; 32]);
    let signer = Signer::new(a.clone(), KeyId::new(1), &secret);
    let other = sample_batch(agent("agent-b"), 1);
    let env = signer.sign(
        Method::Push,
        Seq::new(1).unwrap(),
        UnixMillis::from_millis(NOW),
        Nonce::random(),
        Bytes::from(other.encode_to_vec()),
    );
    let keyring = keyring_with(&a, 1, &secret, Validity::always());
    let v = Verifier::new()
        .verify(&env, Method::Push, UnixMillis::from_millis(NOW), &keyring)
        .unwrap();
    assert!(matches!(
        v.decode_batch(),
        Err(Error::HeaderMismatch { field: "agent_id" })
    ));
}

#[test]
fn key_validity_windows_for_rotation() {
    let a = agent("edge-01");
    let old = SecretKey::from_bytes([1; 32]);
    let new = SecretKey::from_bytes([2; 32]);
    let mut keyring = MemoryKeyring::new();
    // Old key valid until NOW+60s; new key from NOW-60s: a two-minute overlap.
    keyring.insert(
        a.clone(),
        KeyId::new(1),
        &old,
        Validity {
            not_before: None,
            not_after: Some(UnixMillis::from_millis(NOW + 60_000)),
        },
    );
    keyring.insert(
        a.clone(),
        KeyId::new(2),
        &new,
        Validity {
            not_before: Some(UnixMillis::from_millis(NOW - 60_000)),
            not_after: None,
        },
    );
    let verifier = Verifier::new();
    let sign = |key_id: u32, secret: &SecretKey, at: i64| {
        let mut b = sample_batch(a.clone(), 1);
        b.created = UnixMillis::from_millis(at);
        Signer::new(a.clone(), KeyId::new(key_id), secret).sign_batch(
            &b,
            b.created,
            Nonce::random(),
        )
    };
    let at = |ms| UnixMillis::from_millis(ms);
    // Inside the overlap both verify.
    assert!(
        verifier
            .verify(&sign(1, &old, NOW), Method::Push, at(NOW), &keyring)
            .is_ok()
    );
    assert!(
        verifier
            .verify(&sign(2, &new, NOW), Method::Push, at(NOW), &keyring)
            .is_ok()
    );
    // After the old key expired, it is rejected even though the tag is right.
    let late = NOW + 120_000;
    let r = verifier.verify(&sign(1, &old, late), Method::Push, at(late), &keyring);
    assert!(
        matches!(r, Err(Error::KeyNotValid { key_id: 1, .. })),
        "{r:?}"
    );
    // Before the new key's start it is not yet valid.
    let early = NOW - 120_000;
    let r = verifier.verify(&sign(2, &new, early), Method::Push, at(early), &keyring);
    assert!(
        matches!(r, Err(Error::KeyNotValid { key_id: 2, .. })),
        "{r:?}"
    );
    // Unknown key id.
    let r = verifier.verify(&sign(3, &new, NOW), Method::Push, at(NOW), &keyring);
    assert!(
        matches!(r, Err(Error::UnknownKey { key_id: 3, .. })),
        "{r:?}"
    );
    // Unknown agent and unknown key map to the same wire reason as a bad tag.
    let e = r.unwrap_err();
    assert_eq!(e.reject_reason(), Error::BadTag.reject_reason());
}

#[test]
fn clock_skew_window() {
    let a = agent("edge-01");
    let secret = SecretKey::from_bytes([1; 32]);
    let keyring = keyring_with(&a, 1, &secret, Validity::always());
    let signer = Signer::new(a.clone(), KeyId::new(1), &secret);
    let env = signer.sign_batch(
        &sample_batch(a, 1),
        UnixMillis::from_millis(NOW),
        Nonce::random(),
    );
    let v = Verifier::new();
    for (now, ok) in [
        (NOW, true),
        (NOW + 300_000, true),
        (NOW - 300_000, true),
        (NOW + 300_001, false),
        (NOW - 300_001, false),
    ] {
        let r = v.verify(&env, Method::Push, UnixMillis::from_millis(now), &keyring);
        assert_eq!(r.is_ok(), ok, "now offset {} -> {r:?}", now - NOW);
        if !ok {
            assert!(matches!(
                r,
                Err(Error::ClockSkew {
                    limit_ms: 300_000,
                    ..
                })
            ));
        }
    }
    let narrow = Verifier::new().max_skew_ms(1_000);
    assert!(
        narrow
            .verify(
                &env,
                Method::Push,
                UnixMillis::from_millis(NOW + 1_001),
                &keyring
            )
            .is_err()
    );
    // The window is capped at 15 minutes whatever is asked.
    let wide = Verifier::new().max_skew_ms(u64::MAX);
    assert!(
        wide.verify(
            &env,
            Method::Push,
            UnixMillis::from_millis(NOW + 900_001),
            &keyring
        )
        .is_err()
    );
}

#[test]
fn method_is_bound() {
    let a = agent("edge-01");
    let secret = SecretKey::from_bytes([1; 32]);
    let keyring = keyring_with(&a, 1, &secret, Validity::always());
    let env = Signer::new(a.clone(), KeyId::new(1), &secret).sign_batch(
        &sample_batch(a, 1),
        UnixMillis::from_millis(NOW),
        Nonce::random(),
    );
    let r = Verifier::new().verify(
        &env,
        Method::FetchDesiredState,
        UnixMillis::from_millis(NOW),
        &keyring,
    );
    assert!(matches!(r, Err(Error::BadTag)));
}

#[test]
fn malformed_and_oversized_envelopes() {
    let a = agent("edge-01");
    let secret = SecretKey::from_bytes([1; 32]);
    let keyring = keyring_with(&a, 1, &secret, Validity::always());
    let good = Signer::new(a.clone(), KeyId::new(1), &secret).sign_batch(
        &sample_batch(a, 1),
        UnixMillis::from_millis(NOW),
        Nonce::random(),
    );
    let now = UnixMillis::from_millis(NOW);
    let v = Verifier::new();
    let check = |env: proto::SignedBatch, want: fn(&Error) -> bool| {
        let e = v.verify(&env, Method::Push, now, &keyring).unwrap_err();
        assert!(want(&e), "{e:?}");
    };
    check(
        proto::SignedBatch {
            version: 2,
            ..good.clone()
        },
        |e| matches!(e, Error::UnsupportedVersion { version: 2 }),
    );
    check(
        proto::SignedBatch {
            agent_id: "Bad Id".into(),
            ..good.clone()
        },
        |e| matches!(e, Error::Malformed { .. }),
    );
    check(
        proto::SignedBatch {
            agent_id: "a".repeat(65),
            ..good.clone()
        },
        |e| matches!(e, Error::Malformed { .. }),
    );
    check(
        proto::SignedBatch {
            nonce: vec![0; 15],
            ..good.clone()
        },
        |e| matches!(e, Error::Malformed { field, .. } if field == "nonce"),
    );
    check(
        proto::SignedBatch {
            tag: vec![0; 31],
            ..good.clone()
        },
        |e| matches!(e, Error::Malformed { field, .. } if field == "tag"),
    );
    check(
        proto::SignedBatch {
            tag: [good.tag.clone(), vec![0]].concat(),
            ..good.clone()
        },
        |e| matches!(e, Error::Malformed { .. }),
    );
    check(
        proto::SignedBatch {
            seq: 0,
            ..good.clone()
        },
        |e| matches!(e, Error::Malformed { .. }),
    );
    check(
        proto::SignedBatch {
            tag: vec![0; 32],
            ..good.clone()
        },
        |e| matches!(e, Error::BadTag),
    );
    let small = Verifier::new().max_payload(16);
    let e = small
        .verify(&good, Method::Push, now, &keyring)
        .unwrap_err();
    assert!(matches!(e, Error::TooLarge { limit: 16, .. }), "{e:?}");
    // Errors never print key material or the tag.
    let text = format!("{e} {e:?}");
    assert!(!text.contains(&format!("{:?}", good.tag)));
}

#[test]
fn verified_garbage_payload_gives_decode_error() {
    let a = agent("edge-01");
    let secret = SecretKey::from_bytes([1; 32]);
    let keyring = keyring_with(&a, 1, &secret, Validity::always());
    let env = Signer::new(a, KeyId::new(1), &secret).sign(
        Method::Push,
        Seq::new(1).unwrap(),
        UnixMillis::from_millis(NOW),
        Nonce::random(),
        Bytes::from_static(&[0xff, 0xff, 0xff]),
    );
    let v = Verifier::new()
        .verify(&env, Method::Push, UnixMillis::from_millis(NOW), &keyring)
        .unwrap();
    let e = v.decode_batch().unwrap_err();
    assert!(matches!(e, Error::Decode(_)), "{e:?}");
    // The protobuf error is kept as the source, not as a public payload type.
    let source = std::error::Error::source(&e).expect("source");
    assert!(source.is::<prost::DecodeError>(), "{source:?}");
    assert_eq!(
        e.reject_reason(),
        sentra_core::proto::RejectReason::Malformed
    );
}

// ---- property tests ----

fn arb_agent() -> impl Strategy<Value = AgentId> {
    "[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?".prop_map(|s| AgentId::new(s).unwrap())
}

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-1e12f64..1e12).prop_map(Value::Gauge),
        any::<u64>().prop_map(Value::Counter),
        (prop::collection::vec(1u64..100, 0..8), 0.0f64..1e6).prop_map(|(incs, sum)| {
            let mut total = 0;
            let buckets = incs
                .iter()
                .enumerate()
                .map(|(i, inc)| {
                    total += inc;
                    Bucket {
                        upper_bound: i as f64 + 0.5,
                        cumulative_count: total,
                    }
                })
                .collect();
            Value::Histogram(Histogram::new(buckets, total + 1, sum).unwrap())
        }),
    ]
}

fn arb_sample() -> impl Strategy<Value = Sample> {
    (
        "[a-zA-Z_:][a-zA-Z0-9_:]{0,20}",
        prop::collection::btree_map("[a-z][a-z0-9_]{0,8}", "\\PC{0,12}", 0..5),
        1i64..i64::MAX,
        arb_value(),
    )
        .prop_map(|(name, labels, ts, value)| {
            Sample::new(
                MetricName::new(name).unwrap(),
                Labels::from_pairs(labels).unwrap(),
                UnixMillis::from_millis(ts),
                value,
            )
        })
}

fn arb_prefix() -> impl Strategy<Value = IpPrefix> {
    prop_oneof![
        (any::<u32>(), 0u8..=32).prop_map(|(a, l)| {
            let m = u32::MAX.checked_shl(32 - u32::from(l)).unwrap_or(0);
            IpPrefix::new(std::net::Ipv4Addr::from(a & m).into(), l).unwrap()
        }),
        (any::<u128>(), 0u8..=128).prop_map(|(a, l)| {
            let m = u128::MAX.checked_shl(128 - u32::from(l)).unwrap_or(0);
            IpPrefix::new(std::net::Ipv6Addr::from(a & m).into(), l).unwrap()
        }),
    ]
}

fn arb_peer() -> impl Strategy<Value = WgPeer> {
    (
        any::<[u8; 32]>(),
        prop::option::of(any::<std::net::SocketAddr>()),
        prop::collection::vec(arb_prefix(), 0..4),
        prop::option::of(1i64..i64::MAX),
        any::<(u64, u64)>(),
        prop::option::of(1u16..),
        any::<bool>(),
    )
        .prop_map(|(k, ep, ips, hs, (rx, tx), ka, psk)| {
            WgPeer::new(WgPublicKey::from_bytes(k))
                .with_endpoint(ep.map(|e| match e {
                    std::net::SocketAddr::V6(v6) => {
                        std::net::SocketAddr::new((*v6.ip()).into(), v6.port())
                    }
                    v4 => v4,
                }))
                .with_allowed_ips(ips)
                .with_last_handshake(hs.map(UnixMillis::from_millis))
                .with_transfer(rx, tx)
                .with_persistent_keepalive_s(ka)
                .with_preshared_key(psk)
        })
}

fn arb_batch() -> impl Strategy<Value = Batch> {
    (
        arb_agent(),
        1u64..,
        1i64..i64::MAX,
        prop::collection::vec(arb_sample(), 0..6),
        prop::collection::vec(
            (
                "[a-z]{1,4}[0-9]{0,3}",
                any::<u32>(),
                prop::option::of(any::<[u8; 32]>()),
                any::<u16>(),
                any::<u32>(),
                prop::collection::vec(arb_peer(), 0..4),
            ),
            0..3,
        ),
    )
        .prop_map(|(agent_id, seq, created, samples, devs)| {
            Batch::new(
                agent_id,
                Seq::new(seq).unwrap(),
                UnixMillis::from_millis(created),
            )
            .with_samples(samples)
            .with_wg_devices(
                devs.into_iter()
                    .map(|(name, ifindex, pk, port, fwmark, peers)| {
                        WgDevice::new(name, ifindex)
                            .with_public_key(pk.map(WgPublicKey::from_bytes))
                            .with_listen_port(port)
                            .with_fwmark(fwmark)
                            .with_peers(peers)
                    })
                    .collect(),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn batch_wire_round_trip(batch in arb_batch()) {
        let bytes = batch.encode_to_vec();
        prop_assert_eq!(Batch::decode(&bytes).unwrap(), batch);
    }

    #[test]
    fn sign_verify_round_trip(batch in arb_batch(), key in any::<[u8; 32]>(), key_id in any::<u32>(), nonce in any::<[u8; 16]>()) {
        let secret = SecretKey::from_bytes(key);
        let keyring = keyring_with(&batch.agent_id, key_id, &secret, Validity::always());
        let env = Signer::new(batch.agent_id.clone(), KeyId::new(key_id), &secret).sign_batch(&batch, batch.created, Nonce::from_bytes(nonce));
        // Round trip through the wire encoding of the envelope too.
        let env = proto::SignedBatch::decode(env.encode_to_vec().as_slice()).unwrap();
        let v = Verifier::new().verify(&env, Method::Push, batch.created, &keyring).unwrap();
        prop_assert_eq!(v.decode_batch().unwrap(), batch);
    }

    #[test]
    fn any_header_change_breaks_the_tag(batch in arb_batch(), field in 0usize..6, delta in 1u64..1000) {
        let secret = SecretKey::from_bytes([5; 32]);
        let mut keyring = keyring_with(&batch.agent_id, 1, &secret, Validity::always());
        // The changed key id is registered with the same secret, so only the tag's coverage
        // of the key id can reject it (not an unknown key).
        keyring.insert(batch.agent_id.clone(), KeyId::new(1u32.wrapping_add(delta as u32)), &secret, Validity::always());
        let mut env = Signer::new(batch.agent_id.clone(), KeyId::new(1), &secret).sign_batch(&batch, batch.created, Nonce::from_bytes([0; 16]));
        match field {
            0 => env.seq = env.seq.wrapping_add(delta).max(1),
            1 => env.created_ms = env.created_ms.wrapping_add(delta as i64),
            2 => env.nonce[0] ^= 1,
            3 => { let mut p = env.payload.to_vec(); p.push(0); env.payload = p.into(); }
            4 => env.tag[(delta % 32) as usize] ^= 1,
            _ => env.key_id = env.key_id.wrapping_add(delta as u32),
        }
        let r = Verifier::new().verify(&env, Method::Push, UnixMillis::from_millis(env.created_ms), &keyring);
        prop_assert!(matches!(r, Err(Error::BadTag)), "field {}: {:?}", field, r);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512)) {
        sentra_core::fuzzing::envelope_verify(&data);
        sentra_core::fuzzing::metric_batch_decode(&data);
    }

    /// The pre-scan never panics, and it reads damaged bytes exactly as prost does: when it
    /// stops at invalid protobuf prost fails too, and when prost succeeds the counts agree.
    #[test]
    fn prescan_agrees_with_prost_on_damaged_batches(
        batch in arb_batch(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = batch.encode_to_vec();
        for (at, b) in &edits {
            let i = at.index(bytes.len());
            bytes[i] = *b;
        }
        if truncate {
            let n = cut.index(bytes.len() + 1);
            bytes.truncate(n);
        }
        let scan = sentra_core::prescan::scan_metric_batch(&bytes);
        let wire = proto::MetricBatch::decode(bytes.as_slice());
        if let Ok(c) = &scan {
            if c.invalid_wire {
                prop_assert!(wire.is_err(), "the scan stopped but prost decoded");
            }
            if let Ok(w) = &wire {
                prop_assert_eq!(c.samples, w.samples.len());
                prop_assert_eq!(c.wg_devices, w.wg_devices.len());
                prop_assert_eq!(c.labels, w.samples.iter().map(|s| s.labels.len()).sum::<usize>());
                prop_assert_eq!(c.peers, w.wg_devices.iter().map(|d| d.peers.len()).sum::<usize>());
            }
        }
    }

    #[test]
    fn prescan_never_panics_on_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(c) = sentra_core::prescan::scan_metric_batch(&data)
            && c.invalid_wire
        {
            prop_assert!(proto::MetricBatch::decode(data.as_slice()).is_err());
        }
    }
}
