//! Sign and verify throughput next to raw SHA-256 over the same bytes (the physical limit:
//! HMAC-SHA256 cannot be faster than one SHA-256 pass over the payload).
//!
//! `cargo bench -p sentra-core --bench envelope` (criterion groups, then a same-run ratio of
//! verify to raw SHA-256 for 1 KiB; `-- none` prints only the ratio)
#![allow(missing_docs)] // criterion_group! generates undocumented items

use bytes::Bytes;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use sentra_core::{
    AgentId, KeyId, MemoryKeyring, Method, Nonce, SecretKey, Seq, Signer, UnixMillis, Validity,
    Verifier,
};

fn envelope(c: &mut Criterion) {
    let agent = AgentId::new("bench-agent").expect("valid id");
    let secret = SecretKey::from_bytes([42; 32]);
    let signer = Signer::new(agent.clone(), KeyId::new(1), &secret);
    let mut keyring = MemoryKeyring::new();
    keyring.insert(agent, KeyId::new(1), &secret, Validity::always());
    let verifier = Verifier::new().max_payload(2 * 1024 * 1024);
    let now = UnixMillis::from_millis(1_760_000_000_000);
    let seq = Seq::new(1).expect("valid seq");

    let mut group = c.benchmark_group("envelope");
    for size in [1024usize, 64 * 1024, 1024 * 1024] {
        let payload = Bytes::from(vec![0x5a; size]);
        let signed = signer.sign(
            Method::Push,
            seq,
            now,
            Nonce::from_bytes([1; 16]),
            payload.clone(),
        );
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("sha256_raw", size), &payload, |b, p| {
            b.iter(|| ring::digest::digest(&ring::digest::SHA256, p));
        });
        group.bench_with_input(BenchmarkId::new("sign", size), &payload, |b, p| {
            b.iter(|| {
                signer.sign(
                    Method::Push,
                    seq,
                    now,
                    Nonce::from_bytes([1; 16]),
                    p.clone(),
                )
            });
        });
        group.bench_with_input(BenchmarkId::new("verify", size), &signed, |b, s| {
            b.iter(|| {
                verifier
                    .verify(s, Method::Push, now, &keyring)
                    .expect("verifies")
            });
        });
    }
    group.finish();
}

/// Same-run ratio, robust on a shared machine: raw SHA-256 and verify of the same 1 KiB
/// payload alternate in short rounds; the fastest round of each is kept.
fn ratio(smoke: bool) {
    let agent = AgentId::new("bench-agent").expect("valid id");
    let secret = SecretKey::from_bytes([42; 32]);
    let signer = Signer::new(agent.clone(), KeyId::new(1), &secret);
    let mut keyring = MemoryKeyring::new();
    keyring.insert(agent, KeyId::new(1), &secret, Validity::always());
    let verifier = Verifier::new();
    let now = UnixMillis::from_millis(1_760_000_000_000);
    let seq = Seq::new(1).expect("valid seq");
    let payload = Bytes::from(vec![0x5a; 1024]);
    let signed = signer.sign(
        Method::Push,
        seq,
        now,
        Nonce::from_bytes([1; 16]),
        payload.clone(),
    );
    let (rounds, iters) = if smoke { (2, 10) } else { (200, 2_000) };
    // The HMAC alone over a contiguous string-to-sign of the same length (1024 + 103 bytes):
    // what verify costs without parsing, key lookup and the envelope's own work.
    let hkey = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[42; 32]);
    let contiguous = vec![0x5a; 1024 + 103];
    let (mut raw, mut ver, mut mac) = (Duration::MAX, Duration::MAX, Duration::MAX);
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..iters {
            black_box(ring::hmac::sign(&hkey, black_box(&contiguous)));
        }
        mac = mac.min(t.elapsed());
        let t = Instant::now();
        for _ in 0..iters {
            black_box(ring::digest::digest(
                &ring::digest::SHA256,
                black_box(&payload),
            ));
        }
        raw = raw.min(t.elapsed());
        let t = Instant::now();
        for _ in 0..iters {
            black_box(
                verifier
                    .verify(black_box(&signed), Method::Push, now, &keyring)
                    .expect("verifies"),
            );
        }
        ver = ver.min(t.elapsed());
    }
    let per = |d: Duration| d.as_secs_f64() * 1e9 / f64::from(iters);
    println!(
        "\nsame-run ratio, 1 KiB (fastest of {rounds} alternating rounds of {iters}): raw SHA-256 {:.0} ns, HMAC of the contiguous 1127-byte string-to-sign {:.0} ns, verify {:.0} ns; verify/raw throughput {:.2}x (limit 17/19 blocks = 0.89x; bare HMAC/raw {:.2}x)",
        per(raw),
        per(mac),
        per(ver),
        per(raw) / per(ver),
        per(raw) / per(mac)
    );
}

criterion_group!(benches, envelope);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    ratio(!std::env::args().any(|a| a == "--bench"));
}
