//! Issue 10 item 15: a signed payload made of empty repeated messages must be rejected
//! before prost materialises it.
//!
//! Memory is measured as the growth of this process's peak resident set (`VmHWM` in
//! `/proc/self/status`) across each decode. This file holds a single test so that no other
//! test runs concurrently in the same process and disturbs the peak.

use bytes::Bytes;
use sentra_core::batch::{MAX_ALLOWED_IPS, MAX_LABELS, MAX_SAMPLES};
use sentra_core::{
    AgentId, Error, KeyId, MemoryKeyring, Method, Nonce, SecretKey, Seq, Signer, UnixMillis,
    Validity, Verifier,
};

const NOW: i64 = 1_760_000_000_000;
/// Peak-RSS growth allowed for rejecting one hostile payload. Decoding any of them fully
/// costs 50-200 MiB; the pre-scan allocates nothing but the error.
const MAX_GROWTH_KIB: u64 = 8 * 1024;

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM line");
    line.trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("VmHWM value")
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn len_field(out: &mut Vec<u8>, field: u32, body: &[u8]) {
    varint(out, u64::from(field << 3 | 2));
    varint(out, body.len() as u64);
    out.extend_from_slice(body);
}

/// A `MetricBatch` header (agent id, seq, created) for `agent` / seq 1.
fn header(agent: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 << 20);
    len_field(&mut out, 1, agent.as_bytes());
    varint(&mut out, 2 << 3);
    varint(&mut out, 1);
    varint(&mut out, 3 << 3);
    varint(&mut out, NOW as u64);
    out
}

/// `n` repetitions of an empty length-delimited field `field`.
fn empty_repeats(out: &mut Vec<u8>, field: u32, n: usize) {
    for _ in 0..n {
        len_field(out, field, &[]);
    }
}

fn decode_signed(payload: Vec<u8>) -> (Result<sentra_core::Batch, Error>, u64) {
    let agent = AgentId::new("edge-01").expect("id");
    let secret = SecretKey::from_bytes([3; 32]);
    let mut keyring = MemoryKeyring::new();
    keyring.insert(agent.clone(), KeyId::new(1), &secret, Validity::always());
    let envelope = Signer::new(agent, KeyId::new(1), &secret).sign(
        Method::Push,
        Seq::new(1).expect("seq"),
        UnixMillis::from_millis(NOW),
        Nonce::random(),
        Bytes::from(payload),
    );
    let verified = Verifier::new()
        .verify(
            &envelope,
            Method::Push,
            UnixMillis::from_millis(NOW),
            &keyring,
        )
        .expect("validly signed");
    let before = peak_rss_kib();
    let result = verified.decode_batch();
    let growth = peak_rss_kib().saturating_sub(before);
    (result, growth)
}

fn assert_malformed(what: &str, r: &Result<sentra_core::Batch, Error>, field: &str) {
    match r {
        Err(Error::Malformed { field: f, reason }) => {
            assert_eq!(f, field, "{what}: {reason}");
        }
        other => panic!("{what}: expected Malformed {field}, got {other:?}"),
    }
}

#[test]
fn hostile_payloads_are_rejected_before_they_are_decoded() {
    // 1. The payload: ~4 MiB of empty `samples` (2 bytes each, 2 M of them).
    let mut p = header("edge-01");
    empty_repeats(&mut p, 4, 2 * MAX_SAMPLES + 1000);
    assert!(p.len() > 4_000_000);
    let (r, growth) = decode_signed(p);
    assert_malformed("4 MiB of empty samples", &r, "samples");
    let msg = r.unwrap_err().to_string();
    assert!(msg.contains(&format!("at most {MAX_SAMPLES}")), "{msg}");
    assert!(
        growth <= MAX_GROWTH_KIB,
        "rejecting 4 MiB of empty samples grew the peak RSS by {growth} KiB"
    );

    // 2. Fewer samples than the count limit, but far more decoded memory than any real
    //    batch: rejected by the decoded-size budget, as too large.
    let mut p = header("edge-01");
    empty_repeats(&mut p, 4, MAX_SAMPLES);
    let (r, growth) = decode_signed(p);
    match &r {
        Err(e @ Error::DecodedTooLarge { estimated, limit }) => {
            assert!(estimated > limit, "{e}");
            assert_eq!(
                e.reject_reason(),
                sentra_core::proto::RejectReason::TooLarge
            );
        }
        other => panic!("1 M empty samples: expected DecodedTooLarge, got {other:?}"),
    }
    assert!(
        growth <= MAX_GROWTH_KIB,
        "rejecting 1 M empty samples grew the peak RSS by {growth} KiB"
    );

    // 3. One sample with 2 M empty labels (the label limit is per sample).
    let mut sample = Vec::with_capacity(5 << 20);
    empty_repeats(&mut sample, 2, 2_000_000);
    let mut p = header("edge-01");
    len_field(&mut p, 4, &sample);
    drop(sample);
    let (r, growth) = decode_signed(p);
    assert_malformed("2 M empty labels", &r, "samples[0].labels");
    assert!(
        r.unwrap_err()
            .to_string()
            .contains(&format!("at most {MAX_LABELS}"))
    );
    assert!(
        growth <= MAX_GROWTH_KIB,
        "rejecting 2 M empty labels grew the peak RSS by {growth} KiB"
    );

    // 4. Deep inside: device 0, peer 1, with 1.5 M empty allowed-ip strings.
    let mut peer = Vec::with_capacity(4 << 20);
    empty_repeats(&mut peer, 3, 1_500_000);
    let mut device = Vec::with_capacity(4 << 20);
    len_field(&mut device, 1, b"wg0");
    len_field(&mut device, 6, &[]);
    len_field(&mut device, 6, &peer);
    drop(peer);
    let mut p = header("edge-01");
    len_field(&mut p, 5, &device);
    drop(device);
    let (r, growth) = decode_signed(p);
    assert_malformed(
        "1.5 M empty allowed ips",
        &r,
        "wg_devices[0].peers[1].allowed_ips",
    );
    assert!(
        r.unwrap_err()
            .to_string()
            .contains(&format!("at most {MAX_ALLOWED_IPS}"))
    );
    assert!(
        growth <= MAX_GROWTH_KIB,
        "rejecting 1.5 M empty allowed ips grew the peak RSS by {growth} KiB"
    );
}
