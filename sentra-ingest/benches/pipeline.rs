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
//! After the clock the bench counts the stored samples (decoding every chunk) and fails
//! unless every one is there; then it runs a maintenance pass two hours on (every window of
//! the workload closed: its chunks, one per apply, are compacted into one per window) and
//! counts again.
//!
//! Prints samples/s and bytes per sample right after the apply and after the compaction:
//! the whole store (SQLite: pages in use; PostgreSQL: tables, partitions and indexes
//! after `VACUUM FULL` of the chunk and staging tables, without its WAL) and the `chunks`
//! table alone. The values are not flattering: timestamps with a few ms of jitter, and by
//! default (`BENCH_VALUES=busy`) every gauge walks randomly in hundredths and every counter
//! grows by up to 10^6 per point; `BENCH_VALUES=fleet` is a fleet's mix (constant gauges,
//! idle peers' counters, slow and busy counters: `benches/support`).
#![allow(missing_docs)]

mod support;

use support::cpu_seconds;

use std::time::{Duration, Instant};

use sentra_core::{UnixMillis, Verified, proto::AckStatus};
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
        "pipeline: {agents} agents x {batches} batches x {} samples ({series} series x {points} points) = {total} samples, {:?} values, payload {:.1} B/sample",
        series * points,
        support::Values::from_env(),
        payload_bytes as f64 / total as f64,
    );
    let backends = std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    for name in backends.split(',') {
        let work = work.clone();
        let r = rt.block_on(run(name, work, total));
        let (a, s) = (r.acked.as_secs_f64(), r.applied.as_secs_f64());
        let per = |b: u64| b as f64 / total as f64;
        println!(
            "  {name:>8}: acked {:.0} samples/s ({:.0} batches/s, {a:.2} s); acked + applied {:.0} samples/s ({s:.2} s); process CPU {:.2} s ({:.0} samples per CPU-second)",
            total as f64 / a,
            (agents * batches) as f64 / a,
            total as f64 / s,
            r.cpu,
            total as f64 / r.cpu,
        );
        println!(
            "  {name:>8}: on disk {:.2} B/sample after apply ({} chunks; sample chunks alone {:.2} B/sample), {:.2} B/sample after compaction ({} chunks; alone {:.2} B/sample)",
            per(r.applied_disk.total),
            r.applied_disk.chunks,
            per(r.applied_disk.chunk_bytes),
            per(r.compacted_disk.total),
            r.compacted_disk.chunks,
            per(r.compacted_disk.chunk_bytes),
        );
        // issue 18's goals for this run: 1 M samples/s queryable, 2 B/sample at rest
        println!(
            "  {name:>8}: vs goal: {:.2}x of 1 M samples/s, chunk table {:.2}x of 2 B/sample",
            total as f64 / s / 1e6,
            per(r.compacted_disk.chunk_bytes) / 2.0,
        );
    }
}

/// One backend's run.
struct Run {
    /// Time to the last ack.
    acked: Duration,
    /// Time until everything is applied (queryable).
    applied: Duration,
    /// Process CPU seconds up to `applied`.
    cpu: f64,
    /// Storage right after the clock, and after a maintenance pass compacted every window.
    applied_disk: Disk,
    compacted_disk: Disk,
}

/// What the store occupies.
struct Disk {
    /// SQLite: pages in use (the file also holds free pages left by the staging table,
    /// which later staging reuses); PostgreSQL: every table and index of the schema,
    /// without its WAL.
    total: u64,
    /// Rows and bytes (with indexes) of the `chunks` table.
    chunks: u64,
    chunk_bytes: u64,
}

/// Measures the store while the pipeline is open (reads see every applied chunk).
async fn disk(dir: &std::path::Path, db: Option<&sentra_testkit::TestDb>) -> Disk {
    if let Some(db) = db {
        let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(db.url())
            .await
            .unwrap();
        // what autovacuum would make of the deleted staging rows and compacted chunks
        sqlx::query("VACUUM FULL sentra_metrics.chunks, sentra_metrics.pending")
            .execute(&mut c)
            .await
            .unwrap();
        let (total, chunk_bytes, chunks): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT sum(pg_total_relation_size(oid))::int8 FROM pg_class \
             WHERE relnamespace = 'sentra_metrics'::regnamespace AND relkind = 'r'), \
             (SELECT sum(pg_total_relation_size(i.inhrelid))::int8 FROM pg_inherits i \
             WHERE i.inhparent = 'sentra_metrics.chunks'::regclass), \
             (SELECT count(*) FROM sentra_metrics.chunks)",
        )
        .fetch_one(&mut c)
        .await
        .unwrap();
        return Disk {
            total: total as u64,
            chunks: chunks as u64,
            chunk_bytes: chunk_bytes as u64,
        };
    }
    let url = format!("sqlite://{}?mode=ro", dir.join("metrics.db").display());
    let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let (used, page, chunk_bytes, chunks): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT page_count FROM pragma_page_count()) - \
         (SELECT freelist_count FROM pragma_freelist_count()), \
         (SELECT page_size FROM pragma_page_size()), \
         (SELECT sum(pgsize) FROM dbstat WHERE name IN ('chunks', 'chunks_by_series')), \
         (SELECT count(*) FROM chunks)",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    Disk {
        total: (used * page) as u64,
        chunks: chunks as u64,
        chunk_bytes: chunk_bytes as u64,
    }
}

/// The distinct samples stored (as queries see them).
async fn stored(dir: &std::path::Path, db: Option<&sentra_testkit::TestDb>) -> u64 {
    let rows = if let Some(db) = db {
        let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(db.url())
            .await
            .unwrap();
        sqlx::query_as(support::PG_CHUNKS)
            .fetch_all(&mut c)
            .await
            .unwrap()
    } else {
        let url = format!("sqlite://{}?mode=ro", dir.join("metrics.db").display());
        let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
            .await
            .unwrap();
        sqlx::query_as(support::SQLITE_CHUNKS)
            .fetch_all(&mut c)
            .await
            .unwrap()
    };
    support::distinct_samples(rows)
}

/// One backend's run. After the clock: every sample must be stored (a figure for lost
/// samples means nothing), before and after compaction.
async fn run(name: &str, work: Vec<Vec<Verified>>, total: u64) -> Run {
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
    assert_eq!(
        stored(dir.path(), db.as_ref()).await,
        total,
        "{name}: samples stored"
    );
    let applied_disk = disk(dir.path(), db.as_ref()).await;
    // two hours on, every window of the workload (one hour back) is closed
    let later = UnixMillis::from_millis(UnixMillis::now().as_millis() + 2 * 3_600_000);
    ingest.run_maintenance(later).await.unwrap();
    let compacted_disk = disk(dir.path(), db.as_ref()).await;
    // (a test-mode run applies once: one chunk per series and window, nothing to compact)
    assert!(
        compacted_disk.chunks <= applied_disk.chunks,
        "{name}: compaction made more chunks"
    );
    assert_eq!(
        stored(dir.path(), db.as_ref()).await,
        total,
        "{name}: samples stored after compaction"
    );
    ingest.shutdown().await.unwrap();
    Run {
        acked,
        applied,
        cpu,
        applied_disk,
        compacted_disk,
    }
}
