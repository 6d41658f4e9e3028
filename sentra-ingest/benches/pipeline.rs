//! Sustained ingest throughput of the pipeline, in process (no network): many agents push
//! pre-signed, pre-verified batches concurrently through [`IngestService`]; the clock covers
//! decode, validation, replay check, group commit and the acks, then the apply of every
//! staged batch (`flush`). The same workload runs against each backend in the same run:
//! SQLite (WAL, synchronous=FULL) and PostgreSQL (loopback, fsync and synchronous_commit
//! on; `SENTRA_TEST_PG_URL`, or a cluster `sentra-testkit` starts). `BENCH_BACKENDS=sqlite`
//! runs one.
//!
//! ```text
//! cargo bench -p sentra-ingest --bench pipeline
//! BENCH_AGENTS=20 BENCH_SERIES=500 BENCH_POINTS=10 BENCH_BATCHES=30 cargo bench -p sentra-ingest --bench pipeline
//! ```
//!
//! Prints samples/s and bytes on disk per sample (SQLite: pages in use; PostgreSQL: tables,
//! partitions and indexes, without its WAL).
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use sentra_core::{
    AgentId, Batch, KeyId, Labels, MemoryKeyring, Method, Nonce, Sample, SecretKey, Seq, Signer,
    UnixMillis, Validity, Value, Verified, Verifier, proto::AckStatus,
};
use sentra_ingest::{Backend, Config, Ingest};

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

    let secret = SecretKey::from_bytes([1; 32]);
    let mut keys = MemoryKeyring::new();
    let now = UnixMillis::now();
    let t0 = now.as_millis() - 3_600_000;
    let mut work: Vec<Vec<Verified>> = Vec::new();
    let mut payload_bytes = 0usize;
    for a in 0..agents {
        let agent = AgentId::new(format!("bench-{a}")).unwrap();
        keys.insert(agent.clone(), KeyId::new(1), &secret, Validity::always());
        let signer = Signer::new(agent.clone(), KeyId::new(1), &secret);
        let labels: Vec<Labels> = (0..series)
            .map(|s| {
                Labels::from_pairs([
                    ("host", format!("host-{a}")),
                    ("series", s.to_string()),
                    ("kind", "bench".to_owned()),
                ])
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
                            "bench_gauge"
                        } else {
                            "bench_counter_total"
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
            payload_bytes += payload.len();
            let env = signer.sign(Method::Push, batch.seq, now, Nonce::random(), payload);
            mine.push(
                Verifier::new()
                    .verify(&env, Method::Push, now, &keys)
                    .unwrap(),
            );
        }
        work.push(mine);
    }
    let total = agents * series * points * batches;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "pipeline: {agents} agents x {batches} batches x {} samples ({series} series x {points} points) = {total} samples, payload {:.1} B/sample",
        series * points,
        payload_bytes as f64 / total as f64,
    );
    let backends = std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    for name in backends.split(',') {
        let work = work.clone();
        let (acked, applied, cpu, db_bytes) = rt.block_on(run(name, work));
        let (a, s) = (acked.as_secs_f64(), applied.as_secs_f64());
        println!(
            "  {name:>8}: acked {:.0} samples/s ({:.0} batches/s, {a:.2} s); acked + applied {:.0} samples/s ({s:.2} s); on disk {:.1} B/sample; process CPU {cpu:.2} s ({:.0} samples per CPU-second)",
            total as f64 / a,
            (agents * batches) as f64 / a,
            total as f64 / s,
            db_bytes as f64 / total as f64,
            total as f64 / cpu,
        );
    }
}

/// One backend's run: (time to the last ack, time until everything is applied, process CPU
/// seconds, bytes on disk).
async fn run(name: &str, work: Vec<Vec<Verified>>) -> (Duration, Duration, f64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let db = match name {
        "postgres" => Some(sentra_testkit::TestDb::new().await.unwrap()),
        "sqlite" => None,
        other => panic!("BENCH_BACKENDS: unknown backend {other:?} (sqlite, postgres)"),
    };
    let backend = match &db {
        Some(db) => Backend::postgres(db.url()),
        None => Backend::sqlite(dir.path()),
    };
    let cpu_before = cpu_seconds();
    {
        let ingest = Ingest::open_with(backend, Config::default()).await.unwrap();
        let start = Instant::now();
        let mut tasks = Vec::new();
        for mine in work {
            let svc = ingest.service();
            tasks.push(tokio::spawn(async move {
                for v in mine {
                    let ack = svc.push(v).await.unwrap();
                    assert_eq!(ack.status(), AckStatus::Accepted);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let acked = start.elapsed();
        ingest.flush().await.unwrap();
        let applied = start.elapsed();
        let cpu = cpu_seconds() - cpu_before;
        ingest.shutdown().await.unwrap();
        if let Some(db) = &db {
            let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(db.url())
                .await
                .unwrap();
            let bytes: i64 = sqlx::query_scalar(
                "SELECT sum(pg_total_relation_size(oid))::int8 FROM pg_class \
                 WHERE relnamespace = 'sentra_metrics'::regnamespace AND relkind = 'r'",
            )
            .fetch_one(&mut c)
            .await
            .unwrap();
            return (acked, applied, cpu, bytes as u64);
        }
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
        (acked, applied, cpu, (used * page) as u64)
    }
}
