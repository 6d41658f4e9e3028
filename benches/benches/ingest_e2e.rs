//! End-to-end ingest throughput: agents sign batches and push them through the real
//! sentra-transport gRPC client and server (HTTP/2 over loopback TCP, HMAC verification,
//! all server layers) into sentra-ingest's pipeline. The same workload runs against each
//! storage backend in the same run: SQLite (WAL, synchronous=FULL) and PostgreSQL
//! (loopback, fsync and synchronous_commit on; `SENTRA_TEST_PG_URL`, or a cluster
//! `sentra-testkit` starts). `BENCH_BACKENDS=sqlite` runs one. The clock covers every push
//! from the first send to the last durable ack ("acked"), then the apply of every staged
//! batch (`Ingest::flush`: every sample queryable, "stored"); afterwards the bench counts
//! the stored samples and fails unless every one is there.
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
//! Bytes on disk: SQLite's pages in use; PostgreSQL's tables, partitions and indexes
//! (without its WAL); PostgreSQL's server CPU is not in the process CPU column.
#![allow(missing_docs)]

#[path = "../../sentra-ingest/benches/support/mod.rs"]
mod support;

use support::cpu_seconds;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use sentra_core::{MemoryKeyring, SecretKey, proto::AckStatus};
use sentra_ingest::{Backend, Config, Ingest};
use sentra_transport::{Client, Limits, Server, rate_limit::Quota};

fn main() {
    let shape = support::Shape::from_env([20, 500, 10, 30]);
    let (agents, series, points, batches) = shape.parts();
    let inflight = support::env("BENCH_INFLIGHT", 2).max(1) as usize;
    let support::Signed {
        keys,
        envelopes: work,
        payload_bytes: wire_bytes,
        ..
    } = support::sign(shape, "e2e", &[], &SecretKey::from_bytes([3; 32]));
    let total = shape.total();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "ingest e2e (gRPC): {agents} agents x {batches} batches x {} samples, {inflight} in flight per agent = {total} samples, wire {:.1} B/sample",
        series * points,
        wire_bytes as f64 / total as f64,
    );
    let backends = std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let mut rows = Vec::new();
    for name in backends.split(',') {
        let r = rt.block_on(run(name, &keys, work.clone(), inflight, total));
        let (a, s) = (r.acked.as_secs_f64(), r.stored.as_secs_f64());
        println!(
            "  {name:>8}: acked {:.0} samples/s ({:.0} batches/s, {a:.2} s); acked + stored {:.0} samples/s ({s:.2} s); on disk {:.1} B/sample; process CPU {:.2} s ({:.2} cores, {:.0} samples per CPU-second); {total}/{total} stored",
            total as f64 / a,
            (agents * batches) as f64 / a,
            total as f64 / s,
            r.db_bytes as f64 / total as f64,
            r.cpu,
            r.cpu / s,
            total as f64 / r.cpu,
        );
        rows.push((name, r));
    }
    if let [(a, ra), (b, rb)] = &rows[..] {
        println!(
            "  ratio {b}/{a}: acked + stored samples/s {:.2}, acked samples/s {:.2}, bytes/sample {:.2}",
            ra.stored.as_secs_f64() / rb.stored.as_secs_f64(),
            ra.acked.as_secs_f64() / rb.acked.as_secs_f64(),
            rb.db_bytes as f64 / ra.db_bytes as f64,
        );
    }
}

/// One backend's figures.
struct Run {
    /// First send to the last ack.
    acked: Duration,
    /// First send until every sample is applied (queryable).
    stored: Duration,
    /// Process CPU seconds (client + server) until then.
    cpu: f64,
    /// Bytes on disk.
    db_bytes: u64,
}

/// Runs the workload through a gRPC server over the backend `name`, checks every sample was
/// stored, and measures.
async fn run(
    name: &str,
    keys: &MemoryKeyring,
    work: Vec<Vec<sentra_core::proto::SignedBatch>>,
    inflight: usize,
    total: u64,
) -> Run {
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
    let ingest = Ingest::open_with(backend, Config::default()).await.unwrap();
    let mut limits = Limits::default();
    limits.per_agent_quota = Quota::per_second(1e6).burst(1_000_000);
    let server = Server::builder(keys.clone(), ingest.service())
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
    let acked = start.elapsed();
    ingest.flush().await.unwrap();
    let stored = start.elapsed();
    let cpu = cpu_seconds() - cpu_before;
    let _ = stop_tx.send(());
    let _ = served.await;
    ingest.shutdown().await.unwrap();

    let (count, db_bytes) = if let Some(db) = &db {
        let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(db.url())
            .await
            .unwrap();
        let count: i64 = i64::try_from(support::distinct_samples(
            sqlx::query_as(support::PG_CHUNKS)
                .fetch_all(&mut c)
                .await
                .unwrap(),
        ))
        .unwrap();
        let bytes: i64 = sqlx::query_scalar(
            "SELECT sum(pg_total_relation_size(oid))::int8 FROM pg_class \
             WHERE relnamespace = 'sentra_metrics'::regnamespace AND relkind = 'r'",
        )
        .fetch_one(&mut c)
        .await
        .unwrap();
        (count, bytes as u64)
    } else {
        // Pages in use (the file also holds free pages left by the staging table, which
        // later staging reuses).
        let url = format!(
            "sqlite://{}?mode=ro",
            dir.path().join("metrics.db").display()
        );
        let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
            .await
            .unwrap();
        let count: i64 = i64::try_from(support::distinct_samples(
            sqlx::query_as(support::SQLITE_CHUNKS)
                .fetch_all(&mut c)
                .await
                .unwrap(),
        ))
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
        (count, (used * page) as u64)
    };
    assert_eq!(
        count,
        i64::try_from(total).unwrap(),
        "{name}: samples stored after every ack and the apply"
    );
    Run {
        acked,
        stored,
        cpu,
        db_bytes,
    }
}
