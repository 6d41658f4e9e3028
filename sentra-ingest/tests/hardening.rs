//! Issue 10, server ingest side: maintenance after a restart (item 2), one pipeline per data
//! directory (item 3), accepted sequence gaps
//! and the integrity check (item 4), skewed agent clocks (item 5), bounded seqs and
//! sequence reset (item 13). Real SQLite files, the real service, real signed envelopes.

mod support;

use std::{path::Path, time::Duration};

use sentra_core::{
    UnixMillis,
    proto::{AckStatus, RejectReason},
};
use sentra_ingest::{Config, Ingest, Selector};
use sqlx::{Connection as _, Row as _, SqliteConnection};
use support::*;

fn now() -> i64 {
    UnixMillis::now().as_millis()
}

async fn ro(dir: &Path) -> SqliteConnection {
    let url = format!("sqlite://{}?mode=ro", dir.join("metrics.db").display());
    SqliteConnection::connect(&url).await.unwrap()
}

async fn count(dir: &Path, sql: &str) -> i64 {
    let mut c = ro(dir).await;
    let n = sqlx::query(sql).fetch_one(&mut c).await.unwrap().get(0);
    c.close().await.unwrap();
    n
}

/// Moves everything in `metrics.db-wal` into `metrics.db` (the pipeline is shut down).
async fn checkpoint(dir: &Path) {
    let url = format!("sqlite://{}", dir.join("metrics.db").display());
    let mut c = SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
}

fn one(a: &sentra_core::AgentId, seq: u64, ts: i64) -> sentra_core::Verified {
    verify(&batch(a, seq, ts, vec![gauge("g", &[], ts, seq as f64)]))
}

// ---- item 2 ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_after_a_restart_before_the_first_rollup_pass_works() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent("roll-1");
    let t = now() - 5 * 60_000;
    let mut config = Config::default();
    config.maintenance_interval = Duration::from_secs(3600);
    let ingest = Ingest::open(dir.path(), config).await.unwrap();
    for seq in 1..=5 {
        let ack = ingest
            .service()
            .push(one(&a, seq, t + seq as i64 * 1000))
            .await;
        assert_eq!(ack.unwrap().status(), AckStatus::Accepted);
    }
    ingest.shutdown().await.unwrap(); // before any rollup pass

    // restart: every series is marked dirty "from the beginning of time"
    let mut config = Config::default();
    config.maintenance_interval = Duration::from_secs(1);
    let ingest = Ingest::open(dir.path(), config).await.unwrap();
    let mut health = ingest.watch_health();
    // the background pass runs after ~1 s; it must neither die nor stop
    let died = tokio::time::timeout(Duration::from_millis(2500), health.changed()).await;
    assert!(
        died.is_err(),
        "health changed: {:?}",
        ingest.health().dead_task
    );
    assert!(ingest.health().is_ready(), "{:?}", ingest.health());
    assert!(count(dir.path(), "SELECT COUNT(*) FROM rollup_1m").await >= 1);
    // and on demand
    let report = ingest.run_maintenance(UnixMillis::now()).await.unwrap();
    assert!(report.series_rolled_up <= 1);
    ingest.shutdown().await.unwrap();
}

// ---- item 4 ----------------------------------------------------------------------------

