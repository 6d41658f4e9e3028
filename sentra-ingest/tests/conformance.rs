//! One conformance suite for every metric-store backend: the same test functions run
//! against SQLite (a temp dir) and PostgreSQL (a fresh database on the test server:
//! `SENTRA_TEST_PG_URL`, or a cluster `sentra-testkit` starts; PostgreSQL missing fails
//! with an install hint, never a skip).
//!
//! Covered: ingest, dedup, replay after a restart, every query kind (names, series with
//! matchers, latest, history raw and from rollups, aggregate, top-N, percentiles, export),
//! sequence reset and agent delete, and failure semantics: a storage error never acks and
//! the writer recovers by itself; one writer per store (a second pipeline is refused). PostgreSQL only: the server stopped (like a crash) and
//! started again mid-ingest loses no acknowledged batch and the writer reconnects on its
//! own (health Failing, then Ok).

mod support;

use std::time::Duration;

use sentra_core::{AgentId, Seq, UnixMillis, proto::AckStatus};
use sentra_ingest::{
    Aggregation, Backend, Config, ExportFormat, Ingest, LabelMatcher, MatchOp, Order, Range,
    Resolution, Selector, StorageHealth,
};
use sentra_testkit::{PgServer, TestDb};
use sqlx::Connection as _;
use support::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Sqlite,
    Postgres,
}

/// One backend's storage; it outlives [`Ingest`] instances, so reopening is a restart.
struct Store {
    kind: Kind,
    dir: tempfile::TempDir,
    db: Option<TestDb>,
}

impl Store {
    async fn new(kind: Kind) -> Self {
        let db = match kind {
            Kind::Sqlite => None,
            Kind::Postgres => Some(
                TestDb::new()
                    .await
                    .unwrap_or_else(|e| panic!("PostgreSQL for the conformance suite: {e}")),
            ),
        };
        Self {
            kind,
            dir: tempfile::tempdir().unwrap(),
            db,
        }
    }

    fn backend(&self) -> Backend {
        match self.kind {
            Kind::Sqlite => Backend::sqlite(self.dir.path()),
            Kind::Postgres => Backend::postgres(self.db.as_ref().unwrap().url()),
        }
    }

    async fn open(&self) -> Ingest {
        Ingest::open_with(self.backend(), config()).await.unwrap()
    }

    /// Runs statements on a side connection (fault injection).
    async fn exec(&self, sql: &[&str]) {
        match self.kind {
            Kind::Sqlite => {
                let url = format!("sqlite://{}", self.dir.path().join("metrics.db").display());
                let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
                for s in sql {
                    sqlx::query(s).execute(&mut c).await.unwrap();
                }
                c.close().await.unwrap();
            }
            Kind::Postgres => {
                let mut c = self.pg_connection().await;
                for s in sql {
                    sqlx::query(s).execute(&mut c).await.unwrap();
                }
                c.close().await.unwrap();
            }
        }
    }

    /// One integer a query on a side connection answers.
    async fn scalar(&self, sql: &str) -> i64 {
        match self.kind {
            Kind::Sqlite => {
                let url = format!(
                    "sqlite://{}?mode=ro",
                    self.dir.path().join("metrics.db").display()
                );
                let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
                let n = sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap();
                c.close().await.unwrap();
                n
            }
            Kind::Postgres => {
                let mut c = self.pg_connection().await;
                let n = sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap();
                c.close().await.unwrap();
                n
            }
        }
    }

    /// A side connection to the PostgreSQL store, in the metric store's schema.
    async fn pg_connection(&self) -> sqlx::PgConnection {
        let mut c = sqlx::PgConnection::connect(self.db.as_ref().unwrap().url())
            .await
            .unwrap();
        sqlx::query("SET search_path = sentra_metrics")
            .execute(&mut c)
            .await
            .unwrap();
        c
    }

    /// The days (since the epoch) that have a `chunks` partition (PostgreSQL).
    async fn pg_partition_days(&self) -> Vec<i64> {
        let mut c = self.pg_connection().await;
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'chunks'::regclass",
        )
        .fetch_all(&mut c)
        .await
        .unwrap();
        names
            .iter()
            .filter_map(|n| {
                let d = n.strip_prefix("chunks_d")?;
                match d.strip_prefix('m') {
                    Some(neg) => neg.parse::<i64>().ok().map(|x| -x),
                    None => d.parse().ok(),
                }
            })
            .collect()
    }

    /// Makes every append to the staging log fail (a trigger), or stops doing so.
    async fn inject_failure(&self, on: bool) {
        match (self.kind, on) {
            (Kind::Sqlite, true) => {
                self.exec(&["CREATE TRIGGER inject_failure BEFORE INSERT ON pending \
                    BEGIN SELECT RAISE(ABORT, 'injected failure'); END"])
                    .await;
            }
            (Kind::Sqlite, false) => self.exec(&["DROP TRIGGER inject_failure"]).await,
            (Kind::Postgres, true) => {
                self.exec(&[
                    "CREATE FUNCTION inject_failure() RETURNS trigger LANGUAGE plpgsql AS \
                     $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$",
                    "CREATE TRIGGER inject_failure BEFORE INSERT ON pending \
                     FOR EACH ROW EXECUTE FUNCTION inject_failure()",
                ])
                .await;
            }
            (Kind::Postgres, false) => {
                self.exec(&["DROP TRIGGER inject_failure ON pending"]).await;
            }
        }
    }
}

fn config() -> Config {
    let mut c = Config::default();
    c.apply_delay = Duration::from_millis(100);
    c.maintenance_interval = Duration::from_secs(3600);
    c
}

fn now() -> i64 {
    UnixMillis::now().as_millis()
}

