//! The peer applier against a real Linux kernel with WireGuard (issue 16).
//!
//! Needs root and the `wireguard` module, so every test is `#[ignore]`d in a normal `cargo
//! test`; `scripts/vm-test` boots a Debian kernel under qemu and runs this binary inside it
//! with `--include-ignored`, with `wg`, `wg-quick`, `ip` and `bash` on `PATH`.
//!
//! One interface (`wgm0`, the "server") is managed through the applier's library entry point
//! [`sentra_agent::apply::reconcile`], exactly as the agent's rounds call it. A second one
//! (`wgc0`, the "client") is brought up by `wg-quick` from the configuration the onboarding
//! code renders, with a preshared key: a completed handshake between the two proves the
//! configuration, the declared preshared key and the applied peer all agree.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use sentra_agent::apply::{DriftKind, InterfaceReport, desired_config, reconcile};
use sentra_core::{IpPrefix, proto};
use sentra_wg::{Client, Device, DeviceConfig, Key, PrivateKey};

const SERVER: &str = "wgm0";
const CLIENT: &str = "wgc0";
/// Not 51900/51901: scripts/vm/agent-check uses those after this test.
const SERVER_PORT: u16 = 51950;

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// A deterministic, well-spread 32-byte value.
fn bytes(i: u32, salt: u8) -> Vec<u8> {
    let mut b = vec![0u8; 32];
    let mut x = u64::from(i) << 8 | u64::from(salt) | 1 << 40;
    for chunk in b.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    b
}

fn declared_peer(i: u32) -> proto::DesiredPeer {
    proto::DesiredPeer {
        public_key: bytes(i, 0x51),
        endpoint: String::new(),
        allowed_ips: vec![
            format!("10.60.{}.{}/32", i / 256, i % 256),
            format!("fd60::{i:x}/128"),
        ],
        persistent_keepalive_s: 0,
        preshared_key: Vec::new(),
    }
}

fn key_of(p: &proto::DesiredPeer) -> Key {
    Key::from_bytes(p.public_key.as_slice().try_into().expect("32 bytes"))
}

/// The kernel's peers as the applier compares them (configuration only).
fn kernel_config(dev: &Device) -> HashMap<Key, sentra_wg::PeerConfig> {
    dev.peers
        .iter()
        .map(|p| {
            let mut c = p.to_config();
            c.allowed_ips.sort();
            c.endpoint = None;
            (p.public_key, c)
        })
        .collect()
}