#[tokio::test]
async fn accepted_gaps_are_counted_durably_per_agent() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent("gap-1");
    let b = agent("gap-2");
    let t = now();
    let ingest = Ingest::open(dir.path(), Config::default()).await.unwrap();
    let svc = ingest.service();
    for seq in [1, 2, 3, 7, 8, 20] {
        assert_eq!(
            svc.push(one(&a, seq, t + seq as i64))
                .await
                .unwrap()
                .status(),
            AckStatus::Accepted
        );
    }
    // a late one inside the window fills one missing seq
    assert_eq!(
        svc.push(one(&a, 5, t + 5)).await.unwrap().status(),
        AckStatus::Accepted
    );
    assert_eq!(
        svc.push(one(&b, 1, t)).await.unwrap().status(),
        AckStatus::Accepted
    );
    let l = ingest.agent_ledger(&a).await.unwrap().unwrap();
    assert_eq!(
        (l.high_water, l.accepted, l.gaps, l.missing),
        (Some(20), 7, 2, 3 + 11 - 1)
    );
    assert_eq!((l.rejected_stale, l.rejected_ahead), (0, 0));
    let l = ingest.agent_ledger(&b).await.unwrap().unwrap();
    assert_eq!((l.accepted, l.gaps, l.missing), (1, 0, 0));
    assert!(
        ingest
            .agent_ledger(&agent("nobody"))
            .await
            .unwrap()
            .is_none()
    );
    ingest.shutdown().await.unwrap();

    // durable
    let ingest = Ingest::open(dir.path(), Config::default()).await.unwrap();
    let l = ingest.agent_ledger(&a).await.unwrap().unwrap();
    assert_eq!((l.accepted, l.gaps, l.missing), (7, 2, 13));
    assert_eq!(
        ingest
            .service()
            .push(one(&a, 22, t + 22))
            .await
            .unwrap()
            .status(),
        AckStatus::Accepted
    );
    let l = ingest.agent_ledger(&a).await.unwrap().unwrap();
    assert_eq!((l.accepted, l.gaps, l.missing), (8, 3, 14));
    ingest.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_sqlite_wal_file_shows_up_as_an_accepted_gap() {
    let dir = tempfile::tempdir().unwrap();
    let copy = tempfile::tempdir().unwrap();
    let a = agent("walloss-1");
    let t = now();
    let ingest = Ingest::open(dir.path(), Config::default()).await.unwrap();
    for seq in 1..=5 {
        ingest
            .service()
            .push(one(&a, seq, t + seq as i64))
            .await
            .unwrap();
    }
    ingest.shutdown().await.unwrap();
    checkpoint(dir.path()).await; // seqs 1..=5 are in metrics.db
    let ingest = Ingest::open(dir.path(), Config::default()).await.unwrap();
    for seq in 6..=10 {
        let ack = ingest
            .service()
            .push(one(&a, seq, t + seq as i64))
            .await
            .unwrap();
        assert_eq!(ack.status(), AckStatus::Accepted); // durable in metrics.db-wal only
    }
    // a crash, and metrics.db-wal is gone: the main file alone
    std::fs::copy(
        dir.path().join("metrics.db"),
        copy.path().join("metrics.db"),
    )
    .unwrap();
    ingest.shutdown().await.unwrap();

    let ingest = Ingest::open(copy.path(), Config::default()).await.unwrap();
    assert!(ingest.integrity_check().await.unwrap().is_empty());
    let l = ingest.agent_ledger(&a).await.unwrap().unwrap();
    assert_eq!((l.high_water, l.gaps), (Some(5), 0));
    // the agent goes on from its cursor
    let ack = ingest.service().push(one(&a, 11, t + 11)).await.unwrap();
    assert_eq!(ack.status(), AckStatus::Accepted);
    let l = ingest.agent_ledger(&a).await.unwrap().unwrap();
    assert_eq!((l.high_water, l.gaps, l.missing), (Some(11), 1, 5));
    ingest.shutdown().await.unwrap();
}

#[tokio::test]
async fn integrity_check_reports_a_damaged_database() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent("integrity-1");
    let t = now();
    let ingest = Ingest::open(dir.path(), Config::default()).await.unwrap();
    for seq in 1..=50 {
        let samples = (0..40)
            .map(|i| gauge("x", &[("i", &i.to_string())], t + seq as i64, 1.0))
            .collect();
        ingest
            .service()
            .push(verify(&batch(&a, seq, t + seq as i64, samples)))
            .await
            .unwrap();
    }
    ingest.flush().await.unwrap();
    assert_eq!(
        ingest.integrity_check().await.unwrap(),
        Vec::<String>::new()
    );
    ingest.shutdown().await.unwrap();
    checkpoint(dir.path()).await;

    // overwrite the root page of the sample chunks table (not read when opening)
    let root: i64 = count(
        dir.path(),
        "SELECT rootpage FROM sqlite_master WHERE name = 'chunks'",
    )
    .await;
    let page = count(dir.path(), "PRAGMA page_size").await;
    let path = dir.path().join("metrics.db");
    let mut bytes = std::fs::read(&path).unwrap();
    let start = ((root - 1) * page) as usize;
    bytes[start..start + page as usize].fill(0xA5);
    std::fs::write(&path, bytes).unwrap();

    let ingest = Ingest::open(dir.path(), Config::default()).await.unwrap();
    let problems = ingest.integrity_check().await.unwrap();
    assert!(!problems.is_empty(), "damage not reported");
    ingest.shutdown().await.unwrap();
}

