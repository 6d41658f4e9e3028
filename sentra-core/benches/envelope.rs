//! Sign and verify throughput next to raw SHA-256 over the same bytes (the physical limit:
//! HMAC-SHA256 cannot be faster than one SHA-256 pass over the payload).
//!
//! `cargo bench -p sentra-core --bench envelope`
#![allow(missing_docs)] // criterion_group! generates undocumented items

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
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

criterion_group!(benches, envelope);
criterion_main!(benches);
