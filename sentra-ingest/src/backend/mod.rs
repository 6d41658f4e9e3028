//! The storage seams: what a backend does for the backend-free pipeline.
//!
//! The pipeline (replay decision, group commit, series index, staged apply, health, retry
//! and reopen-after-failure, rollup math, query plans and limits) lives in the crate;
//! a backend only runs statements. Three traits:
//!
//! * [`StagingLog`]: the bus seam between "accepted and durable" and "applied to
//!   storage". [`StagingLog::append`] makes a group of accepted batches durable together
//!   with the replay state that accepted them: that is what an ack means. After a
//!   restart [`StagingLog::unapplied`] hands back what was appended but not yet applied;
//!   [`MetricStore::apply`] marks entries applied (up to [`ApplyPlan::applied_up_to`]).
//!   The contract is **at-least-once**: an entry may be applied twice (a crash between
//!   the apply commit and the mark, or an apply retried after an unknown outcome), so
//!   applying is idempotent: the replay state is keyed by `(agent, seq)`, and samples
//!   are stored in chunks that reads merge to one sample per `(series, ts)`, the first
//!   written (see [`chunks`]). The embedded log is the `pending` table,
//!   written in the same transaction as the high-water mark and emptied in the same
//!   transaction as the samples; a broker (JetStream) can implement the same three steps.
//! * [`MetricStore`]: the writer's side, owned by the single writer task (`&mut self`):
//!   load the durable state at start, apply staged batches, reset/delete an agent,
//!   rollup/retention writes, a probe write for the health retry.
//! * [`MetricReader`]: the read side (cheap to clone, used concurrently by queries, the
//!   maintenance pass and the ledger reads): series resolution, latest/history/raw rows,
//!   names, high-water and ledger, rollup reads, integrity check. Every limit is applied
//!   by [`Query`](crate::Query) before and after these calls, so all backends answer
//!   within the same bounds.
//!
//! **Dispatch.** The writer is generic over its [`MetricStore`] (static dispatch: the
//! hot path — one `append` per group — stays monomorphic, and `async fn` in traits is not
//! object safe anyway); [`Ingest::open_with`](crate::Ingest::open_with) picks the type.
//! The read side is shared by the public, non-generic [`Query`](crate::Query), so it is an
//! enum of backends, [`Reader`], that forwards each call: no boxed futures, no generic
//! parameter on the public API, and a new backend is a new variant behind its feature.
//!
//! **Errors.** Writer-side methods return a [`BoxError`]: the writer records it in the
//! storage health and wraps it into [`Error::Storage`](crate::Error::Storage) with what it
//! was doing. Read-side methods return [`Error::Storage`](crate::Error::Storage) with their
//! own context. No database type leaks into the public API.

use std::{fmt, future::Future, ops::ControlFlow, path::PathBuf};

use bytes::Bytes;
use sentra_core::{AgentId, Labels, MetricName};

use crate::{
    AgentLedger, BoxError, Result,
    backend::chunks::{ChunkRow, NewChunk},
    maintenance::{Bucket, MaintenanceWrite},
    model::Stored,
    query::{Aggregation, Range, Resolution, Selector, SeriesInfo},
    replay::{AgentMark, Ledger},
};

pub(crate) mod chunks;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod sql;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;

/// The result of a writer-side backend call.
pub(crate) type StoreResult<T> = std::result::Result<T, BoxError>;

/// Where an [`Ingest`](crate::Ingest) keeps its data; see
/// [`Ingest::open_with`](crate::Ingest::open_with).
#[derive(Clone)]
pub struct Backend(pub(crate) BackendKind);

#[derive(Clone)]
pub(crate) enum BackendKind {
    /// `metrics.db` in this data directory.
    #[cfg(feature = "sqlite")]
    Sqlite(PathBuf),
    /// A `postgres://` URL (may hold a password: never printed).
    #[cfg(feature = "postgres")]
    Postgres(String),
}