// ---- item 5 ----------------------------------------------------------------------------

#[tokio::test]
async fn samples_from_a_clock_running_ahead_are_clamped_to_receive_time_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent("skew-1");
    let ingest = Ingest::open(dir.path(), Config::default()).await.unwrap();
    let before = now();
    let hour_ahead = before + 3_600_000;
    let minute_ahead = before + 60_000;
    let b = batch(
        &a,
        1,
        before,
        vec![
            gauge("ahead", &[], hour_ahead, 1.0),
            gauge("near", &[], minute_ahead, 2.0),
            gauge("past", &[], before - 3_600_000, 3.0),
        ],
    );
    let ack = ingest.service().push(verify(&b)).await.unwrap();
    let after = now();
    assert_eq!(ack.status(), AckStatus::Accepted);
    assert_eq!(ingest.stats().clamped_samples, 1);
    ingest.flush().await.unwrap();
    let ts = |name: &'static str| {
        let q = ingest.query();
        async move {
            let v = q.latest(&Selector::metric(name).unwrap()).await.unwrap();
            assert_eq!(v.len(), 1, "{name}");
            v[0].timestamp_ms
        }
    };
    let ahead = ts("ahead").await;
    assert!(
        (before..=after).contains(&ahead),
        "stored at {ahead}, received within {before}..={after}"
    );
    assert_eq!(
        ts("near").await,
        minute_ahead,
        "inside the skew window: kept"
    );
    assert_eq!(ts("past").await, before - 3_600_000, "old samples are kept");
    ingest.shutdown().await.unwrap();

    // the same rows after a restart that re-applies staged batches
    let ingest = Ingest::open(dir.path(), Config::default()).await.unwrap();
    let v = ingest
        .query()
        .latest(&Selector::metric("ahead").unwrap())
        .await
        .unwrap();
    assert_eq!(v[0].timestamp_ms, ahead);
    ingest.shutdown().await.unwrap();
}

// ---- item 13 ---------------------------------------------------------------------------

#[tokio::test]
async fn a_seq_far_ahead_is_rejected_and_does_not_silence_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent("ahead-1");
    let t = now();
    let ingest = Ingest::open(dir.path(), Config::default()).await.unwrap();
    let svc = ingest.service();
    // first batch of an agent too
    let ack = svc.push(one(&a, u64::MAX, t)).await.unwrap();
    assert_eq!(ack.status(), AckStatus::Rejected);
    assert_eq!(ack.reason(), RejectReason::SeqTooFarAhead);
    assert!(ack.detail.contains("too far ahead"), "{}", ack.detail);
    // a legitimate first seq: seq_base = now_ms × 1000, plus an LSN
    let base = (t as u64) * 1000;
    assert_eq!(
        svc.push(one(&a, base + 1, t)).await.unwrap().status(),
        AckStatus::Accepted
    );
    let ack = svc.push(one(&a, u64::MAX, t + 1)).await.unwrap();
    assert_eq!(ack.reason(), RejectReason::SeqTooFarAhead);
    // a new WAL after a clock that went backwards: previous base + 2^40
    let next = base + (1 << 40) + 1;
    assert_eq!(
        svc.push(one(&a, next, t + 2)).await.unwrap().status(),
        AckStatus::Accepted
    );
    // and the agent's next batch is still accepted, not "already stored"
    assert_eq!(
        svc.push(one(&a, next + 1, t + 3)).await.unwrap().status(),
        AckStatus::Accepted
    );
    let l = ingest.agent_ledger(&a).await.unwrap().unwrap();
    assert_eq!((l.accepted, l.rejected_ahead), (3, 2));
    assert_eq!(l.high_water, Some(next + 1));
    ingest.shutdown().await.unwrap();
}

