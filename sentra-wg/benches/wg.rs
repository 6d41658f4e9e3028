//! sentra-wg benchmarks (sans-IO: no kernel needed).
//!
//! `cargo bench -p sentra-wg --bench wg -- --warm-up-time 1 --measurement-time 3`
//!
//! * parse + coalesce a 100 000-peer dump from bytes (goal ≥ 2 M peers/s)
//! * diff 100 000 desired vs actual peers (goal ≤ 50 ms)
//! * SET messages needed to apply 100 000 peers (goal ≤ 250; printed next to the
//!   one-message-per-peer baseline of wgctrl-go and defguard): the bench's own peers (two
//!   allowed IPs, IPv6 endpoint, keepalive) as an upsert of full configurations, with
//!   REPLACE_PEERS and through `apply` to an empty device; and the lean reference peer.
//!   Each count is printed with its byte lower bound: the kernel reads one peers nest per
//!   message and its length is a `u16`, so no packing can use fewer messages than the
//!   peers' encoded bytes / 65 531.
#![allow(missing_docs)] // criterion_group! generates an undocumented public function

use std::hint::black_box;
use std::time::{Duration, UNIX_EPOCH};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sentra_wg::proto::{self, build_set, emit_dump, peers_nest_budget};
use sentra_wg::{AllowedIp, Device, DeviceRef, DeviceUpdate, Key, Peer, PeerUpdate};

/// 100 000 peers under `cargo bench`; 1 000 when `cargo test --all-targets` runs the bench
/// binary once as a smoke test (no `--bench` argument then).
fn n() -> u32 {
    if std::env::args().any(|a| a == "--bench") {
        100_000
    } else {
        1_000
    }
}

/// Bytes of the `WGDEVICE_A_PEERS` nest (payload, header excluded) of each SET message.
fn peers_nest_bytes(msgs: &[proto::SetMessage]) -> usize {
    const WGDEVICE_A_PEERS: u16 = 8;
    msgs.iter()
        .map(|m| {
            let b = m.bytes();
            // netlink header (16 bytes) + generic netlink header (4), then attributes
            let mut at = 20;
            while at + 4 <= b.len() {
                let len = usize::from(u16::from_ne_bytes([b[at], b[at + 1]]));
                let kind = u16::from_ne_bytes([b[at + 2], b[at + 3]]) & 0x3fff;
                if kind == WGDEVICE_A_PEERS {
                    return len - 4;
                }
                at += len.div_ceil(4) * 4;
            }
            0
        })
        .sum()
}

/// The fewest SET messages any packing could use for `msgs`' peers: the kernel reads one
/// peers nest per message, and its length field is a `u16` (65 531 bytes of payload).
fn byte_lower_bound(msgs: &[proto::SetMessage], peers: u32) -> String {
    let total = peers_nest_bytes(msgs);
    format!(
        "byte lower bound {} for {:.0} B/peer under the 64 KiB peers nest",
        total.div_ceil(usize::from(u16::MAX) - 4),
        total as f64 / f64::from(peers)
    )
}

fn key(i: u32) -> Key {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&i.to_be_bytes());
    b[4..8].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_le_bytes());
    b[31] = 0x5a;
    Key::from_bytes(b)
}

fn device(n: u32) -> Device {
    let mut d = Device::default();
    d.name = "wg0".into();
    d.ifindex = 3;
    d.listen_port = 51820;
    d.peers = (0..n)
        .map(|i| {
            let mut p = Peer::new(key(i));
            p.allowed_ips = vec![
                AllowedIp::new([10, (i >> 16) as u8, (i >> 8) as u8, i as u8].into(), 32).unwrap(),
                format!("fd00:{:x}:{:x}::/64", i >> 16, i & 0xffff)
                    .parse()
                    .unwrap(),
            ];
            p.endpoint = Some(
                format!("[2001:db8::{:x}]:51820", i % 65536)
                    .parse()
                    .unwrap(),
            );
            p.persistent_keepalive = 25;
            p.last_handshake = Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000 + u64::from(i)));
            p.rx_bytes = u64::from(i) * 1000;
            p.tx_bytes = u64::from(i) * 2000;
            p.protocol_version = 1;
            p
        })
        .collect();
    d
}

/// On-CPU time of this thread in nanoseconds (Linux `schedstat`): unlike criterion's wall
/// clock it does not grow when other processes compete for the cores.
fn cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Minimum on-CPU milliseconds of `f` over `runs` runs (None if schedstat is unavailable).
fn cpu_ms<T>(runs: usize, mut f: impl FnMut() -> T) -> Option<f64> {
    let mut best = u64::MAX;
    for _ in 0..runs {
        let t0 = cpu_ns()?;
        black_box(f());
        best = best.min(cpu_ns()? - t0);
    }
    Some(best as f64 / 1e6)
}

