#![doc = include_str!("../README.md")]
//!
//! ## Crate overview
//!
//! `sentra-ingest` receives envelopes that `sentra-transport` has already authenticated
//! ([`sentra_core::Verified`]) and turns them into durable, de-duplicated data:
//!
//! ```text
//! Verified ─▶ decode + validate ─▶ writer queue ─▶ group commit (backend: SQLite by default)
//!    │             │ bad: REJECTED        │ seq already stored: DUPLICATE
//!    │             ▼                      │ seq out of bounds: REJECTED (SEQ_*)
//!    │                                    ▼
//!    └──────── Ack (after commit) ◀── status cache ─▶ subscribers (tokio broadcast)
//! ```
//!
//! * [`Ingest::open`] opens (or creates) `metrics.db` in a data directory, runs the
//!   embedded migrations, rebuilds the in-memory state and starts two tasks: the single
//!   writer and the rollup/retention maintainer.
//! * [`Ingest::service`] is a [`tower_service::Service<Verified>`] answering
//!   [`Ack`](sentra_core::proto::Ack); hand it to the transport server.
//! * [`Ingest::status`] reads the in-memory [`StatusCache`] (never the database);
//!   [`render_prometheus`] turns a snapshot into the exposition format of
//!   prometheus_wireguard_exporter.
//! * [`Ingest::query`] answers metric queries ([`Query`]), bounded by [`QueryLimits`].
//! * [`Ingest::subscribe`] streams every stored batch to in-process consumers (alerting,
//!   live views); a slow subscriber lags, it never slows ingest.
//!
//! The design notes on durability and the storage layout are in [`storage`].
//!
//! ## Backends
//!
//! The pipeline is backend-free: the replay decision is a pure state machine, the writer
//! drives a metric store through a small internal seam (staging log, metric store, metric
//! reader; see the `backend` module's docs in the source), and every backend keeps the
//! same contract (an ack means durable, the same replay rules, the same query limits).
//! Pick one with a cargo feature and [`Ingest::open_with`]:
//!
//! | feature | backend | open with |
//! |---|---|---|
//! | `sqlite` (default) | embedded SQLite, `metrics.db` in a data directory | [`Ingest::open`], [`Backend::sqlite`] |
//! | `postgres` | PostgreSQL: daily range partitions, rollup tables, one writer per database | `Backend::postgres(url)` |
//!
//! ## Storage failures ("an ack means durable")
//!
//! A batch is acknowledged only after the transaction that stores it committed. When a
//! commit fails (full disk, I/O error), nothing of that group is acknowledged: every push
//! of the group fails with [`Error::Storage`] (the transport answers `UNAVAILABLE`; the
//! agent keeps the data in its WAL and retries). The writer drops its connection after
//! any failed write and reopens it for the next one, so a connection left in a doubtful
//! transaction state is never reused; while writes fail it retries on its own (staged
//! batches, else a probe write) with a backoff from 100 ms to 5 s, and the first commit
//! that works ends the failure. [`Ingest::health`] / [`Ingest::watch_health`] report
//! [`StorageHealth::Failing`] (error, since, failed commits) meanwhile, and
//! [`IngestHealth::dead_task`] names an internal task (writer, maintenance) that ended
//! unexpectedly; [`IngestHealth::is_ready`] is false in both cases.
//!
//! ## Sequence numbers
//!
//! The writer keeps, per agent, the high-water mark `H` and the exact set of seqs ever
//! stored (as ranges, table `seq_ranges`), updated in the batch's transaction:
//!
//! * a stored seq is answered `DUPLICATE` (only a stored seq is);
//! * `seq > max(H, receive_ms × 1000) + `[`Config::max_seq_jump`] (default 2⁴²) is
//!   `REJECTED` with `SEQ_TOO_FAR_AHEAD`, the first batch of an agent included, so one
//!   signed batch with seq 2⁶⁴ − 1 cannot make every later batch look old;
//! * `seq > H + 1` is stored, counted as a gap (with the seqs it skipped) and logged as
//!   a warning with agent, expected and received seq;
//! * a never-stored seq within [`Config::replay_window`] below `H` (a pipelined push
//!   overtaken by the next one) is stored once;
//! * a never-stored seq further below `H` is `REJECTED` with `SEQ_BELOW_HIGH_WATER`, not
//!   `DUPLICATE`: the agent must not drop it as delivered. [`Ingest::reset_sequence`]
//!   (with a key rotation) lets such an agent in again.
//!
//! [`Ingest::agent_ledger`] returns the durable counters (accepted, gaps, missing,
//! rejected below / ahead); [`Ingest::integrity_check`] runs the store's integrity check
//! (SQLite's `PRAGMA integrity_check`).
//!
//! ## Clock skew
//!
//! Policy: a sample whose timestamp is later than the receive time plus
//! [`Config::max_future_skew`] (default 300 s, the envelope's skew window) is **stored with
//! the receive time** and counted in [`IngestStats::clamped_samples`], with a warning
//! naming the agent. The batch is not rejected (its other samples and the agent's WAL
//! progress stay intact) and no point is ever planted in the future. Timestamps within the
//! window, and past timestamps (a backlog shipped after an outage), are stored as sent.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(feature = "sqlite"),
    allow(
        unused,
        reason = "without a backend feature the crate builds (for `cargo hack`), but nothing \
                  can open a store: everything behind `open_with` is unused then"
    )
)]
#![doc(test(attr(deny(warnings))))]

