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
//! After the clock the bench counts the stored samples and fails unless every one is there.
//!
//! Prints samples/s and bytes on disk per sample (SQLite: pages in use; PostgreSQL: tables,
//! partitions and indexes, without its WAL).
#![allow(missing_docs)]

mod support;

use support::cpu_seconds;

use std::time::{Duration, Instant};

use sentra_core::{Verified, proto::AckStatus};
use sentra_ingest::{Backend, Config, Ingest};

fn main() {
    let shape = support::Shape::from_env([20, 500, 10, 30]);
    let (agents, series, points, batches) = shape.parts();
    let (work, payload_bytes) = support::verified_workload(shape);
    let total = shape.total();

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
        let (acked, applied, cpu, db_bytes) = rt.block_on(run(name, work, total));
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
/// After the clock: every sample must be stored (a figure for lost samples means nothing).
async fn run(name: &str, work: Vec<Vec<Verified>>, total: u64) -> (Duration, Duration, f64, u64) {
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
            let stored: i64 = i64::try_from(
                sentra_ingest::storage::samples_of_chunks(
                    sqlx::query_as::<_, (i64, i64, Vec<u8>)>(
                        "SELECT series_id, gen, data FROM sentra_metrics.chunks",
                    )
                    .fetch_all(&mut c)
                    .await
                    .unwrap(),
                )
                .unwrap()
                .len(),
            )
            .unwrap();
            assert_eq!(stored as u64, total, "postgres: samples stored");
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
        let stored: i64 = i64::try_from(
            sentra_ingest::storage::samples_of_chunks(
                sqlx::query_as::<_, (i64, i64, Vec<u8>)>("SELECT series_id, gen, data FROM chunks")
                    .fetch_all(&mut c)
                    .await
                    .unwrap(),
            )
            .unwrap()
            .len(),
        )
        .unwrap();
        assert_eq!(stored as u64, total, "sqlite: samples stored");
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