#[tokio::test]
async fn only_a_stored_seq_is_duplicate_and_a_reset_reopens_the_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent("reset-1");
    let t = now();
    let mut config = Config::default();
    config.replay_window = 4;
    let ingest = Ingest::open(dir.path(), config.clone()).await.unwrap();
    let svc = ingest.service();
    for seq in 1..=3 {
        svc.push(one(&a, seq, t + seq as i64)).await.unwrap();
    }
    // a key holder pushes a seq far ahead but within the bound
    let high = (t as u64) * 1000 + (1 << 41);
    assert_eq!(
        svc.push(one(&a, high, t)).await.unwrap().status(),
        AckStatus::Accepted
    );
    // stored ones: DUPLICATE; never stored below the high water: REJECTED
    assert_eq!(
        svc.push(one(&a, 2, t + 2)).await.unwrap().status(),
        AckStatus::Duplicate
    );
    let ack = svc.push(one(&a, 4, t + 4)).await.unwrap();
    assert_eq!(ack.status(), AckStatus::Rejected);
    assert_eq!(ack.reason(), RejectReason::SeqBelowHighWater);
    ingest.shutdown().await.unwrap();

    // still so after a restart
    let ingest = Ingest::open(dir.path(), config.clone()).await.unwrap();
    let svc = ingest.service();
    assert_eq!(
        svc.push(one(&a, 3, t + 3)).await.unwrap().status(),
        AckStatus::Duplicate
    );
    assert_eq!(
        svc.push(one(&a, 4, t + 4)).await.unwrap().reason(),
        RejectReason::SeqBelowHighWater
    );
    let l = ingest.agent_ledger(&a).await.unwrap().unwrap();
    assert_eq!(l.rejected_stale, 2);

    // the operator resets the sequence: the agent's data flows again
    let previous = ingest.reset_sequence(&a).await.unwrap();
    assert_eq!(previous.map(|s| s.get()), Some(high));
    assert_eq!(
        svc.push(one(&a, 4, t + 4)).await.unwrap().status(),
        AckStatus::Accepted
    );
    assert_eq!(
        ingest.high_water(&a).await.unwrap().map(|s| s.get()),
        Some(4)
    );
    assert_eq!(
        ingest.reset_sequence(&agent("unknown")).await.unwrap(),
        None
    );
    ingest.shutdown().await.unwrap();

    let ingest = Ingest::open(dir.path(), config).await.unwrap();
    let svc = ingest.service();
    assert_eq!(
        svc.push(one(&a, 4, t + 4)).await.unwrap().status(),
        AckStatus::Duplicate
    );
    assert_eq!(
        svc.push(one(&a, 5, t + 5)).await.unwrap().status(),
        AckStatus::Accepted
    );
    let l = ingest.agent_ledger(&a).await.unwrap().unwrap();
    assert_eq!(
        (l.high_water, l.accepted, l.rejected_stale),
        (Some(5), 6, 2)
    );
    ingest.shutdown().await.unwrap();
}

// ---- item 3 (moved into the library: an embedder may open a directory twice) -----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_pipeline_on_one_data_directory_is_refused_until_the_first_shuts_down() {
    let dir = tempfile::tempdir().unwrap();
    let first = Ingest::open(dir.path(), Config::default()).await.unwrap();
    let err = Ingest::open(dir.path(), Config::default())
        .await
        .expect_err("the directory is in use");
    assert!(
        matches!(&err, sentra_ingest::Error::DataDirInUse { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
    // the refused open changed nothing: the first pipeline still stores
    let a = agent("lock-1");
    let ack = first.service().push(one(&a, 1, now())).await.unwrap();
    assert_eq!(ack.status(), AckStatus::Accepted);
    first.shutdown().await.unwrap();
    // released at shutdown (while `first` itself is still alive)
    let second = Ingest::open(dir.path(), Config::default()).await.unwrap();
    assert_eq!(
        second.high_water(&a).await.unwrap().map(|s| s.get()),
        Some(1)
    );
    second.shutdown().await.unwrap();
    drop(first);
    drop(second);
    // and at drop, without shutdown
    let third = Ingest::open(dir.path(), Config::default()).await.unwrap();
    drop(third);
    Ingest::open(dir.path(), Config::default())
        .await
        .unwrap()
        .shutdown()
        .await
        .unwrap();
}