/// Asserts the kernel holds exactly the declared peers, with the declared settings.
fn assert_matches(dev: &Device, iface: &proto::DesiredInterface) {
    let want = desired_config(iface).expect("valid declaration");
    let got = kernel_config(dev);
    assert_eq!(got.len(), want.peers.len(), "peer count of {}", dev.name);
    for w in &want.peers {
        let g = got
            .get(&w.public_key)
            .unwrap_or_else(|| panic!("declared peer {} missing", w.public_key));
        let mut ips = w.allowed_ips.clone();
        ips.sort();
        assert_eq!(g.allowed_ips, ips, "allowed IPs of {}", w.public_key);
        assert_eq!(g.persistent_keepalive, w.persistent_keepalive);
        assert_eq!(g.preshared_key, w.preshared_key, "PSK of {}", w.public_key);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PeerState {
    handshake: Option<SystemTime>,
    rx: u64,
    tx: u64,
}

fn states(dev: &Device) -> HashMap<Key, PeerState> {
    dev.peers
        .iter()
        .map(|p| {
            (
                p.public_key,
                PeerState {
                    handshake: p.last_handshake,
                    rx: p.rx_bytes,
                    tx: p.tx_bytes,
                },
            )
        })
        .collect()
}

/// Peers present before and after whose session state went backwards (re-created peers:
/// counters reset, handshake forgotten).
fn lost_state(
    before: &HashMap<Key, PeerState>,
    after: &HashMap<Key, PeerState>,
    keys: &[Key],
) -> Vec<Key> {
    keys.iter()
        .filter(|k| {
            let (b, a) = (before[k], after[k]);
            a.rx < b.rx || a.tx < b.tx || a.handshake < b.handshake
        })
        .copied()
        .collect()
}

fn result_line(what: &str, r: &InterfaceReport, took: Duration) {
    println!(
        "VM-RESULT applier {what}: +{} ~{} -{} in {} SET messages, {:.0} ms (drift {}, applied revision {})",
        r.added,
        r.updated,
        r.removed,
        r.set_messages,
        took.as_secs_f64() * 1e3,
        r.drift.len(),
        r.applied_revision
    );
}

async fn timed(
    c: &Client,
    iface: &proto::DesiredInterface,
    revision: u64,
    applied: u64,
    observe_only: bool,
) -> (InterfaceReport, Duration) {
    let t = Instant::now();
    let r = reconcile(c, iface, revision, applied, observe_only).await;
    (r, t.elapsed())
}

/// The onboarding configuration for a client of `server_public_key`: address from a pool,
/// fresh key pair, preshared key, DNS, split tunnel. Returns (file text, client public key,
/// preshared key bytes).
fn onboarding_config(server_public_key: &Key) -> (String, Key, Vec<u8>) {
    use sentra_control::onboard::{AddressPool, ClientConfig, KeyPair, Tunnel, generate_psk};
    let pool = AddressPool::parse(["10.8.0.0/24"]).expect("pool");
    let addresses = pool
        .next_free(&[], &["10.8.0.1".parse().expect("ip")])
        .expect("a free address");
    assert_eq!(
        addresses,
        vec![IpPrefix::new("10.8.0.2".parse().unwrap(), 32).unwrap()]
    );
    let pair = KeyPair::generate().expect("key pair");
    let client_key = Key::from_base64_or_hex(&pair.public_key).expect("public key");
    let psk = generate_psk().expect("psk");
    let psk_bytes = sentra_wg::PresharedKey::from_base64_or_hex(psk.expose_secret())
        .expect("psk")
        .as_bytes()
        .to_vec();
    let mut cfg = ClientConfig::new(
        Some(pair.private_key),
        addresses,
        server_public_key.to_base64(),
        format!("127.0.0.1:{SERVER_PORT}"),
    );
    cfg.dns = vec!["10.8.0.1".parse().expect("ip")];
    cfg.tunnel = Tunnel::Split(vec!["10.8.0.0/24".into()]);
    cfg.persistent_keepalive_s = 25;
    cfg.preshared_key = Some(psk);
    let text = cfg.render().expose_secret().to_owned();
    (text, client_key, psk_bytes)
}

/// Waits (bounded) until `server` has completed a handshake with `peer`.
async fn wait_for_handshake(c: &Client, peer: &Key) -> PeerState {
    let t = Instant::now();
    loop {
        let dev = c.get_device(SERVER).await.expect("dump");
        let st = states(&dev)[peer];
        if st.handshake.is_some() && st.rx > 0 {
            println!(
                "VM-RESULT applier: handshake with the wg-quick client after {:.1} s (rx {} B, tx {} B)",
                t.elapsed().as_secs_f64(),
                st.rx,
                st.tx
            );
            return st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "no handshake between {SERVER} and the wg-quick client {CLIENT} within 90 s: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs root and a kernel with WireGuard: run by scripts/vm-test"]
async fn applier_manages_an_interface_in_the_kernel() {
    let c = Client::connect().await.expect("netlink");
    c.create_link(SERVER).await.expect("create wgm0");
    let server_pair = sentra_control::onboard::KeyPair::generate().expect("server keys");
    let mut dev_cfg = DeviceConfig::new();
    dev_cfg.private_key =
        Some(PrivateKey::from_base64_or_hex(server_pair.private_key.expose_secret()).expect("key"));
    dev_cfg.listen_port = Some(SERVER_PORT);
    c.configure_device(SERVER, &dev_cfg)
        .await
        .expect("server key");
    c.set_link_up(SERVER, true).await.expect("up");
    let server_key = Key::from_base64_or_hex(&server_pair.public_key).expect("public key");

    // --- the onboarding configuration, checked by wg-quick itself
    let (conf, client_key, psk) = onboarding_config(&server_key);
    let path = format!("/tmp/{CLIENT}.conf");
    std::fs::write(&path, &conf).expect("write client config");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let stripped = run("wg-quick", &["strip", &path]);
    assert!(
        stripped.contains("[Interface]") && stripped.contains("PrivateKey = "),
        "wg-quick strip keeps the interface: {stripped}"
    );
    assert!(
        stripped.contains(&format!("PublicKey = {server_key}"))
            && stripped.contains("PresharedKey = ")
            && stripped.contains(&format!("Endpoint = 127.0.0.1:{SERVER_PORT}")),
        "wg-quick strip keeps the peer: {stripped}"
    );
    assert!(
        !stripped.contains("Address") && !stripped.contains("DNS"),
        "wg-quick strip removes its own keys: {stripped}"
    );
    println!(
        "VM-RESULT wg-quick strip accepts the onboarding config ({} lines -> {} lines)",
        conf.lines().count(),
        stripped.lines().count()
    );

    // --- revision 1: declare 1 000 peers, the first being the onboarded client (with its PSK)
    let mut iface = proto::DesiredInterface {
        name: SERVER.into(),
        peers: (0..1000).map(declared_peer).collect(),
    };
    iface.peers[0].public_key = client_key.as_bytes().to_vec();
    iface.peers[0].allowed_ips = vec!["10.8.0.2/32".into()];
    iface.peers[0].preshared_key = psk;
    let (r, took) = timed(&c, &iface, 1, 0, false).await;
    result_line("declare 1000 peers (revision 1)", &r, took);
    assert_eq!(r.error, None);
    assert!(r.peer_errors.is_empty(), "{:?}", r.peer_errors);
    assert_eq!((r.added, r.updated, r.removed), (1000, 0, 0));
    assert!(r.drift.is_empty(), "a new revision is not drift");
    assert!(r.in_sync() && r.applied_revision == 1);
    assert!(
        (1..=5).contains(&r.set_messages),
        "1000 peers fit a few 64 KiB messages: {}",
        r.set_messages
    );
    assert_matches(&c.get_device(SERVER).await.expect("dump"), &iface);

    // --- the client comes up with wg-quick and completes a handshake (PSK must match)
    let up = Command::new("wg-quick")
        .args(["up", &path])
        .output()
        .expect("wg-quick");
    assert!(
        up.status.success(),
        "wg-quick up {path}: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let addr = run("ip", &["-4", "address", "show", "dev", CLIENT]);
    assert!(addr.contains("10.8.0.2/32"), "client address: {addr}");
    let route = run("ip", &["-4", "route", "show", "dev", CLIENT]);
    assert!(route.contains("10.8.0.0/24"), "split-tunnel route: {route}");
    println!("VM-RESULT wg-quick up brought {CLIENT} up with the onboarding config");
    let hs = wait_for_handshake(&c, &client_key).await;

    // --- in sync: nothing sent
    let (r, took) = timed(&c, &iface, 1, 1, false).await;
    result_line("unchanged revision 1", &r, took);
    assert_eq!((r.set_messages, r.drift.len()), (0, 0));
    assert!(r.in_sync());

    // --- revision 2: change 10 peers, remove 5; the others (and the live client) keep state
    let before = c.get_device(SERVER).await.expect("dump");
    let mut iface2 = iface.clone();
    for (i, p) in iface2.peers[1..=10].iter_mut().enumerate() {
        p.allowed_ips.pop();
        p.allowed_ips.push(format!("fd61::{i:x}/128"));
    }
    let removed: Vec<Key> = iface2.peers.drain(995..).map(|p| key_of(&p)).collect();
    let (r, took) = timed(&c, &iface2, 2, 1, false).await;
    result_line("change 10, remove 5 of 1000 (revision 2)", &r, took);
    assert_eq!(r.error, None);
    assert_eq!((r.added, r.updated, r.removed), (0, 10, 5));
    assert_eq!(r.set_messages, 1, "15 small peer updates fit one message");
    assert!(r.drift.is_empty() && r.in_sync() && r.applied_revision == 2);
    let after = c.get_device(SERVER).await.expect("dump");
    assert_matches(&after, &iface2);
    for k in &removed {
        assert!(
            after.peers.iter().all(|p| p.public_key != *k),
            "removed {k}"
        );
    }
    let unchanged: Vec<Key> = iface2.peers[11..]
        .iter()
        .map(key_of)
        .chain([client_key])
        .collect();
    let lost = lost_state(&states(&before), &states(&after), &unchanged);
    assert!(lost.is_empty(), "peers re-created: {lost:?}");
    let hs_after = states(&after)[&client_key];
    assert!(
        hs_after.handshake >= hs.handshake && hs_after.rx >= hs.rx && hs_after.tx >= hs.tx,
        "the live client's session survived: {hs:?} -> {hs_after:?}"
    );
    println!(
        "VM-RESULT applier: {} unchanged peers kept their state; client handshake kept, rx {} -> {} B, tx {} -> {} B",
        unchanged.len(),
        hs.rx,
        hs_after.rx,
        hs.tx,
        hs_after.tx
    );

    // --- drift by hand: remove one, add one, change one
    let gone = key_of(&iface2.peers[20]);
    let changed = key_of(&iface2.peers[30]);
    let intruder = Key::from_bytes(bytes(77_777, 0x52).try_into().unwrap());
    run("wg", &["set", SERVER, "peer", &gone.to_string(), "remove"]);
    run(
        "wg",
        &[
            "set",
            SERVER,
            "peer",
            &intruder.to_string(),
            "allowed-ips",
            "10.99.0.1/32",
        ],
    );
    run(
        "wg",
        &[
            "set",
            SERVER,
            "peer",
            &changed.to_string(),
            "persistent-keepalive",
            "99",
        ],
    );
    let want_drift = {
        let mut d = vec![
            (gone, DriftKind::Missing),
            (intruder, DriftKind::Unexpected),
            (changed, DriftKind::Changed),
        ];
        d.sort_by_key(|a| (a.1, a.0));
        d
    };
    // observe-only: reported, kernel untouched
    let (r, took) = timed(&c, &iface2, 2, 2, true).await;
    result_line("drift, observe-only", &r, took);
    assert_eq!(r.drift, want_drift);
    assert!(!r.drift_corrected && r.set_messages == 0 && !r.in_sync());
    let still = c.get_device(SERVER).await.expect("dump");
    assert!(still.peers.iter().any(|p| p.public_key == intruder));
    // managed: reported and corrected
    let (r, took) = timed(&c, &iface2, 2, 2, false).await;
    result_line("drift, corrected", &r, took);
    assert_eq!(r.drift, want_drift);
    assert!(r.drift_corrected && r.in_sync() && r.set_messages == 1);
    assert_matches(&c.get_device(SERVER).await.expect("dump"), &iface2);
    let mut set = sentra_agent::samples::SampleSet::new(sentra_core::UnixMillis::now());
    r.samples(&mut set);
    let names: Vec<String> = set
        .into_samples()
        .iter()
        .map(|s| s.name.as_str().to_owned())
        .collect();
    assert!(
        names
            .iter()
            .filter(|n| *n == "sentra_wg_drift_peer")
            .count()
            == 3
    );

    // --- bad declarations: rejected with a clear error, nothing changes
    let snapshot = kernel_config(&c.get_device(SERVER).await.expect("dump"));
    let mut bad_key = iface2.clone();
    bad_key.peers[3].public_key.pop();
    let mut conflict = iface2.clone();
    let stolen = conflict.peers[1].allowed_ips[0].clone();
    conflict.peers[2].allowed_ips.push(stolen.clone());
    let mut bad_prefix = iface2.clone();
    bad_prefix.peers[4].allowed_ips.push("10.0.0.0/40".into());
    let mut bad_psk = iface2.clone();
    bad_psk.peers[5].preshared_key = vec![1; 5];
    let mut twice = iface2.clone();
    twice.peers.push(iface2.peers[6].clone());
    for (what, decl, needle) in [
        (
            "31-byte key",
            bad_key,
            "peers[3].public_key is 31 bytes".to_owned(),
        ),
        (
            "allowed IP claimed twice",
            conflict,
            format!("allowed IP {stolen} is claimed by both"),
        ),
        (
            "bad prefix",
            bad_prefix,
            "peers[4].allowed_ips \"10.0.0.0/40\"".to_owned(),
        ),
        (
            "5-byte preshared key",
            bad_psk,
            "peers[5].preshared_key is 5 bytes".to_owned(),
        ),
        ("peer listed twice", twice, "listed twice".to_owned()),
    ] {
        let r = reconcile(&c, &decl, 3, 2, false).await;
        let err = r.error.clone().unwrap_or_default();
        println!("VM-RESULT applier rejects {what}: {err}");
        assert!(
            err.starts_with("declaration rejected: ") && err.contains(&needle),
            "{what}: {err}"
        );
        assert_eq!((r.set_messages, r.applied_revision), (0, 2), "{what}");
        assert!(!r.in_sync());
        assert_eq!(
            kernel_config(&c.get_device(SERVER).await.expect("dump")),
            snapshot,
            "{what}: the kernel is unchanged"
        );
    }
    // a declared interface that does not exist
    let mut missing = iface2.clone();
    missing.name = "wgnone0".into();
    let r = reconcile(&c, &missing, 3, 0, false).await;
    println!("VM-RESULT applier, missing interface: {:?}", r.error);
    assert!(
        r.error
            .unwrap_or_default()
            .contains("no such network device: wgnone0")
    );

    // the client still has its session after all of this
    let last = states(&c.get_device(SERVER).await.expect("dump"))[&client_key];
    assert!(last.handshake >= hs.handshake && last.rx >= hs.rx);
    run("wg-quick", &["down", &path]);
    c.delete_link(SERVER).await.expect("delete wgm0");
}
