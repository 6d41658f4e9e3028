//! End-to-end ingest throughput: agents sign batches and push them through the real
//! sentra-transport gRPC client and server (HTTP/2 over loopback TCP, HMAC verification,
//! all server layers) into sentra-ingest's pipeline (SQLite, WAL, synchronous=FULL). The
//! clock covers every push from the first send to the last durable ack.
//!
//! ```text
//! cargo bench -p sentra-benches --bench ingest_e2e
//! BENCH_AGENTS=20 BENCH_SERIES=500 BENCH_POINTS=10 BENCH_BATCHES=30 BENCH_INFLIGHT=2 \
//!     cargo bench -p sentra-benches --bench ingest_e2e
//! ```
//!
//! Envelopes are signed before the clock starts (signing is the agents' CPU, not the
//! server's); verification, decoding, storage and acks are timed. Plaintext HTTP/2 on
//! loopback: TLS would add the same per-byte cost on both ends of one 2-core machine.
#![allow(missing_docs)]

use std::{sync::Arc, time::Instant};

use bytes::Bytes;
use sentra_core::{
    AgentId, Batch, KeyId, Labels, MemoryKeyring, Method, Nonce, Sample, SecretKey, Seq, Signer,
    UnixMillis, Validity, Value, proto::AckStatus,
};
use sentra_ingest::{Config, Ingest};
use sentra_transport::{Client, Limits, Server, rate_limit::Quota};

/// CPU seconds (user + system) this process has used, from `/proc/self/stat` (Linux;
/// `CLK_TCK` = 100). The machine is shared, so wall-clock throughput understates what the
/// pipeline does with a whole machine; CPU time does not.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) as f64 / 100.0
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then run tiny.
    let quick = !std::env::args().any(|a| a == "--bench");
    let agents = env("BENCH_AGENTS", if quick { 2 } else { 20 });
    let series = env("BENCH_SERIES", if quick { 10 } else { 500 });
    let points = env("BENCH_POINTS", if quick { 2 } else { 10 });
    let batches = env("BENCH_BATCHES", if quick { 3 } else { 30 });
    let inflight = env("BENCH_INFLIGHT", 2).max(1) as usize;

    let secret = SecretKey::from_bytes([3; 32]);
    let mut keys = MemoryKeyring::new();
    let now = UnixMillis::now();
    let t0 = now.as_millis() - 3_600_000;
    let mut work = Vec::new();
    let mut wire_bytes = 0usize;
    for a in 0..agents {
        let agent = AgentId::new(format!("e2e-{a}")).unwrap();
        keys.insert(agent.clone(), KeyId::new(1), &secret, Validity::always());
        let signer = Signer::new(agent.clone(), KeyId::new(1), &secret);
        let labels: Vec<Labels> = (0..series)
            .map(|s| {
                Labels::from_pairs([("host", format!("host-{a}")), ("series", s.to_string())])
                    .unwrap()
            })
            .collect();
        let mut mine = Vec::new();
        for b in 0..batches {
            let mut batch = Batch::new(agent.clone(), Seq::new(b + 1).unwrap(), now);
            for p in 0..points {
                let ts = t0 + ((b * points + p) * 1000) as i64;
                for (s, l) in labels.iter().enumerate() {
                    batch.samples.push(Sample {
                        name: if s % 2 == 0 {
                            "e2e_gauge"
                        } else {
                            "e2e_counter_total"
                        }
                        .parse()
                        .unwrap(),
                        labels: l.clone(),
                        timestamp: UnixMillis::from_millis(ts),
                        value: if s % 2 == 0 {
                            Value::Gauge((ts % 1000) as f64 * 0.5)
                        } else {
                            Value::Counter((b * points + p) * 1000 + s as u64)
                        },
                    });
                }
            }
            let payload = Bytes::from(batch.encode_to_vec());
            wire_bytes += payload.len();
            mine.push(signer.sign(Method::Push, batch.seq, now, Nonce::random(), payload));
        }
        work.push(mine);
    }
    let total = agents * series * points * batches;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cpu_before = cpu_seconds();
    let (elapsed, cpu, db_bytes) = rt.block_on(async {
        let ingest = Ingest::open(dir.path(), Config::default()).await.unwrap();
        let mut limits = Limits::default();
        limits.per_agent_quota = Quota::per_second(1e6).burst(1_000_000);
        let server = Server::builder(keys, ingest.service())
            .limits(limits)
            .build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(server.serve_with_shutdown(listener, async move {
            let _ = stop_rx.await;
        }));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for mine in work {
            // every agent has its own connection, and ships in order with `inflight`
            // pushes outstanding
            let client = Arc::new(
                Client::builder(format!("http://{addr}"))
                    .concurrency_limit(inflight)
                    .build()
                    .unwrap(),
            );
            let mut lanes: Vec<Vec<_>> = (0..inflight).map(|_| Vec::new()).collect();
            for (i, e) in mine.into_iter().enumerate() {
                lanes[i % inflight].push(e);
            }
            for lane in lanes {
                let client = Arc::clone(&client);
                tasks.push(tokio::spawn(async move {
                    for e in lane {
                        let ack = client.push(e).await.unwrap();
                        assert_eq!(ack.status(), AckStatus::Accepted, "{}", ack.detail);
                    }
                }));
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        let elapsed = start.elapsed();
        let cpu = cpu_seconds() - cpu_before;
        let _ = stop_tx.send(());
        let _ = served.await;
        ingest.shutdown().await.unwrap();
        // Pages in use (the file also holds free pages left by the staging table, which
        // later staging reuses).
        let url = format!(
            "sqlite://{}?mode=ro",
            dir.path().join("metrics.db").display()
        );
        let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
            .await
            .unwrap();
        let used: i64 = sqlx::query_scalar(
            "SELECT (SELECT page_count FROM pragma_page_count()) - \
             (SELECT freelist_count FROM pragma_freelist_count())",
        )
        .fetch_one(&mut c)
        .await
        .unwrap();
        let page: i64 = sqlx::query_scalar("SELECT page_size FROM pragma_page_size()")
            .fetch_one(&mut c)
            .await
            .unwrap();
        (elapsed, cpu, (used * page) as u64)
    });
    let secs = elapsed.as_secs_f64();
    println!(
        "ingest e2e (gRPC): {agents} agents x {batches} batches x {} samples, {inflight} in flight per agent = {total} samples",
        series * points
    );
    println!(
        "  wall: {:.0} samples/s, {:.0} batches/s, {secs:.2} s; wire {:.1} B/sample; in use on disk {:.1} B/sample ({db_bytes} bytes of pages)",
        total as f64 / secs,
        (agents * batches) as f64 / secs,
        wire_bytes as f64 / total as f64,
        db_bytes as f64 / total as f64,
    );
    println!(
        "  CPU (client + server, one process): {cpu:.2} s, {:.2} cores busy on average, {:.0} samples per CPU-second",
        cpu / secs,
        total as f64 / cpu,
    );
}