impl Backend {
    /// Embedded SQLite: `metrics.db` in `data_dir` (created if missing), as
    /// [`Ingest::open`](crate::Ingest::open) does.
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    #[must_use]
    pub fn sqlite(data_dir: impl Into<PathBuf>) -> Self {
        Self(BackendKind::Sqlite(data_dir.into()))
    }

    /// PostgreSQL at `url` (`postgres://user:password@host:port/database`): the database
    /// must exist; its tables are created and migrated on open (`migrations-pg/`). Raw
    /// sample chunks live in daily range partitions, created ahead and dropped for retention.
    /// The URL is never logged nor repeated in errors or `Debug`.
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    #[must_use]
    pub fn postgres(url: impl Into<String>) -> Self {
        Self(BackendKind::Postgres(url.into()))
    }
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            #[cfg(feature = "sqlite")]
            BackendKind::Sqlite(dir) => f.debug_tuple("Sqlite").field(dir).finish(),
            #[cfg(feature = "postgres")]
            BackendKind::Postgres(_) => f.write_str("Postgres(..)"),
            #[allow(
                unreachable_patterns,
                reason = "reachable only when a backend feature is off"
            )]
            _ => f.write_str("Backend"),
        }
    }
}

/// One staged (accepted, durable, not yet applied) batch.
#[derive(Clone, Debug)]
pub(crate) struct StagedBatch {
    /// Its position in the log, assigned by the writer, increasing.
    pub(crate) id: i64,
    pub(crate) agent: AgentId,
    pub(crate) seq: u64,
    pub(crate) fingerprint: [u8; 32],
    pub(crate) received_ms: i64,
    /// The signed payload (the encoded batch).
    pub(crate) payload: Bytes,
}

/// A staged batch read back after a restart (the agent and seq are in the payload).
#[derive(Clone, Debug)]
pub(crate) struct Unapplied {
    pub(crate) id: i64,
    /// As stored: 32 bytes unless the store was damaged.
    pub(crate) fingerprint: Vec<u8>,
    pub(crate) received_ms: i64,
    pub(crate) payload: Bytes,
}

/// The durable replay state of one agent after a group (table `agents` in SQLite).
#[derive(Clone, Debug)]
pub(crate) struct AgentRow {
    pub(crate) agent: AgentId,
    pub(crate) high_water: u64,
    pub(crate) last_seen: i64,
    /// Fingerprints at or below it are pruned from the window.
    pub(crate) floor: u64,
    pub(crate) ledger: Ledger,
}

/// Everything one group commit makes durable, atomically: the ack.
#[derive(Debug, Default)]
pub(crate) struct Commit {
    /// Accepted batches, appended to the staging log.
    pub(crate) staged: Vec<StagedBatch>,
    /// The new replay state of every agent of the group (also of agents whose batches
    /// were all refused: their ledger counted it).
    pub(crate) agents: Vec<AgentRow>,
    /// Stored-seq ranges removed (agent, lo) and written (agent, lo, hi).
    pub(crate) ranges_removed: Vec<(AgentId, u64)>,
    pub(crate) ranges_written: Vec<(AgentId, u64, u64)>,
    /// Fingerprints of accepted seqs (the window), keyed by (agent, seq). Insert them
    /// before deleting each agent's fingerprints at or below its [`AgentRow::floor`]: a
    /// late seq accepted after the window shrank can already lie below the new floor, and
    /// the memory side has dropped it (`replay/tests.rs` checks the durable image).
    pub(crate) accepted: Vec<(AgentId, u64, [u8; 32])>,
    /// Latest WireGuard status: agent, seq, created (ms), encoded devices. Kept only if
    /// newer (`created`) than the stored one.
    pub(crate) wg: Vec<(AgentId, u64, i64, Vec<u8>)>,
}