fn one(a: &AgentId, seq: u64, ts: i64) -> sentra_core::Verified {
    #[allow(clippy::cast_precision_loss)]
    verify(&batch(a, seq, ts, vec![gauge("g", &[], ts, seq as f64)]))
}

async fn wait_health(ingest: &Ingest, ok: bool, within: Duration) {
    let mut rx = ingest.watch_health();
    let reached = tokio::time::timeout(within, async {
        loop {
            let is_ok = rx.borrow_and_update().storage == StorageHealth::Ok;
            if is_ok == ok {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(
        reached.is_ok(),
        "storage health not {} within {within:?}: {:?}",
        if ok { "Ok" } else { "Failing" },
        ingest.health()
    );
}

// ---- the suite ---------------------------------------------------------------------------

async fn ingest_dedup_and_replay_after_restart(kind: Kind) {
    let store = Store::new(kind).await;
    let a = agent("conf-1");
    let t = now();
    let ingest = store.open().await;
    let svc = ingest.service();
    let b1 = batch(&a, 1, t, vec![gauge("temp", &[("zone", "a")], t, 1.5)]);
    let v1 = verify(&b1);
    assert_eq!(
        svc.push(v1.clone()).await.unwrap().status(),
        AckStatus::Accepted
    );
    let ack = svc.push(v1.clone()).await.unwrap();
    assert_eq!(ack.status(), AckStatus::Duplicate);
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
    // a re-signed envelope of a stored seq: duplicate, counted as a conflict
    let ack = svc.push(verify_with_nonce(&b2, 9)).await.unwrap();
    assert_eq!(ack.status(), AckStatus::Duplicate);
    assert!(ack.detail.contains("different envelope"), "{}", ack.detail);
    // out of order within the window
    let b4 = batch(
        &a,
        4,
        t,
        vec![gauge("temp", &[("zone", "a")], t + 3000, 4.5)],
    );
    assert_eq!(
        svc.push(verify(&b4)).await.unwrap().status(),
        AckStatus::Accepted
    );
    ingest.flush().await.unwrap();
    let latest = ingest
        .query()
        .latest(&Selector::metric("temp").unwrap())
        .await
        .unwrap();
    assert_eq!(latest.len(), 1);
    assert_eq!((latest[0].timestamp_ms, latest[0].value), (t + 3000, 4.5));
    let stats = ingest.stats();
    assert_eq!(
        (stats.accepted, stats.duplicates, stats.seq_conflicts),
        (3, 2, 1)
    );
    ingest.shutdown().await.unwrap();

    // restart: the durable high-water mark, stored ranges and window decide
    let ingest = store.open().await;
    let svc = ingest.service();
    assert_eq!(ingest.high_water(&a).await.unwrap(), Seq::new(4).ok());
    assert_eq!(svc.push(v1).await.unwrap().status(), AckStatus::Duplicate);
    assert_eq!(
        svc.push(verify(&b4)).await.unwrap().status(),
        AckStatus::Duplicate
    );
    let b3 = batch(
        &a,
        3,
        t,
        vec![gauge("temp", &[("zone", "a")], t + 2000, 3.5)],
    );
    assert_eq!(
        svc.push(verify(&b3)).await.unwrap().status(),
        AckStatus::Accepted
    );
    ingest.flush().await.unwrap();
    let from = UnixMillis::from_millis(t - 1);
    let to = UnixMillis::from_millis(t + 10_000);
    let sel = Selector::metric("temp").unwrap();
    let n = ingest
        .query()
        .aggregate(&sel, from, to, Aggregation::Count)
        .await
        .unwrap();
    assert_eq!(n[0].value, 4.0, "every accepted batch stored once");
    let l = ingest.agent_ledger(&a).await.unwrap().unwrap();
    assert_eq!(
        (l.high_water, l.accepted, l.gaps, l.missing),
        (Some(4), 4, 1, 0)
    );
    ingest.shutdown().await.unwrap();
}

#[allow(clippy::too_many_lines)]
async fn every_query_kind(kind: Kind) {
    let store = Store::new(kind).await;
    let a = agent("conf-q");
    // twelve samples 10 s apart, in two whole minutes, ten minutes ago
    let t0 = (now() / 60_000 - 10) * 60_000;
    let mut samples = Vec::new();
    for i in 0..12u32 {
        let ts = t0 + i64::from(i) * 10_000;
        samples.push(gauge("temp", &[("zone", "a")], ts, f64::from(i)));
        samples.push(gauge("temp", &[("zone", "b")], ts, 100.0 + f64::from(i)));
        samples.push(counter(
            "bytes",
            &[("iface", "wg0")],
            ts,
            1000 * u64::from(i),
        ));
    }
    let ingest = store.open().await;
    let ack = ingest
        .service()
        .push(verify(&batch(&a, 1, t0, samples)))
        .await
        .unwrap();
    assert_eq!(ack.status(), AckStatus::Accepted);
    ingest.flush().await.unwrap();
    let q = ingest.query();
    let temp = Selector::metric("temp").unwrap();
    let zone_a = temp
        .clone()
        .with(LabelMatcher::new("zone", MatchOp::Eq, "a").unwrap());
    let (from, to) = (
        UnixMillis::from_millis(t0),
        UnixMillis::from_millis(t0 + 120_000),
    );

    // names
    assert_eq!(q.names(None).await.unwrap(), ["bytes", "temp"]);
    assert_eq!(q.names(Some(&a)).await.unwrap(), ["bytes", "temp"]);
    assert!(q.names(Some(&agent("other"))).await.unwrap().is_empty());
    // series and label matchers
    assert_eq!(q.series(&temp).await.unwrap().len(), 2);
    let s = q.series(&zone_a).await.unwrap();
    assert_eq!(
        (s.len(), s[0].labels["zone"].as_str(), s[0].kind),
        (1, "a", "gauge")
    );
    let not_a = temp
        .clone()
        .with(LabelMatcher::new("zone", MatchOp::NotEq, "a").unwrap());
    assert_eq!(q.series(&not_a).await.unwrap()[0].labels["zone"], "b");
    let absent = Selector::any().with(LabelMatcher::new("nope", MatchOp::Eq, "").unwrap());
    assert_eq!(
        q.series(&absent).await.unwrap().len(),
        3,
        "empty value matches absent"
    );
    let bytes = q.series(&Selector::metric("bytes").unwrap()).await.unwrap();
    assert_eq!(
        (bytes[0].kind, bytes[0].agent_id.as_str()),
        ("counter", "conf-q")
    );
    assert_eq!(
        q.series(&Selector::any().agent(agent("x")))
            .await
            .unwrap()
            .len(),
        0
    );
    // latest
    let l = q.latest(&zone_a).await.unwrap();
    assert_eq!((l[0].timestamp_ms, l[0].value), (t0 + 110_000, 11.0));
    let l = q.latest(&Selector::metric("bytes").unwrap()).await.unwrap();
    assert_eq!(l[0].value, 11_000.0);
    // history from raw samples, one point per minute
    let range = Range::new(from, to, Duration::from_secs(60)).unwrap();
    let expect = [
        (Aggregation::Avg, [2.5, 8.5]),
        (Aggregation::Min, [0.0, 6.0]),
        (Aggregation::Max, [5.0, 11.0]),
        (Aggregation::Sum, [15.0, 51.0]),
        (Aggregation::Count, [6.0, 6.0]),
        (Aggregation::Last, [5.0, 11.0]),
    ];
    for (agg, [v0, v1]) in expect {
        let h = q
            .history(&zone_a, range, agg, Resolution::Raw)
            .await
            .unwrap();
        assert_eq!(h.len(), 1, "{agg:?}");
        assert_eq!(h[0].points, [(t0, v0), (t0 + 60_000, v1)], "raw {agg:?}");
    }
    // aggregate, top-N, percentiles, export
    let sums = q
        .aggregate(&temp, from, to, Aggregation::Sum)
        .await
        .unwrap();
    let mut sums: Vec<(String, f64)> = sums
        .into_iter()
        .map(|v| (v.series.labels["zone"].clone(), v.value))
        .collect();
    sums.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(sums, [("a".to_owned(), 66.0), ("b".to_owned(), 1266.0)]);
    let top = q
        .top_n(&temp, from, to, Aggregation::Max, 1, Order::Desc)
        .await
        .unwrap();
    assert_eq!((top.len(), top[0].value), (1, 111.0));
    let bottom = q
        .top_n(&temp, from, to, Aggregation::Min, 1, Order::Asc)
        .await
        .unwrap();
    assert_eq!(bottom[0].value, 0.0);
    let p = q
        .percentiles(&zone_a, from, to, &[0.0, 0.5, 1.0])
        .await
        .unwrap();
    assert_eq!(p[0].samples, 12);
    assert_eq!(p[0].values, [(0.0, 0.0), (0.5, 5.5), (1.0, 11.0)]);
    let csv = q
        .export(&Selector::any(), from, to, ExportFormat::Csv)
        .await
        .unwrap();
    assert_eq!(csv.rows, 36);
    let json = q
        .export(&zone_a, from, to, ExportFormat::Json)
        .await
        .unwrap();
    assert_eq!(json.rows, 12);
    // history from 1-minute rollups after a maintenance pass: the same answers
    let report = ingest.run_maintenance(UnixMillis::now()).await.unwrap();
    assert!(report.minute_buckets >= 6, "{report:?}");
    for (agg, [v0, v1]) in expect {
        let h = q
            .history(&zone_a, range, agg, Resolution::Minute)
            .await
            .unwrap();
        assert_eq!(h[0].points, [(t0, v0), (t0 + 60_000, v1)], "1m {agg:?}");
    }
    assert!(ingest.integrity_check().await.unwrap().is_empty());
    ingest.shutdown().await.unwrap();
}

async fn reset_and_delete(kind: Kind) {
    let store = Store::new(kind).await;
    let (a, b) = (agent("conf-r"), agent("conf-keep"));
    let t = now();
    let ingest = store.open().await;
    let svc = ingest.service();
    for seq in 1..=3 {
        let ack = svc.push(one(&a, seq, t + seq as i64)).await.unwrap();
        assert_eq!(ack.status(), AckStatus::Accepted);
    }
    assert_eq!(
        svc.push(one(&b, 1, t)).await.unwrap().status(),
        AckStatus::Accepted
    );
    ingest.flush().await.unwrap();
    // reset: the previous high-water mark comes back; seq 1 is accepted again
    assert_eq!(ingest.reset_sequence(&a).await.unwrap(), Seq::new(3).ok());
    assert_eq!(ingest.high_water(&a).await.unwrap(), None);
    let ack = svc.push(one(&a, 1, t + 100)).await.unwrap();
    assert_eq!(ack.status(), AckStatus::Accepted);
    ingest.flush().await.unwrap();
    let l = ingest.agent_ledger(&a).await.unwrap().unwrap();
    assert_eq!((l.high_water, l.accepted), (Some(1), 4));
    // delete: everything of the agent goes, the other agent stays
    assert!(ingest.delete_agent(&a).await.unwrap());
    assert!(!ingest.delete_agent(&agent("never")).await.unwrap());
    let q = ingest.query();
    assert!(
        q.series(&Selector::any().agent(a.clone()))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(q.series(&Selector::any()).await.unwrap().len(), 1);
    assert_eq!(ingest.high_water(&a).await.unwrap(), None);
    assert!(ingest.agent_ledger(&a).await.unwrap().is_none());
    ingest.shutdown().await.unwrap();
    // and durably so
    let ingest = store.open().await;
    assert_eq!(ingest.high_water(&a).await.unwrap(), None);
    assert_eq!(ingest.high_water(&b).await.unwrap(), Seq::new(1).ok());
    let ack = ingest.service().push(one(&a, 1, t + 200)).await.unwrap();
    assert_eq!(ack.status(), AckStatus::Accepted);
    ingest.shutdown().await.unwrap();
}

async fn storage_error_never_acks(kind: Kind) {
    let store = Store::new(kind).await;
    let a = agent("conf-fail");
    let t = now();
    let ingest = store.open().await;
    let svc = ingest.service();
    assert_eq!(
        svc.push(one(&a, 1, t)).await.unwrap().status(),
        AckStatus::Accepted
    );
    ingest.flush().await.unwrap();

    store.inject_failure(true).await;
    for _ in 0..3 {
        let r = svc.push(one(&a, 2, t + 2)).await;
        assert!(
            !matches!(&r, Ok(ack) if ack.status() == AckStatus::Accepted),
            "a failed commit was answered {r:?}"
        );
    }
    wait_health(&ingest, false, Duration::from_secs(5)).await;
    assert!(!ingest.health().is_ready());
    assert_eq!(ingest.high_water(&a).await.unwrap(), Seq::new(1).ok());

    store.inject_failure(false).await;
    // the writer retries by itself
    wait_health(&ingest, true, Duration::from_secs(60)).await;
    // seq 2 was never stored: it is accepted now, not a duplicate
    let ack = svc.push(one(&a, 2, t + 2)).await.unwrap();
    assert_eq!(ack.status(), AckStatus::Accepted);
    ingest.flush().await.unwrap();
    let n = ingest
        .query()
        .aggregate(
            &Selector::metric("g").unwrap(),
            UnixMillis::from_millis(t - 1),
            UnixMillis::from_millis(t + 10),
            Aggregation::Count,
        )
        .await
        .unwrap();
    assert_eq!(n[0].value, 2.0);
    ingest.shutdown().await.unwrap();
}

async fn a_second_writer_is_refused(kind: Kind) {
    let store = Store::new(kind).await;
    let a = agent("conf-lock");
    let first = store.open().await;
    let err = Ingest::open_with(store.backend(), config())
        .await
        .expect_err("a second pipeline on the same store was allowed");
    let text = format!("{err} {:?}", std::error::Error::source(&err));
    assert!(
        text.contains("in use by") || text.contains("another sentra-ingest writer"),
        "{text}"
    );
    // the first one is unaffected and, once it is shut down, the store opens again
    let ack = first.service().push(one(&a, 1, now())).await.unwrap();
    assert_eq!(ack.status(), AckStatus::Accepted);
    first.shutdown().await.unwrap();
    drop(first);
    let again = store.open().await;
    assert_eq!(again.high_water(&a).await.unwrap(), Seq::new(1).ok());
    again.shutdown().await.unwrap();
}

async fn retention_removes_old_samples(kind: Kind) {
    const DAY: i64 = 86_400_000;
    let store = Store::new(kind).await;
    let a = agent("conf-ret");
    let t = now();
    // three and two days ago (outside the partitions made ahead), and an hour ago
    let old = [t - 3 * DAY, t - 2 * DAY, t - 3_600_000];
    let samples = old.iter().map(|&ts| gauge("ret", &[], ts, 1.0)).collect();
    let ingest = store.open().await; // the default retention: 30 days
    let ack = ingest
        .service()
        .push(verify(&batch(&a, 1, t, samples)))
        .await
        .unwrap();
    assert_eq!(ack.status(), AckStatus::Accepted);
    ingest.flush().await.unwrap();
    if kind == Kind::Postgres {
        let days = store.pg_partition_days().await;
        for ts in old {
            assert!(
                days.contains(&ts.div_euclid(DAY)),
                "no partition for {ts}: {days:?}"
            );
        }
    }
    ingest.shutdown().await.unwrap();
    drop(ingest);

    // reopened with a 1-day retention
    let mut c = config();
    c.retention = Duration::from_secs(24 * 3600);
    let ingest = Ingest::open_with(store.backend(), c).await.unwrap();
    let sel = Selector::metric("ret").unwrap();
    let range = Range::whole(
        UnixMillis::from_millis(t - 4 * DAY),
        UnixMillis::from_millis(t),
    )
    .unwrap();
    let raw_count = || async {
        let h = ingest
            .query()
            .history(&sel, range, Aggregation::Count, Resolution::Raw)
            .await
            .unwrap();
        h[0].points[0].1
    };
    assert_eq!(raw_count().await, 3.0);
    ingest.run_maintenance(UnixMillis::now()).await.unwrap();
    assert_eq!(
        raw_count().await,
        1.0,
        "samples older than the retention survived"
    );
    if kind == Kind::Postgres {
        // whole days before the cutoff are dropped partitions, not deleted rows
        let days = store.pg_partition_days().await;
        for ts in &old[..2] {
            assert!(
                !days.contains(&ts.div_euclid(DAY)),
                "day of {ts} kept: {days:?}"
            );
        }
        assert!(days.contains(&old[2].div_euclid(DAY)));
        assert!(
            days.contains(&(t.div_euclid(DAY) + 2)),
            "days ahead: {days:?}"
        );
    }
    ingest.shutdown().await.unwrap();
}

/// A sample older than a short retention, then the retention made longer and another
/// sample of the same day: both are stored (on PostgreSQL the first waits in the default
/// partition, so that day must not get a partition of its own).
async fn longer_retention_after_old_samples(kind: Kind) {
    const DAY: i64 = 86_400_000;
    let store = Store::new(kind).await;
    let a = agent("conf-grow");
    let t = now();
    let day_start = (t - 3 * DAY).div_euclid(DAY) * DAY;
    let mut c = config();
    c.retention = Duration::from_secs(24 * 3600);
    let ingest = Ingest::open_with(store.backend(), c).await.unwrap();
    let b1 = batch(&a, 1, t, vec![gauge("grow", &[], day_start + 1000, 1.0)]);
    let ack = ingest.service().push(verify(&b1)).await.unwrap();
    assert_eq!(ack.status(), AckStatus::Accepted);
    ingest.shutdown().await.unwrap();
    drop(ingest);

    let ingest = store.open().await; // 30 days
    let b2 = batch(&a, 2, t, vec![gauge("grow", &[], day_start + 2000, 2.0)]);
    let ack = ingest.service().push(verify(&b2)).await.unwrap();
    assert_eq!(ack.status(), AckStatus::Accepted);
    ingest.flush().await.unwrap();
    assert!(ingest.health().is_ready(), "{:?}", ingest.health());
    let range = Range::whole(
        UnixMillis::from_millis(day_start),
        UnixMillis::from_millis(day_start + DAY),
    )
    .unwrap();
    let h = ingest
        .query()
        .history(
            &Selector::metric("grow").unwrap(),
            range,
            Aggregation::Sum,
            Resolution::Raw,
        )
        .await
        .unwrap();
    assert_eq!(h[0].points[0].1, 3.0);
    ingest.shutdown().await.unwrap();
}

/// Samples spread over hundreds of past days are stored and queryable; on PostgreSQL the
/// days older than the retention make no partition each (their number stays bounded).
async fn samples_over_many_past_days(kind: Kind) {
    const DAY: i64 = 86_400_000;
    let store = Store::new(kind).await;
    let a = agent("conf-days");
    let t = now();
    let first = t - 40 * DAY; // beyond the default 30-day retention
    let samples = (0..400)
        .map(|i| gauge("old", &[], first - i * DAY, 1.0))
        .collect();
    let ingest = store.open().await;
    let ack = ingest
        .service()
        .push(verify(&batch(&a, 1, t, samples)))
        .await
        .unwrap();
    assert_eq!(ack.status(), AckStatus::Accepted);
    ingest.flush().await.unwrap();
    assert!(ingest.health().is_ready(), "{:?}", ingest.health());
    let range = Range::whole(
        UnixMillis::from_millis(first - 500 * DAY),
        UnixMillis::from_millis(t),
    )
    .unwrap();
    let h = ingest
        .query()
        .history(
            &Selector::metric("old").unwrap(),
            range,
            Aggregation::Count,
            Resolution::Raw,
        )
        .await
        .unwrap();
    assert_eq!(h[0].points[0].1, 400.0);
    if kind == Kind::Postgres {
        let days = store.pg_partition_days().await;
        assert!(days.len() < 10, "{} partitions: {days:?}", days.len());
    }
    ingest.shutdown().await.unwrap();
}

/// Instantiates every suite function once per backend.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Kind::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Kind::Postgres).await;
                }
            )*
        }
    };
}

