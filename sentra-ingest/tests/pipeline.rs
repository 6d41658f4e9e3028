//! The pipeline end to end on real SQLite files: dedup, replay window, rejection,
//! concurrency, crash safety, subscribers, delete.

mod support;

use std::time::Duration;

use sentra_core::{
    Seq, UnixMillis,
    proto::{AckStatus, RejectReason},
};
use sentra_ingest::{Config, Event, Ingest, Selector};
use sqlx::{Connection as _, SqliteConnection};
use support::*;

/// Distinct stored samples, as queries see them.
async fn count_samples(dir: &std::path::Path) -> i64 {
    i64::try_from(sqlite_samples(dir).await.len()).unwrap()
}

fn now() -> i64 {
    UnixMillis::now().as_millis()
}

#[tokio::test]
async fn same_seq_twice_is_duplicate_and_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let ingest = Ingest::open(dir.path(), Config::default()).await.unwrap();
    let svc = ingest.service();
    let a = agent("edge-1");
    let t = now();
    let b1 = batch(&a, 1, t, vec![gauge("temp", &[("zone", "a")], t, 1.5)]);
    // a retry resends the very same envelope
    let v1 = verify(&b1);
    let ack = svc.push(v1.clone()).await.unwrap();
    assert_eq!(ack.status(), AckStatus::Accepted);
    assert_eq!((ack.agent_id.as_str(), ack.seq), ("edge-1", 1));
    assert!(ack.server_time_ms > 0);
    let ack = svc.push(v1.clone()).await.unwrap();
    assert_eq!(ack.status(), AckStatus::Duplicate);
    assert_eq!(ack.detail, "already stored");

    let b2 = batch(
        &a,
        2,
        t,
        vec![gauge("temp", &[("zone", "a")], t + 1000, 2.5)],
    );
    assert_eq!(
        svc.push(verify(&b2)).await.unwrap().status(),
        AckStatus::Accepted
    );
    // an older seq after a newer one: duplicate
    assert_eq!(svc.push(v1).await.unwrap().status(), AckStatus::Duplicate);
    // a re-signed envelope for a stored seq: duplicate, counted as a conflict
    let ack = svc.push(verify_with_nonce(&b2, 9)).await.unwrap();
    assert_eq!(ack.status(), AckStatus::Duplicate);
    assert!(ack.detail.contains("different envelope"), "{}", ack.detail);

    assert_eq!(
        ingest.high_water(&a).await.unwrap(),
        Some(Seq::new(2).unwrap())
    );
    let stats = ingest.stats();
    assert_eq!(
        (stats.accepted, stats.duplicates, stats.seq_conflicts),
        (2, 3, 1)
    );
    ingest.shutdown().await.unwrap();
    assert_eq!(count_samples(dir.path()).await, 2);
}

#[tokio::test]
async fn replay_window_accepts_overtaken_seq_once_and_refuses_ancient() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.replay_window = 8;
    let ingest = Ingest::open(dir.path(), config).await.unwrap();
    let svc = ingest.service();
    let a = agent("edge-2");
    let t = now();
    let mk = |seq: u64| {
        batch(
            &a,
            seq,
            t,
            vec![gauge("g", &[], t + seq as i64, seq as f64)],
        )
    };
    // The replay window records fingerprints: retries below resend identical envelopes.
    let v: Vec<_> = (0..=20)
        .map(|s| if s == 0 { None } else { Some(verify(&mk(s))) })
        .collect();
    let v = |s: usize| v[s].clone().unwrap();
    assert_eq!(svc.push(v(5)).await.unwrap().status(), AckStatus::Accepted);
    // 4 was overtaken by 5 (two pushes in flight): stored, exactly once
    assert_eq!(svc.push(v(4)).await.unwrap().status(), AckStatus::Accepted);
    assert_eq!(svc.push(v(4)).await.unwrap().status(), AckStatus::Duplicate);
    assert_eq!(svc.push(v(20)).await.unwrap().status(), AckStatus::Accepted);
    // 12 = H - W: below the window and never stored: refused with its own reason, not
    // "already stored" (the agent must not trim it as delivered)
    let ack = svc.push(v(12)).await.unwrap();
    assert_eq!(ack.status(), AckStatus::Rejected);
    assert_eq!(ack.reason(), RejectReason::SeqBelowHighWater);
    // stored seqs below the window still answer DUPLICATE
    assert_eq!(svc.push(v(5)).await.unwrap().status(), AckStatus::Duplicate);
    ingest.shutdown().await.unwrap();
    assert_eq!(count_samples(dir.path()).await, 3);

    // the window survives a restart
    let ingest = Ingest::open(dir.path(), Config::default()).await.unwrap();
    let svc = ingest.service();
    assert_eq!(svc.push(v(4)).await.unwrap().status(), AckStatus::Duplicate);
    assert_eq!(svc.push(v(19)).await.unwrap().status(), AckStatus::Accepted);
    assert_eq!(
        svc.push(v(19)).await.unwrap().status(),
        AckStatus::Duplicate
    );
    ingest.shutdown().await.unwrap();
    assert_eq!(count_samples(dir.path()).await, 4);
}

