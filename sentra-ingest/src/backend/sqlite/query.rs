//! The read side of the SQLite backend: queries, rollup reads, ledger, integrity check.

use sentra_core::AgentId;
use sqlx::{Row as _, SqlitePool};

use crate::{
    Error, Result,
    backend::{AnyPool, MetricReader, sql},
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

    async fn latest(&self, ids: &[i64]) -> Result<Vec<(i64, i64, f64)>> {
        let rows = sqlx::query(
            "SELECT j.value, x.ts, CAST(x.v AS REAL) FROM json_each(?) j \
             JOIN samples x ON x.series_id = j.value AND x.ts = \
             (SELECT MAX(ts) FROM samples WHERE series_id = j.value)",
        )
        .bind(ids_json(ids))
        .fetch_all(&self.pool)
        .await
        .map_err(Error::storage("reading latest values"))?;
        Ok(sql::triples(&rows))
    }

    async fn history(
        &self,
        ids: &[i64],
        range: Range,
        agg: Aggregation,
        res: Resolution,
    ) -> Result<Vec<(i64, i64, f64)>> {
        let (table, ts, raw) = sql::history_source(res);
        let expr = match (agg, raw) {
            (Aggregation::Avg, true) => "AVG(v), 0",
            (Aggregation::Min, true) => "CAST(MIN(v) AS REAL), 0",
            (Aggregation::Max, true) => "CAST(MAX(v) AS REAL), 0",
            (Aggregation::Sum, true) => "CAST(SUM(v) AS REAL), 0",
            (Aggregation::Count, true) => "CAST(COUNT(v) AS REAL), 0",
            (Aggregation::Last, true) => "CAST(v AS REAL), MAX(ts)",
            (Aggregation::Avg, false) => "SUM(sum) / SUM(count), 0",
            (Aggregation::Min, false) => "MIN(min), 0",
            (Aggregation::Max, false) => "MAX(max), 0",
            (Aggregation::Sum, false) => "SUM(sum), 0",
            (Aggregation::Count, false) => "CAST(SUM(count) AS REAL), 0",
            (Aggregation::Last, false) => "last, MAX(last_ts)",
        };
        // With exactly one MAX() aggregate SQLite takes bare columns from the row holding the
        // maximum, which is how `last` is computed in one pass.
        let sql = format!(
            "SELECT series_id, CAST(({ts} - ?1) / ?2 AS INTEGER) AS b, {expr} FROM {table} \
             WHERE series_id IN (SELECT value FROM json_each(?3)) AND {ts} >= ?1 AND {ts} < ?4 \
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

    async fn raw_rows(
        &self,
        ids: &[i64],
        range: Range,
        limit: u64,
    ) -> Result<Vec<(i64, i64, f64)>> {
        let rows = sqlx::query(
            "SELECT series_id, ts, CAST(v AS REAL) FROM samples \
             WHERE series_id IN (SELECT value FROM json_each(?1)) AND ts >= ?2 AND ts < ?3 \
             ORDER BY series_id, ts LIMIT ?4",
        )
        .bind(ids_json(ids))
        .bind(range.from)
        .bind(range.to)
        .bind(sql::limit_plus_one(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(Error::storage("reading raw samples"))?;
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

    async fn samples_from(&self, series: i64, from: i64) -> Result<Vec<(i64, Option<f64>)>> {
        let rows = sqlx::query(
            "SELECT ts, CAST(v AS REAL) FROM samples WHERE series_id = ? AND ts >= ? ORDER BY ts",
        )
        .bind(series)
        .bind(from)
        .fetch_all(&self.pool)
        .await
        .map_err(Error::storage("reading samples for rollup"))?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
