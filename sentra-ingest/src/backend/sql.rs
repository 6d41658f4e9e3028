//! What the SQL backends share: the statements that read the same on SQLite and
//! PostgreSQL (parameters are `$N`, which SQLite accepts too) and the decoding of their
//! rows, generic over the [`sqlx::Database`]. Dialect-specific SQL (bulk inserts, JSON label
//! filters, partitions, `last` aggregates) stays in each backend.

use std::future::Future;

use sqlx::{ColumnIndex, Database, Decode, Executor, IntoArguments, Pool, Row, Type};

use crate::{
    AgentLedger,
    backend::{SeriesRow, StoreResult, StoredState, Unapplied, chunks::ChunkRow},
    maintenance::Bucket,
    model::parse_labels_json,
    query::{Resolution, SeriesInfo},
    replay::{AgentMark, Ledger},
};

/// The durable replay state of every agent (decode with [`agent_mark`]).
pub(crate) const LOAD_AGENTS: &str = "SELECT agent_id, high_water, floor, last_seen_ms, \
     accepted, gaps, missing, rejected_stale, rejected_ahead FROM agents";
/// Every stored-seq range: agent, lo, hi.
pub(crate) const LOAD_SEQ_RANGES: &str = "SELECT agent_id, lo, hi FROM seq_ranges";
/// The fingerprint window: agent, seq, fingerprint.
pub(crate) const LOAD_FINGERPRINTS: &str = "SELECT agent_id, seq, fingerprint FROM accepted";
/// The staging log's unapplied entries, in order (decode with [`unapplied`]).
pub(crate) const UNAPPLIED: &str =
    "SELECT id, fingerprint, received_ms, payload FROM pending ORDER BY id";
/// Every series with its newest 1-minute bucket (`NULL` when it has none yet).
pub(crate) const ROLLUP_PROGRESS: &str = "SELECT s.id, \
     (SELECT MAX(bucket) FROM rollup_1m r WHERE r.series_id = s.id) FROM series s";
/// The next chunk generation (no row: 1).
pub(crate) const LOAD_NEXT_GEN: &str = "SELECT value FROM meta WHERE key = 'next_chunk_gen'";
/// Stores the next chunk generation (`$1`), in the apply transaction.
pub(crate) const STORE_NEXT_GEN: &str = "INSERT INTO meta (key, value) VALUES ('next_chunk_gen', $1) \
     ON CONFLICT (key) DO UPDATE SET value = excluded.value";
/// The latest WireGuard status per agent: agent, encoded devices.
pub(crate) const LOAD_WG_STATUS: &str = "SELECT agent_id, devices FROM wg_status";
/// An agent's high-water mark (`$1`: agent).
pub(crate) const HIGH_WATER: &str = "SELECT high_water FROM agents WHERE agent_id = $1";
/// An agent's ledger (`$1`: agent; decode with [`ledger`]).
pub(crate) const LEDGER: &str = "SELECT high_water, accepted, gaps, missing, rejected_stale, \
     rejected_ahead FROM agents WHERE agent_id = $1";
/// The 1-minute buckets of one series in `[$2, $3)` (decode with [`bucket`]).
pub(crate) const MINUTE_BUCKETS: &str = "SELECT bucket, min, max, sum, count, last, last_ts \
     FROM rollup_1m WHERE series_id = $1 AND bucket >= $2 AND bucket < $3 ORDER BY bucket";

/// [`MetricStore::reset_sequence`](super::MetricStore::reset_sequence), `$1`: agent.
pub(crate) const RESET_SEQUENCE: [&str; 3] = [
    "UPDATE agents SET high_water = 0, floor = 0, missing = 0 WHERE agent_id = $1",
    "DELETE FROM accepted WHERE agent_id = $1",
    "DELETE FROM seq_ranges WHERE agent_id = $1",
];

