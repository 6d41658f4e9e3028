//! The read side of the SQLite backend: queries, rollup reads, ledger, integrity check.

use sentra_core::AgentId;
use sqlx::{Row as _, SqlitePool};

use crate::{
    Error, Result,
    backend::{
        AnyPool, MetricReader,
        chunks::{CHUNK_WINDOW_MS, ChunkRow},
        sql,
    },
    query::{Aggregation, MatchOp, Range, Resolution, Selector, SeriesInfo},
};

/// A pool of read-only connections (WAL mode: reads never block the writer).
#[derive(Clone)]
pub(crate) struct SqliteReader {
    pool: SqlitePool,
}

impl SqliteReader {
    pub(crate) fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

/// Series ids as a JSON array, for `json_each(?)` (one parameter for any number of ids).
fn ids_json(ids: &[i64]) -> String {
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    format!("[{}]", ids.join(","))
}

impl MetricReader for SqliteReader {
    fn pool(&self) -> AnyPool<'_> {
        AnyPool::Sqlite(&self.pool)
    }

    async fn names(&self, agent: Option<&AgentId>, limit: usize) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT name FROM series WHERE (?1 IS NULL OR agent = ?1) ORDER BY name LIMIT ?2",
        )
        .bind(agent.map(AgentId::as_str))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1))
        .fetch_all(&self.pool)
        .await
        .map_err(Error::storage("listing metric names"))?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    async fn series(&self, sel: &Selector, limit: usize) -> Result<Vec<SeriesInfo>> {
        let mut sql = String::from("SELECT id, agent, name, labels, kind FROM series WHERE 1 = 1");
        if sel.name.is_some() {
            sql.push_str(" AND name = ?");
        }
        if sel.agent.is_some() {
            sql.push_str(" AND agent = ?");
        }
        for m in &sel.matchers {
            sql.push_str(match m.op {
                MatchOp::Eq => " AND IFNULL(json_extract(labels, ?), '') = ?",
                MatchOp::NotEq => " AND IFNULL(json_extract(labels, ?), '') != ?",
            });
        }
        sql.push_str(" ORDER BY id LIMIT ?");
        let mut q = sqlx::query(&sql);
        if let Some(n) = &sel.name {
            q = q.bind(n.as_str());
        }
        if let Some(a) = &sel.agent {
            q = q.bind(a.as_str());
        }
        for m in &sel.matchers {
            q = q
                .bind(format!("$.{}", m.name.as_str()))
                .bind(m.value.as_str());
        }
        let rows = q
            .bind(i64::try_from(limit).unwrap_or(i64::MAX) + 1)
            .fetch_all(&self.pool)
            .await
            .map_err(Error::storage("resolving series"))?;
        Ok(rows.iter().map(sql::series_info).collect())
    }

    async fn chunks(&self, ids: &[i64], from: i64, to: i64) -> Result<Vec<ChunkRow>> {
        let rows = sqlx::query(
            "SELECT series_id, start_ts, gen, data FROM chunks \
             WHERE series_id IN (SELECT value FROM json_each(?1)) \
             AND start_ts > ?2 AND start_ts < ?3 AND end_ts >= ?4 \
             ORDER BY series_id, start_ts, gen",
        )
        .bind(ids_json(ids))
        .bind(from.saturating_sub(CHUNK_WINDOW_MS))
        .bind(to)
        .bind(from)
        .fetch_all(&self.pool)
        .await
        .map_err(Error::storage("reading raw samples"))?;
        Ok(rows.iter().map(sql::chunk_row).collect())
    }

    async fn latest_chunks(&self, ids: &[i64]) -> Result<Vec<ChunkRow>> {
        let rows = sqlx::query(
            "SELECT c.series_id, c.start_ts, c.gen, c.data FROM json_each(?1) j \
             JOIN chunks c ON c.series_id = j.value AND c.start_ts > \
             max((SELECT MAX(start_ts) FROM chunks WHERE series_id = j.value), \
             -9223372036854775807 - 1 + ?2) - ?2 \
             ORDER BY c.series_id, c.start_ts, c.gen",
        )
        .bind(ids_json(ids))
        .bind(CHUNK_WINDOW_MS)
        .fetch_all(&self.pool)
        .await
        .map_err(Error::storage("reading latest values"))?;
        Ok(rows.iter().map(sql::chunk_row).collect())
    }

    async fn rollup_history(
        &self,
        ids: &[i64],
        range: Range,
        agg: Aggregation,
        res: Resolution,
    ) -> Result<Vec<(i64, i64, f64)>> {
        let table = sql::rollup_table(res);
        let expr = match agg {
            Aggregation::Avg => "SUM(sum) / SUM(count), 0",
            Aggregation::Min => "MIN(min), 0",
            Aggregation::Max => "MAX(max), 0",
            Aggregation::Sum => "SUM(sum), 0",
            Aggregation::Count => "CAST(SUM(count) AS REAL), 0",
            Aggregation::Last => "last, MAX(last_ts)",
        };
        // With exactly one MAX() aggregate SQLite takes bare columns from the row holding the
        // maximum, which is how `last` is computed in one pass.
        let sql = format!(
            "SELECT series_id, CAST((bucket - ?1) / ?2 AS INTEGER) AS b, {expr} FROM {table} \
             WHERE series_id IN (SELECT value FROM json_each(?3)) AND bucket >= ?1 AND bucket < ?4 \
             GROUP BY series_id, b ORDER BY series_id, b"
        );
        let rows = sqlx::query(&sql)
            .bind(range.from)
            .bind(range.step)
            .bind(ids_json(ids))
            .bind(range.to)
            .fetch_all(&self.pool)
            .await
            .map_err(Error::storage("reading history"))?;
        Ok(sql::triples(&rows))
    }

    /// SQLite's `PRAGMA integrity_check`, one line per problem as SQLite reports them
    /// (damage that stops the check, `database disk image is malformed`, is one line).
    async fn integrity_check(&self) -> Result<Vec<String>> {
        let rows = match sqlx::query("PRAGMA integrity_check")
            .fetch_all(&self.pool)
            .await
        {
            Ok(rows) => rows,
            // damage bad enough to stop the check is a finding, not a failure to check
            Err(sqlx::Error::Database(e))
                if e.code()
                    .and_then(|c| c.parse::<i32>().ok())
                    .is_some_and(|c| matches!(c & 0xff, 11 | 26)) =>
            {
                return Ok(vec![format!("integrity check stopped: {}", e.message())]);
            }
            Err(e) => return Err(Error::storage("running the integrity check")(e)),
        };
        let lines: Vec<String> = rows.iter().map(|r| r.get::<String, _>(0)).collect();
        Ok(if lines.len() == 1 && lines[0] == "ok" {
            Vec::new()
        } else {
            lines
        })
    }
}
