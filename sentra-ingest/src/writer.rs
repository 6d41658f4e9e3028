//! The single writer task: group commit, replay check, durable high-water marks, staged
//! apply, storage health and retry. Backend-free: the statements are run by a
//! [`MetricStore`] (see [`crate::backend`]).

use std::{
    collections::{HashMap, hash_map::Entry},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use sentra_core::{AgentId, Labels, MetricName, Seq, UnixMillis, Value};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::{
    BoxError, Config, Error, Result, StoredBatch,
    backend::{
        AgentRow, ApplyPlan, Commit, MetricStore, NewSeries, StagedBatch, StoreResult, chunks,
    },
    health::{IngestHealth, StorageHealth},
    maintenance::MaintenanceWrite,
    model::{Prepared, Stored},
    replay::{AgentMark, Outcome, ReplayWindow},
    status::StatusCache,
};

/// First retry delay after a failed write while nothing else triggers a retry.
const RETRY_MIN: Duration = Duration::from_millis(100);
/// Longest retry delay.
const RETRY_MAX: Duration = Duration::from_secs(5);

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

/// The series index's hasher: every stored sample is looked up once per apply (agent, then
/// name, then labels), and SipHash made that lookup the largest cost of the apply (measured
/// with 500 k-sample applies: 150–350 ns per sample). foldhash (hashbrown's default) is
/// seeded per process; the keys come from authenticated agents only.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Series ids by agent, name and labels; lookups borrow, only a miss allocates.
#[derive(Debug, Default)]
pub(crate) struct SeriesMap {
    map: FastMap<AgentId, FastMap<MetricName, FastMap<Labels, i64>>>,
    next_id: i64,
}

/// One agent's series, and what creating one needs.
struct AgentSeries<'a> {
    agent: &'a AgentId,
    by_name: &'a mut FastMap<MetricName, FastMap<Labels, i64>>,
    next_id: &'a mut i64,
}

impl AgentSeries<'_> {
    /// The id of series `name{labels}`, created (and pushed to `created`) if new.
    fn resolve(
        &mut self,
        name: &MetricName,
        labels: &Labels,
        kind: i64,
        created: &mut Vec<NewSeries>,
    ) -> i64 {
        let by_labels = match self.by_name.get_mut(name) {
            Some(m) => m,
            None => self.by_name.entry(name.clone()).or_default(),
        };
        if let Some(id) = by_labels.get(labels) {
            return *id;
        }
        let id = *self.next_id;
        *self.next_id += 1;
        by_labels.insert(labels.clone(), id);
        created.push(NewSeries {
            id,
            agent: self.agent.clone(),
            name: name.clone(),
            labels: labels.clone(),
            kind,
        });
        id
    }
}