/// `(step start, value)` of the raw samples of metric `name` over `[from, from + 20 s)` in
/// 1-second steps (one sample per step in these tests): what a query answers.
async fn raw_points(ingest: &Ingest, name: &str, from: i64) -> Vec<(i64, f64)> {
    let range = Range::new(
        UnixMillis::from_millis(from),
        UnixMillis::from_millis(from + 20_000),
        Duration::from_secs(1),
    )
    .unwrap();
    let h = ingest
        .query()
        .history(
            &Selector::metric(name).unwrap(),
            range,
            Aggregation::Last,
            Resolution::Raw,
        )
        .await
        .unwrap();
    assert_eq!(h.len(), 1, "{name}: {h:?}");
    h[0].points.clone()
}

/// Samples of one series arrive over several applies (one chunk each), with a timestamp
/// sent twice with different values: reads merge the chunks and keep the first write;
/// maintenance rewrites the closed window as one chunk with the same answers; a later
/// duplicate still loses against the compacted chunk.
async fn chunks_compact_and_the_first_write_wins(kind: Kind) {
    const HOUR: i64 = 3_600_000;
    let store = Store::new(kind).await;
    let ingest = store.open().await;
    let a = agent("conf-chunks");
    // a whole window three hours ago: closed for compaction
    let w = (now() - 3 * HOUR).div_euclid(HOUR) * HOUR;
    let push = |seq: u64, points: Vec<(i64, f64)>| {
        let samples = points
            .iter()
            .flat_map(|&(ts, v)| {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let c = v as u64;
                [
                    gauge("chunk_g", &[], w + ts, v),
                    counter("chunk_c", &[], w + ts, c),
                ]
            })
            .collect();
        verify(&batch(&a, seq, now(), samples))
    };
    let batches = [
        vec![(1000, 1.0), (2000, 2.0), (3000, 3.0)],
        vec![(3000, 99.0), (4000, 4.0), (5000, 5.0)], // 3000 again: the first write wins
        vec![(500, 0.5), (6000, 6.0)],                // older than the chunks before
    ];
    for (seq, points) in (1..).zip(batches) {
        let ack = ingest.service().push(push(seq, points)).await.unwrap();
        assert_eq!(ack.status(), AckStatus::Accepted);
        ingest.flush().await.unwrap(); // one apply, one chunk per series
    }
    let want: Vec<(i64, f64)> = [0, 1000, 2000, 3000, 4000, 5000, 6000]
        .iter()
        .zip([0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        .map(|(&ts, v)| (w + ts, v))
        .collect();
    assert_eq!(raw_points(&ingest, "chunk_g", w).await, want);
    let counters: Vec<(i64, f64)> = want.iter().map(|&(t, v)| (t, v.floor())).collect();
    assert_eq!(raw_points(&ingest, "chunk_c", w).await, counters);
    assert_eq!(store.scalar("SELECT count(*) FROM chunks").await, 6);

    let report = ingest.run_maintenance(UnixMillis::now()).await.unwrap();
    assert_eq!(report.chunks_compacted, 6, "{report:?}");
    assert_eq!(store.scalar("SELECT count(*) FROM chunks").await, 2);
    assert_eq!(raw_points(&ingest, "chunk_g", w).await, want);
    assert_eq!(raw_points(&ingest, "chunk_c", w).await, counters);
    let latest = ingest
        .query()
        .latest(&Selector::metric("chunk_g").unwrap())
        .await
        .unwrap();
    assert_eq!((latest[0].timestamp_ms, latest[0].value), (w + 6000, 6.0));

    // a late duplicate after the compaction loses too, its new timestamp is stored
    let ack = ingest
        .service()
        .push(push(4, vec![(2000, 77.0), (7000, 7.0)]))
        .await
        .unwrap();
    assert_eq!(ack.status(), AckStatus::Accepted);
    ingest.flush().await.unwrap();
    let mut more = want.clone();
    more.push((w + 7000, 7.0));
    assert_eq!(raw_points(&ingest, "chunk_g", w).await, more);
    // a restart (generations reloaded) keeps the answers, and compacts the rest
    ingest.shutdown().await.unwrap();
    drop(ingest);
    let ingest = store.open().await;
    let report = ingest.run_maintenance(UnixMillis::now()).await.unwrap();
    assert_eq!(report.chunks_compacted, 4, "{report:?}");
    assert_eq!(raw_points(&ingest, "chunk_g", w).await, more);
    assert_eq!(store.scalar("SELECT count(*) FROM chunks").await, 2);
    ingest.shutdown().await.unwrap();
}

/// A store written before chunks (rows in `samples`) is converted at open: every sample is
/// answered as before (counters above `i64::MAX` and NaN gauges included) and the table
/// is gone.
async fn samples_stored_before_chunks_are_converted(kind: Kind) {
    let store = Store::new(kind).await;
    let a = agent("conf-legacy");
    let t = now();
    let ingest = store.open().await;
    let first = verify(&batch(
        &a,
        1,
        t,
        vec![
            gauge("legacy_g", &[], t - 10_000, 1.0),
            counter("legacy_c", &[], t - 10_000, 1),
        ],
    ));
    ingest.service().push(first).await.unwrap();
    ingest.shutdown().await.unwrap();
    drop(ingest);
    let (g, c) = (
        store
            .scalar("SELECT id FROM series WHERE name = 'legacy_g'")
            .await,
        store
            .scalar("SELECT id FROM series WHERE name = 'legacy_c'")
            .await,
    );
    // what the row store held: counters as INTEGER bits (SQLite) or float8 (PostgreSQL)
    let rows = [
        format!("({g}, {}, 2.5)", t - 9000),
        format!("({g}, {}, NULL)", t - 8000),
        format!("({g}, {}, 4.5)", t - 7000),
    ];
    let (create, counter_rows) = match kind {
        Kind::Sqlite => (
            "CREATE TABLE samples (series_id INTEGER NOT NULL, ts INTEGER NOT NULL, v, \
             PRIMARY KEY (series_id, ts)) WITHOUT ROWID",
            format!("({c}, {}, 5), ({c}, {}, -1)", t - 9000, t - 8000),
        ),
        Kind::Postgres => (
            "CREATE TABLE samples (series_id BIGINT NOT NULL, ts BIGINT NOT NULL, \
             v DOUBLE PRECISION, PRIMARY KEY (series_id, ts))",
            format!(
                "({c}, {}, 5), ({c}, {}, 18446744073709551615)",
                t - 9000,
                t - 8000
            ),
        ),
    };
    let insert = format!(
        "INSERT INTO samples (series_id, ts, v) VALUES {}, {counter_rows}",
        rows.join(", ")
    );
    store.exec(&[create, insert.as_str()]).await;

    let ingest = store.open().await;
    let g_points = raw_points(&ingest, "legacy_g", t - 10_000).await;
    assert_eq!(g_points.len(), 4, "{g_points:?}");
    assert_eq!(g_points[0], (t - 10_000, 1.0));
    assert_eq!(g_points[1], (t - 9000, 2.5));
    assert!(g_points[2].1.is_nan(), "{g_points:?}");
    assert_eq!(g_points[3], (t - 7000, 4.5));
    let c_points = raw_points(&ingest, "legacy_c", t - 10_000).await;
    #[allow(clippy::cast_precision_loss)]
    let big = u64::MAX as f64;
    assert_eq!(
        c_points,
        [(t - 10_000, 1.0), (t - 9000, 5.0), (t - 8000, big)]
    );
    let gone = match kind {
        Kind::Sqlite => "SELECT count(*) FROM sqlite_master WHERE name = 'samples'",
        Kind::Postgres => "SELECT count(*) FROM pg_class WHERE oid = to_regclass('samples')",
    };
    assert_eq!(store.scalar(gone).await, 0, "legacy table left");
    ingest.shutdown().await.unwrap();
}

/// A damaged chunk (its bytes cut short on disk) fails the queries that read it with an
/// error naming the series, leaves the other series answering, and is reported by the
/// integrity check.
async fn a_damaged_chunk_is_named_not_hidden(kind: Kind) {
    let store = Store::new(kind).await;
    let ingest = store.open().await;
    let a = agent("conf-damage");
    let t = now();
    let samples = (0..5)
        .flat_map(|i| {
            [
                gauge("damaged", &[], t - 10_000 + i * 1000, 1.0),
                gauge("intact", &[], t - 10_000 + i * 1000, 2.0),
            ]
        })
        .collect();
    let ack = ingest
        .service()
        .push(verify(&batch(&a, 1, t, samples)))
        .await
        .unwrap();
    assert_eq!(ack.status(), AckStatus::Accepted);
    ingest.flush().await.unwrap();
    assert_eq!(
        ingest.integrity_check().await.unwrap(),
        Vec::<String>::new()
    );
    let id = store
        .scalar("SELECT id FROM series WHERE name = 'damaged'")
        .await;
    let cut = match kind {
        Kind::Sqlite => {
            format!("UPDATE chunks SET data = substr(data, 1, 3) WHERE series_id = {id}")
        }
        Kind::Postgres => {
            format!("UPDATE chunks SET data = substring(data from 1 for 3) WHERE series_id = {id}")
        }
    };
    store.exec(&[&cut]).await;

    let err = ingest
        .query()
        .latest(&Selector::metric("damaged").unwrap())
        .await
        .unwrap_err();
    let source = std::error::Error::source(&err).map(ToString::to_string);
    assert!(
        source
            .as_deref()
            .is_some_and(|s| s.contains(&format!("series {id}")) && s.contains("damaged")),
        "{err}: {source:?}"
    );
    let intact = ingest
        .query()
        .latest(&Selector::metric("intact").unwrap())
        .await
        .unwrap();
    assert_eq!(intact[0].value, 2.0);
    let problems = ingest.integrity_check().await.unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with(&format!("damaged sample chunk: series {id} ")),
        "{problems:?}"
    );
    ingest.shutdown().await.unwrap();
}

/// A series that stops being written still gets its window compacted: the pass that sees
/// its last samples comes before the window may be compacted, and no later pass finds it
/// dirty.
async fn a_quiet_series_is_compacted_after_its_window_closes(kind: Kind) {
    const HOUR: i64 = 3_600_000;
    const MINUTE: i64 = 60_000;
    let store = Store::new(kind).await;
    let ingest = store.open().await;
    let a = agent("conf-quiet");
    let w = (now() - 2 * HOUR).div_euclid(HOUR) * HOUR;
    for seq in 1..=2u64 {
        let ts = w + i64::try_from(seq).unwrap() * 1000;
        let ack = ingest
            .service()
            .push(verify(&batch(
                &a,
                seq,
                now(),
                vec![gauge("quiet", &[], ts, 1.0)],
            )))
            .await
            .unwrap();
        assert_eq!(ack.status(), AckStatus::Accepted);
        ingest.flush().await.unwrap();
    }
    assert_eq!(store.scalar("SELECT count(*) FROM chunks").await, 2);
    // 5 minutes after the window: rolled up, not compacted yet
    let at = |ms: i64| UnixMillis::from_millis(ms);
    let report = ingest
        .run_maintenance(at(w + HOUR + 5 * MINUTE))
        .await
        .unwrap();
    assert_eq!(report.chunks_compacted, 0, "{report:?}");
    assert_eq!(store.scalar("SELECT count(*) FROM chunks").await, 2);
    // 15 minutes after: nothing new arrived, the window is compacted all the same
    let report = ingest
        .run_maintenance(at(w + HOUR + 15 * MINUTE))
        .await
        .unwrap();
    assert_eq!(report.chunks_compacted, 2, "{report:?}");
    assert_eq!(store.scalar("SELECT count(*) FROM chunks").await, 1);
    assert_eq!(
        raw_points(&ingest, "quiet", w).await,
        [(w + 1000, 1.0), (w + 2000, 1.0)]
    );
    ingest.shutdown().await.unwrap();
}

/// The oldest timestamps an agent may send (1 ms after the epoch: `sentra-core` refuses
/// zero and negative ones) are stored and answered like any other, and neither the writer
/// nor maintenance trips over the first chunk window.
async fn extreme_timestamps_are_stored_and_answered(kind: Kind) {
    let store = Store::new(kind).await;
    let ingest = store.open().await;
    let a = agent("conf-extreme");
    let low = 1;
    let samples = vec![
        gauge("extreme", &[], low, 1.0),
        gauge("extreme", &[], low + 1000, 2.0),
        counter("extreme_c", &[], low + 5, 7),
    ];
    let ack = ingest
        .service()
        .push(verify(&batch(&a, 1, now(), samples)))
        .await
        .unwrap();
    assert_eq!(ack.status(), AckStatus::Accepted);
    ingest.flush().await.unwrap();
    assert_eq!(
        raw_points(&ingest, "extreme", low).await,
        [(low, 1.0), (low + 1000, 2.0)]
    );
    let latest = ingest
        .query()
        .latest(&Selector::metric("extreme").unwrap())
        .await
        .unwrap();
    assert_eq!((latest[0].timestamp_ms, latest[0].value), (low + 1000, 2.0));
    ingest.run_maintenance(UnixMillis::now()).await.unwrap();
    // a later sample of the same agent still goes through the same writer
    let ack = ingest.service().push(one(&a, 2, now())).await.unwrap();
    assert_eq!(ack.status(), AckStatus::Accepted);
    ingest.flush().await.unwrap();
    assert_eq!(ingest.health().storage, StorageHealth::Ok);
    ingest.shutdown().await.unwrap();
}

conformance!(
    extreme_timestamps_are_stored_and_answered,
    a_quiet_series_is_compacted_after_its_window_closes,
    a_damaged_chunk_is_named_not_hidden,
    chunks_compact_and_the_first_write_wins,
    samples_stored_before_chunks_are_converted,
    ingest_dedup_and_replay_after_restart,
    every_query_kind,
    reset_and_delete,
    storage_error_never_acks,
    a_second_writer_is_refused,
    retention_removes_old_samples,
    samples_over_many_past_days,
    longer_retention_after_old_samples,
);

// ---- PostgreSQL only ---------------------------------------------------------------------

/// The server stops like a crash (`pg_ctl stop -m immediate`) while batches are pushed and
/// applied, and starts again: every acknowledged batch is stored, pushes fail (never ack)
/// while it is down, and the writer reconnects by itself (health Failing, then Ok).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_mid_ingest_loses_no_acked_batch() {
    let server = tokio::task::spawn_blocking(PgServer::start)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("a PostgreSQL cluster of this test: {e}"));
    let db = TestDb::on(&server).await.unwrap();
    let ingest = Ingest::open_with(Backend::postgres(db.url()), config())
        .await
        .unwrap();
    let a = agent("conf-restart");
    let t = now();
    let mut health = ingest.watch_health();
    let states = std::sync::Arc::new(std::sync::Mutex::new(vec![true]));
    let seen = {
        let states = std::sync::Arc::clone(&states);
        tokio::spawn(async move {
            while health.changed().await.is_ok() {
                let ok = health.borrow_and_update().storage == StorageHealth::Ok;
                let mut s = states.lock().unwrap();
                if s.last() != Some(&ok) {
                    s.push(ok);
                }
            }
        })
    };

    let total = 60u64;
    let mut acked = Vec::new();
    let mut refused_while_down = 0;
    let server = std::sync::Arc::new(server);
    let mut restart = None;
    for seq in 1..=total {
        if seq == 20 {
            // crash while batches 1..19 are staged and being applied
            let s = std::sync::Arc::clone(&server);
            tokio::task::spawn_blocking(move || s.crash())
                .await
                .unwrap()
                .unwrap();
        }
        loop {
            match ingest.service().push(one(&a, seq, t + seq as i64)).await {
                Ok(ack) if ack.status() == AckStatus::Accepted => {
                    acked.push(seq);
                    break;
                }
                Ok(ack) => panic!("seq {seq}: unexpected {ack:?}"),
                Err(_) => {
                    refused_while_down += 1;
                    if refused_while_down == 3 && restart.is_none() {
                        let s = std::sync::Arc::clone(&server);
                        restart = Some(tokio::task::spawn_blocking(move || {
                            std::thread::sleep(Duration::from_secs(1));
                            s.start_again()
                        }));
                    }
                    assert!(refused_while_down < 2000, "the writer never recovered");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    restart
        .expect("pushes failed while the server was down")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(acked.len() as u64, total);
    ingest.flush().await.unwrap();
    assert!(ingest.health().is_ready(), "{:?}", ingest.health());
    let count = ingest
        .query()
        .aggregate(
            &Selector::metric("g").unwrap(),
            UnixMillis::from_millis(t),
            UnixMillis::from_millis(t + total as i64 + 1),
            Aggregation::Count,
        )
        .await
        .unwrap();
    assert_eq!(count[0].value, total as f64, "acknowledged batches lost");
    assert_eq!(ingest.high_water(&a).await.unwrap(), Seq::new(total).ok());
    ingest.shutdown().await.unwrap();
    seen.abort();
    let states = states.lock().unwrap().clone();
    assert!(
        states.windows(2).any(|w| w == [false, true]),
        "health went {states:?}, expected Failing then Ok"
    );
    drop(db);
}

/// An unreachable server, a wrong password and a missing database are clear errors at open
/// that never repeat the password.
#[tokio::test]
async fn postgres_open_errors_are_clear_and_hide_the_password() {
    let server = PgServer::shared().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let secret = "s3cr3t-pw-do-not-print";
    let good = server.url_for("postgres");
    let wrong_pw = {
        // postgres://user:password@host...: swap the password
        let (head, rest) = good.split_once("://").unwrap();
        let (cred, host) = rest.split_once('@').unwrap();
        let user = cred.split(':').next().unwrap();
        format!("{head}://{user}:{secret}@{host}")
    };
    let cases = [
        (
            format!("postgres://sentra:{secret}@127.0.0.1:{port}/postgres"),
            "connecting to PostgreSQL",
        ),
        (wrong_pw, "connecting to PostgreSQL"),
        (
            server.url_for("sentra_no_such_database"),
            "connecting to PostgreSQL",
        ),
        (
            format!("postgres://u:{secret}@[::1:5432/x"),
            "PostgreSQL URL",
        ),
    ];
    for (url, context) in cases {
        let err = Ingest::open_with(Backend::postgres(url.as_str()), config())
            .await
            .expect_err("opened a store that cannot work");
        let mut text = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            text.push_str(" / ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        eprintln!("open error: {text}");
        assert!(text.contains(context), "{text}");
        assert!(!text.contains(secret), "password in the error: {text}");
        assert!(!text.contains(&good), "URL in the error: {text}");
        assert!(
            !format!("{err:?}").contains(secret),
            "password in Debug: {err:?}"
        );
    }
    let b = Backend::postgres(format!("postgres://u:{secret}@h/db"));
    assert!(!format!("{b:?}").contains(secret));
}