/// A series the writer created (ids are assigned by the writer, from
/// [`StoredState::load_series`]'s maximum + 1).
#[derive(Clone, Debug)]
pub(crate) struct NewSeries {
    pub(crate) id: i64,
    pub(crate) agent: AgentId,
    pub(crate) name: MetricName,
    pub(crate) labels: Labels,
    /// 0 gauge, 1 counter ([`Stored::kind`]).
    pub(crate) kind: i64,
}

/// A stored series, as loaded at start.
#[derive(Clone, Debug)]
pub(crate) struct SeriesRow {
    pub(crate) id: i64,
    pub(crate) agent: String,
    pub(crate) name: String,
    pub(crate) labels: Vec<(String, String)>,
}

/// What one apply transaction writes.
#[derive(Debug)]
pub(crate) struct ApplyPlan {
    /// The samples, as chunks of one generation (see [`chunks`]); a chunk whose
    /// `(series, start, generation)` exists already (the same apply retried after an
    /// unknown outcome) is not inserted again.
    pub(crate) chunks: Vec<NewChunk>,
    /// The next chunk generation, stored (`meta`) in the same transaction.
    pub(crate) next_gen: i64,
    /// Series first seen in these rows (insert before the rows).
    pub(crate) new_series: Vec<NewSeries>,
    /// Staged entries with ids up to this are applied: the embedded log deletes them in
    /// the same transaction as the rows.
    pub(crate) applied_up_to: i64,
}

/// The bus seam: accepted batches, durable before the ack, applied later (see the
/// [module docs](self)).
pub(crate) trait StagingLog {
    /// Makes `commit` durable in one atomic step: its staged batches and the replay
    /// state. `Ok` means every batch in it may be acknowledged; on `Err` nothing of it
    /// may count as stored (the writer then drops the connection, see
    /// [`MetricStore::drop_connection`]).
    fn append(&mut self, commit: &Commit) -> impl Future<Output = StoreResult<()>> + Send;

    /// Every entry appended and not yet applied, in id order (read once at start).
    fn unapplied(&mut self) -> impl Future<Output = StoreResult<Vec<Unapplied>>> + Send;
}

/// What the writer reads once at start, besides the [`StagingLog`]. Every SQL store has
/// it through [`sql::SqlStore`] (one generic implementation for both databases).
pub(crate) trait StoredState {
    /// Every agent's durable replay state (without ranges and window).
    fn load_agents(&mut self)
    -> impl Future<Output = StoreResult<Vec<(String, AgentMark)>>> + Send;
    /// Every agent's stored-seq ranges `(agent, lo, hi)`.
    fn load_seq_ranges(
        &mut self,
    ) -> impl Future<Output = StoreResult<Vec<(String, u64, u64)>>> + Send;
    /// The fingerprint window `(agent, seq, fingerprint)`.
    fn load_fingerprints(
        &mut self,
    ) -> impl Future<Output = StoreResult<Vec<(String, u64, Vec<u8>)>>> + Send;
    /// Every series.
    fn load_series(&mut self) -> impl Future<Output = StoreResult<Vec<SeriesRow>>> + Send;
    /// The next chunk generation (1 in a new store).
    fn load_next_gen(&mut self) -> impl Future<Output = StoreResult<i64>> + Send;
    /// The latest WireGuard status per agent (encoded devices).
    fn load_wg_status(
        &mut self,
    ) -> impl Future<Output = StoreResult<Vec<(String, Vec<u8>)>>> + Send;
}