impl SeriesMap {
    /// `agent`'s series (looked up once per batch, not per sample).
    fn of<'a>(&'a mut self, agent: &'a AgentId) -> AgentSeries<'a> {
        // one clone per batch (the borrow checker refuses get_mut-then-insert here)
        let by_name = self.map.entry(agent.clone()).or_default();
        AgentSeries {
            agent,
            by_name,
            next_id: &mut self.next_id,
        }
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

pub(crate) struct Writer<S> {
    /// The store; after a failed write its connection is dropped and reopened on the next
    /// one (a connection whose transaction failed half-way is never trusted again).
    store: S,
    health: watch::Sender<IngestHealth>,
    /// When to retry a failed write if nothing else does (`None`: storage is healthy).
    retry_at: Option<Instant>,
    retry_delay: Duration,
    max_future_skew_ms: i64,
    pub(crate) rx: mpsc::Receiver<Request>,
    pub(crate) series: SeriesMap,
    replay: ReplayWindow,
    pub(crate) max_group: usize,
    pub(crate) status: StatusCache,
    pub(crate) events: broadcast::Sender<Arc<StoredBatch>>,
    pub(crate) dirty: Dirty,
    /// Acked batches staged in the log, not yet applied.
    unapplied: Vec<Prepared>,
    unapplied_rows: usize,
    unapplied_since: Option<Instant>,
    next_staged_id: i64,
    /// The generation of the next apply's chunks (`backend::chunks`), loaded at start.
    next_gen: i64,
    /// A write failed: its commit may have reached the store all the same (the connection
    /// died between `COMMIT` and its answer — PostgreSQL killed, a network cut), so the
    /// in-memory state (replay marks, staged ids, series ids) may be behind the store. It
    /// is read back from the store before the next write (`Writer::resync`).
    resync: bool,
    /// [`Config::replay_window`] and [`Config::max_seq_jump`], to rebuild the window.
    replay_bounds: (u64, u64),
    apply_delay: Duration,
    apply_samples: usize,
}

impl<S: MetricStore> Writer<S> {
    pub(crate) fn new(
        store: S,
        rx: mpsc::Receiver<Request>,
        status: StatusCache,
        events: broadcast::Sender<Arc<StoredBatch>>,
        health: watch::Sender<IngestHealth>,
        config: &Config,
    ) -> Self {
        Self {
            store,
            health,
            retry_at: None,
            retry_delay: RETRY_MIN,
            max_future_skew_ms: crate::config::millis(config.max_future_skew),
            rx,
            series: SeriesMap::default(),
            replay: ReplayWindow::new(config.replay_window, config.max_seq_jump),
            max_group: config.max_group_samples.max(1),
            unapplied: Vec::new(),
            unapplied_rows: 0,
            unapplied_since: None,
            next_staged_id: 1,
            next_gen: 1,
            resync: false,
            replay_bounds: (config.replay_window, config.max_seq_jump),
            apply_delay: config.apply_delay,
            apply_samples: config.apply_samples.max(1),
            status,
            events,
            dirty: Dirty::default(),
        }
    }

    /// Loads high-water marks, windows, series ids and the status cache from the store,
    /// and applies what was staged but not applied before a restart.
    pub(crate) async fn load(&mut self) -> Result<()> {
        let agents = load(self.store.load_agents(), "loading high-water marks").await?;
        for (agent, mark) in agents {
            if let Ok(agent) = AgentId::new(agent) {
                self.replay.restore(agent, mark);
            }
        }
        let ranges = load(
            self.store.load_seq_ranges(),
            "loading stored sequence ranges",
        )
        .await?;
        for (agent, lo, hi) in ranges {
            if let Ok(agent) = AgentId::new(agent) {
                self.replay.restore_range(&agent, lo, hi);
            }
        }
        let seen = load(self.store.load_fingerprints(), "loading the replay window").await?;
        for (agent, seq, fp) in seen {
            if let (Ok(agent), Ok(fp)) = (AgentId::new(agent), <[u8; 32]>::try_from(fp)) {
                self.replay.restore_seen(&agent, seq, fp);
            }
        }
        let series = load(self.store.load_series(), "loading series").await?;
        let mut max_id = 0;
        for r in series {
            max_id = max_id.max(r.id);
            let (Ok(agent), Ok(name), Ok(labels)) = (
                AgentId::new(r.agent),
                MetricName::new(r.name),
                Labels::from_pairs(r.labels),
            ) else {
                continue;
            };
            self.series
                .map
                .entry(agent)
                .or_default()
                .entry(name)
                .or_default()
                .insert(labels, r.id);
        }
        self.series.next_id = max_id + 1;
        self.next_gen = load(self.store.load_next_gen(), "loading the chunk generation").await?;
        self.convert_legacy_samples().await?;
        let rows = load(self.store.load_wg_status(), "loading WireGuard status").await?;
        let mut wg = HashMap::new();
        for (agent, blob) in rows {
            if let (Ok(agent), Some(b)) = (AgentId::new(agent), crate::model::decode_devices(&blob))
            {
                wg.insert(agent, b);
            }
        }
        for (agent, m) in self.replay.iter() {
            self.status
                .restore(agent, m.last_seen, m.high_water, wg.get(agent));
        }
        // Batches acked but not applied before a crash or kill.
        let staged = load(self.store.unapplied(), "loading staged batches").await?;
        let max_future_skew_ms = self.max_future_skew_ms;
        for u in staged {
            let id = u.id;
            self.next_staged_id = self.next_staged_id.max(id + 1);
            let payload = u.payload;
            let prepared = sentra_core::Batch::decode(&payload)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    crate::model::prepare(
                        b,
                        <[u8; 32]>::try_from(u.fingerprint).unwrap_or([0; 32]),
                        sentra_core::UnixMillis::from_millis(u.received_ms),
                        payload,
                        max_future_skew_ms,
                    )
                });
            match prepared {
                Ok(p) => self.stage(p),
                // It was validated before it was acked; only a corrupted file gets here.
                Err(e) => {
                    tracing::error!(staged_id = id, error = %e, "staged batch unreadable; skipped")
                }
            }
        }
        if !self.unapplied.is_empty() {
            tracing::info!(
                batches = self.unapplied.len(),
                "applying batches staged before restart"
            );
            self.apply_staged().await?;
        }
        Ok(())
    }

