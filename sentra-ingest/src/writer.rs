//! The single writer task: group commit, replay check, durable high-water marks.

use std::{
    collections::{BTreeMap, HashMap, hash_map::Entry},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use sentra_core::{AgentId, Labels, MetricName, Value};
use sqlx::{
    Connection as _, Row as _, SqliteConnection,
    query::Query,
    sqlite::{Sqlite, SqliteArguments},
};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::{
    Config, Error, Result, StoredBatch,
    maintenance::{MaintenanceWrite, apply_maintenance},
    model::{Prepared, Stored},
    status::StatusCache,
};

/// Largest multi-row `INSERT` (rows); 8192 × 3 parameters stays below SQLite's 32 766.
const MAX_CHUNK: usize = 8192;

/// What happened to one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Accepted { high_water: u64 },
    Duplicate { conflict: bool },
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T>>;

pub(crate) enum Request {
    Batch(Prepared, Reply<Outcome>),
    Maintenance(MaintenanceWrite, Reply<()>),
    DeleteAgent(AgentId, Reply<bool>),
    /// Apply every staged batch now.
    Flush(Reply<()>),
    /// Stop accepting requests; those already queued are still processed.
    Shutdown,
}

#[derive(Clone, Debug, Default)]
struct AgentMark {
    high_water: u64,
    /// Every seq at or below this counts as delivered (it only moves up, so a smaller
    /// window after a restart cannot re-open seqs whose records were pruned).
    floor: u64,
    /// Accepted seqs above `floor`, with fingerprints.
    seen: BTreeMap<u64, [u8; 32]>,
    last_seen: i64,
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
    pub(crate) conn: SqliteConnection,
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
    agents: Vec<(AgentId, u64, i64, u64)>, // agent, high water, last seen, floor
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
    for (agent, hw, last_seen, prune) in &plan.agents {
        sqlx::query(
            "INSERT INTO agents (agent_id, high_water, floor, last_seen_ms) VALUES (?, ?, ?, ?) \
             ON CONFLICT (agent_id) DO UPDATE SET high_water = excluded.high_water, \
             floor = excluded.floor, last_seen_ms = excluded.last_seen_ms",
        )
        .bind(agent.as_str())
        .bind(*hw as i64)
        .bind(*prune as i64)
        .bind(*last_seen)
        .execute(&mut *tx)
        .await?;
        if *prune > 0 {
            sqlx::query("DELETE FROM accepted WHERE agent_id = ? AND seq <= ?")
                .bind(agent.as_str())
                .bind(*prune as i64)
                .execute(&mut *tx)
                .await?;
        }
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

impl Writer {
    pub(crate) fn new(
        conn: SqliteConnection,
        rx: mpsc::Receiver<Request>,
        status: StatusCache,
        events: broadcast::Sender<Arc<StoredBatch>>,
        config: &Config,
    ) -> Self {
        Self {
            conn,
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
        let rows = sqlx::query("SELECT agent_id, high_water, floor, last_seen_ms FROM agents")
            .fetch_all(&mut self.conn)
            .await
            .map_err(Error::storage("loading high-water marks"))?;
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
                },
            );
        }
        let rows = sqlx::query("SELECT agent_id, seq, fingerprint FROM accepted")
            .fetch_all(&mut self.conn)
            .await
            .map_err(Error::storage("loading the replay window"))?;
        for r in rows {
            let Ok(agent) = AgentId::new(r.get::<String, _>(0)) else {
                continue;
            };
            let fp: Vec<u8> = r.get(2);
            if let (Some(m), Ok(fp)) = (self.marks.get_mut(&agent), <[u8; 32]>::try_from(fp)) {
                m.seen.insert(r.get::<i64, _>(1) as u64, fp);
            }
        }
        let rows = sqlx::query("SELECT id, agent, name, labels FROM series")
            .fetch_all(&mut self.conn)
            .await
            .map_err(Error::storage("loading series"))?;
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
        let rows = sqlx::query("SELECT agent_id, devices FROM wg_status")
            .fetch_all(&mut self.conn)
            .await
            .map_err(Error::storage("loading WireGuard status"))?;
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
        let rows =
            sqlx::query("SELECT id, fingerprint, received_ms, payload FROM pending ORDER BY id")
                .fetch_all(&mut self.conn)
                .await
                .map_err(Error::storage("loading staged batches"))?;
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
        match write_apply(&mut self.conn, &self.sqls, &plan).await {
            Ok(()) => {
                self.after_commit(&plan.rows);
                self.unapplied.clear();
                self.unapplied_rows = 0;
                self.unapplied_since = None;
                Ok(())
            }
            Err(e) => {
                for s in &plan.new_series {
                    self.series.forget(s);
                }
                self.series.next_id = next_id_before;
                tracing::error!(error = %e, "applying staged batches failed; will retry");
                Err(Error::Storage {
                    context: "applying staged batches",
                    source: Box::new(e),
                })
            }
        }
    }

    pub(crate) async fn run(mut self) {
        let mut pending: Option<Request> = None;
        loop {
            let req = match pending.take() {
                Some(r) => r,
                None => {
                    let deadline = self.unapplied_since.map(|t| t + self.apply_delay);
                    let next = match deadline {
                        Some(d) => match tokio::time::timeout_at(d.into(), self.rx.recv()).await {
                            Ok(r) => r,
                            Err(_) => {
                                // staged long enough: apply (errors are logged and retried)
                                if self.apply().await.is_err() {
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
                        Ok(()) => apply_maintenance(&mut self.conn, &job).await,
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
                Request::Flush(reply) => {
                    let _ = reply.send(self.apply().await);
                }
                Request::Shutdown => self.rx.close(),
            }
        }
        if let Err(e) = self.apply().await {
            tracing::warn!(error = %e, "staged batches stay staged; they are applied on the next start");
        }
        if let Err(e) = self.conn.close().await {
            tracing::warn!(error = %e, "closing the write connection failed");
        }
        tracing::debug!("ingest writer stopped");
    }

    fn decide(&mut self, p: &Prepared) -> Outcome {
        let window = self.window;
        let mark = self.marks.entry(p.agent().clone()).or_default();
        mark.last_seen = mark.last_seen.max(p.received.as_millis());
        let seq = p.seq().get();
        if seq <= mark.floor {
            return Outcome::Duplicate { conflict: false };
        }
        if let Some(fp) = mark.seen.get(&seq) {
            return Outcome::Duplicate {
                conflict: *fp != p.fingerprint,
            };
        }
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
        for agent in undo.keys() {
            let m = &self.marks[agent];
            plan.agents
                .push((agent.clone(), m.high_water, m.last_seen, m.floor));
        }

        match write_plan(&mut self.conn, &plan).await {
            Ok(()) => {
                for ((p, reply), outcome) in group.into_iter().zip(outcomes) {
                    let hw = self.marks.get(p.agent()).map_or(0, |m| m.high_water);
                    self.status.touch(p.agent(), p.received, hw);
                    if let Outcome::Accepted { .. } = outcome {
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
                tracing::error!(error = %e, batches = group.len(), "group commit failed; nothing stored");
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

    async fn delete_agent(&mut self, agent: &AgentId) -> Result<bool> {
        let existed = self.marks.contains_key(agent) || self.series.map.contains_key(agent);
        let result: sqlx::Result<()> = async {
            let mut tx = self.conn.begin().await?;
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
        result.map_err(Error::storage("deleting an agent"))?;
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