/// [`MetricStore::delete_agent`](super::MetricStore::delete_agent), `$1`: agent; samples and
/// rollups before the series they belong to.
pub(crate) const DELETE_AGENT: [&str; 8] = [
    "DELETE FROM chunks WHERE series_id IN (SELECT id FROM series WHERE agent = $1)",
    "DELETE FROM rollup_1m WHERE series_id IN (SELECT id FROM series WHERE agent = $1)",
    "DELETE FROM rollup_1h WHERE series_id IN (SELECT id FROM series WHERE agent = $1)",
    "DELETE FROM series WHERE agent = $1",
    "DELETE FROM accepted WHERE agent_id = $1",
    "DELETE FROM seq_ranges WHERE agent_id = $1",
    "DELETE FROM agents WHERE agent_id = $1",
    "DELETE FROM wg_status WHERE agent_id = $1",
];

/// The write connection of a SQL store: all that the one [`StoredState`] implementation
/// below needs of it.
pub(crate) trait SqlStore: Send {
    /// The sqlx database.
    type Db: Database;
    /// Every series as `id, agent, name, labels` with the labels as canonical JSON text
    /// (decoded with [`series_row`]).
    const LOAD_SERIES: &'static str;
    /// Runs `statement` (no parameters) on the write connection, reopening it if needed.
    fn fetch_all(
        &mut self,
        statement: &'static str,
    ) -> impl Future<Output = StoreResult<Vec<<Self::Db as Database>::Row>>> + Send;
}