    /// After a failed write, reads the state back from the store (see the `resync`
    /// field): without it, a commit that succeeded although its answer was lost would be
    /// undone in memory only, and the next commit would reuse its staged ids (refused by
    /// the store forever) or decide its redelivered batches as new.
    async fn resync(&mut self) -> Result<()> {
        if !self.resync {
            return Ok(());
        }
        // `load` may apply staged batches, which must not resync again.
        self.resync = false;
        self.replay = ReplayWindow::new(self.replay_bounds.0, self.replay_bounds.1);
        self.series = SeriesMap::default();
        self.unapplied.clear();
        self.unapplied_rows = 0;
        self.unapplied_since = None;
        self.next_staged_id = 1;
        match self.load().await {
            Ok(()) => {
                tracing::info!("writer state read back from the store after a failed write");
                Ok(())
            }
            Err(e) => {
                if let Error::Storage { source, .. } = &e {
                    self.storage_failed("reading the state back after a failed write", source);
                }
                self.resync = true;
                Err(e)
            }
        }
    }

    /// Converts the `samples` rows of a store written before chunks into chunks, a batch
    /// at a time (each batch: its chunks in one transaction, then its rows deleted; a crash
    /// in between leaves both, and reads keep one of each timestamp), then drops the table.
    async fn convert_legacy_samples(&mut self) -> Result<()> {
        const BATCH: i64 = 200_000;
        let mut converted = 0usize;
        loop {
            let Some(rows) = load(
                self.store.legacy_samples(BATCH),
                "reading samples stored before chunks",
            )
            .await?
            else {
                return Ok(());
            };
            let Some(&(series, ts, _)) = rows.last() else {
                load(
                    self.store.delete_legacy(None),
                    "dropping the converted samples table",
                )
                .await?;
                if converted > 0 {
                    tracing::info!(
                        samples = converted,
                        "samples stored before chunks converted"
                    );
                }
                return Ok(());
            };
            let chunks = chunks::build(&rows, self.next_gen)
                .map_err(Error::storage("converting samples stored before chunks"))?;
            let plan = ApplyPlan {
                chunks,
                next_gen: self.next_gen + 1,
                new_series: Vec::new(),
                applied_up_to: 0,
            };
            load(
                self.store.apply(&plan),
                "writing chunks of samples stored before chunks",
            )
            .await?;
            self.next_gen += 1;
            load(
                self.store.delete_legacy(Some((series, ts))),
                "deleting converted samples",
            )
            .await?;
            converted += rows.len();
            tracing::info!(
                samples = converted,
                "converting samples stored before chunks into chunks"
            );
        }
    }

    fn stage(&mut self, p: Prepared) {
        self.unapplied_rows += p.row_count();
        self.unapplied_since.get_or_insert_with(Instant::now);
        self.unapplied.push(p);
    }

    /// Applies every staged batch (its samples, and the series first seen in them) and
    /// marks it applied in the staging log, in one transaction ([`MetricStore::apply`]).
    async fn apply(&mut self) -> Result<()> {
        self.resync().await?;
        self.apply_staged().await
    }

    /// [`apply`](Self::apply) without the resync (`load` calls it).
    async fn apply_staged(&mut self) -> Result<()> {
        if self.unapplied.is_empty() {
            return Ok(());
        }
        let next_id_before = self.series.next_id;
        let mut rows = Vec::with_capacity(self.unapplied_rows);
        let mut new_series = Vec::new();
        for p in &self.unapplied {
            let mut series = self.series.of(p.agent());
            for s in &p.batch.samples {
                let v = match &s.value {
                    Value::Gauge(g) => Stored::Gauge(*g),
                    Value::Counter(c) => Stored::Counter(*c),
                    _ => continue, // histograms were flattened into `extra`
                };
                let id = series.resolve(&s.name, &s.labels, v.kind(), &mut new_series);
                rows.push((id, s.timestamp.as_millis(), v));
            }
            for e in &p.extra {
                let id = series.resolve(&e.name, &e.labels, e.value.kind(), &mut new_series);
                rows.push((id, e.ts, e.value));
            }
        }
        sort_rows(&mut rows);
        let plan = match chunks::build(&rows, self.next_gen) {
            Ok(chunks) => ApplyPlan {
                chunks,
                next_gen: self.next_gen + 1,
                new_series,
                applied_up_to: self.next_staged_id - 1,
            },
            Err(e) => {
                // only a bug gets here (rows are sorted, deduplicated and split by kind)
                for s in &new_series {
                    self.series.forget(s);
                }
                self.series.next_id = next_id_before;
                return Err(Error::Storage {
                    context: "encoding sample chunks",
                    source: e.into(),
                });
            }
        };
        let result = self.store.apply(&plan).await;
        if result.is_err() {
            for s in &plan.new_series {
                self.series.forget(s);
            }
            self.series.next_id = next_id_before;
        }
        self.storage_outcome("applying staged batches", "applying staged batches", result)?;
        self.next_gen += 1;
        self.after_commit(&rows);
        self.unapplied.clear();
        self.unapplied_rows = 0;
        self.unapplied_since = None;
        Ok(())
    }

