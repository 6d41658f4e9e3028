//! Metric queries over the store, for the REST API and the CLI.
//!
//! Every function takes a [`Selector`] (metric name, agent, label matchers) and is bounded
//! by [`QueryLimits`]: a query that would match more series, return more points or read
//! more raw samples than allowed fails with [`Error::TooManySeries`] or
//! [`Error::TooManyPoints`] *before* doing the expensive part; malformed parameters fail
//! with [`Error::InvalidQuery`].

use std::{collections::BTreeMap, fmt, str::FromStr, time::Duration};

use sentra_core::{AgentId, LabelName, MetricName, UnixMillis};
use serde::Serialize;

use crate::{
    Error, QueryLimits, Result,
    backend::{MetricReader, Reader},
    maintenance::{HOUR_MS, MINUTE_MS},
};

/// Bound on series per query whatever the configuration (SQLite's bound on host
/// parameters once set it; every backend keeps it, so limits are the same everywhere).
const HARD_MAX_SERIES: usize = 30_000;

/// How a label matcher compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MatchOp {
    /// `name="value"`; an empty value also matches series without the label (Prometheus).
    Eq,
    /// `name!="value"`.
    NotEq,
}

/// One label condition of a [`Selector`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelMatcher {
    pub(crate) name: LabelName,
    pub(crate) op: MatchOp,
    pub(crate) value: String,
}

impl LabelMatcher {
    /// A matcher `name op value`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidQuery`] for an invalid label name or an over-long value.
    pub fn new(name: &str, op: MatchOp, value: impl Into<String>) -> Result<Self> {
        let name =
            LabelName::new(name).map_err(|e| Error::invalid(format!("label filter: {e}")))?;
        let value = value.into();
        if value.len() > sentra_core::batch::MAX_LABEL_VALUE_LEN {
            return Err(Error::invalid("label filter value too long"));
        }
        Ok(Self { name, op, value })
    }

    /// Parses `name=value` or `name!=value` (as in a URL query `label=interface=wg0`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidQuery`].
    pub fn parse(s: &str) -> Result<Self> {
        if let Some((n, v)) = s.split_once("!=") {
            Self::new(n, MatchOp::NotEq, v)
        } else if let Some((n, v)) = s.split_once('=') {
            Self::new(n, MatchOp::Eq, v)
        } else {
            Err(Error::invalid(format!(
                "label filter {s:?} is not name=value or name!=value"
            )))
        }
    }
}

/// Which series a query reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    pub(crate) name: Option<MetricName>,
    pub(crate) agent: Option<AgentId>,
    pub(crate) matchers: Vec<LabelMatcher>,
}

impl Selector {
    /// Every series (still bounded by [`QueryLimits::max_series`]).
    #[must_use]
    pub fn any() -> Self {
        Self::default()
    }

    /// The series of metric `name`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidQuery`] for an invalid metric name.
    pub fn metric(name: &str) -> Result<Self> {
        let name = MetricName::new(name).map_err(|e| Error::invalid(format!("metric: {e}")))?;
        Ok(Self {
            name: Some(name),
            ..Self::default()
        })
    }

    /// Only series of `agent`.
    #[must_use]
    pub fn agent(mut self, agent: AgentId) -> Self {
        self.agent = Some(agent);
        self
    }

    /// Adds a label matcher.
    #[must_use]
    pub fn with(mut self, m: LabelMatcher) -> Self {
        self.matchers.push(m);
        self
    }
}

/// A time range `[from, to)` with a step, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub(crate) from: i64,
    pub(crate) to: i64,
    pub(crate) step: i64,
}

impl Range {
    /// `[from, to)` in steps of `step`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidQuery`] if `from >= to` or `step` is zero or negative.
    pub fn new(from: UnixMillis, to: UnixMillis, step: Duration) -> Result<Self> {
        let (from, to) = (from.as_millis(), to.as_millis());
        if from >= to {
            return Err(Error::invalid(format!(
                "empty range: from {from} >= to {to}"
            )));
        }
        let step = i64::try_from(step.as_millis()).unwrap_or(i64::MAX);
        if step <= 0 {
            return Err(Error::invalid("step must be at least 1 ms"));
        }
        Ok(Self { from, to, step })
    }

    /// `[from, to)` as one step (for aggregates).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidQuery`] if `from >= to`.
    pub fn whole(from: UnixMillis, to: UnixMillis) -> Result<Self> {
        let span = u64::try_from(to.as_millis().saturating_sub(from.as_millis())).unwrap_or(0);
        Self::new(from, to, Duration::from_millis(span.max(1)))
    }