impl<S> StoredState for S
where
    S: SqlStore,
    usize: ColumnIndex<<S::Db as Database>::Row>,
    for<'r> i64: Decode<'r, S::Db> + Type<S::Db>,
    for<'r> String: Decode<'r, S::Db> + Type<S::Db>,
    for<'r> Vec<u8>: Decode<'r, S::Db> + Type<S::Db>,
{
    async fn load_agents(&mut self) -> StoreResult<Vec<(String, AgentMark)>> {
        let rows = self.fetch_all(LOAD_AGENTS).await?;
        Ok(rows.iter().map(agent_mark).collect())
    }

    async fn load_seq_ranges(&mut self) -> StoreResult<Vec<(String, u64, u64)>> {
        let rows = self.fetch_all(LOAD_SEQ_RANGES).await?;
        Ok(rows.iter().map(seq_range).collect())
    }

    async fn load_fingerprints(&mut self) -> StoreResult<Vec<(String, u64, Vec<u8>)>> {
        let rows = self.fetch_all(LOAD_FINGERPRINTS).await?;
        Ok(rows.iter().map(fingerprint).collect())
    }

    async fn load_series(&mut self) -> StoreResult<Vec<SeriesRow>> {
        let rows = self.fetch_all(S::LOAD_SERIES).await?;
        Ok(rows.iter().map(series_row).collect())
    }

    async fn load_next_gen(&mut self) -> StoreResult<i64> {
        let rows = self.fetch_all(LOAD_NEXT_GEN).await?;
        Ok(rows.first().map_or(1, |r| r.get::<i64, _>(0)))
    }

    async fn load_wg_status(&mut self) -> StoreResult<Vec<(String, Vec<u8>)>> {
        let rows = self.fetch_all(LOAD_WG_STATUS).await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

/// Runs `statements`, each with `agent` bound to `$1`, in one transaction.
pub(crate) async fn exec_for_agent<DB>(
    conn: &mut DB::Connection,
    statements: &[&'static str],
    agent: &str,
) -> sqlx::Result<()>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + Type<DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
{
    let mut tx = sqlx::Connection::begin(conn).await?;
    for sql in statements {
        sqlx::query::<DB>(sql).bind(agent).execute(&mut *tx).await?;
    }
    tx.commit().await
}

/// Fetches at most one row of `statement` with `agent` bound to `$1`.
async fn fetch_for_agent<DB>(
    pool: &Pool<DB>,
    statement: &'static str,
    agent: &str,
) -> sqlx::Result<Option<DB::Row>>
where
    DB: Database,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + Type<DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
{
    sqlx::query::<DB>(statement)
        .bind(agent)
        .fetch_optional(pool)
        .await
}

/// [`MetricReader::high_water`](super::MetricReader::high_water) through [`HIGH_WATER`].
pub(crate) async fn high_water<DB>(pool: &Pool<DB>, agent: &str) -> sqlx::Result<Option<u64>>
where
    DB: Database,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + Type<DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    usize: ColumnIndex<DB::Row>,
    for<'r> i64: Decode<'r, DB> + Type<DB>,
{
    let row = fetch_for_agent(pool, HIGH_WATER, agent).await?;
    Ok(row.map(|r| u(&r, 0)))
}

/// [`MetricReader::ledger`](super::MetricReader::ledger) through [`LEDGER`].
pub(crate) async fn read_ledger<DB>(
    pool: &Pool<DB>,
    agent: &str,
) -> sqlx::Result<Option<AgentLedger>>
where
    DB: Database,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + Type<DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    usize: ColumnIndex<DB::Row>,
    for<'r> i64: Decode<'r, DB> + Type<DB>,
{
    let row = fetch_for_agent(pool, LEDGER, agent).await?;
    Ok(row.as_ref().map(ledger))
}

/// [`MetricReader::rollup_progress`](super::MetricReader::rollup_progress) through
/// [`ROLLUP_PROGRESS`].
pub(crate) async fn rollup_progress<DB>(pool: &Pool<DB>) -> sqlx::Result<Vec<(i64, Option<i64>)>>
where
    DB: Database,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    usize: ColumnIndex<DB::Row>,
    for<'r> i64: Decode<'r, DB> + Type<DB>,
{
    let rows = sqlx::query::<DB>(ROLLUP_PROGRESS).fetch_all(pool).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// [`MetricReader::minute_buckets`](super::MetricReader::minute_buckets) through
/// [`MINUTE_BUCKETS`].
pub(crate) async fn minute_buckets<DB>(
    pool: &Pool<DB>,
    series: i64,
    from: i64,
    to: i64,
) -> sqlx::Result<Vec<Bucket>>
where
    DB: Database,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + Type<DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    usize: ColumnIndex<DB::Row>,
    for<'r> i64: Decode<'r, DB>,
    for<'r> f64: Decode<'r, DB> + Type<DB>,
{
    let rows = sqlx::query::<DB>(MINUTE_BUCKETS)
        .bind(series)
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(|r| bucket(series, r)).collect())
}

/// A row of [`LOAD_SEQ_RANGES`].
pub(crate) fn seq_range<R>(r: &R) -> (String, u64, u64)
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
{
    (r.get(0), u(r, 1), u(r, 2))
}

/// A row of [`LOAD_FINGERPRINTS`].
pub(crate) fn fingerprint<R>(r: &R) -> (String, u64, Vec<u8>)
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    (r.get(0), u(r, 1), r.get(2))
}

/// The rollup table a history at `res` (`Minute` or `Hour`) reads.
pub(crate) fn rollup_table(res: Resolution) -> &'static str {
    match res {
        Resolution::Hour => "rollup_1h",
        _ => "rollup_1m",
    }
}

/// `(series, start)` of the chunks starting in `[from, to)`. `series_id IN (…)` lets SQLite
/// seek per series in the `(series_id, start_ts, gen)` index instead of reading the table;
/// PostgreSQL prunes the day partitions.
pub(crate) async fn chunk_starts<DB>(
    pool: &Pool<DB>,
    from: i64,
    to: i64,
) -> sqlx::Result<Vec<(i64, i64)>>
where
    DB: Database,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + Type<DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    usize: ColumnIndex<DB::Row>,
    for<'r> i64: Decode<'r, DB>,
{
    let rows = sqlx::query::<DB>(
        "SELECT series_id, start_ts FROM chunks \
         WHERE series_id IN (SELECT id FROM series) AND start_ts >= $1 AND start_ts < $2",
    )
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Up to `limit` chunks after `after` = `(series, start, generation)`, in that order.
pub(crate) async fn chunk_page<DB>(
    pool: &Pool<DB>,
    after: (i64, i64, i64),
    limit: i64,
) -> sqlx::Result<Vec<ChunkRow>>
where
    DB: Database,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + Type<DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    usize: ColumnIndex<DB::Row>,
    for<'r> i64: Decode<'r, DB>,
    for<'r> Vec<u8>: Decode<'r, DB> + Type<DB>,
{
    let rows = sqlx::query::<DB>(
        "SELECT series_id, start_ts, gen, data FROM chunks \
         WHERE (series_id, start_ts, gen) > ($1, $2, $3) \
         ORDER BY series_id, start_ts, gen LIMIT $4",
    )
    .bind(after.0)
    .bind(after.1)
    .bind(after.2)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(chunk_row).collect())
}

/// A row `series_id, start_ts, gen, data` of table `chunks`.
pub(crate) fn chunk_row<R>(r: &R) -> ChunkRow
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    ChunkRow {
        series: r.get(0),
        start: r.get(1),
        generation: r.get(2),
        data: r.get(3),
    }
}