    /// Records the outcome of a write transaction in the storage health (see
    /// [`storage_failed`](Self::storage_failed) and [`storage_ok`](Self::storage_ok)); a
    /// failure becomes an [`Error::Storage`] with `context`, and is logged as `what`.
    fn storage_outcome(
        &mut self,
        what: &'static str,
        context: &'static str,
        result: StoreResult<()>,
    ) -> Result<()> {
        match result {
            Ok(()) => {
                self.storage_ok();
                Ok(())
            }
            Err(e) => {
                self.storage_failed(what, &e);
                Err(Error::Storage { context, source: e })
            }
        }
    }

    /// A write transaction failed: nothing of it is stored. The connection is dropped (its
    /// transaction state cannot be trusted: after `SQLITE_FULL` SQLite may have rolled
    /// back on its own, and a connection that still believes it is inside a transaction
    /// turns every later "commit" into a savepoint release that never reaches the disk),
    /// the health turns `Failing` and a retry is scheduled.
    fn storage_failed(&mut self, what: &'static str, e: &BoxError) {
        self.store.drop_connection();
        self.resync = true;
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
        if self.resync().await.is_err() {
            return;
        }
        if !self.unapplied.is_empty() {
            let _ = self.apply().await;
            return;
        }
        let result = self.store.probe(UnixMillis::now().as_millis()).await;
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
        if let Err(e) = self.store.close().await {
            tracing::warn!(error = %e, "closing the write connection failed");
        }
        tracing::debug!("ingest writer stopped");
    }

    async fn maintenance(&mut self, job: &MaintenanceWrite) -> Result<()> {
        let result = self.store.write_maintenance(job).await;
        self.storage_outcome(
            "writing rollups",
            "writing rollups and applying retention",
            result,
        )
    }

