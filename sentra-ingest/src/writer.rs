//! The single writer task: group commit, replay check, durable high-water marks.

use std::{
    collections::{BTreeMap, HashMap, hash_map::Entry},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use sentra_core::{AgentId, Labels, MetricName, Seq, UnixMillis, Value};
use sqlx::{
    ConnectOptions as _, Connection as _, Row as _, SqliteConnection,
    query::Query,
    sqlite::{Sqlite, SqliteArguments, SqliteConnectOptions, SqliteRow},
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::{
    Config, Error, Result, StoredBatch,
    health::{IngestHealth, StorageHealth},
    maintenance::{MaintenanceWrite, apply_maintenance},
    model::{Prepared, Stored},
    status::StatusCache,
};

/// First retry delay after a failed write while nothing else triggers a retry.
const RETRY_MIN: Duration = Duration::from_millis(100);
/// Longest retry delay.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Largest multi-row `INSERT` (rows); 8192 × 3 parameters stays below SQLite's 32 766.
const MAX_CHUNK: usize = 8192;

/// What happened to one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Stored; `gap_from` is the first skipped seq when this seq jumped over missing ones.
    Accepted {
        high_water: u64,
        gap_from: Option<u64>,
    },
    /// Already stored (`conflict`: from a different envelope).
    Duplicate { conflict: bool },
    /// Refused: too far ahead of the high-water mark (`ahead`) or below it and never stored.
    Rejected {
        ahead: bool,
        high_water: u64,
        limit: u64,
    },
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T>>;

pub(crate) enum Request {
    Batch(Prepared, Reply<Outcome>),
    Maintenance(MaintenanceWrite, Reply<()>),
    DeleteAgent(AgentId, Reply<bool>),
    /// Forget an agent's high-water mark and stored-seq record; replies the old high water.
    ResetSequence(AgentId, Reply<Option<Seq>>),
    /// Apply every staged batch now.
    Flush(Reply<()>),
    /// Stop accepting requests; those already queued are still processed.
    Shutdown,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Ledger {
    pub(crate) accepted: u64,
    pub(crate) gaps: u64,
    pub(crate) missing: u64,
    pub(crate) rejected_stale: u64,
    pub(crate) rejected_ahead: u64,
}

#[derive(Clone, Debug, Default)]
struct AgentMark {
    /// Highest seq stored; 0: none (seqs start at 1).
    high_water: u64,
    /// Every seq ever stored (since the last sequence reset), as inclusive ranges lo → hi.
    stored: BTreeMap<u64, u64>,
    ledger: Ledger,
    /// Every seq at or below this counts as delivered (it only moves up, so a smaller
    /// window after a restart cannot re-open seqs whose records were pruned).
    floor: u64,
    /// Accepted seqs above `floor`, with fingerprints.
    seen: BTreeMap<u64, [u8; 32]>,
    last_seen: i64,
}

impl AgentMark {
    fn is_stored(&self, seq: u64) -> bool {
        self.stored
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, hi)| *hi >= seq)
    }

    /// Records `seq` (not yet stored) in the ranges, merging neighbours.
    fn insert_stored(&mut self, seq: u64) {
        let below = self
            .stored
            .range(..seq)
            .next_back()
            .filter(|(_, hi)| hi.checked_add(1) == Some(seq))
            .map(|(lo, _)| *lo);
        let above = seq
            .checked_add(1)
            .and_then(|n| self.stored.get(&n).map(|hi| (n, *hi)));
        let lo = below.unwrap_or(seq);
        let hi = match above {
            Some((n, hi)) => {
                self.stored.remove(&n);
                hi
            }
            None => seq,
        };
        self.stored.insert(lo, hi);
    }
}

/// Series ids by agent, name and labels; lookups borrow, only a miss allocates.
#[derive(Debug, Default)]
pub(crate) struct SeriesMap {
    map: HashMap<AgentId, HashMap<MetricName, HashMap<Labels, i64>>>,
    next_id: i64,
}

pub(crate) struct NewSeries {
    id: i64,
    agent: AgentId,
    name: MetricName,
    labels: Labels,
    kind: i64,
}

impl SeriesMap {
    fn resolve(
        &mut self,
        agent: &AgentId,
        name: &MetricName,
        labels: &Labels,
        kind: i64,
        created: &mut Vec<NewSeries>,
    ) -> i64 {
        let by_name = match self.map.get_mut(agent) {
            Some(m) => m,
            None => self.map.entry(agent.clone()).or_default(),
        };
        let by_labels = match by_name.get_mut(name) {
            Some(m) => m,
            None => by_name.entry(name.clone()).or_default(),
        };
        if let Some(id) = by_labels.get(labels) {
            return *id;
        }
        let id = self.next_id;
        self.next_id += 1;
        by_labels.insert(labels.clone(), id);
        created.push(NewSeries {
            id,
            agent: agent.clone(),
            name: name.clone(),
            labels: labels.clone(),
            kind,
        });
        id
    }

    fn forget(&mut self, s: &NewSeries) {
        if let Some(by_labels) = self
            .map
            .get_mut(&s.agent)
            .and_then(|by_name| by_name.get_mut(&s.name))
        {
            by_labels.remove(&s.labels);
        }
    }
}

/// Series written since the last rollup pass: series id → earliest timestamp written.
pub(crate) type Dirty = Arc<Mutex<HashMap<i64, i64>>>;

pub(crate) struct Writer {
    /// The write connection; `None` after a failed write (it is reopened on the next one:
    /// a connection whose transaction failed half-way is never trusted again).
    conn: Option<SqliteConnection>,
    opts: SqliteConnectOptions,
    health: watch::Sender<IngestHealth>,
    /// When to retry a failed write if nothing else does (`None`: storage is healthy).
    retry_at: Option<Instant>,
    retry_delay: Duration,
    max_seq_jump: u64,
    max_future_skew_ms: i64,
    pub(crate) rx: mpsc::Receiver<Request>,
    pub(crate) series: SeriesMap,
    marks: HashMap<AgentId, AgentMark>,
    pub(crate) window: u64,
    pub(crate) max_group: usize,
    pub(crate) status: StatusCache,
    pub(crate) events: broadcast::Sender<Arc<StoredBatch>>,
    pub(crate) dirty: Dirty,
    sqls: Sqls,
    /// Acked batches staged in `pending`, not yet in `samples`.
    unapplied: Vec<Prepared>,
    unapplied_rows: usize,
    unapplied_since: Option<Instant>,
    next_pending_id: i64,
    apply_delay: Duration,
    apply_samples: usize,
}

struct Sqls {
    samples: Vec<String>,
    series: Vec<String>,
}

fn values_sql(head: &str, cols: usize, rows: usize, tail: &str) -> String {
    let one = format!("({})", vec!["?"; cols].join(","));
    let mut s = String::with_capacity(head.len() + rows * (one.len() + 1) + tail.len());
    s.push_str(head);
    for i in 0..rows {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&one);
    }
    s.push_str(tail);
    s
}