/// Rows `series, ts, value` (latest, history, raw rows); SQL `NULL` (a NaN gauge) is NaN.
pub(crate) fn triples<R>(rows: &[R]) -> Vec<(i64, i64, f64)>
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> f64: Decode<'r, R::Database> + Type<R::Database>,
{
    rows.iter()
        .map(|r| {
            let v = r.get::<Option<f64>, _>(2).unwrap_or(f64::NAN);
            (r.get(0), r.get(1), v)
        })
        .collect()
}

/// A stored unsigned counter (`INTEGER`/`int8` holding the `u64`'s value).
#[allow(
    clippy::cast_sign_loss,
    reason = "the column stores the u64's bits as a signed integer; the cast restores them"
)]
pub(crate) fn u<R>(r: &R, i: usize) -> u64
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    r.get::<i64, _>(i) as u64
}

/// A row of [`LOAD_AGENTS`].
pub(crate) fn agent_mark<R>(r: &R) -> (String, AgentMark)
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
{
    let ledger = Ledger {
        accepted: u(r, 4),
        gaps: u(r, 5),
        missing: u(r, 6),
        rejected_stale: u(r, 7),
        rejected_ahead: u(r, 8),
    };
    (
        r.get(0),
        AgentMark::restore(u(r, 1), u(r, 2), r.get(3), ledger),
    )
}

/// A row of [`LEDGER`].
pub(crate) fn ledger<R>(r: &R) -> AgentLedger
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    AgentLedger {
        high_water: Some(u(r, 0)).filter(|h| *h > 0),
        accepted: u(r, 1),
        gaps: u(r, 2),
        missing: u(r, 3),
        rejected_stale: u(r, 4),
        rejected_ahead: u(r, 5),
    }
}

/// A row of [`MINUTE_BUCKETS`] of `series` (SQL `NULL` for NaN).
pub(crate) fn bucket<R>(series: i64, r: &R) -> Bucket
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> f64: Decode<'r, R::Database> + Type<R::Database>,
{
    let f = |i: usize, none: f64| r.get::<Option<f64>, _>(i).unwrap_or(none);
    Bucket {
        series_id: series,
        bucket: r.get(0),
        min: f(1, f64::NAN),
        max: f(2, f64::NAN),
        sum: f(3, 0.0),
        count: r.get(4),
        last: f(5, f64::NAN),
        last_ts: r.get(6),
    }
}

/// A row of [`UNAPPLIED`].
pub(crate) fn unapplied<R>(r: &R) -> Unapplied
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    Unapplied {
        id: r.get(0),
        fingerprint: r.get(1),
        received_ms: r.get(2),
        payload: bytes::Bytes::from(r.get::<Vec<u8>, _>(3)),
    }
}

/// A row `id, agent, name, labels` (labels as canonical JSON text) of table `series`.
pub(crate) fn series_row<R>(r: &R) -> SeriesRow
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
{
    SeriesRow {
        id: r.get(0),
        agent: r.get(1),
        name: r.get(2),
        labels: parse_labels_json(&r.get::<String, _>(3)),
    }
}

/// A row `id, agent, name, labels, kind` (labels as canonical JSON text, kind as a 64-bit
/// integer) of a series query.
pub(crate) fn series_info<R>(r: &R) -> SeriesInfo
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
{
    SeriesInfo::new(
        r.get(0),
        r.get(1),
        r.get(2),
        parse_labels_json(&r.get::<String, _>(3)),
        r.get(4),
    )
}