    async fn commit_group(&mut self, mut group: Vec<(Prepared, Reply<Outcome>)>) {
        if let Err(e) = self.resync().await {
            let msg = e.to_string();
            for (_, reply) in group {
                let _ = reply.send(Err(Error::Storage {
                    context: "committing a batch group",
                    source: msg.clone().into(),
                }));
            }
            return;
        }
        group.sort_by(|a, b| (a.0.agent(), a.0.seq()).cmp(&(b.0.agent(), b.0.seq())));
        let mut undo: HashMap<AgentId, Option<AgentMark>> = HashMap::new();
        for (p, _) in &group {
            if let Entry::Vacant(v) = undo.entry(p.agent().clone()) {
                v.insert(self.replay.get(p.agent()).cloned());
            }
        }
        let staged_before = self.next_staged_id;
        let mut plan = Commit::default();
        let mut outcomes = Vec::with_capacity(group.len());
        for (p, _) in &group {
            let outcome = self.replay.decide(
                p.agent(),
                p.seq().get(),
                p.fingerprint,
                p.received.as_millis(),
            );
            outcomes.push(outcome);
            if !matches!(outcome, Outcome::Accepted { .. }) {
                continue;
            }
            let agent = p.agent();
            let id = self.next_staged_id;
            self.next_staged_id += 1;
            plan.staged.push(StagedBatch {
                id,
                agent: agent.clone(),
                seq: p.seq().get(),
                fingerprint: p.fingerprint,
                received_ms: p.received.as_millis(),
                payload: p.payload.clone(),
            });
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
            let m = self
                .replay
                .get(agent)
                .expect("every agent of the group was decided");
            plan.agents.push(AgentRow {
                agent: agent.clone(),
                high_water: m.high_water,
                last_seen: m.last_seen,
                floor: m.floor,
                ledger: m.ledger.clone(),
            });
            let (removed, written) = m.range_changes(before.as_ref());
            plan.ranges_removed
                .extend(removed.into_iter().map(|lo| (agent.clone(), lo)));
            plan.ranges_written
                .extend(written.into_iter().map(|(lo, hi)| (agent.clone(), lo, hi)));
        }

        let result = self.store.append(&plan).await;
        match result {
            Ok(()) => {
                self.storage_ok();
                for ((p, reply), outcome) in group.into_iter().zip(outcomes) {
                    let hw = self.replay.high_water(p.agent());
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
                    self.replay.put_back(agent, before);
                }
                self.next_staged_id = staged_before;
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
        self.resync().await?;
        let result = self.store.reset_sequence(agent).await;
        self.storage_outcome(
            "resetting a sequence",
            "resetting an agent's sequence",
            result,
        )?;
        let Some(previous) = self.replay.reset(agent) else {
            return Ok(None);
        };
        tracing::warn!(agent_id = %agent, previous_high_water = previous,
            "agent sequence reset: its next seq is accepted whatever it is");
        Ok(Seq::new(previous).ok())
    }

    async fn delete_agent(&mut self, agent: &AgentId) -> Result<bool> {
        let existed = self.replay.contains(agent) || self.series.map.contains_key(agent);
        let result = self.store.delete_agent(agent).await;
        self.storage_outcome("deleting an agent", "deleting an agent", result)?;
        self.replay.forget(agent);
        if let Some(by_name) = self.series.map.remove(agent) {
            let mut dirty = self.dirty.lock().unwrap_or_else(PoisonError::into_inner);
            for id in by_name.values().flat_map(FastMap::values) {
                dirty.remove(id);
            }
        }
        self.status.remove(agent);
        Ok(existed)
    }
}

/// Sorts `rows` by `(series, ts)`, stably: of samples with the same key the first staged is
/// the one stored. Series ids are dense (the writer assigns them from 1), so a counting sort
/// by series (two linear passes) does most of the work, and each series' run is sorted by
/// time only when it is not already (batches usually arrive in order); a comparison sort
/// of every row cost 20–33 ms per 500 k-sample apply, as much as the store's insert.
fn sort_rows(rows: &mut Vec<(i64, i64, Stored)>) {
    let (Some(min), Some(max)) = (
        rows.iter().map(|r| r.0).min(),
        rows.iter().map(|r| r.0).max(),
    ) else {
        return;
    };
    let index = |series: i64| usize::try_from(series - min).unwrap_or(0);
    let span = usize::try_from(max - min)
        .ok()
        .filter(|&s| s <= rows.len().saturating_mul(4).saturating_add(4096));
    let Some(span) = span else {
        rows.sort_by_key(|r| (r.0, r.1));
        return;
    };
    // starts[k]: where the run of series `min + k` begins in the sorted rows
    let mut starts = vec![0usize; span + 2];
    for r in rows.iter() {
        starts[index(r.0) + 1] += 1;
    }
    for k in 1..starts.len() {
        starts[k] += starts[k - 1];
    }
    let mut next = starts.clone();
    let mut sorted = vec![(0, 0, Stored::Counter(0)); rows.len()];
    for &r in rows.iter() {
        let k = index(r.0);
        sorted[next[k]] = r;
        next[k] += 1;
    }
    for k in 0..=span {
        let run = &mut sorted[starts[k]..starts[k + 1]];
        if !run.is_sorted_by_key(|r| r.1) {
            run.sort_by_key(|r| r.1);
        }
    }
    *rows = sorted;
}

/// Runs a start-up read of the store; `context` names it in the error.
async fn load<T>(
    read: impl std::future::Future<Output = StoreResult<T>>,
    context: &'static str,
) -> Result<T> {
    read.await
        .map_err(|source| Error::Storage { context, source })
}

#[cfg(test)]
mod tests {
    use super::{Stored, sort_rows};

    #[test]
    fn rows_sort_by_series_then_time_and_keep_the_first_of_equal_keys() {
        let g = Stored::Gauge;
        for far in [false, true] {
            // ids far apart take the comparison sort, dense ones the counting sort
            let (a, b) = if far { (1, 1 << 40) } else { (3, 7) };
            let mut rows = vec![
                (b, 20, g(1.0)),
                (a, 10, g(2.0)),
                (b, 10, g(3.0)),
                (a, 10, g(4.0)), // same key as the second row: stays after it
                (a, 5, g(5.0)),
            ];
            sort_rows(&mut rows);
            assert_eq!(
                rows,
                [
                    (a, 5, g(5.0)),
                    (a, 10, g(2.0)),
                    (a, 10, g(4.0)),
                    (b, 10, g(3.0)),
                    (b, 20, g(1.0)),
                ]
            );
        }
        let mut empty = Vec::new();
        sort_rows(&mut empty);
        assert!(empty.is_empty());
    }
}