// Without a backend there is nothing to store into; say so first instead of leaving the user
// with type errors from the backend dispatch.
#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
compile_error!(
    "sentra-ingest needs a storage backend: enable its `sqlite` (default) or `postgres` feature"
);

mod backend;
#[cfg(feature = "jetstream")]
#[cfg_attr(docsrs, doc(cfg(feature = "jetstream")))]
pub mod bus;
mod chunk;
mod config;
mod error;
mod health;
mod maintenance;
mod model;
mod prom;
mod query;
mod replay;
mod service;
pub mod status;
pub mod storage;
mod writer;

use std::{path::Path, sync::Arc, time::Duration};

use sentra_core::{AgentId, Batch, Seq, UnixMillis};
use tokio::{
    sync::{broadcast, mpsc, oneshot, watch},
    task::JoinHandle,
};

pub use backend::Backend;
pub use config::{Config, PresenceConfig, QueryLimits};
pub use error::{BoxError, Error, Result};
pub use health::{AgentLedger, IngestHealth, StorageHealth};
pub use maintenance::MaintenanceReport;
pub use prom::{FleetCollector, FleetMetricsOptions, render_prometheus};
pub use query::{
    Aggregation, Export, ExportFormat, ExportRow, LabelMatcher, LatestValue, MatchOp, Order, Query,
    Range, Resolution, Selector, SeriesHistory, SeriesInfo, SeriesPercentiles, SeriesValue,
};
pub use service::{IngestService, IngestStats, ResponseFuture};
pub use status::{Presence, StatusCache, StatusSnapshot};

use backend::{MetricReader as _, MetricStore, Reader};
use maintenance::Maintainer;
use writer::{Request, Writer};

/// The file name of the metrics database inside the data directory.
pub const DB_FILE: &str = "metrics.db";

/// A batch that was durably stored, as delivered to subscribers.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoredBatch {
    /// The agent.
    pub agent_id: AgentId,
    /// Its sequence number.
    pub seq: Seq,
    /// Server time of arrival.
    pub received: UnixMillis,
    /// The validated batch.
    pub batch: Arc<Batch>,
}

/// What a [`Subscription`] yields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event {
    /// A batch was stored.
    Stored(Arc<StoredBatch>),
    /// The subscriber fell behind and this many events were dropped for it.
    Lagged(u64),
}

/// A live feed of stored batches (see [`Ingest::subscribe`]).
#[derive(Debug)]
pub struct Subscription(broadcast::Receiver<Arc<StoredBatch>>);

