//! The writer's side of the PostgreSQL backend: the staging log (`pending`) and every write,
//! one array-bound statement per table.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sqlx::{
    ConnectOptions as _, Connection as _, PgConnection, Postgres, Row as _,
    postgres::{PgConnectOptions, PgRow},
};

use super::{DAY_MS, partition_day, partition_name};
use crate::{
    backend::{
        ApplyPlan, Commit, MetricStore, StagingLog, StoreResult, Unapplied, chunks::NewChunk, sql,
    },
    maintenance::MaintenanceWrite,
    model::{Stored, labels_json},
};

/// Days of partitions maintenance keeps ready after today.
const DAYS_AHEAD: i64 = 2;

/// The session advisory lock a writer holds on its database (advisory locks are per
/// database): one writer per database, as one writer per SQLite file. It ends with the
/// session, so a writer whose connection died (a server restart) takes it again.
const WRITER_LOCK: i64 = 0x5345_4e54_5241_0001;

/// Takes the writer lock on `conn`, or says who holds it.
pub(crate) async fn lock_writer(conn: &mut PgConnection) -> StoreResult<()> {
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(WRITER_LOCK)
        .fetch_one(&mut *conn)
        .await?;
    if got {
        return Ok(());
    }
    let holder: Option<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND ((classid::int8 << 32) | objid::int8) = $1 LIMIT 1",
    )
    .bind(WRITER_LOCK)
    .fetch_optional(&mut *conn)
    .await?;
    Err(format!(
        "another sentra-ingest writer uses this database (PostgreSQL backend pid {})",
        holder.map_or_else(|| "unknown".to_owned(), |p| p.to_string())
    )
    .into())
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The PostgreSQL write connection.
pub(crate) struct PgStore {
    /// `None` after a failed write: reconnected by the next call.
    conn: Option<PgConnection>,
    opts: PgConnectOptions,
    /// Days whose partition is known to exist (cleared with the connection after a failure:
    /// another server's retention may have dropped one).
    days: BTreeSet<i64>,
    /// Raw retention (ms): days entirely older get no partition (rows go to the default
    /// partition until maintenance deletes them).
    retention_ms: i64,
}

#[allow(
    clippy::cast_possible_wrap,
    reason = "int8 stores the u64's bits; `u` in backend/sql.rs casts them back"
)]
const fn i(v: u64) -> i64 {
    v as i64
}

impl PgStore {
    pub(crate) fn new(conn: PgConnection, opts: PgConnectOptions, retention_ms: i64) -> Self {
        Self {
            conn: Some(conn),
            opts,
            days: BTreeSet::new(),
            retention_ms,
        }
    }

    /// The write connection, reconnected (and the writer lock taken again) if a failure
    /// dropped it.
    async fn connection(&mut self) -> StoreResult<&mut PgConnection> {
        if self.conn.is_none() {
            let mut c = self.opts.connect().await?;
            lock_writer(&mut c).await?;
            tracing::info!("PostgreSQL write connection reopened");
            self.conn = Some(c);
        }
        Ok(self.conn.as_mut().ok_or(sqlx::Error::PoolClosed)?)
    }

    /// Creates the partitions of yesterday, today and the next [`DAYS_AHEAD`] days.
    pub(crate) async fn ensure_days_ahead(&mut self, now: i64) -> StoreResult<()> {
        let today = now.div_euclid(DAY_MS);
        let days: Vec<i64> = (today - 1..=today + DAYS_AHEAD).collect();
        let conn = self.connection().await?;
        let mut tx = conn.begin().await?;
        create_partitions(&mut tx, &days).await?;
        tx.commit().await?;
        self.days.extend(days);
        Ok(())
    }
}