fn benches(c: &mut Criterion) {
    #[allow(non_snake_case)]
    let N = n();
    let actual = device(N);
    // 32 KiB messages, as the kernel sends to a reader with a ≥ 32 KiB buffer
    let dump = emit_dump(&actual, 30, 1, 32 * 1024);
    println!("{N}-peer dump: {} bytes", dump.len());
    let mut g = c.benchmark_group("dump");
    g.throughput(Throughput::Elements(u64::from(N)));
    g.bench_function("parse_coalesce_100k_peers", |b| {
        b.iter(|| proto::parse_dump(black_box(&dump)).unwrap())
    });
    g.finish();

    if let Some(ms) = cpu_ms(5, || proto::parse_dump(&dump).unwrap()) {
        println!(
            "parse+coalesce {N} peers: {ms:.1} ms on-CPU = {:.2} M peers/s (goal >= 2 M/s)",
            f64::from(N) / ms / 1e3
        );
    }
    let mut desired = actual.to_config();
    for p in desired.peers.iter_mut().step_by(100) {
        p.persistent_keepalive = 10;
    }
    desired.peers.truncate(desired.peers.len() - 500);
    let d = sentra_wg::diff(&actual, &desired).unwrap();
    println!("diff: {} peer changes", d.peers.len());
    if let Some(ms) = cpu_ms(5, || sentra_wg::diff(&actual, &desired).unwrap()) {
        println!("diff {N} desired vs actual: {ms:.1} ms on-CPU (goal <= 50 ms)");
    }
    c.bench_function("diff_100k_desired_vs_actual", |b| {
        b.iter(|| sentra_wg::diff(black_box(&actual), black_box(&desired)).unwrap())
    });

    let mut update = DeviceUpdate::new();
    update.peers = actual
        .peers
        .iter()
        .map(|p| PeerUpdate::from_config(&p.to_config()))
        .collect();
    let dev = DeviceRef::from("wg0");
    let msgs = build_set(&dev, &update, 30, peers_nest_budget()).unwrap();
    println!(
        "SET messages to apply {N} peers (2 allowed IPs, v6 endpoint, keepalive, PSK field each): {} ({}; goal <= 250; wgctrl-go / defguard: {N}, one per peer)",
        msgs.len(),
        byte_lower_bound(&msgs, N)
    );
    // The same peers through the paths that know they are new: REPLACE_PEERS (`set` with
    // `replace_peers`), and `apply` to an empty device (diff → build_set).
    let mut replace = update.clone();
    replace.replace_peers = true;
    let replace_msgs = build_set(&dev, &replace, 30, peers_nest_budget()).unwrap();
    let n_replace = replace_msgs.len();
    let mut empty = Device::default();
    empty.name = "wg0".into();
    let fresh = sentra_wg::diff(&empty, &actual.to_config()).unwrap();
    let n_apply = build_set(&dev, &fresh, 30, peers_nest_budget())
        .unwrap()
        .len();
    println!(
        "SET messages to apply the same {N} peers with REPLACE_PEERS: {n_replace} ({}); `apply` to an empty device: {n_apply} (goal <= 250; {:.2}x the upsert's {})",
        byte_lower_bound(&replace_msgs, N),
        n_apply as f64 / msgs.len() as f64,
        msgs.len()
    );
    // wireguard.md section 4's reference peer: key, PSK, flags, v4 endpoint, keepalive, one /32
    let mut lean = DeviceUpdate::new();
    lean.peers = (0..N)
        .map(|i| {
            let mut u = PeerUpdate::new(key(i));
            u.update_only = true;
            u.preshared_key = Some(sentra_wg::PresharedKey::from_bytes([7; 32]));
            u.endpoint = Some(([127, 0, 0, 1], 51820).into());
            u.persistent_keepalive = Some(25);
            u.allowed_ips = vec![
                AllowedIp::new([10, (i >> 16) as u8, (i >> 8) as u8, i as u8].into(), 32).unwrap(),
            ];
            u
        })
        .collect();
    let lean_msgs = build_set(&dev, &lean, 30, peers_nest_budget()).unwrap();
    println!(
        "SET messages to apply {N} peers (key, PSK, flags, v4 endpoint, keepalive, one /32 each): {} ({}; goal <= 250; wgctrl-go / defguard: {N})",
        lean_msgs.len(),
        byte_lower_bound(&lean_msgs, N)
    );
    c.bench_function("build_set_100k_peers", |b| {
        b.iter(|| {
            build_set(&dev, black_box(&update), 30, peers_nest_budget())
                .unwrap()
                .len()
        })
    });
}

criterion_group!(wg, benches);
criterion_main!(wg);
