//! The writer's side of the SQLite backend: the staging log (`pending`) and every write.

use sqlx::{
    ConnectOptions as _, Connection as _, Row as _, SqliteConnection,
    query::Query,
    sqlite::{Sqlite, SqliteArguments, SqliteConnectOptions, SqliteRow},
};

use crate::{
    backend::{
        ApplyPlan, Commit, MetricStore, StagingLog, StoreResult, Unapplied, chunks::NewChunk, sql,
    },
    maintenance::MaintenanceWrite,
    model::{Stored, labels_json},
};

/// Largest multi-row `INSERT` (rows); 4096 × 6 parameters stays below SQLite's 32 766.
const MAX_ROWS: usize = 4096;

/// The SQLite write connection and its prepared multi-row inserts.
pub(crate) struct SqliteStore {
    /// `None` after a failed write: reopened by the next call.
    conn: Option<SqliteConnection>,
    opts: SqliteConnectOptions,
    /// Multi-row inserts by power-of-two row count.
    chunks_sql: Vec<String>,
    series_sql: Vec<String>,
    /// The data directory's lock: held as long as this writer exists.
    _dir_lock: std::fs::File,
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

/// Splits `total` rows into runs whose sizes are powers of two at most [`MAX_ROWS`], so a
/// handful of prepared statements (cached per connection) cover every size.
fn runs(total: usize, max: usize) -> impl Iterator<Item = (usize, usize, usize)> {
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

/// Inserts `chunks` in multi-row statements (`sql` by power-of-two row count); a chunk whose
/// key exists (the same apply retried after an unknown outcome) is skipped.
async fn insert_chunks(
    conn: &mut SqliteConnection,
    sql: &[String],
    chunks: &[NewChunk],
) -> sqlx::Result<()> {
    for (start, len, pow) in runs(chunks.len(), MAX_ROWS) {
        let mut q: Q<'_> = sqlx::query(&sql[pow]);
        for c in &chunks[start..start + len] {
            q = q
                .bind(c.series)
                .bind(c.start)
                .bind(c.generation)
                .bind(c.end)
                .bind(c.count)
                .bind(&c.data[..]);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

impl SqliteStore {
    pub(crate) fn new(
        conn: SqliteConnection,
        opts: SqliteConnectOptions,
        dir_lock: std::fs::File,
    ) -> Self {
        Self {
            _dir_lock: dir_lock,
            conn: Some(conn),
            opts,
            chunks_sql: sql_by_pow(
                "INSERT INTO chunks (series_id, start_ts, gen, end_ts, n, data) VALUES ",
                6,
                MAX_ROWS,
                " ON CONFLICT DO NOTHING",
            ),
            series_sql: sql_by_pow(
                "INSERT INTO series (id, agent, name, labels, kind) VALUES ",
                5,
                1024,
                "",
            ),
        }
    }

    /// The write connection, reopened if a failure dropped it.
    async fn connection(&mut self) -> sqlx::Result<&mut SqliteConnection> {
        if self.conn.is_none() {
            let c = self.opts.connect().await?;
            tracing::info!("write connection reopened");
            self.conn = Some(c);
        }
        self.conn.as_mut().ok_or(sqlx::Error::PoolClosed)
    }
}

#[allow(
    clippy::cast_possible_wrap,
    reason = "INTEGER stores the u64's bits; `u` in backend/sql.rs casts them back"
)]
async fn write_commit(conn: &mut SqliteConnection, plan: &Commit) -> sqlx::Result<()> {
    let mut tx = conn.begin().await?;
    for s in &plan.staged {
        sqlx::query(
            "INSERT INTO pending (id, agent_id, seq, fingerprint, received_ms, payload) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(s.id)
        .bind(s.agent.as_str())
        .bind(s.seq as i64)
        .bind(&s.fingerprint[..])
        .bind(s.received_ms)
        .bind(&s.payload[..])
        .execute(&mut *tx)
        .await?;
    }
    // The window's fingerprints before the pruning below each agent's floor: a late seq can
    // land at or below a floor that rose in this same group (the window shrank since the
    // last start), and must not outlive the pruning on disk when it is gone from memory.
    for (agent, seq, fp) in &plan.accepted {
        sqlx::query("INSERT OR IGNORE INTO accepted (agent_id, seq, fingerprint) VALUES (?, ?, ?)")
            .bind(agent.as_str())
            .bind(*seq as i64)
            .bind(&fp[..])
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

impl sql::SqlStore for SqliteStore {
    type Db = Sqlite;
    const LOAD_SERIES: &'static str = "SELECT id, agent, name, labels FROM series";

    async fn fetch_all(&mut self, statement: &'static str) -> StoreResult<Vec<SqliteRow>> {
        let conn = self.connection().await?;
        Ok(sqlx::query(statement).fetch_all(conn).await?)
    }
}

impl StagingLog for SqliteStore {
    async fn append(&mut self, commit: &Commit) -> StoreResult<()> {
        let conn = self.connection().await?;
        Ok(write_commit(conn, commit).await?)
    }

    async fn unapplied(&mut self) -> StoreResult<Vec<Unapplied>> {
        let rows = sql::SqlStore::fetch_all(self, sql::UNAPPLIED).await?;
        Ok(rows.iter().map(sql::unapplied).collect())
    }
}

impl MetricStore for SqliteStore {
    async fn apply(&mut self, plan: &ApplyPlan) -> StoreResult<()> {
        if self.conn.is_none() {
            self.connection().await?;
        }
        let (chunks_sql, series_sql) = (&self.chunks_sql, &self.series_sql);
        let conn = self.conn.as_mut().ok_or(sqlx::Error::PoolClosed)?;
        let mut tx = conn.begin().await?;
        for (start, len, pow) in runs(plan.new_series.len(), 1024) {
            let mut q = sqlx::query(&series_sql[pow]);
            for s in &plan.new_series[start..start + len] {
                q = q
                    .bind(s.id)
                    .bind(s.agent.as_str())
                    .bind(s.name.as_str())
                    .bind(labels_json(&s.labels))
                    .bind(s.kind);
            }
            q.execute(&mut *tx).await?;
        }
        insert_chunks(&mut tx, chunks_sql, &plan.chunks).await?;
        sqlx::query(sql::STORE_NEXT_GEN)
            .bind(plan.next_gen)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM pending WHERE id <= ?")
            .bind(plan.applied_up_to)
            .execute(&mut *tx)
            .await?;
        Ok(tx.commit().await?)
    }

    async fn reset_sequence(&mut self, agent: &sentra_core::AgentId) -> StoreResult<()> {
        let conn = self.connection().await?;
        Ok(sql::exec_for_agent::<Sqlite>(conn, &sql::RESET_SEQUENCE, agent.as_str()).await?)
    }

    async fn delete_agent(&mut self, agent: &sentra_core::AgentId) -> StoreResult<()> {
        let conn = self.connection().await?;
        Ok(sql::exec_for_agent::<Sqlite>(conn, &sql::DELETE_AGENT, agent.as_str()).await?)
    }

    async fn write_maintenance(&mut self, job: &MaintenanceWrite) -> StoreResult<()> {
        if self.conn.is_none() {
            self.connection().await?;
        }
        let chunks_sql = &self.chunks_sql;
        let conn = self.conn.as_mut().ok_or(sqlx::Error::PoolClosed)?;
        let mut tx = conn.begin().await?;
        for (table, rows) in [("rollup_1m", &job.rollup_1m), ("rollup_1h", &job.rollup_1h)] {
            let sql = format!(
                "INSERT OR REPLACE INTO {table} \
                 (series_id, bucket, min, max, sum, count, last, last_ts) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            );
            for b in rows.iter().filter(|b| b.count > 0) {
                sqlx::query(&sql)
                    .bind(b.series_id)
                    .bind(b.bucket)
                    .bind(b.min)
                    .bind(b.max)
                    .bind(b.sum)
                    .bind(b.count)
                    .bind(b.last)
                    .bind(b.last_ts)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        for c in &job.compactions {
            for &(start, generation) in &c.remove {
                sqlx::query("DELETE FROM chunks WHERE series_id = ? AND start_ts = ? AND gen = ?")
                    .bind(c.series)
                    .bind(start)
                    .bind(generation)
                    .execute(&mut *tx)
                    .await?;
            }
            insert_chunks(&mut tx, chunks_sql, &c.add).await?;
        }
        if let Some((raw, m1, h1)) = job.cutoffs {
            for (table, col, cut) in [
                ("chunks", "start_ts", raw),
                ("rollup_1m", "bucket", m1),
                ("rollup_1h", "bucket", h1),
            ] {
                // `series_id IN (…)` lets SQLite seek to the old end of every series instead
                // of scanning the whole table. A chunk goes once its newest sample is older
                // than the cutoff (it never spans more than a chunk window).
                let newest = if table == "chunks" {
                    " AND end_ts < ?1"
                } else {
                    ""
                };
                sqlx::query(&format!(
                    "DELETE FROM {table} WHERE series_id IN (SELECT id FROM series) \
                     AND {col} < ?1{newest}"
                ))
                .bind(cut)
                .execute(&mut *tx)
                .await?;
            }
        }
        Ok(tx.commit().await?)
    }

    async fn legacy_samples(&mut self, limit: i64) -> StoreResult<Option<Vec<(i64, i64, Stored)>>> {
        let conn = self.connection().await?;
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'samples')",
        )
        .fetch_one(&mut *conn)
        .await?;
        if !exists {
            return Ok(None);
        }
        // counters were stored as INTEGER (the u64's bits), gauges as REAL, NaN as NULL
        let rows = sqlx::query(
            "SELECT series_id, ts, v, typeof(v) FROM samples ORDER BY series_id, ts LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
        Ok(Some(
            rows.iter()
                .map(|r| {
                    let v = match r.get::<&str, _>(3) {
                        "integer" => Stored::Counter(sql::u(r, 2)),
                        "real" => Stored::Gauge(r.get(2)),
                        _ => Stored::Gauge(f64::NAN),
                    };
                    (r.get(0), r.get(1), v)
                })
                .collect(),
        ))
    }

    async fn delete_legacy(&mut self, upto: Option<(i64, i64)>) -> StoreResult<()> {
        let conn = self.connection().await?;
        match upto {
            Some((series, ts)) => sqlx::query(
                "DELETE FROM samples WHERE series_id < ?1 OR (series_id = ?1 AND ts <= ?2)",
            )
            .bind(series)
            .bind(ts)
            .execute(conn)
            .await
            .map(drop)?,
            None => sqlx::query("DROP TABLE samples")
                .execute(conn)
                .await
                .map(drop)?,
        }
        Ok(())
    }

    async fn probe(&mut self, now_ms: i64) -> StoreResult<()> {
        let mut tx = self.connection().await?.begin().await?;
        sqlx::query("INSERT OR REPLACE INTO meta (key, value) VALUES ('storage_probe_ms', ?)")
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        Ok(tx.commit().await?)
    }

    fn drop_connection(&mut self) {
        drop(self.conn.take());
    }

    async fn close(&mut self) -> StoreResult<()> {
        match self.conn.take() {
            Some(conn) => Ok(conn.close().await?),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::runs;

    #[test]
    fn chunking_covers_everything_with_powers_of_two() {
        for total in [0, 1, 2, 3, 7, 8, 9, 100, 8192, 8193, 20_000] {
            let mut next = 0;
            for (start, len, pow) in runs(total, 8192) {
                assert_eq!(start, next);
                assert_eq!(len, 1 << pow);
                assert!(len <= 8192);
                next += len;
            }
            assert_eq!(next, total);
        }
    }
}