    fn steps(self) -> u64 {
        let span = i128::from(self.to) - i128::from(self.from);
        u64::try_from((span + i128::from(self.step) - 1) / i128::from(self.step))
            .unwrap_or(u64::MAX)
    }
}

/// How values within one step (or range) are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Aggregation {
    /// Mean.
    Avg,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
    /// Sum.
    Sum,
    /// Number of samples.
    Count,
    /// The latest value.
    Last,
}

impl FromStr for Aggregation {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "avg" | "mean" => Self::Avg,
            "min" => Self::Min,
            "max" => Self::Max,
            "sum" => Self::Sum,
            "count" => Self::Count,
            "last" => Self::Last,
            _ => {
                return Err(Error::invalid(format!(
                    "unknown aggregation {s:?} (avg, min, max, sum, count, last)"
                )));
            }
        })
    }
}

/// Which table a history query reads.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Resolution {
    /// Raw samples for short ranges; rollups for long ranges (≥ 6 h: 1-minute, ≥ 7 days:
    /// 1-hour) or ranges older than the raw retention, when the step and `from` are
    /// multiples of the rollup width. Rollups trail raw data by up to one maintenance
    /// interval.
    Auto,
    /// Raw samples.
    Raw,
    /// 1-minute rollups (step and `from` must be multiples of 60 s).
    Minute,
    /// 1-hour rollups (step and `from` must be multiples of 1 h).
    Hour,
}

/// Sort order for [`Query::top_n`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Order {
    /// Largest first.
    Desc,
    /// Smallest first.
    Asc,
}

/// Export encodings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExportFormat {
    /// `agent,name,labels,timestamp_ms,value` with a header line; labels as JSON.
    Csv,
    /// A JSON array of `{agent, name, labels, timestamp_ms, value}` (NaN as `null`).
    Json,
}

/// Identity of one series in results.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"agent_id": "edge-01", "name": "wireguard_received_bytes_total", "labels": {"interface": "wg0", "public_key": "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="}, "kind": "counter"})))]
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SeriesInfo {
    /// Agent id.
    pub agent_id: String,
    /// Metric name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// `"gauge"` or `"counter"`.
    #[cfg_attr(feature = "openapi", schema(value_type = String, pattern = "^(gauge|counter)$"))]
    pub kind: &'static str,
    #[serde(skip)]
    id: i64,
}

impl SeriesInfo {
    /// A series as a backend found it; `kind` 1 is a counter, anything else a gauge.
    pub(crate) fn new(
        id: i64,
        agent_id: String,
        name: String,
        labels: Vec<(String, String)>,
        kind: i64,
    ) -> Self {
        Self {
            agent_id,
            name,
            labels: labels.into_iter().collect(),
            kind: if kind == 1 { "counter" } else { "gauge" },
            id,
        }
    }
}

/// The newest sample of a series.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct LatestValue {
    /// The series.
    pub series: SeriesInfo,
    /// Sample time, Unix ms.
    pub timestamp_ms: i64,
    /// Value (NaN for a stored NaN; JSON has no NaN or infinity: `null`).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>))]
    pub value: f64,
}

/// One series' points of a history query.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SeriesHistory {
    /// The series.
    pub series: SeriesInfo,
    /// The table that answered.
    pub resolution: Resolution,
    /// `(step start, value)`, ascending; steps without data are absent (a NaN or infinite
    /// value is `null` in JSON).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<(i64, Option<f64>)>))]
    pub points: Vec<(i64, f64)>,
}

/// One value per series (aggregates, top-N).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SeriesValue {
    /// The series.
    pub series: SeriesInfo,
    /// The value (`null` in JSON for NaN or infinity, e.g. `avg` over NaN samples).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>))]
    pub value: f64,
}

/// Percentiles of one series.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SeriesPercentiles {
    /// The series.
    pub series: SeriesInfo,
    /// Samples considered (NaN excluded).
    pub samples: u64,
    /// `(q, value)` per requested quantile (linear interpolation between closest ranks; an
    /// infinite value is `null` in JSON).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<(f64, Option<f64>)>))]
    pub values: Vec<(f64, f64)>,
}

/// One sample of a JSON export ([`ExportFormat::Json`] is an array of these).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"agent": "edge-01", "name": "wireguard_received_bytes_total", "labels": {"interface": "wg0"}, "timestamp_ms": 1764480000000_i64, "value": 1048576.0})))]
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ExportRow<'a> {
    /// Agent id.
    pub agent: &'a str,
    /// Metric name.
    pub name: &'a str,
    /// Labels.
    pub labels: &'a BTreeMap<String, String>,
    /// Sample time, Unix ms.
    pub timestamp_ms: i64,
    /// Value; `null` for NaN or infinity (JSON has neither).
    pub value: Option<f64>,
}