/// Splits `total` rows into chunks whose sizes are powers of two at most [`MAX_CHUNK`], so a
/// handful of prepared statements (cached per connection) cover every size.
fn chunks(total: usize, max: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    let mut start = 0;
    std::iter::from_fn(move || {
        let left = total - start;
        if left == 0 {
            return None;
        }
        let n = left.min(max);
        let pow = usize::BITS - 1 - n.leading_zeros();
        let len = 1usize << pow;
        let s = start;
        start += len;
        Some((s, len, pow as usize))
    })
}

fn sql_by_pow(head: &str, cols: usize, max: usize, tail: &str) -> Vec<String> {
    let mut v = Vec::new();
    let mut n = 1;
    while n <= max {
        v.push(values_sql(head, cols, n, tail));
        n *= 2;
    }
    v
}

type Q<'q> = Query<'q, Sqlite, SqliteArguments<'q>>;

#[allow(clippy::cast_possible_wrap)]
fn bind_value(q: Q<'_>, v: Stored) -> Q<'_> {
    match v {
        Stored::Gauge(g) => q.bind(g),
        Stored::Counter(c) => q.bind(c as i64),
    }
}

/// Everything one group commit writes.
struct Plan {
    /// Staged batches: pending id, agent, seq, fingerprint, received, payload.
    staged: Vec<(i64, AgentId, u64, [u8; 32], i64, bytes::Bytes)>,
    agents: Vec<AgentRow>,
    /// Stored-seq ranges removed (agent, lo) and written (agent, lo, hi).
    ranges_removed: Vec<(AgentId, u64)>,
    ranges_written: Vec<(AgentId, u64, u64)>,
    accepted: Vec<(AgentId, u64, [u8; 32])>,
    wg: Vec<(AgentId, u64, i64, Vec<u8>)>,
}

/// What one apply transaction writes.
struct ApplyPlan {
    rows: Vec<(i64, i64, Stored)>,
    new_series: Vec<NewSeries>,
    /// Staged rows with ids up to this are deleted.
    up_to: i64,
}

async fn write_apply(
    conn: &mut SqliteConnection,
    sqls: &Sqls,
    plan: &ApplyPlan,
) -> sqlx::Result<()> {
    let mut tx = conn.begin().await?;
    for (start, len, pow) in chunks(plan.new_series.len(), 1024) {
        let mut q = sqlx::query(&sqls.series[pow]);
        for s in &plan.new_series[start..start + len] {
            q = q
                .bind(s.id)
                .bind(s.agent.as_str())
                .bind(s.name.as_str())
                .bind(crate::model::labels_json(&s.labels))
                .bind(s.kind);
        }
        q.execute(&mut *tx).await?;
    }
    for (start, len, pow) in chunks(plan.rows.len(), MAX_CHUNK) {
        let mut q = sqlx::query(&sqls.samples[pow]);
        for &(id, ts, v) in &plan.rows[start..start + len] {
            q = bind_value(q.bind(id).bind(ts), v);
        }
        q.execute(&mut *tx).await?;
    }
    sqlx::query("DELETE FROM pending WHERE id <= ?")
        .bind(plan.up_to)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

struct AgentRow {
    agent: AgentId,
    high_water: u64,
    last_seen: i64,
    floor: u64,
    ledger: Ledger,
}

#[allow(clippy::cast_possible_wrap)]
async fn write_plan(conn: &mut SqliteConnection, plan: &Plan) -> sqlx::Result<()> {
    let mut tx = conn.begin().await?;
    for (id, agent, seq, fp, received, payload) in &plan.staged {
        sqlx::query(
            "INSERT INTO pending (id, agent_id, seq, fingerprint, received_ms, payload) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(*id)
        .bind(agent.as_str())
        .bind(*seq as i64)
        .bind(&fp[..])
        .bind(*received)
        .bind(&payload[..])
        .execute(&mut *tx)
        .await?;
    }
    for row in &plan.agents {
        let l = &row.ledger;
        sqlx::query(
            "INSERT INTO agents (agent_id, high_water, floor, last_seen_ms, accepted, gaps, \
             missing, rejected_stale, rejected_ahead) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (agent_id) DO UPDATE SET high_water = excluded.high_water, \
             floor = excluded.floor, last_seen_ms = excluded.last_seen_ms, \
             accepted = excluded.accepted, gaps = excluded.gaps, missing = excluded.missing, \
             rejected_stale = excluded.rejected_stale, rejected_ahead = excluded.rejected_ahead",
        )
        .bind(row.agent.as_str())
        .bind(row.high_water as i64)
        .bind(row.floor as i64)
        .bind(row.last_seen)
        .bind(l.accepted as i64)
        .bind(l.gaps as i64)
        .bind(l.missing as i64)
        .bind(l.rejected_stale as i64)
        .bind(l.rejected_ahead as i64)
        .execute(&mut *tx)
        .await?;
        if row.floor > 0 {
            sqlx::query("DELETE FROM accepted WHERE agent_id = ? AND seq <= ?")
                .bind(row.agent.as_str())
                .bind(row.floor as i64)
                .execute(&mut *tx)
                .await?;
        }
    }
    for (agent, lo) in &plan.ranges_removed {
        sqlx::query("DELETE FROM seq_ranges WHERE agent_id = ? AND lo = ?")
            .bind(agent.as_str())
            .bind(*lo as i64)
            .execute(&mut *tx)
            .await?;
    }
    for (agent, lo, hi) in &plan.ranges_written {
        sqlx::query("INSERT OR REPLACE INTO seq_ranges (agent_id, lo, hi) VALUES (?, ?, ?)")
            .bind(agent.as_str())
            .bind(*lo as i64)
            .bind(*hi as i64)
            .execute(&mut *tx)
            .await?;
    }
    for (agent, seq, fp) in &plan.accepted {
        sqlx::query("INSERT OR IGNORE INTO accepted (agent_id, seq, fingerprint) VALUES (?, ?, ?)")
            .bind(agent.as_str())
            .bind(*seq as i64)
            .bind(&fp[..])
            .execute(&mut *tx)
            .await?;
    }
    for (agent, seq, created, blob) in &plan.wg {
        sqlx::query(
            "INSERT INTO wg_status (agent_id, seq, created_ms, devices) VALUES (?, ?, ?, ?) \
             ON CONFLICT (agent_id) DO UPDATE SET seq = excluded.seq, \
             created_ms = excluded.created_ms, devices = excluded.devices \
             WHERE excluded.created_ms >= wg_status.created_ms",
        )
        .bind(agent.as_str())
        .bind(*seq as i64)
        .bind(*created)
        .bind(&blob[..])
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

async fn open_conn<'c>(
    conn: &'c mut Option<SqliteConnection>,
    opts: &SqliteConnectOptions,
) -> sqlx::Result<&'c mut SqliteConnection> {
    if conn.is_none() {
        let c = opts.connect().await?;
        tracing::info!("write connection reopened");
        *conn = Some(c);
    }
    conn.as_mut().ok_or(sqlx::Error::PoolClosed)
}

impl Writer {
    pub(crate) fn new(
        conn: SqliteConnection,
        opts: SqliteConnectOptions,
        rx: mpsc::Receiver<Request>,
        status: StatusCache,
        events: broadcast::Sender<Arc<StoredBatch>>,
        health: watch::Sender<IngestHealth>,
        config: &Config,
    ) -> Self {
        Self {
            conn: Some(conn),
            opts,
            health,
            retry_at: None,
            retry_delay: RETRY_MIN,
            max_seq_jump: config.max_seq_jump,
            max_future_skew_ms: crate::config::millis(config.max_future_skew),
            rx,
            series: SeriesMap::default(),
            marks: HashMap::new(),
            window: config.replay_window.max(1),
            max_group: config.max_group_samples.max(1),
            unapplied: Vec::new(),
            unapplied_rows: 0,
            unapplied_since: None,
            next_pending_id: 1,
            apply_delay: config.apply_delay,
            apply_samples: config.apply_samples.max(1),
            status,
            events,
            dirty: Dirty::default(),
            sqls: Sqls {
                samples: sql_by_pow(
                    "INSERT INTO samples (series_id, ts, v) VALUES ",
                    3,
                    MAX_CHUNK,
                    " ON CONFLICT DO NOTHING",
                ),
                series: sql_by_pow(
                    "INSERT INTO series (id, agent, name, labels, kind) VALUES ",
                    5,
                    1024,
                    "",
                ),
            },
        }
    }

    /// Loads high-water marks, windows, series ids and the status cache from the database.
    #[allow(clippy::cast_sign_loss)]
    pub(crate) async fn load(&mut self) -> Result<()> {
        let rows = self
            .fetch_all(
                "SELECT agent_id, high_water, floor, last_seen_ms, accepted, gaps, missing, \
                 rejected_stale, rejected_ahead FROM agents",
                "loading high-water marks",
            )
            .await?;
        for r in rows {
            let Ok(agent) = AgentId::new(r.get::<String, _>(0)) else {
                continue;
            };
            self.marks.insert(
                agent,
                AgentMark {
                    high_water: r.get::<i64, _>(1) as u64,
                    floor: r.get::<i64, _>(2) as u64,
                    seen: BTreeMap::new(),
                    last_seen: r.get(3),
                    stored: BTreeMap::new(),
                    ledger: Ledger {
                        accepted: r.get::<i64, _>(4) as u64,
                        gaps: r.get::<i64, _>(5) as u64,
                        missing: r.get::<i64, _>(6) as u64,
                        rejected_stale: r.get::<i64, _>(7) as u64,
                        rejected_ahead: r.get::<i64, _>(8) as u64,
                    },
                },
            );
        }
        let rows = self
            .fetch_all(
                "SELECT agent_id, lo, hi FROM seq_ranges",
                "loading stored sequence ranges",
            )
            .await?;
        for r in rows {
            let Ok(agent) = AgentId::new(r.get::<String, _>(0)) else {
                continue;
            };
            if let Some(m) = self.marks.get_mut(&agent) {
                m.stored
                    .insert(r.get::<i64, _>(1) as u64, r.get::<i64, _>(2) as u64);
            }
        }
        let rows = self
            .fetch_all(
                "SELECT agent_id, seq, fingerprint FROM accepted",
                "loading the replay window",
            )
            .await?;
        for r in rows {
            let Ok(agent) = AgentId::new(r.get::<String, _>(0)) else {
                continue;
            };
            let fp: Vec<u8> = r.get(2);
            if let (Some(m), Ok(fp)) = (self.marks.get_mut(&agent), <[u8; 32]>::try_from(fp)) {
                m.seen.insert(r.get::<i64, _>(1) as u64, fp);
            }
        }
        let rows = self
            .fetch_all(
                "SELECT id, agent, name, labels FROM series",
                "loading series",
            )
            .await?;
        let mut max_id = 0;
        for r in rows {
            let id: i64 = r.get(0);
            max_id = max_id.max(id);
            let (Ok(agent), Ok(name)) = (
                AgentId::new(r.get::<String, _>(1)),
                MetricName::new(r.get::<String, _>(2)),
            ) else {
                continue;
            };
            let Ok(labels) = Labels::from_pairs(crate::model::parse_labels_json(r.get(3))) else {
                continue;
            };
            self.series
                .map
                .entry(agent)
                .or_default()
                .entry(name)
                .or_default()
                .insert(labels, id);
        }
        self.series.next_id = max_id + 1;
        let rows = self
            .fetch_all(
                "SELECT agent_id, devices FROM wg_status",
                "loading WireGuard status",
            )
            .await?;
        let mut wg = HashMap::new();
        for r in rows {
            if let (Ok(agent), Some(b)) = (
                AgentId::new(r.get::<String, _>(0)),
                crate::model::decode_devices(r.get(1)),
            ) {
                wg.insert(agent, b);
            }
        }
        for (agent, m) in &self.marks {
            self.status
                .restore(agent, m.last_seen, m.high_water, wg.get(agent));
        }
        // Batches acked but not applied before a crash or kill.
        let rows = self
            .fetch_all(
                "SELECT id, fingerprint, received_ms, payload FROM pending ORDER BY id",
                "loading staged batches",
            )
            .await?;
        let max_future_skew_ms = self.max_future_skew_ms;
        for r in rows {
            let id: i64 = r.get(0);
            self.next_pending_id = self.next_pending_id.max(id + 1);
            let fp: Vec<u8> = r.get(1);
            let payload = bytes::Bytes::from(r.get::<Vec<u8>, _>(3));
            let prepared = sentra_core::Batch::decode(&payload)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    crate::model::prepare(
                        b,
                        <[u8; 32]>::try_from(fp).unwrap_or([0; 32]),
                        sentra_core::UnixMillis::from_millis(r.get(2)),
                        payload,
                        max_future_skew_ms,
                    )
                });
            match prepared {
                Ok(p) => self.stage(p),
                // It was validated before it was acked; only a corrupted file gets here.
                Err(e) => {
                    tracing::error!(pending_id = id, error = %e, "staged batch unreadable; skipped")
                }
            }
        }
        if !self.unapplied.is_empty() {
            tracing::info!(
                batches = self.unapplied.len(),
                "applying batches staged before restart"
            );
            self.apply().await?;
        }
        Ok(())
    }

    fn stage(&mut self, p: Prepared) {
        self.unapplied_rows += p.row_count();
        self.unapplied_since.get_or_insert_with(Instant::now);
        self.unapplied.push(p);
    }

    /// Moves every staged batch into `samples` (and new series into `series`) and deletes
    /// them from `pending`, in one transaction.
    async fn apply(&mut self) -> Result<()> {
        if self.unapplied.is_empty() {
            return Ok(());
        }
        let next_id_before = self.series.next_id;
        let mut plan = ApplyPlan {
            rows: Vec::with_capacity(self.unapplied_rows),
            new_series: Vec::new(),
            up_to: self.next_pending_id - 1,
        };
        for p in &self.unapplied {
            let agent = p.agent();
            for s in &p.batch.samples {
                let v = match &s.value {
                    Value::Gauge(g) => Stored::Gauge(*g),
                    Value::Counter(c) => Stored::Counter(*c),
                    _ => continue, // histograms were flattened into `extra`
                };
                let id =
                    self.series
                        .resolve(agent, &s.name, &s.labels, v.kind(), &mut plan.new_series);
                plan.rows.push((id, s.timestamp.as_millis(), v));
            }
            for e in &p.extra {
                let id = self.series.resolve(
                    agent,
                    &e.name,
                    &e.labels,
                    e.value.kind(),
                    &mut plan.new_series,
                );
                plan.rows.push((id, e.ts, e.value));
            }
        }
        plan.rows.sort_unstable_by_key(|r| (r.0, r.1));
        let result = match open_conn(&mut self.conn, &self.opts).await {
            Ok(conn) => write_apply(conn, &self.sqls, &plan).await,
            Err(e) => Err(e),
        };
        if result.is_err() {
            for s in &plan.new_series {
                self.series.forget(s);
            }
            self.series.next_id = next_id_before;
        }
        self.storage_outcome("applying staged batches", "applying staged batches", result)?;
        self.after_commit(&plan.rows);
        self.unapplied.clear();
        self.unapplied_rows = 0;
        self.unapplied_since = None;
        Ok(())
    }

    /// The write connection, reopened if a failure dropped it.
    async fn connection(&mut self) -> sqlx::Result<&mut SqliteConnection> {
        open_conn(&mut self.conn, &self.opts).await
    }

    /// Runs a read on the write connection (reopened if needed): `context` names the read.
    async fn fetch_all(
        &mut self,
        sql: &'static str,
        context: &'static str,
    ) -> Result<Vec<SqliteRow>> {
        let conn = self
            .connection()
            .await
            .map_err(Error::storage("reopening the database"))?;
        sqlx::query(sql)
            .fetch_all(conn)
            .await
            .map_err(Error::storage(context))
    }

    /// Records the outcome of a write transaction in the storage health (see
    /// [`storage_failed`](Self::storage_failed) and [`storage_ok`](Self::storage_ok)); a
    /// failure becomes an [`Error::Storage`] with `context`, and is logged as `what`.
    fn storage_outcome(
        &mut self,
        what: &'static str,
        context: &'static str,
        result: sqlx::Result<()>,
    ) -> Result<()> {
        match result {
            Ok(()) => {
                self.storage_ok();
                Ok(())
            }
            Err(e) => {
                self.storage_failed(what, &e);
                Err(Error::Storage {
                    context,
                    source: Box::new(e),
                })
            }
        }
    }

    /// A write transaction failed: nothing of it is stored. The connection is dropped (its
    /// transaction state cannot be trusted: after `SQLITE_FULL` SQLite may have rolled
    /// back on its own, and a connection that still believes it is inside a transaction
    /// turns every later "commit" into a savepoint release that never reaches the disk),
    /// the health turns `Failing` and a retry is scheduled.
    fn storage_failed(&mut self, what: &'static str, e: &sqlx::Error) {
        drop(self.conn.take());
        let error = e.to_string();
        let now = UnixMillis::now();
        let mut first = false;
        self.health.send_modify(|h| {
            h.storage = match &h.storage {
                StorageHealth::Failing {
                    since,
                    failed_commits,
                    ..
                } => StorageHealth::Failing {
                    error: error.clone(),
                    since: *since,
                    failed_commits: failed_commits + 1,
                },
                StorageHealth::Ok => {
                    first = true;
                    StorageHealth::Failing {
                        error: error.clone(),
                        since: now,
                        failed_commits: 1,
                    }
                }
            };
        });
        if first {
            tracing::error!(%error, while_ = what,
                "storage write failed; nothing is acknowledged until writes work again (retrying)");
        } else {
            tracing::debug!(%error, while_ = what, "storage write failed again");
        }
        self.retry_at = Some(Instant::now() + self.retry_delay);
        self.retry_delay = (self.retry_delay * 2).min(RETRY_MAX);
    }

    /// A write transaction committed.
    fn storage_ok(&mut self) {
        if self.retry_at.take().is_some() {
            self.retry_delay = RETRY_MIN;
            let mut was = None;
            self.health.send_modify(|h| {
                was = Some(std::mem::replace(&mut h.storage, StorageHealth::Ok));
            });
            if let Some(StorageHealth::Failing {
                since,
                failed_commits,
                ..
            }) = was
            {
                tracing::warn!(
                    failed_commits,
                    failing_for_ms = UnixMillis::now().as_millis() - since.as_millis(),
                    "storage writes work again"
                );
            }
        }
    }

    /// Retries storage after a failure: applies staged batches, or writes a probe row.
    async fn retry_storage(&mut self) {
        if !self.unapplied.is_empty() {
            let _ = self.apply().await;
            return;
        }
        let result: sqlx::Result<()> = async {
            let conn = self.connection().await?;
            let mut tx = conn.begin().await?;
            sqlx::query("INSERT OR REPLACE INTO meta (key, value) VALUES ('storage_probe_ms', ?)")
                .bind(UnixMillis::now().as_millis())
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        }
        .await;
        // The probe has no caller to answer: only the storage health records its outcome.
        let _ = self.storage_outcome("probing storage", "probing storage", result);
    }

    pub(crate) async fn run(mut self) {
        let mut pending: Option<Request> = None;
        loop {
            let req = match pending.take() {
                Some(r) => r,
                None => {
                    let apply_at = self.unapplied_since.map(|t| t + self.apply_delay);
                    let deadline = match (apply_at, self.retry_at) {
                        (Some(a), Some(r)) => Some(a.min(r)),
                        (a, r) => a.or(r),
                    };
                    let next = match deadline {
                        Some(d) => match tokio::time::timeout_at(d.into(), self.rx.recv()).await {
                            Ok(r) => r,
                            Err(_) => {
                                if self.retry_at.is_some_and(|r| r <= Instant::now()) {
                                    self.retry_storage().await;
                                } else if self.apply().await.is_err() {
                                    // staged long enough: apply (errors are logged and retried)
                                    self.unapplied_since = Some(Instant::now());
                                }
                                continue;
                            }
                        },
                        None => self.rx.recv().await,
                    };
                    match next {
                        Some(r) => r,
                        None => break,
                    }
                }
            };
            match req {
                Request::Batch(p, reply) => {
                    let mut rows = p.row_count();
                    let mut group = vec![(p, reply)];
                    while rows < self.max_group {
                        match self.rx.try_recv() {
                            Ok(Request::Batch(p, reply)) => {
                                rows += p.row_count();
                                group.push((p, reply));
                            }
                            Ok(other) => {
                                pending = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.commit_group(group).await;
                    if self.unapplied_rows >= self.apply_samples && self.apply().await.is_err() {
                        self.unapplied_since = Some(Instant::now());
                    }
                }
                Request::Maintenance(job, reply) => {
                    let r = match self.apply().await {
                        Ok(()) => self.maintenance(&job).await,
                        Err(e) => Err(e),
                    };
                    let _ = reply.send(r);
                }
                Request::DeleteAgent(agent, reply) => {
                    let r = match self.apply().await {
                        Ok(()) => self.delete_agent(&agent).await,
                        Err(e) => Err(e),
                    };
                    let _ = reply.send(r);
                }
                Request::ResetSequence(agent, reply) => {
                    let _ = reply.send(self.reset_sequence(&agent).await);
                }
                Request::Flush(reply) => {
                    let _ = reply.send(self.apply().await);
                }
                Request::Shutdown => self.rx.close(),
            }
        }
        if let Err(e) = self.apply().await {
            tracing::warn!(error = %e, "staged batches stay staged; they are applied on the next start");
        }
        if let Some(conn) = self.conn.take()
            && let Err(e) = conn.close().await
        {
            tracing::warn!(error = %e, "closing the write connection failed");
        }
        tracing::debug!("ingest writer stopped");
    }

    async fn maintenance(&mut self, job: &MaintenanceWrite) -> Result<()> {
        let result = match self.connection().await {
            Ok(conn) => apply_maintenance(conn, job).await,
            Err(e) => Err(e),
        };
        self.storage_outcome(
            "writing rollups",
            "writing rollups and applying retention",
            result,
        )
    }

    #[allow(clippy::cast_sign_loss)]
    fn decide(&mut self, p: &Prepared) -> Outcome {
        let window = self.window;
        let max_jump = self.max_seq_jump;
        let mark = self.marks.entry(p.agent().clone()).or_default();
        let received = p.received.as_millis();
        mark.last_seen = mark.last_seen.max(received);
        let seq = p.seq().get();
        if mark.is_stored(seq) {
            return Outcome::Duplicate {
                conflict: mark.seen.get(&seq).is_some_and(|fp| *fp != p.fingerprint),
            };
        }
        let mut gap_from = None;
        if seq > mark.high_water {
            // Legitimate seqs are `seq_base + LSN`, `seq_base ≤ max(clock_ms × 1000,
            // previous base + 2⁴⁰)`: see `Config::max_seq_jump`.
            let clock = (received.max(0) as u64).saturating_mul(1000);
            let limit = mark.high_water.max(clock).saturating_add(max_jump);
            if seq > limit {
                mark.ledger.rejected_ahead += 1;
                return Outcome::Rejected {
                    ahead: true,
                    high_water: mark.high_water,
                    limit,
                };
            }
            if mark.high_water > 0 && seq > mark.high_water + 1 {
                gap_from = Some(mark.high_water + 1);
                mark.ledger.gaps += 1;
                mark.ledger.missing += seq - mark.high_water - 1;
            }
        } else if seq <= mark.floor {
            mark.ledger.rejected_stale += 1;
            return Outcome::Rejected {
                ahead: false,
                high_water: mark.high_water,
                limit: mark.floor,
            };
        } else {
            // a seq overtaken by a later one (pipelined pushes) arrives within the window
            mark.ledger.missing = mark.ledger.missing.saturating_sub(1);
        }
        mark.ledger.accepted += 1;
        mark.insert_stored(seq);
        mark.high_water = mark.high_water.max(seq);
        mark.seen.insert(seq, p.fingerprint);
        mark.floor = mark.floor.max(mark.high_water.saturating_sub(window));
        let floor = mark.floor;
        while mark
            .seen
            .first_key_value()
            .is_some_and(|(s, _)| *s <= floor)
        {
            mark.seen.pop_first();
        }
        Outcome::Accepted {
            high_water: mark.high_water,
            gap_from,
        }
    }

    async fn commit_group(&mut self, mut group: Vec<(Prepared, Reply<Outcome>)>) {
        group.sort_by(|a, b| (a.0.agent(), a.0.seq()).cmp(&(b.0.agent(), b.0.seq())));
        let mut undo: HashMap<AgentId, Option<AgentMark>> = HashMap::new();
        for (p, _) in &group {
            if let Entry::Vacant(v) = undo.entry(p.agent().clone()) {
                v.insert(self.marks.get(p.agent()).cloned());
            }
        }
        let pending_before = self.next_pending_id;
        let mut plan = Plan {
            staged: Vec::new(),
            agents: Vec::new(),
            ranges_removed: Vec::new(),
            ranges_written: Vec::new(),
            accepted: Vec::new(),
            wg: Vec::new(),
        };
        let mut outcomes = Vec::with_capacity(group.len());
        for (p, _) in &group {
            let outcome = self.decide(p);
            outcomes.push(outcome);
            if !matches!(outcome, Outcome::Accepted { .. }) {
                continue;
            }
            let agent = p.agent();
            let id = self.next_pending_id;
            self.next_pending_id += 1;
            plan.staged.push((
                id,
                agent.clone(),
                p.seq().get(),
                p.fingerprint,
                p.received.as_millis(),
                p.payload.clone(),
            ));
            plan.accepted
                .push((agent.clone(), p.seq().get(), p.fingerprint));
            if let Some(blob) = &p.wg_blob {
                plan.wg.push((
                    agent.clone(),
                    p.seq().get(),
                    p.batch.created.as_millis(),
                    blob.clone(),
                ));
            }
        }
        for (agent, before) in &undo {
            let m = &self.marks[agent];
            plan.agents.push(AgentRow {
                agent: agent.clone(),
                high_water: m.high_water,
                last_seen: m.last_seen,
                floor: m.floor,
                ledger: m.ledger.clone(),
            });
            let empty = BTreeMap::new();
            let old = before.as_ref().map_or(&empty, |b| &b.stored);
            for lo in old.keys() {
                if !m.stored.contains_key(lo) {
                    plan.ranges_removed.push((agent.clone(), *lo));
                }
            }
            for (lo, hi) in &m.stored {
                if old.get(lo) != Some(hi) {
                    plan.ranges_written.push((agent.clone(), *lo, *hi));
                }
            }
        }

        let result = match self.connection().await {
            Ok(conn) => write_plan(conn, &plan).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                self.storage_ok();
                for ((p, reply), outcome) in group.into_iter().zip(outcomes) {
                    let hw = self.marks.get(p.agent()).map_or(0, |m| m.high_water);
                    self.status.touch(p.agent(), p.received, hw);
                    if let Outcome::Accepted { gap_from, .. } = outcome {
                        if let Some(expected) = gap_from {
                            tracing::warn!(agent_id = %p.agent(), expected, received = p.seq().get(),
                                missing = p.seq().get() - expected,
                                "sequence gap accepted: seqs between were never received (lost on the agent, or by the server)");
                        }
                        self.status.apply_wg(&p.batch);
                        let _ = self.events.send(Arc::new(StoredBatch {
                            agent_id: p.agent().clone(),
                            seq: p.seq(),
                            received: p.received,
                            batch: Arc::clone(&p.batch),
                        }));
                    }
                    let _ = reply.send(Ok(outcome));
                    if let Outcome::Accepted { .. } = outcome {
                        self.stage(p);
                    }
                }
            }
            Err(e) => {
                self.storage_failed("committing a batch group", &e);
                tracing::warn!(error = %e, batches = group.len(), "group commit failed; nothing stored, nothing acknowledged");
                for (agent, before) in undo {
                    match before {
                        Some(m) => {
                            self.marks.insert(agent, m);
                        }
                        None => {
                            self.marks.remove(&agent);
                        }
                    }
                }
                self.next_pending_id = pending_before;
                let msg = e.to_string();
                for (_, reply) in group {
                    let _ = reply.send(Err(Error::Storage {
                        context: "committing a batch group",
                        source: msg.clone().into(),
                    }));
                }
            }
        }
    }

    fn after_commit(&self, rows: &[(i64, i64, Stored)]) {
        let mut dirty = self.dirty.lock().unwrap_or_else(PoisonError::into_inner);
        let mut last = None;
        for &(id, ts, _) in rows {
            // rows are sorted by (series, ts): the first row of each run is its minimum
            if last != Some(id) {
                last = Some(id);
                dirty
                    .entry(id)
                    .and_modify(|t| *t = (*t).min(ts))
                    .or_insert(ts);
            }
        }
    }

    /// Forgets `agent`'s high-water mark, replay window and stored-seq record (its ledger
    /// counters stay), so the next seq it sends is accepted.
    async fn reset_sequence(&mut self, agent: &AgentId) -> Result<Option<Seq>> {
        let result: sqlx::Result<()> = async {
            let mut tx = self.connection().await?.begin().await?;
            sqlx::query(
                "UPDATE agents SET high_water = 0, floor = 0, missing = 0 WHERE agent_id = ?",
            )
            .bind(agent.as_str())
            .execute(&mut *tx)
            .await?;
            for table in ["accepted", "seq_ranges"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE agent_id = ?"))
                    .bind(agent.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        }
        .await;
        self.storage_outcome(
            "resetting a sequence",
            "resetting an agent's sequence",
            result,
        )?;
        let Some(mark) = self.marks.get_mut(agent) else {
            return Ok(None);
        };
        let previous = mark.high_water;
        mark.high_water = 0;
        mark.floor = 0;
        mark.ledger.missing = 0;
        mark.seen.clear();
        mark.stored.clear();
        tracing::warn!(agent_id = %agent, previous_high_water = previous,
            "agent sequence reset: its next seq is accepted whatever it is");
        Ok(Seq::new(previous).ok())
    }

    async fn delete_agent(&mut self, agent: &AgentId) -> Result<bool> {
        let existed = self.marks.contains_key(agent) || self.series.map.contains_key(agent);
        let result: sqlx::Result<()> = async {
            let mut tx = self.connection().await?.begin().await?;
            for table in ["samples", "rollup_1m", "rollup_1h"] {
                sqlx::query(&format!(
                    "DELETE FROM {table} WHERE series_id IN (SELECT id FROM series WHERE agent = ?)"
                ))
                .bind(agent.as_str())
                .execute(&mut *tx)
                .await?;
            }
            for (table, col) in [
                ("series", "agent"),
                ("accepted", "agent_id"),
                ("seq_ranges", "agent_id"),
                ("agents", "agent_id"),
                ("wg_status", "agent_id"),
            ] {
                sqlx::query(&format!("DELETE FROM {table} WHERE {col} = ?"))
                    .bind(agent.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        }
        .await;
        self.storage_outcome("deleting an agent", "deleting an agent", result)?;
        self.marks.remove(agent);
        if let Some(by_name) = self.series.map.remove(agent) {
            let mut dirty = self.dirty.lock().unwrap_or_else(PoisonError::into_inner);
            for id in by_name.values().flat_map(HashMap::values) {
                dirty.remove(id);
            }
        }
        self.status.remove(agent);
        Ok(existed)
    }
}

#[cfg(test)]
mod tests {
    use super::chunks;

    #[test]
    fn chunking_covers_everything_with_powers_of_two() {
        for total in [0, 1, 2, 3, 7, 8, 9, 100, 8192, 8193, 20_000] {
            let mut next = 0;
            for (start, len, pow) in chunks(total, 8192) {
                assert_eq!(start, next);
                assert_eq!(len, 1 << pow);
                assert!(len <= 8192);
                next += len;
            }
            assert_eq!(next, total);
        }
    }
}