/// The writer's side of a metric store (see the [module docs](self)).
pub(crate) trait MetricStore: StagingLog + StoredState + Send + 'static {
    /// Writes `plan` in one transaction (reads answer one sample per `(series, ts)` however
    /// often it is applied), marking staged
    /// entries up to [`ApplyPlan::applied_up_to`] applied.
    fn apply(&mut self, plan: &ApplyPlan) -> impl Future<Output = StoreResult<()>> + Send;
    /// Forgets `agent`'s high-water mark, floor, `missing` count, window and ranges (its
    /// other ledger counters stay), in one transaction.
    fn reset_sequence(&mut self, agent: &AgentId) -> impl Future<Output = StoreResult<()>> + Send;
    /// Deletes everything of `agent` (samples, rollups, series, replay state, WireGuard
    /// status) in one transaction.
    fn delete_agent(&mut self, agent: &AgentId) -> impl Future<Output = StoreResult<()>> + Send;
    /// Writes rollup buckets (replacing those with the same key) and applies retention,
    /// in one transaction.
    fn write_maintenance(
        &mut self,
        job: &MaintenanceWrite,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Up to `limit` rows `(series, ts, value)` of the `samples` table a store written
    /// before chunks has, in `(series, ts)` order (empty once converted); `None` when there
    /// is no such table. The writer converts them into chunks at start.
    fn legacy_samples(
        &mut self,
        limit: i64,
    ) -> impl Future<Output = StoreResult<Option<Vec<(i64, i64, Stored)>>>> + Send;
    /// Deletes the legacy rows up to and including `(series, ts)`; `None`: drops the
    /// emptied `samples` table.
    fn delete_legacy(
        &mut self,
        upto: Option<(i64, i64)>,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// A small durable write that proves writes work again after a failure.
    fn probe(&mut self, now_ms: i64) -> impl Future<Output = StoreResult<()>> + Send;
    /// A write failed: forget the connection (its transaction state is not trusted); the
    /// next call opens a fresh one.
    fn drop_connection(&mut self);
    /// Closes the store at shutdown.
    fn close(&mut self) -> impl Future<Output = StoreResult<()>> + Send;
}

/// The read side of a metric store (see the [module docs](self)). Methods that take a
/// `limit` return at most `limit + 1` rows, so the caller can tell "more than allowed".
pub(crate) trait MetricReader: Clone + Send + Sync + 'static {
    /// Distinct metric names, sorted, optionally of one agent.
    fn names(
        &self,
        agent: Option<&AgentId>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<String>>> + Send;
    /// The series a selector matches, by id.
    fn series(
        &self,
        sel: &Selector,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<SeriesInfo>>> + Send;
    /// The chunks of `ids` that may hold samples in `[from, to)` (see [`chunks`]),
    /// ordered by series, start, generation.
    fn chunks(
        &self,
        ids: &[i64],
        from: i64,
        to: i64,
    ) -> impl Future<Output = Result<Vec<ChunkRow>>> + Send;
    /// `(series, start)` of every chunk starting in `[from, to)`, from the index (for the
    /// compaction scan).
    fn chunk_starts(
        &self,
        from: i64,
        to: i64,
    ) -> impl Future<Output = Result<Vec<(i64, i64)>>> + Send {
        async move {
            each_pool!(self.pool(), p => sql::chunk_starts(p, from, to).await)
                .map_err(crate::Error::storage("reading sample chunk keys"))
        }
    }
    /// Up to `limit` chunks after `(series, start, generation)` in that order, for a scan
    /// of every chunk ([`chunks::check_all`]).
    fn chunk_page(
        &self,
        after: (i64, i64, i64),
        limit: i64,
    ) -> impl Future<Output = Result<Vec<ChunkRow>>> + Send {
        async move {
            each_pool!(self.pool(), p => sql::chunk_page(p, after, limit).await)
                .map_err(crate::Error::storage("reading sample chunks"))
        }
    }
    /// The chunks of each of `ids` that may hold its newest sample: those starting less
    /// than a chunk window before its newest chunk's start, ordered as [`Self::chunks`].
    fn latest_chunks(&self, ids: &[i64]) -> impl Future<Output = Result<Vec<ChunkRow>>> + Send;
    /// `(series, step index, value)` per series and step over `range` from a rollup table
    /// (`res` is `Minute` or `Hour`).
    fn rollup_history(
        &self,
        ids: &[i64],
        range: Range,
        agg: Aggregation,
        res: Resolution,
    ) -> impl Future<Output = Result<Vec<(i64, i64, f64)>>> + Send;
    /// The newest sample `(series, ts, value)` of each of `ids` that has one.
    fn latest(&self, ids: &[i64]) -> impl Future<Output = Result<Vec<(i64, i64, f64)>>> + Send {
        async move {
            let rows = self.latest_chunks(ids).await?;
            let mut out = Vec::with_capacity(ids.len());
            chunks::for_each_series(&rows, i64::MIN, i64::MAX, |series, samples| {
                if let Some(&(ts, v)) = samples.last() {
                    out.push((series, ts, chunks::as_f64(v)));
                }
                ControlFlow::Continue(())
            })
            .map_err(crate::Error::storage("reading latest values"))?;
            Ok(out)
        }
    }
    /// `(series, step index, value)` per series and step over `range`, from raw samples
    /// or a rollup table (`res` is [`Resolution::Raw`], `Minute` or `Hour`).
    fn history(
        &self,
        ids: &[i64],
        range: Range,
        agg: Aggregation,
        res: Resolution,
    ) -> impl Future<Output = Result<Vec<(i64, i64, f64)>>> + Send {
        async move {
            if matches!(res, Resolution::Minute | Resolution::Hour) {
                return self.rollup_history(ids, range, agg, res).await;
            }
            let rows = self.chunks(ids, range.from, range.to).await?;
            let mut out = Vec::new();
            chunks::for_each_series(&rows, range.from, range.to, |series, samples| {
                chunks::aggregate(series, samples, range, agg, &mut out);
                ControlFlow::Continue(())
            })
            .map_err(crate::Error::storage("reading history"))?;
            Ok(out)
        }
    }
    /// Raw samples `(series, ts, value)` over `range`, ordered by series then time.
    fn raw_rows(
        &self,
        ids: &[i64],
        range: Range,
        limit: u64,
    ) -> impl Future<Output = Result<Vec<(i64, i64, f64)>>> + Send {
        async move {
            let rows = self.chunks(ids, range.from, range.to).await?;
            let want = usize::try_from(limit)
                .unwrap_or(usize::MAX)
                .saturating_add(1);
            let mut out = Vec::new();
            chunks::for_each_series(&rows, range.from, range.to, |series, samples| {
                let take = want - out.len();
                out.extend(
                    samples
                        .iter()
                        .take(take)
                        .map(|&(ts, v)| (series, ts, chunks::as_f64(v))),
                );
                if out.len() >= want {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .map_err(crate::Error::storage("reading raw samples"))?;
            Ok(out)
        }
    }
    /// The connection pool the reads shared by every SQL backend go through (the
    /// provided methods below).
    fn pool(&self) -> AnyPool<'_>;
    /// The durable high-water mark of `agent` (`None`: unknown agent).
    fn high_water(&self, agent: &AgentId) -> impl Future<Output = Result<Option<u64>>> + Send {
        async move {
            each_pool!(self.pool(), p => sql::high_water(p, agent.as_str()).await)
                .map_err(crate::Error::storage("reading a high-water mark"))
        }
    }
    /// The durable ledger of `agent`.
    fn ledger(&self, agent: &AgentId) -> impl Future<Output = Result<Option<AgentLedger>>> + Send {
        async move {
            each_pool!(self.pool(), p => sql::read_ledger(p, agent.as_str()).await)
                .map_err(crate::Error::storage("reading an agent's ledger"))
        }
    }
    /// The store's own consistency check: one line per problem, empty when none.
    fn integrity_check(&self) -> impl Future<Output = Result<Vec<String>>> + Send;
    /// Every series with the start of its newest 1-minute bucket (`None`: none yet).
    fn rollup_progress(&self) -> impl Future<Output = Result<Vec<(i64, Option<i64>)>>> + Send {
        async move {
            each_pool!(self.pool(), p => sql::rollup_progress(p).await)
                .map_err(crate::Error::storage("reading rollup progress"))
        }
    }
    /// Stored 1-minute buckets of `series` in `[from, to)`, by bucket.
    fn minute_buckets(
        &self,
        series: i64,
        from: i64,
        to: i64,
    ) -> impl Future<Output = Result<Vec<Bucket>>> + Send {
        async move {
            each_pool!(self.pool(), p => sql::minute_buckets(p, series, from, to).await)
                .map_err(crate::Error::storage("reading rollups"))
        }
    }
    /// One trivial query on a read connection: whether the database answers.
    fn ping(&self) -> impl Future<Output = Result<()>> + Send {
        async move {
            each_pool!(self.pool(), p => sqlx::query("SELECT 1").execute(p).await.map(drop))
                .map_err(crate::Error::storage("pinging the metric store"))
        }
    }
    /// Closes the read connections.
    fn close(&self) -> impl Future<Output = ()> + Send {
        async move { each_pool!(self.pool(), p => p.close().await) }
    }
}

/// The read pool of whichever SQL backend is open ([`MetricReader::pool`]).
#[derive(Clone, Copy)]
pub(crate) enum AnyPool<'a> {
    /// SQLite's read-only connections.
    #[cfg(feature = "sqlite")]
    Sqlite(&'a sqlx::SqlitePool),
    /// PostgreSQL's connections.
    #[cfg(feature = "postgres")]
    Postgres(&'a sqlx::PgPool),
}

/// Runs `$call` with `$p` bound to the open backend's pool (each arm is generic code
/// instantiated for its database).
macro_rules! each_pool {
    ($pool:expr, $p:ident => $call:expr) => {
        match $pool {
            #[cfg(feature = "sqlite")]
            AnyPool::Sqlite($p) => $call,
            #[cfg(feature = "postgres")]
            AnyPool::Postgres($p) => $call,
        }
    };
}
use each_pool;

/// The read side of whichever backend is open (see "Dispatch" in the [module docs](self)).
#[derive(Clone)]
pub(crate) enum Reader {
    /// SQLite: a pool of read-only connections (WAL: reads never block the writer).
    #[cfg(feature = "sqlite")]
    Sqlite(sqlite::SqliteReader),
    /// PostgreSQL: a connection pool.
    #[cfg(feature = "postgres")]
    Postgres(postgres::PgReader),
}

/// Forwards a call to the open backend's reader.
macro_rules! each_reader {
    ($self:expr, $r:ident => $call:expr) => {
        match *$self {
            #[cfg(feature = "sqlite")]
            Reader::Sqlite(ref $r) => $call,
            #[cfg(feature = "postgres")]
            Reader::Postgres(ref $r) => $call,
        }
    };
}

impl MetricReader for Reader {
    fn pool(&self) -> AnyPool<'_> {
        each_reader!(self, r => r.pool())
    }
    async fn names(&self, agent: Option<&AgentId>, limit: usize) -> Result<Vec<String>> {
        each_reader!(self, r => r.names(agent, limit).await)
    }
    async fn series(&self, sel: &Selector, limit: usize) -> Result<Vec<SeriesInfo>> {
        each_reader!(self, r => r.series(sel, limit).await)
    }
    async fn chunks(&self, ids: &[i64], from: i64, to: i64) -> Result<Vec<ChunkRow>> {
        each_reader!(self, r => r.chunks(ids, from, to).await)
    }
    async fn latest_chunks(&self, ids: &[i64]) -> Result<Vec<ChunkRow>> {
        each_reader!(self, r => r.latest_chunks(ids).await)
    }
    async fn rollup_history(
        &self,
        ids: &[i64],
        range: Range,
        agg: Aggregation,
        res: Resolution,
    ) -> Result<Vec<(i64, i64, f64)>> {
        each_reader!(self, r => r.rollup_history(ids, range, agg, res).await)
    }
    async fn integrity_check(&self) -> Result<Vec<String>> {
        each_reader!(self, r => r.integrity_check().await)
    }
}
