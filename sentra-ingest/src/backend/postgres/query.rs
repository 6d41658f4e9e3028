//! The read side of the PostgreSQL backend: queries, rollup reads, ledger, integrity check.

use sentra_core::AgentId;
use sqlx::{PgPool, Row as _};

use crate::{
    Error, Result,
    backend::{AnyPool, MetricReader, sql},
    query::{Aggregation, MatchOp, Range, Resolution, Selector, SeriesInfo},
};

/// A pool of connections (MVCC: reads never block the writer); it reconnects by itself.
#[derive(Clone)]
pub(crate) struct PgReader {
    pool: PgPool,
}

impl PgReader {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

impl MetricReader for PgReader {
    fn pool(&self) -> AnyPool<'_> {
        AnyPool::Postgres(&self.pool)
    }

    async fn names(&self, agent: Option<&AgentId>, limit: usize) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT name FROM series WHERE ($1::text IS NULL OR agent = $1) \
             ORDER BY name LIMIT $2",
        )
        .bind(agent.map(AgentId::as_str))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1))
        .fetch_all(&self.pool)
        .await
        .map_err(Error::storage("listing metric names"))?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    async fn series(&self, sel: &Selector, limit: usize) -> Result<Vec<SeriesInfo>> {
        let mut sql =
            String::from("SELECT id, agent, name, labels::text, kind::int8 FROM series WHERE true");
        let mut n = 0;
        let mut next = || {
            n += 1;
            n
        };
        if sel.name.is_some() {
            sql.push_str(&format!(" AND name = ${}", next()));
        }
        if sel.agent.is_some() {
            sql.push_str(&format!(" AND agent = ${}", next()));
        }
        for m in &sel.matchers {
            let (k, v) = (next(), next());
            let op = match m.op {
                MatchOp::Eq => "=",
                MatchOp::NotEq => "<>",
            };
            sql.push_str(&format!(" AND COALESCE(labels ->> ${k}, '') {op} ${v}"));
        }
        sql.push_str(&format!(" ORDER BY id LIMIT ${}", next()));
        let mut q = sqlx::query(&sql);
        if let Some(n) = &sel.name {
            q = q.bind(n.as_str());
        }
        if let Some(a) = &sel.agent {
            q = q.bind(a.as_str());
        }
        for m in &sel.matchers {
            q = q.bind(m.name.as_str()).bind(m.value.as_str());
        }
        let rows = q
            .bind(i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1))
            .fetch_all(&self.pool)
            .await
            .map_err(Error::storage("resolving series"))?;
        Ok(rows.iter().map(sql::series_info).collect())
    }

    async fn latest(&self, ids: &[i64]) -> Result<Vec<(i64, i64, f64)>> {
        let rows = sqlx::query(
            "SELECT s.id, x.ts, x.v FROM UNNEST($1::int8[]) AS s(id) CROSS JOIN LATERAL \
             (SELECT ts, v FROM samples WHERE series_id = s.id ORDER BY ts DESC LIMIT 1) x",
        )
        .bind(ids)
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
            (Aggregation::Avg, true) => "AVG(v)",
            (Aggregation::Min, true) => "MIN(v)",
            (Aggregation::Max, true) => "MAX(v)",
            (Aggregation::Sum, true) => "SUM(v)",
            (Aggregation::Count, true) => "COUNT(v)::float8",
            (Aggregation::Last, true) => "(array_agg(v ORDER BY ts DESC))[1]",
            (Aggregation::Avg, false) => "SUM(sum) / NULLIF(SUM(count), 0)::float8",
            (Aggregation::Min, false) => "MIN(min)",
            (Aggregation::Max, false) => "MAX(max)",
            (Aggregation::Sum, false) => "SUM(sum)",
            (Aggregation::Count, false) => "SUM(count)::float8",
            (Aggregation::Last, false) => "(array_agg(last ORDER BY last_ts DESC))[1]",
        };
        let sql = format!(
            "SELECT series_id, ({ts} - $1) / $2 AS b, {expr} FROM {table} \
             WHERE series_id = ANY($3) AND {ts} >= $1 AND {ts} < $4 \
             GROUP BY series_id, b ORDER BY series_id, b"
        );
        let rows = sqlx::query(&sql)
            .bind(range.from)
            .bind(range.step)
            .bind(ids)
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
            "SELECT series_id, ts, v FROM samples \
             WHERE series_id = ANY($1) AND ts >= $2 AND ts < $3 \
             ORDER BY series_id, ts LIMIT $4",
        )
        .bind(ids)
        .bind(range.from)
        .bind(range.to)
        .bind(sql::limit_plus_one(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(Error::storage("reading raw samples"))?;
        Ok(sql::triples(&rows))
    }

    /// PostgreSQL checks its own pages (checksums, WAL); this checks the store's own
    /// invariants: samples and rollups of unknown series, overlapping stored-seq ranges,
    /// a stored seq above the agent's high-water mark.
    async fn integrity_check(&self) -> Result<Vec<String>> {
        let checks = [
            (
                "samples of unknown series",
                "SELECT count(*) FROM samples x WHERE NOT EXISTS \
                 (SELECT 1 FROM series s WHERE s.id = x.series_id)",
            ),
            (
                "1-minute rollups of unknown series",
                "SELECT count(*) FROM rollup_1m x WHERE NOT EXISTS \
                 (SELECT 1 FROM series s WHERE s.id = x.series_id)",
            ),
            (
                "1-hour rollups of unknown series",
                "SELECT count(*) FROM rollup_1h x WHERE NOT EXISTS \
                 (SELECT 1 FROM series s WHERE s.id = x.series_id)",
            ),
            (
                "overlapping stored-seq ranges",
                "SELECT count(*) FROM seq_ranges a JOIN seq_ranges b ON a.agent_id = b.agent_id \
                 AND a.lo < b.lo AND a.hi >= b.lo",
            ),
            (
                "stored seqs above the high-water mark",
                "SELECT count(*) FROM seq_ranges r JOIN agents a ON a.agent_id = r.agent_id \
                 WHERE r.hi > a.high_water",
            ),
        ];
        let mut problems = Vec::new();
        for (what, sql) in checks {
            let n: i64 = sqlx::query_scalar(sql)
                .fetch_one(&self.pool)
                .await
                .map_err(Error::storage("running the integrity check"))?;
            if n > 0 {
                problems.push(format!("{n} {what}"));
            }
        }
        Ok(problems)
    }

    async fn samples_from(&self, series: i64, from: i64) -> Result<Vec<(i64, Option<f64>)>> {
        let rows =
            sqlx::query("SELECT ts, v FROM samples WHERE series_id = $1 AND ts >= $2 ORDER BY ts")
                .bind(series)
                .bind(from)
                .fetch_all(&self.pool)
                .await
                .map_err(Error::storage("reading samples for rollup"))?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