/// `CREATE TABLE IF NOT EXISTS` each day's partition.
async fn create_partitions(conn: &mut PgConnection, days: &[i64]) -> sqlx::Result<()> {
    for &d in days {
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {} PARTITION OF chunks FOR VALUES FROM ({}) TO ({})",
            partition_name(d),
            d.saturating_mul(DAY_MS),
            (d + 1).saturating_mul(DAY_MS)
        );
        sqlx::query(&sql).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Inserts `chunks` in one array-bound statement; a chunk whose key exists (the same apply
/// retried after an unknown outcome) is skipped. Chunks are few (one per series and apply)
/// and large, so the binary `COPY` the row store needed (`benches/pg_bulk.rs`) buys nothing.
async fn insert_chunks(conn: &mut PgConnection, chunks: &[NewChunk]) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO chunks (series_id, start_ts, gen, end_ts, n, data) \
         SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::int8[], $5::int4[], \
         $6::bytea[]) ON CONFLICT DO NOTHING",
    )
    .bind(chunks.iter().map(|c| c.series).collect::<Vec<_>>())
    .bind(chunks.iter().map(|c| c.start).collect::<Vec<_>>())
    .bind(chunks.iter().map(|c| c.generation).collect::<Vec<_>>())
    .bind(chunks.iter().map(|c| c.end).collect::<Vec<_>>())
    .bind(
        chunks
            .iter()
            .map(|c| i32::try_from(c.count).unwrap_or(i32::MAX))
            .collect::<Vec<_>>(),
    )
    .bind(chunks.iter().map(|c| &c.data[..]).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn write_commit(conn: &mut PgConnection, plan: &Commit) -> sqlx::Result<()> {
    let mut tx = conn.begin().await?;
    if !plan.staged.is_empty() {
        let s = &plan.staged;
        sqlx::query(
            "INSERT INTO pending (id, agent_id, seq, fingerprint, received_ms, payload) \
             SELECT * FROM UNNEST($1::int8[], $2::text[], $3::int8[], $4::bytea[], $5::int8[], \
             $6::bytea[])",
        )
        .bind(s.iter().map(|b| b.id).collect::<Vec<_>>())
        .bind(s.iter().map(|b| b.agent.as_str()).collect::<Vec<_>>())
        .bind(s.iter().map(|b| i(b.seq)).collect::<Vec<_>>())
        .bind(s.iter().map(|b| &b.fingerprint[..]).collect::<Vec<_>>())
        .bind(s.iter().map(|b| b.received_ms).collect::<Vec<_>>())
        .bind(s.iter().map(|b| &b.payload[..]).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !plan.agents.is_empty() {
        // one row per agent (ON CONFLICT DO UPDATE may not touch a row twice): the last wins
        let rows: BTreeMap<&str, _> = plan.agents.iter().map(|r| (r.agent.as_str(), r)).collect();
        let col = |f: &dyn Fn(&crate::backend::AgentRow) -> i64| -> Vec<i64> {
            rows.values().map(|r| f(r)).collect()
        };
        sqlx::query(
            "INSERT INTO agents (agent_id, high_water, floor, last_seen_ms, accepted, gaps, \
             missing, rejected_stale, rejected_ahead) \
             SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], \
             $6::int8[], $7::int8[], $8::int8[], $9::int8[]) \
             ON CONFLICT (agent_id) DO UPDATE SET high_water = EXCLUDED.high_water, \
             floor = EXCLUDED.floor, last_seen_ms = EXCLUDED.last_seen_ms, \
             accepted = EXCLUDED.accepted, gaps = EXCLUDED.gaps, missing = EXCLUDED.missing, \
             rejected_stale = EXCLUDED.rejected_stale, rejected_ahead = EXCLUDED.rejected_ahead",
        )
        .bind(rows.keys().copied().collect::<Vec<_>>())
        .bind(col(&|r| i(r.high_water)))
        .bind(col(&|r| i(r.floor)))
        .bind(col(&|r| r.last_seen))
        .bind(col(&|r| i(r.ledger.accepted)))
        .bind(col(&|r| i(r.ledger.gaps)))
        .bind(col(&|r| i(r.ledger.missing)))
        .bind(col(&|r| i(r.ledger.rejected_stale)))
        .bind(col(&|r| i(r.ledger.rejected_ahead)))
        .execute(&mut *tx)
        .await?;
        let floors: Vec<_> = rows.values().filter(|r| r.floor > 0).collect();
        if !floors.is_empty() {
            sqlx::query(
                "DELETE FROM accepted a USING UNNEST($1::text[], $2::int8[]) f(agent, floor) \
                 WHERE a.agent_id = f.agent AND a.seq <= f.floor",
            )
            .bind(floors.iter().map(|r| r.agent.as_str()).collect::<Vec<_>>())
            .bind(floors.iter().map(|r| i(r.floor)).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
    }
    if !plan.ranges_removed.is_empty() {
        let r = &plan.ranges_removed;
        sqlx::query(
            "DELETE FROM seq_ranges s USING UNNEST($1::text[], $2::int8[]) d(agent, lo) \
             WHERE s.agent_id = d.agent AND s.lo = d.lo",
        )
        .bind(r.iter().map(|(a, _)| a.as_str()).collect::<Vec<_>>())
        .bind(r.iter().map(|(_, lo)| i(*lo)).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !plan.ranges_written.is_empty() {
        // last write of an (agent, lo) wins, as with row-by-row INSERT OR REPLACE
        let w: BTreeMap<(&str, u64), u64> = plan
            .ranges_written
            .iter()
            .map(|(a, lo, hi)| ((a.as_str(), *lo), *hi))
            .collect();
        sqlx::query(
            "INSERT INTO seq_ranges (agent_id, lo, hi) \
             SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[]) \
             ON CONFLICT (agent_id, lo) DO UPDATE SET hi = EXCLUDED.hi",
        )
        .bind(w.keys().map(|(a, _)| *a).collect::<Vec<_>>())
        .bind(w.keys().map(|(_, lo)| i(*lo)).collect::<Vec<_>>())
        .bind(w.values().map(|hi| i(*hi)).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !plan.accepted.is_empty() {
        let a = &plan.accepted;
        sqlx::query(
            "INSERT INTO accepted (agent_id, seq, fingerprint) \
             SELECT * FROM UNNEST($1::text[], $2::int8[], $3::bytea[]) ON CONFLICT DO NOTHING",
        )
        .bind(a.iter().map(|(g, _, _)| g.as_str()).collect::<Vec<_>>())
        .bind(a.iter().map(|(_, s, _)| i(*s)).collect::<Vec<_>>())
        .bind(a.iter().map(|(_, _, f)| &f[..]).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !plan.wg.is_empty() {
        // the newest status per agent (created, then the later one on a tie)
        let mut newest: HashMap<&str, &(sentra_core::AgentId, u64, i64, Vec<u8>)> = HashMap::new();
        for w in &plan.wg {
            let e = newest.entry(w.0.as_str()).or_insert(w);
            if w.2 >= e.2 {
                *e = w;
            }
        }
        let w: Vec<_> = newest.into_values().collect();
        sqlx::query(
            "INSERT INTO wg_status (agent_id, seq, created_ms, devices) \
             SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::bytea[]) \
             ON CONFLICT (agent_id) DO UPDATE SET seq = EXCLUDED.seq, \
             created_ms = EXCLUDED.created_ms, devices = EXCLUDED.devices \
             WHERE EXCLUDED.created_ms >= wg_status.created_ms",
        )
        .bind(w.iter().map(|x| x.0.as_str()).collect::<Vec<_>>())
        .bind(w.iter().map(|x| i(x.1)).collect::<Vec<_>>())
        .bind(w.iter().map(|x| x.2).collect::<Vec<_>>())
        .bind(w.iter().map(|x| &x.3[..]).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

impl sql::SqlStore for PgStore {
    type Db = Postgres;
    const LOAD_SERIES: &'static str = "SELECT id, agent, name, labels::text FROM series";

    async fn fetch_all(&mut self, statement: &'static str) -> StoreResult<Vec<PgRow>> {
        let conn = self.connection().await?;
        Ok(sqlx::query(statement).fetch_all(conn).await?)
    }
}

impl StagingLog for PgStore {
    async fn append(&mut self, commit: &Commit) -> StoreResult<()> {
        let conn = self.connection().await?;
        Ok(write_commit(conn, commit).await?)
    }

    async fn unapplied(&mut self) -> StoreResult<Vec<Unapplied>> {
        let rows = sql::SqlStore::fetch_all(self, sql::UNAPPLIED).await?;
        Ok(rows.iter().map(sql::unapplied).collect())
    }
}

impl MetricStore for PgStore {
    async fn apply(&mut self, plan: &ApplyPlan) -> StoreResult<()> {
        // days older than the retention get no partition (see the migration)
        let oldest = now_ms().saturating_sub(self.retention_ms);
        let wanted: Vec<i64> = plan
            .chunks
            .iter()
            .map(|c| c.start.div_euclid(DAY_MS))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|d| !self.days.contains(d) && (d + 1).saturating_mul(DAY_MS) > oldest)
            .collect();
        let conn = self.connection().await?;
        let mut tx = conn.begin().await?;
        let mut missing = Vec::with_capacity(wanted.len());
        for d in wanted {
            // a day whose rows went to the default partition (the retention grew since)
            // keeps them there: creating its partition would fail
            let in_default: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM chunks_default WHERE start_ts >= $1 AND start_ts < $2)",
            )
            .bind(d.saturating_mul(DAY_MS))
            .bind((d + 1).saturating_mul(DAY_MS))
            .fetch_one(&mut *tx)
            .await?;
            if !in_default {
                missing.push(d);
            }
        }
        if !plan.new_series.is_empty() {
            let s = &plan.new_series;
            sqlx::query(
                "INSERT INTO series (id, agent, name, labels, kind) \
                 SELECT id, agent, name, labels::jsonb, kind \
                 FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::int2[]) \
                 AS t(id, agent, name, labels, kind) ON CONFLICT DO NOTHING",
            )
            .bind(s.iter().map(|x| x.id).collect::<Vec<_>>())
            .bind(s.iter().map(|x| x.agent.as_str()).collect::<Vec<_>>())
            .bind(s.iter().map(|x| x.name.as_str()).collect::<Vec<_>>())
            .bind(s.iter().map(|x| labels_json(&x.labels)).collect::<Vec<_>>())
            .bind(
                s.iter()
                    .map(|x| i16::try_from(x.kind).unwrap_or(0))
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *tx)
            .await?;
        }
        create_partitions(&mut tx, &missing).await?;
        if !plan.chunks.is_empty() {
            insert_chunks(&mut tx, &plan.chunks).await?;
        }
        sqlx::query(sql::STORE_NEXT_GEN)
            .bind(plan.next_gen)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM pending WHERE id <= $1")
            .bind(plan.applied_up_to)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.days.extend(missing);
        Ok(())
    }

    async fn reset_sequence(&mut self, agent: &sentra_core::AgentId) -> StoreResult<()> {
        let conn = self.connection().await?;
        Ok(sql::exec_for_agent::<Postgres>(conn, &sql::RESET_SEQUENCE, agent.as_str()).await?)
    }

    async fn delete_agent(&mut self, agent: &sentra_core::AgentId) -> StoreResult<()> {
        let conn = self.connection().await?;
        Ok(sql::exec_for_agent::<Postgres>(conn, &sql::DELETE_AGENT, agent.as_str()).await?)
    }

    async fn write_maintenance(&mut self, job: &MaintenanceWrite) -> StoreResult<()> {
        let now = now_ms();
        let today = now.div_euclid(DAY_MS);
        let ahead: Vec<i64> = (today..=today + DAYS_AHEAD)
            .filter(|d| !self.days.contains(d))
            .collect();
        let mut dropped = Vec::new();
        let conn = self.connection().await?;
        let mut tx = conn.begin().await?;
        create_partitions(&mut tx, &ahead).await?;
        for (table, rows) in [("rollup_1m", &job.rollup_1m), ("rollup_1h", &job.rollup_1h)] {
            // one row per key (ON CONFLICT DO UPDATE may not touch a row twice): last wins
            let rows: BTreeMap<(i64, i64), _> = rows
                .iter()
                .filter(|b| b.count > 0)
                .map(|b| ((b.series_id, b.bucket), b))
                .collect();
            if rows.is_empty() {
                continue;
            }
            let nan_null = |x: f64| (!x.is_nan()).then_some(x);
            let sql = format!(
                "INSERT INTO {table} (series_id, bucket, min, max, sum, count, last, last_ts) \
                 SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::float8[], $4::float8[], \
                 $5::float8[], $6::int8[], $7::float8[], $8::int8[]) \
                 ON CONFLICT (series_id, bucket) DO UPDATE SET min = EXCLUDED.min, \
                 max = EXCLUDED.max, sum = EXCLUDED.sum, count = EXCLUDED.count, \
                 last = EXCLUDED.last, last_ts = EXCLUDED.last_ts"
            );
            let b: Vec<_> = rows.values().collect();
            sqlx::query(&sql)
                .bind(b.iter().map(|b| b.series_id).collect::<Vec<_>>())
                .bind(b.iter().map(|b| b.bucket).collect::<Vec<_>>())
                .bind(b.iter().map(|b| nan_null(b.min)).collect::<Vec<_>>())
                .bind(b.iter().map(|b| nan_null(b.max)).collect::<Vec<_>>())
                .bind(b.iter().map(|b| nan_null(b.sum)).collect::<Vec<_>>())
                .bind(b.iter().map(|b| b.count).collect::<Vec<_>>())
                .bind(b.iter().map(|b| nan_null(b.last)).collect::<Vec<_>>())
                .bind(b.iter().map(|b| b.last_ts).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await?;
        }
        if !job.compactions.is_empty() {
            let removed: Vec<(i64, i64, i64)> = job
                .compactions
                .iter()
                .flat_map(|c| c.remove.iter().map(|&(s, g)| (c.series, s, g)))
                .collect();
            sqlx::query(
                "DELETE FROM chunks c USING UNNEST($1::int8[], $2::int8[], $3::int8[]) \
                 AS r(series_id, start_ts, gen) WHERE c.series_id = r.series_id \
                 AND c.start_ts = r.start_ts AND c.gen = r.gen",
            )
            .bind(removed.iter().map(|r| r.0).collect::<Vec<_>>())
            .bind(removed.iter().map(|r| r.1).collect::<Vec<_>>())
            .bind(removed.iter().map(|r| r.2).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
            let added: Vec<NewChunk> = job
                .compactions
                .iter()
                .flat_map(|c| c.add.iter().cloned())
                .collect();
            insert_chunks(&mut tx, &added).await?;
        }
        if let Some((raw, m1, h1)) = job.cutoffs {
            // whole days before the cutoff: DROP their partitions
            let parts: Vec<String> = sqlx::query_scalar(
                "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                 WHERE i.inhparent = 'chunks'::regclass",
            )
            .fetch_all(&mut *tx)
            .await?;
            for name in parts {
                if let Some(day) = partition_day(&name)
                    && (day + 1).saturating_mul(DAY_MS) <= raw
                {
                    sqlx::query(&format!("DROP TABLE IF EXISTS {name}"))
                        .execute(&mut *tx)
                        .await?;
                    dropped.push(day);
                }
            }
            // the day that straddles the cutoff, and the rollups: row by row
            for (table, col, cut) in [
                ("chunks", "start_ts", raw),
                ("rollup_1m", "bucket", m1),
                ("rollup_1h", "bucket", h1),
            ] {
                // a chunk goes once its newest sample is older than the cutoff
                let newest = if table == "chunks" {
                    " AND end_ts < $1"
                } else {
                    ""
                };
                sqlx::query(&format!("DELETE FROM {table} WHERE {col} < $1{newest}"))
                    .bind(cut)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        self.days.extend(ahead);
        for d in dropped {
            self.days.remove(&d);
        }
        Ok(())
    }

    async fn legacy_samples(&mut self, limit: i64) -> StoreResult<Option<Vec<(i64, i64, Stored)>>> {
        let conn = self.connection().await?;
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('samples') IS NOT NULL")
            .fetch_one(&mut *conn)
            .await?;
        if !exists {
            return Ok(None);
        }
        // the row store kept counters as float8 and NaN gauges as NULL
        let rows = sqlx::query(
            "SELECT x.series_id, x.ts, x.v, COALESCE(s.kind, 0::int2) FROM samples x \
             LEFT JOIN series s ON s.id = x.series_id ORDER BY x.series_id, x.ts LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "the row store wrote counters as float8 from the u64"
        )]
        let value = |kind: i16, v: Option<f64>| match (kind, v) {
            (1, Some(v)) => Stored::Counter(v as u64),
            (_, v) => Stored::Gauge(v.unwrap_or(f64::NAN)),
        };
        Ok(Some(
            rows.iter()
                .map(|r| (r.get(0), r.get(1), value(r.get(3), r.get(2))))
                .collect(),
        ))
    }

    async fn delete_legacy(&mut self, upto: Option<(i64, i64)>) -> StoreResult<()> {
        let conn = self.connection().await?;
        match upto {
            Some((series, ts)) => {
                sqlx::query("DELETE FROM samples WHERE (series_id, ts) <= ($1, $2)")
                    .bind(series)
                    .bind(ts)
                    .execute(conn)
                    .await?;
            }
            None => {
                sqlx::query("DROP TABLE samples").execute(conn).await?;
            }
        }
        Ok(())
    }

    async fn probe(&mut self, now_ms: i64) -> StoreResult<()> {
        let mut tx = self.connection().await?.begin().await?;
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('storage_probe_ms', $1) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        )
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        Ok(tx.commit().await?)
    }

    fn drop_connection(&mut self) {
        drop(self.conn.take());
        self.days.clear();
    }

    async fn close(&mut self) -> StoreResult<()> {
        match self.conn.take() {
            Some(conn) => Ok(conn.close().await?),
            None => Ok(()),
        }
    }
}