/// An export body.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Export {
    /// Its format.
    pub format: ExportFormat,
    /// Data rows in it.
    pub rows: u64,
    /// The encoded rows.
    pub body: String,
}

impl Export {
    /// The HTTP content type of the body.
    #[must_use]
    pub fn content_type(&self) -> &'static str {
        match self.format {
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Json => "application/json",
        }
    }
}

/// Query interface over the metrics store. Cheap to clone; reads go to the backend's read
/// side and never block ingest (SQLite: a pool of read-only connections in WAL mode). The
/// plan (validation, limits, resolution, quantiles, export encoding) is the same for every
/// backend.
#[derive(Clone)]
pub struct Query {
    reader: Reader,
    limits: QueryLimits,
    raw_retention_ms: i64,
}

impl fmt::Debug for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Query")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn ids(series: &[SeriesInfo]) -> Vec<i64> {
    series.iter().map(|s| s.id).collect()
}

impl Query {
    pub(crate) fn new(reader: Reader, limits: QueryLimits, raw_retention: Duration) -> Self {
        Self {
            reader,
            limits,
            raw_retention_ms: i64::try_from(raw_retention.as_millis()).unwrap_or(i64::MAX),
        }
    }

    pub(crate) fn reader(&self) -> &Reader {
        &self.reader
    }

    /// The limits in force.
    #[must_use]
    pub fn limits(&self) -> QueryLimits {
        self.limits
    }

    /// Distinct metric names, sorted, optionally of one agent.
    ///
    /// # Errors
    ///
    /// [`Error::TooManySeries`] past [`QueryLimits::max_names`], [`Error::Storage`].
    pub async fn names(&self, agent: Option<&AgentId>) -> Result<Vec<String>> {
        let limit = self.limits.max_names;
        let rows = self.reader.names(agent, limit).await?;
        if rows.len() > limit {
            return Err(Error::TooManySeries { limit });
        }
        Ok(rows)
    }

    /// The series a selector matches.
    ///
    /// # Errors
    ///
    /// [`Error::TooManySeries`], [`Error::Storage`].
    pub async fn series(&self, sel: &Selector) -> Result<Vec<SeriesInfo>> {
        let limit = self.limits.max_series.min(HARD_MAX_SERIES);
        let rows = self.reader.series(sel, limit).await?;
        if rows.len() > limit {
            return Err(Error::TooManySeries { limit });
        }
        Ok(rows)
    }

    /// The newest sample of every matching series (series without samples are omitted).
    ///
    /// # Errors
    ///
    /// [`Error::TooManySeries`], [`Error::Storage`].
    pub async fn latest(&self, sel: &Selector) -> Result<Vec<LatestValue>> {
        let series = self.series(sel).await?;
        if series.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self.reader.latest(&ids(&series)).await?;
        let mut by_id: BTreeMap<i64, (i64, f64)> = BTreeMap::new();
        for (id, ts, v) in rows {
            by_id.insert(id, (ts, v));
        }
        Ok(series
            .into_iter()
            .filter_map(|s| {
                by_id.get(&s.id).map(|&(ts, v)| LatestValue {
                    series: s,
                    timestamp_ms: ts,
                    value: v,
                })
            })
            .collect())
    }

    fn pick(&self, range: Range, res: Resolution, now_ms: i64) -> Result<Resolution> {
        let fits = |w: i64| range.step % w == 0 && range.from.rem_euclid(w) == 0;
        match res {
            Resolution::Raw => Ok(Resolution::Raw),
            Resolution::Minute if fits(MINUTE_MS) => Ok(Resolution::Minute),
            Resolution::Hour if fits(HOUR_MS) => Ok(Resolution::Hour),
            Resolution::Minute | Resolution::Hour => Err(Error::invalid(
                "step and from must be multiples of the rollup width",
            )),
            Resolution::Auto => {
                let span = range.to - range.from;
                let old = range.from < now_ms.saturating_sub(self.raw_retention_ms);
                if fits(HOUR_MS) && (span >= 7 * 24 * HOUR_MS || old) {
                    Ok(Resolution::Hour)
                } else if fits(MINUTE_MS) && (span >= 6 * HOUR_MS || old) {
                    Ok(Resolution::Minute)
                } else {
                    Ok(Resolution::Raw)
                }
            }
        }
    }