#[tokio::test]
async fn malformed_payloads_are_rejected_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ingest = Ingest::open(dir.path(), Config::default()).await.unwrap();
    let svc = ingest.service();
    let a = agent("edge-3");
    let t = now();

    let ack = svc
        .push(verify_raw(&a, 1, vec![0xff, 0xff, 0xff, 0x0f], 0))
        .await
        .unwrap();
    assert_eq!(ack.status(), AckStatus::Rejected);
    assert_eq!(ack.reason(), RejectReason::Malformed);

    // valid protobuf, but the payload's seq disagrees with the signed header
    let b = batch(&a, 7, t, vec![gauge("g", &[], t, 1.0)]);
    let ack = svc
        .push(verify_raw(&a, 8, b.encode_to_vec(), 0))
        .await
        .unwrap();
    assert_eq!(ack.status(), AckStatus::Rejected);
    assert_eq!(ack.reason(), RejectReason::InvalidBatch);

    // another agent's batch under this agent's signature
    let other = batch(&agent("edge-4"), 1, t, vec![]);
    let ack = svc
        .push(verify_raw(&a, 1, other.encode_to_vec(), 0))
        .await
        .unwrap();
    assert_eq!(ack.reason(), RejectReason::InvalidBatch);

    // a derived name that would be too long (histogram `_bucket` suffix)
    let long = "h".repeat(255);
    let mut s = gauge(&long, &[], t, 0.0);
    s.value = sentra_core::Value::Histogram(sentra_core::Histogram::new(vec![], 1, 1.0).unwrap());
    let ack = svc.push(verify(&batch(&a, 2, t, vec![s]))).await.unwrap();
    assert_eq!(ack.reason(), RejectReason::InvalidBatch);

    assert_eq!(ingest.stats().rejected, 4);
    assert_eq!(ingest.high_water(&a).await.unwrap(), None);
    // rejected seqs are not burnt: the real batch 1 is accepted afterwards
    let good = batch(&a, 1, t, vec![gauge("g", &[], t, 1.0)]);
    assert_eq!(
        svc.push(verify(&good)).await.unwrap().status(),
        AckStatus::Accepted
    );
    ingest.shutdown().await.unwrap();
    assert_eq!(count_samples(dir.path()).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_from_many_agents() {
    let dir = tempfile::tempdir().unwrap();
    let ingest = Ingest::open(dir.path(), Config::default()).await.unwrap();
    let t = now();
    let mut tasks = Vec::new();
    for ag in 0..16 {
        let svc = ingest.service();
        tasks.push(tokio::spawn(async move {
            let a = agent(&format!("agent-{ag}"));
            // two pushes in flight per agent: pairs race each other
            for pair in 0..15u64 {
                let (s1, s2) = (pair * 2 + 1, pair * 2 + 2);
                let mk = |seq: u64| {
                    let samples = (0..20)
                        .map(|i| counter("c", &[("i", &i.to_string())], t + seq as i64, seq))
                        .collect();
                    batch(&a, seq, t, samples)
                };
                let (v1, v2) = (verify(&mk(s1)), verify(&mk(s2)));
                let (x, y) = tokio::join!(svc.push(v2), svc.push(v1));
                assert_eq!(x.unwrap().status(), AckStatus::Accepted);
                assert_eq!(y.unwrap().status(), AckStatus::Accepted);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for ag in 0..16 {
        let hw = ingest
            .high_water(&agent(&format!("agent-{ag}")))
            .await
            .unwrap();
        assert_eq!(hw, Some(Seq::new(30).unwrap()));
    }
    ingest.flush().await.unwrap();
    let series = ingest
        .query()
        .series(&Selector::metric("c").unwrap())
        .await
        .unwrap();
    assert_eq!(series.len(), 16 * 20);
    ingest.shutdown().await.unwrap();
    assert_eq!(count_samples(dir.path()).await, 16 * 30 * 20);
}

#[test]
fn dropping_the_runtime_mid_stream_keeps_store_and_high_water_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent("edge-5");
    let t = now();
    let mk = |seq: u64| {
        let samples = (0..50)
            .map(|i| gauge("x", &[("i", &i.to_string())], t + seq as i64, seq as f64))
            .collect();
        batch(&a, seq, t, samples)
    };
    let acked = {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let ingest = Ingest::open(dir.path(), Config::default()).await.unwrap();
            let svc = ingest.service();
            let mut acked = 0;
            for seq in 1..=20 {
                assert_eq!(
                    svc.push(verify(&mk(seq))).await.unwrap().status(),
                    AckStatus::Accepted
                );
                acked = seq;
            }
            // more pushes in flight when the "process" dies
            for seq in 21..=40 {
                let svc = svc.clone();
                let v = verify(&mk(seq));
                tokio::spawn(async move { svc.push(v).await });
            }
            tokio::task::yield_now().await;
            std::mem::forget(ingest); // no shutdown
            acked
        })
        // runtime dropped here: every task is cancelled wherever it is
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // sqlx runs each SQLite connection on a thread of its own, which outlives the
        // runtime: a COMMIT already handed to it still completes (a real crash ends those
        // threads too). Wait until no write transaction of the dead "process" is open —
        // BEGIN IMMEDIATE waits for SQLite's write lock — so the restarted pipeline loads
        // everything that was committed, as it would after a real crash. (Without this the
        // restart could load its state before a late commit and then collide with it.)
        let url = format!("sqlite://{}", dir.path().join("metrics.db").display());
        let mut c = SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("PRAGMA busy_timeout = 30000")
            .execute(&mut c)
            .await
            .unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut c)
            .await
            .unwrap();
        sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
        c.close().await.unwrap();

        let ingest = Ingest::open(dir.path(), Config::default()).await.unwrap();
        let hw = ingest.high_water(&a).await.unwrap().unwrap().get();
        assert!(hw >= acked);
        let svc = ingest.service();
        // The agent resends everything it has no ack for; the acked part is all duplicate.
        for seq in 1..=acked {
            assert_eq!(
                svc.push(verify(&mk(seq))).await.unwrap().status(),
                AckStatus::Duplicate
            );
        }
        for seq in acked + 1..=40 {
            let st = svc.push(verify(&mk(seq))).await.unwrap().status();
            assert!(
                matches!(st, AckStatus::Accepted | AckStatus::Duplicate),
                "{st:?}"
            );
        }
        assert_eq!(ingest.high_water(&a).await.unwrap().unwrap().get(), 40);
        // every seq accepted exactly once: pipeline decisions, not rows (the samples'
        // primary key makes a second copy of a row impossible anyway)
        let ledger = ingest.agent_ledger(&a).await.unwrap().unwrap();
        assert_eq!(ledger.accepted, 40, "accept decisions");
        assert_eq!(ledger.missing, 0, "every skipped seq arrived later");
        ingest.shutdown().await.unwrap();
        assert_eq!(count_samples(dir.path()).await, 40 * 50);
    });
}

#[tokio::test]
async fn subscribers_see_stored_batches_and_slow_ones_lag() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.subscriber_capacity = 4;
    let ingest = Ingest::open(dir.path(), config).await.unwrap();
    let mut fast = ingest.subscribe();
    let mut slow = ingest.subscribe();
    let svc = ingest.service();
    let a = agent("edge-6");
    let t = now();
    for seq in 1..=10 {
        let b = batch(&a, seq, t, vec![gauge("g", &[], t + seq as i64, 1.0)]);
        svc.push(verify(&b)).await.unwrap();
        match fast.recv().await {
            Some(Event::Stored(s)) => {
                assert_eq!(s.seq.get(), seq);
                assert_eq!(s.batch.samples.len(), 1);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // duplicates are not published
    svc.push(verify(&batch(&a, 3, t, vec![]))).await.unwrap();
    assert!(matches!(slow.recv().await, Some(Event::Lagged(6))));
    ingest.shutdown().await.unwrap();
    let mut seen = 0;
    while let Some(Event::Stored(_)) = slow.recv().await {
        seen += 1;
    }
    assert_eq!(seen, 4);
    assert!(fast.recv().await.is_none());
}

#[tokio::test]
async fn delete_agent_removes_its_data_only() {
    let dir = tempfile::tempdir().unwrap();
    let ingest = Ingest::open(dir.path(), Config::default()).await.unwrap();
    let svc = ingest.service();
    let t = now();
    for name in ["gone", "kept"] {
        let a = agent(name);
        let mut b = batch(&a, 1, t, vec![gauge("g", &[], t, 1.0)]);
        b.wg_devices.push(wg(10, 20, Some(t)));
        svc.push(verify(&b)).await.unwrap();
    }
    assert!(ingest.delete_agent(&agent("gone")).await.unwrap());
    assert!(!ingest.delete_agent(&agent("never")).await.unwrap());
    assert_eq!(ingest.high_water(&agent("gone")).await.unwrap(), None);
    let names: Vec<_> = ingest
        .status()
        .snapshot()
        .agents
        .into_iter()
        .map(|a| a.agent_id)
        .collect();
    assert_eq!(names, ["kept"]);
    let q = ingest.query();
    assert!(q.names(Some(&agent("gone"))).await.unwrap().is_empty());
    assert_eq!(
        q.names(Some(&agent("kept"))).await.unwrap(),
        [
            "g",
            "wireguard_latest_handshake_seconds",
            "wireguard_received_bytes_total",
            "wireguard_sent_bytes_total"
        ]
    );
    ingest.shutdown().await.unwrap();
    assert_eq!(count_samples(dir.path()).await, 4);
}

#[tokio::test]
async fn push_after_shutdown_is_an_error_not_an_ack() {
    let dir = tempfile::tempdir().unwrap();
    let ingest = Ingest::open(dir.path(), Config::default()).await.unwrap();
    let svc = ingest.service();
    ingest.shutdown().await.unwrap();
    let t = now();
    let err = svc
        .push(verify(&batch(&agent("late"), 1, t, vec![])))
        .await
        .unwrap_err();
    assert!(matches!(err, sentra_ingest::Error::Closed));
    // and through the tower interface it is an Err (transport maps it to UNAVAILABLE)
    let mut svc = svc;
    let r = tower_service::Service::call(&mut svc, verify(&batch(&agent("late"), 1, t, vec![])));
    assert!(
        tokio::time::timeout(Duration::from_secs(5), r)
            .await
            .unwrap()
            .is_err()
    );
}

#[tokio::test]
async fn staged_batches_become_queryable_by_delay_or_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.apply_delay = Duration::from_millis(50);
    config.apply_samples = 3;
    let ingest = Ingest::open(dir.path(), config).await.unwrap();
    let svc = ingest.service();
    let q = ingest.query();
    let sel = Selector::metric("g").unwrap();
    let a = agent("stage-1");
    let t = now();
    // one sample: below the size threshold, visible once the delay passed
    svc.push(verify(&batch(&a, 1, t, vec![gauge("g", &[], t, 1.0)])))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while q.latest(&sel).await.unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "never applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ingest.shutdown().await.unwrap();

    // with a long delay, only the size threshold applies
    let mut config = Config::default();
    config.apply_delay = Duration::from_secs(3600);
    config.apply_samples = 3;
    let ingest = Ingest::open(dir.path(), config).await.unwrap();
    let svc = ingest.service();
    let q = ingest.query();
    svc.push(verify(&batch(&a, 2, t, vec![gauge("g", &[], t + 1, 2.0)])))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        q.latest(&sel).await.unwrap()[0].value,
        1.0,
        "staged, not yet applied"
    );
    let samples = (0..3).map(|i| gauge("g", &[], t + 2 + i, 3.0)).collect();
    svc.push(verify(&batch(&a, 3, t, samples))).await.unwrap();
    // the apply runs right after the ack's commit, before the writer takes new work:
    // one more round trip through the queue observes it
    svc.push(verify(&batch(&a, 3, t, vec![]))).await.unwrap();
    assert_eq!(q.latest(&sel).await.unwrap()[0].value, 3.0);
    ingest.shutdown().await.unwrap();
}
