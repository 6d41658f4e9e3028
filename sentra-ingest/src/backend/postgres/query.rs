//! The read side of the PostgreSQL backend: queries, rollup reads, ledger, integrity check.

use sentra_core::AgentId;
use sqlx::{PgPool, Row as _};

use crate::{
    Error, Result,
    backend::{
        AnyPool, MetricReader,
        chunks::{CHUNK_WINDOW_MS, ChunkRow},
        sql,
    },
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

    async fn chunks(&self, ids: &[i64], from: i64, to: i64) -> Result<Vec<ChunkRow>> {
        let rows = sqlx::query(
            "SELECT series_id, start_ts, gen, data FROM chunks \
             WHERE series_id = ANY($1) AND start_ts > $2 AND start_ts < $3 AND end_ts >= $4 \
             ORDER BY series_id, start_ts, gen",
        )
        .bind(ids)
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
            "SELECT c.series_id, c.start_ts, c.gen, c.data FROM UNNEST($1::int8[]) AS s(id) \
             CROSS JOIN LATERAL (SELECT MAX(start_ts) AS m FROM chunks WHERE series_id = s.id) n \
             JOIN chunks c ON c.series_id = s.id \
             AND c.start_ts > GREATEST(n.m, -9223372036854775807 - 1 + $2) - $2 \
             ORDER BY c.series_id, c.start_ts, c.gen",
        )
        .bind(ids)
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
            Aggregation::Avg => "SUM(sum) / NULLIF(SUM(count), 0)::float8",
            Aggregation::Min => "MIN(min)",
            Aggregation::Max => "MAX(max)",
            Aggregation::Sum => "SUM(sum)",
            Aggregation::Count => "SUM(count)::float8",
            Aggregation::Last => "(array_agg(last ORDER BY last_ts DESC))[1]",
        };
        let sql = format!(
            "SELECT series_id, (bucket - $1) / $2 AS b, {expr} FROM {table} \
             WHERE series_id = ANY($3) AND bucket >= $1 AND bucket < $4 \
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

    /// PostgreSQL checks its own pages (checksums, WAL); this checks the store's own
    /// invariants: sample chunks and rollups of unknown series, overlapping stored-seq ranges,
    /// a stored seq above the agent's high-water mark.
    async fn integrity_check(&self) -> Result<Vec<String>> {
        let checks = [
            (
                "sample chunks of unknown series",
                "SELECT count(*) FROM chunks x WHERE NOT EXISTS \
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
}