    /// Values per step over `[from, to)`, aggregated with `agg`, per matching series.
    ///
    /// # Errors
    ///
    /// [`Error::TooManyPoints`] when series × steps exceeds [`QueryLimits::max_points`],
    /// [`Error::TooManySeries`], [`Error::InvalidQuery`] for a resolution that does not
    /// fit the step, [`Error::Storage`].
    pub async fn history(
        &self,
        sel: &Selector,
        range: Range,
        agg: Aggregation,
        res: Resolution,
    ) -> Result<Vec<SeriesHistory>> {
        let steps = range.steps();
        let limit = self.limits.max_points;
        if steps > limit {
            return Err(Error::TooManyPoints {
                requested: steps,
                limit,
            });
        }
        let res = self.pick(range, res, UnixMillis::now().as_millis())?;
        let series = self.series(sel).await?;
        let requested = steps.saturating_mul(series.len() as u64);
        if requested > limit {
            return Err(Error::TooManyPoints { requested, limit });
        }
        if series.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self.reader.history(&ids(&series), range, agg, res).await?;
        let mut points: BTreeMap<i64, Vec<(i64, f64)>> = BTreeMap::new();
        for (id, b, v) in rows {
            points
                .entry(id)
                .or_default()
                .push((range.from.saturating_add(b.saturating_mul(range.step)), v));
        }
        Ok(series
            .into_iter()
            .map(|s| SeriesHistory {
                points: points.remove(&s.id).unwrap_or_default(),
                series: s,
                resolution: res,
            })
            .collect())
    }

    /// One aggregate over `[from, to)` per matching series (series without data omitted).
    ///
    /// # Errors
    ///
    /// As [`Query::history`].
    pub async fn aggregate(
        &self,
        sel: &Selector,
        from: UnixMillis,
        to: UnixMillis,
        agg: Aggregation,
    ) -> Result<Vec<SeriesValue>> {
        let range = Range::whole(from, to)?;
        let res = if range.from.rem_euclid(MINUTE_MS) == 0 && range.step % MINUTE_MS == 0 {
            Resolution::Auto
        } else {
            Resolution::Raw
        };
        Ok(self
            .history(sel, range, agg, res)
            .await?
            .into_iter()
            .filter_map(|h| {
                h.points.first().map(|&(_, v)| SeriesValue {
                    series: h.series,
                    value: v,
                })
            })
            .collect())
    }