impl Subscription {
    /// The next event; `None` once the pipeline has shut down.
    pub async fn recv(&mut self) -> Option<Event> {
        match self.0.recv().await {
            Ok(b) => Some(Event::Stored(b)),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(Event::Lagged(n)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// A running ingest pipeline over one data directory. See the [crate docs](crate).
#[derive(Debug)]
pub struct Ingest {
    service: IngestService,
    status: StatusCache,
    query: Query,
    /// Taken at shutdown so subscriptions end.
    events: std::sync::Mutex<Option<broadcast::Sender<Arc<StoredBatch>>>>,
    maintainer: Arc<Maintainer>,
    health: watch::Sender<IngestHealth>,
    stop: watch::Sender<bool>,
    tasks: std::sync::Mutex<Option<(JoinHandle<()>, JoinHandle<()>)>>,
    /// A bus follower: no writer at all (see [`Ingest::is_read_only`]).
    read_only: bool,
}

impl std::fmt::Debug for Maintainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maintainer").finish_non_exhaustive()
    }
}

impl Ingest {
    /// Opens or creates `data_dir/metrics.db`, migrates it, rebuilds the high-water marks,
    /// series index and status cache, and starts the writer and maintenance tasks on the
    /// current tokio runtime. The same as
    /// [`Ingest::open_with`]`(`[`Backend::sqlite`]`(data_dir), config)`.
    ///
    /// The directory is locked (`ingest.lock`, an OS file lock that ends with the process)
    /// while the writer runs, i.e. until [`Ingest::shutdown`] (or, after a drop, until the
    /// writer has finished what was queued): a second pipeline on the same directory, in
    /// this process or another, is refused (after waiting up to 2 s for a previous one of
    /// this process to finish).
    ///
    /// # Errors
    ///
    /// [`Error::DataDirInUse`], [`Error::DataDir`] or [`Error::Storage`].
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    pub async fn open(data_dir: impl AsRef<Path>, config: Config) -> Result<Self> {
        Self::open_with(Backend::sqlite(data_dir.as_ref()), config).await
    }

    /// Opens (creating and migrating it if needed) the store `backend` names, rebuilds the
    /// high-water marks, series index and status cache, and starts the writer and
    /// maintenance tasks on the current tokio runtime. Every backend keeps the same
    /// contract: an ack means durable, the same replay rules, the same query limits.
    ///
    /// # Errors
    ///
    /// [`Error::DataDirInUse`], [`Error::DataDir`] or [`Error::Storage`].
    pub async fn open_with(backend: Backend, config: Config) -> Result<Self> {
        match backend.0 {
            #[cfg(feature = "sqlite")]
            backend::BackendKind::Sqlite(dir) => {
                let (store, reader) = backend::sqlite::open(&dir, &config).await?;
                Self::start(store, Reader::Sqlite(reader), config).await
            }
            #[cfg(feature = "postgres")]
            backend::BackendKind::Postgres(url) => {
                let (store, reader) = backend::postgres::open(&url, &config).await?;
                Self::start(store, Reader::Postgres(reader), config).await
            }
        }
    }

    /// Starts the pipeline over an open store.
    async fn start<S: MetricStore>(store: S, reader: Reader, config: Config) -> Result<Self> {
        let status = StatusCache::new(config.presence);
        let (events, _) = broadcast::channel(config.subscriber_capacity.max(1));
        let (tx, rx) = mpsc::channel(config.queue_depth.max(1));
        let health = watch::Sender::new(IngestHealth::ok());
        let mut writer = Writer::new(
            store,
            rx,
            status.clone(),
            events.clone(),
            health.clone(),
            &config,
        );
        writer.load().await?;
        let maintainer = Arc::new(Maintainer {
            reader: reader.clone(),
            tx: tx.clone(),
            dirty: Arc::clone(&writer.dirty),
            retention: (
                config.retention,
                config.rollup_1m_retention,
                config.rollup_1h_retention,
            ),
            compacted_before: std::sync::atomic::AtomicI64::new(i64::MIN),
        });
        maintainer.mark_all_dirty().await?;
        let (stop, stopped) = watch::channel(false);
        let writer = tokio::spawn(health::supervise(
            "writer",
            writer.run(),
            health.clone(),
            stopped.clone(),
        ));
        let maintenance = tokio::spawn(health::supervise(
            "maintenance",
            maintenance_loop(
                Arc::clone(&maintainer),
                config.maintenance_interval,
                stopped.clone(),
            ),
            health.clone(),
            stopped,
        ));
        Ok(Self {
            service: IngestService {
                tx,
                counters: Arc::default(),
                max_future_skew_ms: config::millis(config.max_future_skew),
            },
            status,
            query: Query::new(reader, config.limits, config.retention),
            events: std::sync::Mutex::new(Some(events)),
            maintainer,
            health,
            stop,
            tasks: std::sync::Mutex::new(Some((writer, maintenance))),
            read_only: false,
        })
    }

    /// A pipeline without a writer over `reader`, for a bus follower
    /// ([`bus::jetstream::BusFollower`]): queries and ledgers read the store; the status
    /// cache and subscribers are fed with [`Ingest::observe`]; pushes and maintenance
    /// answer [`Error::Closed`]; `reset_sequence`, `delete_agent` and `flush` answer
    /// [`Error::ReadOnly`] (storage workers write).
    #[cfg(all(feature = "jetstream", feature = "postgres"))]
    pub(crate) fn without_writer(reader: Reader, config: Config) -> Self {
        let (tx, _) = mpsc::channel(1);
        let (events, _) = broadcast::channel(config.subscriber_capacity.max(1));
        let (stop, _) = watch::channel(false);
        Self {
            service: IngestService {
                tx: tx.clone(),
                counters: Arc::default(),
                max_future_skew_ms: config::millis(config.max_future_skew),
            },
            status: StatusCache::new(config.presence),
            query: Query::new(reader.clone(), config.limits, config.retention),
            events: std::sync::Mutex::new(Some(events)),
            maintainer: Arc::new(Maintainer {
                reader,
                tx,
                dirty: writer::Dirty::default(),
                retention: (
                    config.retention,
                    config.rollup_1m_retention,
                    config.rollup_1h_retention,
                ),
                compacted_before: std::sync::atomic::AtomicI64::new(i64::MIN),
            }),
            health: watch::Sender::new(IngestHealth::ok()),
            stop,
            tasks: std::sync::Mutex::new(None),
            read_only: true,
        }
    }

    /// A batch another process stored (a storage worker), seen on the bus: updates the
    /// status cache (newest status kept) and tells subscribers.
    #[cfg(all(feature = "jetstream", feature = "postgres"))]
    pub(crate) fn observe(&self, agent: &AgentId, seq: Seq, received: UnixMillis, batch: Batch) {
        self.status.touch(agent, received, seq.get());
        self.status.apply_wg(&batch);
        let events = self
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(tx) = events.as_ref() {
            let _ = tx.send(Arc::new(StoredBatch {
                agent_id: agent.clone(),
                seq,
                received,
                batch: Arc::new(batch),
            }));
        }
    }

    /// Restores one agent's status at start (a bus follower's warm-up from the store).
    #[cfg(all(feature = "jetstream", feature = "postgres"))]
    pub(crate) fn restore_status(
        &self,
        agent: &AgentId,
        last_seen: i64,
        high_water: u64,
        status: Option<&Batch>,
    ) {
        self.status.restore(agent, last_seen, high_water, status);
    }

    /// The pipeline service (cheap to clone). Mount it in the transport server.
    #[must_use]
    pub fn service(&self) -> IngestService {
        self.service.clone()
    }

    /// The status cache.
    #[must_use]
    pub fn status(&self) -> StatusCache {
        self.status.clone()
    }

    /// The query interface (cheap to clone).
    #[must_use]
    pub fn query(&self) -> Query {
        self.query.clone()
    }

    /// A live feed of every batch stored from now on.
    #[must_use]
    pub fn subscribe(&self) -> Subscription {
        let events = self
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Subscription(match events.as_ref() {
            Some(tx) => tx.subscribe(),
            None => broadcast::channel(1).1, // shut down: a feed that is already over
        })
    }

    /// Registers the pipeline's metrics in the host's `registry`: batches accepted,
    /// duplicate and rejected by `reason`, sequence conflicts, storage errors, samples,
    /// commit latency, writer queue depth, storage health, and (a [`FleetCollector`]) the
    /// fleet's WireGuard and agent series. Call once per registry.
    pub fn register_metrics(
        &self,
        registry: &mut prometheus_client::registry::Registry,
        fleet: FleetMetricsOptions,
    ) {
        prom::register_counters(&self.service.counters, registry);
        registry.register_collector(Box::new(prom::PipelineCollector {
            tx: self.service.tx.downgrade(),
            health: self.health.subscribe(),
        }));
        registry.register_collector(Box::new(FleetCollector::new(self.status(), fleet)));
    }

    /// Pipeline counters since start.
    #[must_use]
    pub fn stats(&self) -> IngestStats {
        self.service.counters.snapshot()
    }

    /// The durable high-water mark of `agent`: the highest seq stored (`None`: never).
    ///
    /// # Errors
    ///
    /// [`Error::Storage`].
    pub async fn high_water(&self, agent: &AgentId) -> Result<Option<Seq>> {
        let high_water = self.query.reader().high_water(agent).await?;
        Ok(high_water.and_then(|h| Seq::new(h).ok()))
    }

    /// Whether this pipeline only reads the metric store (a bus follower, opened by
    /// `bus::jetstream::open_follower_store` with the `jetstream` and `postgres` features):
    /// then [`Ingest::reset_sequence`], [`Ingest::delete_agent`] and [`Ingest::flush`]
    /// answer [`Error::ReadOnly`].
    #[must_use]
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The pipeline's health now: whether storage takes writes and whether every internal
    /// task runs. Not ready ([`IngestHealth::is_ready`]) while commits fail (nothing is
    /// acknowledged then) or after a task died.
    #[must_use]
    pub fn health(&self) -> IngestHealth {
        self.health.borrow().clone()
    }

    /// A receiver that sees every change of [`Ingest::health`].
    #[must_use]
    pub fn watch_health(&self) -> watch::Receiver<IngestHealth> {
        self.health.subscribe()
    }

    /// The durable ingest ledger of `agent` (`None`: never heard of): batches accepted,
    /// accepted sequence gaps, refused seqs. Read from the database, so it shows what is
    /// committed.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`].
    pub async fn agent_ledger(&self, agent: &AgentId) -> Result<Option<AgentLedger>> {
        self.query.reader().ledger(agent).await
    }

    /// Forgets `agent`'s high-water mark and record of stored seqs, so the next batch it
    /// sends is accepted whatever its seq (within [`Config::max_seq_jump`] of the clock).
    /// Returns the previous high-water mark (`None`: none). Its ledger counters stay.
    ///
    /// For an agent answered `SEQ_BELOW_HIGH_WATER` (its state was lost, or a batch with
    /// a far-ahead seq was signed with its key): rotate its key first, then reset.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`], [`Error::Closed`], or [`Error::ReadOnly`] on a bus follower.
    pub async fn reset_sequence(&self, agent: &AgentId) -> Result<Option<Seq>> {
        if self.read_only {
            return Err(Error::ReadOnly("reset an agent's sequence"));
        }
        let (reply, rx) = oneshot::channel();
        self.service
            .tx
            .send(Request::ResetSequence(agent.clone(), reply))
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Runs one trivial query on a read connection: whether the metric store answers (for a
    /// readiness probe; a bus follower has no writer whose health would tell).
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] naming why the store did not answer.
    pub async fn ping_store(&self) -> Result<()> {
        self.query.reader().ping().await
    }

    /// Runs the store's integrity check (SQLite: `PRAGMA integrity_check` on the
    /// database; PostgreSQL: the store's own invariants), then decodes every sample chunk:
    /// an empty list means no problem was found; otherwise one line per problem, as SQLite
    /// reports them (damage that stops the check, `database disk image is malformed`, is
    /// one such line), and one per damaged chunk naming its series and start (at most
    /// 100, then a count).
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when the check itself cannot run.
    pub async fn integrity_check(&self) -> Result<Vec<String>> {
        let reader = self.query.reader();
        let mut problems = reader.integrity_check().await?;
        if problems
            .iter()
            .any(|p| p.starts_with("integrity check stopped"))
        {
            return Ok(problems); // the database itself is unreadable
        }
        match backend::chunks::check_all(reader).await {
            Ok(damaged) => problems.extend(damaged),
            // the database check found damage that also stops reading the chunks
            Err(e) if !problems.is_empty() => problems.push(format!(
                "sample chunks unreadable: {e}: {}",
                std::error::Error::source(&e).map_or_else(String::new, ToString::to_string)
            )),
            Err(e) => return Err(e),
        }
        Ok(problems)
    }

    /// Deletes everything stored for `agent`: samples, rollups, series, WireGuard status,
    /// its high-water mark and its status-cache entry. Returns whether anything existed.
    ///
    /// Forgetting the high-water mark means old envelopes of this agent would be accepted
    /// again: revoke its keys first (the REST API's "delete agent" does).
    ///
    /// # Errors
    ///
    /// [`Error::Storage`], [`Error::Closed`], or [`Error::ReadOnly`] on a bus follower.
    pub async fn delete_agent(&self, agent: &AgentId) -> Result<bool> {
        if self.read_only {
            return Err(Error::ReadOnly("delete an agent's metrics"));
        }
        let (reply, rx) = oneshot::channel();
        self.service
            .tx
            .send(Request::DeleteAgent(agent.clone(), reply))
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Applies every staged batch now, so queries see everything acked so far (the writer
    /// does this on its own within [`Config::apply_delay`]).
    ///
    /// # Errors
    ///
    /// [`Error::Storage`], [`Error::Closed`], or [`Error::ReadOnly`] on a bus follower.
    pub async fn flush(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly("flush staged batches"));
        }
        let (reply, rx) = oneshot::channel();
        self.service
            .tx
            .send(Request::Flush(reply))
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Runs one rollup and retention pass now, with retention measured from `now`
    /// (the background task does this every [`Config::maintenance_interval`]).
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] or [`Error::Closed`].
    pub async fn run_maintenance(&self, now: UnixMillis) -> Result<MaintenanceReport> {
        self.maintainer.pass(now.as_millis()).await
    }

    /// Stops accepting batches, finishes every batch already queued (their acks are sent),
    /// stops the maintenance task and closes the database. Later pushes fail with
    /// [`Error::Closed`]; calling it again does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] if the writer task had died (see [`IngestHealth::dead_task`]).
    pub async fn shutdown(&self) -> Result<()> {
        let tasks = self
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some((writer, maintenance)) = tasks else {
            return Ok(()); // already shut down
        };
        let _ = self.stop.send(true);
        let _ = maintenance.await;
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        // Clones of the service may live on in the transport: close the queue from the
        // writer's side. Batches queued before this point are still committed and acked.
        let _ = self.service.tx.send(Request::Shutdown).await;
        let _ = writer.await;
        self.query.reader().close().await;
        match self.health().dead_task {
            Some(dead) if dead.starts_with("writer") => Err(Error::Storage {
                context: "stopping the writer",
                source: dead.into(),
            }),
            _ => Ok(()),
        }
    }
}

async fn maintenance_loop(m: Arc<Maintainer>, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = m.pass(UnixMillis::now().as_millis()).await {
                    tracing::warn!(error = %e, "rollup/retention pass failed; will retry");
                }
            }
            _ = stop.changed() => break,
        }
    }
}