    /// The `n` series with the largest (or smallest) aggregate over `[from, to)`.
    /// NaN values sort last.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidQuery`] for `n == 0` or `n` above [`QueryLimits::max_series`]; as
    /// [`Query::aggregate`].
    pub async fn top_n(
        &self,
        sel: &Selector,
        from: UnixMillis,
        to: UnixMillis,
        agg: Aggregation,
        n: usize,
        order: Order,
    ) -> Result<Vec<SeriesValue>> {
        if n == 0 || n > self.limits.max_series {
            return Err(Error::invalid(format!(
                "n must be between 1 and {}",
                self.limits.max_series
            )));
        }
        let mut values = self.aggregate(sel, from, to, agg).await?;
        values.sort_by(|a, b| match (a.value.is_nan(), b.value.is_nan()) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            (false, false) => match order {
                Order::Desc => b.value.total_cmp(&a.value),
                Order::Asc => a.value.total_cmp(&b.value),
            },
        });
        values.truncate(n);
        Ok(values)
    }

    /// Percentiles (`qs` in `[0, 1]`) of the raw samples of each series over `[from, to)`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidQuery`] for no quantiles, more than 32, or one outside `[0, 1]`;
    /// [`Error::TooManyPoints`] when more than [`QueryLimits::max_raw_samples`] samples
    /// would be read; [`Error::TooManySeries`]; [`Error::Storage`].
    pub async fn percentiles(
        &self,
        sel: &Selector,
        from: UnixMillis,
        to: UnixMillis,
        qs: &[f64],
    ) -> Result<Vec<SeriesPercentiles>> {
        if qs.is_empty() || qs.len() > 32 || qs.iter().any(|q| !(0.0..=1.0).contains(q)) {
            return Err(Error::invalid(
                "give 1 to 32 quantiles, each between 0 and 1",
            ));
        }
        let range = Range::whole(from, to)?;
        let series = self.series(sel).await?;
        let raw = self
            .raw_rows(&series, range, self.limits.max_raw_samples)
            .await?;
        let mut by_id: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
        for (id, _, v) in raw {
            if !v.is_nan() {
                by_id.entry(id).or_default().push(v);
            }
        }
        Ok(series
            .into_iter()
            .filter_map(|s| {
                let mut vals = by_id.remove(&s.id)?;
                vals.sort_by(f64::total_cmp);
                Some(SeriesPercentiles {
                    samples: vals.len() as u64,
                    values: qs.iter().map(|&q| (q, quantile(&vals, q))).collect(),
                    series: s,
                })
            })
            .collect())
    }

    async fn raw_rows(
        &self,
        series: &[SeriesInfo],
        range: Range,
        limit: u64,
    ) -> Result<Vec<(i64, i64, f64)>> {
        if series.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self.reader.raw_rows(&ids(series), range, limit).await?;
        if rows.len() as u64 > limit {
            return Err(Error::TooManyPoints {
                requested: rows.len() as u64,
                limit,
            });
        }
        Ok(rows)
    }

    /// Raw samples of the matching series over `[from, to)`, encoded as CSV or JSON.
    ///
    /// # Errors
    ///
    /// [`Error::TooManyPoints`] past [`QueryLimits::max_export_rows`],
    /// [`Error::TooManySeries`], [`Error::Storage`].
    pub async fn export(
        &self,
        sel: &Selector,
        from: UnixMillis,
        to: UnixMillis,
        format: ExportFormat,
    ) -> Result<Export> {
        let range = Range::whole(from, to)?;
        let series = self.series(sel).await?;
        let rows = self
            .raw_rows(&series, range, self.limits.max_export_rows)
            .await?;
        let by_id: BTreeMap<i64, &SeriesInfo> = series.iter().map(|s| (s.id, s)).collect();
        let mut body = String::new();
        match format {
            ExportFormat::Csv => {
                body.push_str("agent,name,labels,timestamp_ms,value\n");
                for (id, ts, v) in &rows {
                    let s = by_id[id];
                    let labels = serde_json::to_string(&s.labels).unwrap_or_default();
                    body.push_str(&format!(
                        "{},{},{},{ts},{v}\n",
                        csv_field(&s.agent_id),
                        csv_field(&s.name),
                        csv_field(&labels)
                    ));
                }
            }
            ExportFormat::Json => {
                let items: Vec<ExportRow<'_>> = rows
                    .iter()
                    .map(|&(id, timestamp_ms, v)| {
                        let s = by_id[&id];
                        ExportRow {
                            agent: &s.agent_id,
                            name: &s.name,
                            labels: &s.labels,
                            timestamp_ms,
                            value: v.is_finite().then_some(v),
                        }
                    })
                    .collect();
                body = serde_json::to_string(&items).unwrap_or_default();
            }
        }
        Ok(Export {
            format,
            rows: rows.len() as u64,
            body,
        })
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Linear interpolation between closest ranks (numpy's default); `sorted` is non-empty.
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "rank positions are in 0..len (q is in [0, 1]); lengths stay far below 2^53"
)]
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 0.5), 3.0);
        assert_eq!(quantile(&v, 1.0), 5.0);
        assert_eq!(quantile(&v, 0.9), 4.6);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
    }

    #[test]
    fn matchers_parse() {
        assert_eq!(LabelMatcher::parse("a=b").unwrap().op, MatchOp::Eq);
        assert_eq!(LabelMatcher::parse("a!=b").unwrap().op, MatchOp::NotEq);
        assert!(matches!(
            LabelMatcher::parse("nope"),
            Err(Error::InvalidQuery(_))
        ));
        assert!(matches!(
            LabelMatcher::parse("bad-name=x"),
            Err(Error::InvalidQuery(_))
        ));
        assert!(matches!(
            LabelMatcher::parse("$.x')--=1"),
            Err(Error::InvalidQuery(_))
        ));
    }

    #[test]
    fn csv_quoting() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(
            csv_field(r#"{"a":"1","b":"2"}"#),
            r#""{""a"":""1"",""b"":""2""}""#
        );
    }

    #[test]
    fn ranges() {
        let t = UnixMillis::from_millis;
        assert!(Range::new(t(10), t(10), Duration::from_secs(1)).is_err());
        assert!(Range::new(t(0), t(10), Duration::ZERO).is_err());
        let r = Range::new(t(0), t(10_001), Duration::from_secs(1)).unwrap();
        assert_eq!(r.steps(), 11);
        let r = Range::new(t(i64::MIN), t(i64::MAX), Duration::from_millis(1)).unwrap();
        assert_eq!(r.steps(), u64::MAX);
    }
}
