//! Read endpoints over `sentra-ingest`: presence, status, metric queries, the live status
//! stream. Without an ingest handle they answer 503.

use std::{collections::BTreeMap, convert::Infallible, sync::Arc, time::Duration};

use axum::{
    Json,
    extract::{Path, RawQuery, State},
    http::header,
    response::{
        IntoResponse, Response,
        sse::{Event as SseEvent, KeepAlive, Sse},
    },
};
use sentra_core::{AgentId, UnixMillis};
use sentra_ingest::{
    Aggregation, ExportFormat, Ingest, LabelMatcher, LatestValue, Order, Range, Resolution,
    Selector, SeriesHistory, SeriesInfo, SeriesPercentiles, SeriesValue, StatusSnapshot,
    status::AgentStatus,
};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::{ApiError, AppState, extract::Viewer, openapi::ErrorBody};
use crate::Error;

type Res<T> = Result<T, ApiError>;

fn ingest(st: &AppState) -> Result<&Arc<Ingest>, ApiError> {
    st.ingest
        .as_ref()
        .ok_or_else(|| Error::Unavailable("no metrics store is attached to this API").into())
}

/// Maps an ingest error to an API error without leaking storage details.
pub(crate) fn map_ingest(e: sentra_ingest::Error) -> Error {
    match e {
        sentra_ingest::Error::InvalidQuery(m) => Error::invalid("query", m),
        e @ (sentra_ingest::Error::TooManySeries { .. }
        | sentra_ingest::Error::TooManyPoints { .. }) => Error::invalid("query", e.to_string()),
        sentra_ingest::Error::UnknownAgent(a) => Error::not_found("agent", a),
        e => {
            tracing::error!(error = %e, "metrics store failed");
            Error::Unavailable("metrics store failed")
        }
    }
}

/// The query string as ordered `(key, value)` pairs; repeated keys are kept.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(raw: Option<String>) -> Result<Self, ApiError> {
        Ok(Self(decode_query(raw.as_deref().unwrap_or_default())?))
    }

    fn one(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn check_known(&self, known: &[&str]) -> Result<(), ApiError> {
        if let Some((k, _)) = self.0.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            return Err(Error::invalid("query", format!("unknown parameter {k:?}")).into());
        }
        Ok(())
    }

    fn num<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, ApiError> {
        self.one(key)
            .map(|v| {
                v.parse::<T>()
                    .map_err(|_| Error::invalid(key, "not a number").into())
            })
            .transpose()
    }

    fn selector(&self) -> Result<Selector, ApiError> {
        let mut sel = match self.one("name") {
            Some(n) => Selector::metric(n).map_err(map_ingest)?,
            None => Selector::any(),
        };
        if let Some(a) = self.one("agent") {
            sel = sel.agent(super::extract::agent_id(a)?);
        }
        for l in self.all("label") {
            sel = sel.with(LabelMatcher::parse(l).map_err(map_ingest)?);
        }
        Ok(sel)
    }

    /// `from`/`to` in Unix ms; defaults: the last hour up to now.
    fn range(&self) -> Result<(UnixMillis, UnixMillis), ApiError> {
        let now = UnixMillis::now().as_millis();
        let to = self.num::<i64>("to")?.unwrap_or(now);
        let from = self
            .num::<i64>("from")?
            .unwrap_or(to.saturating_sub(3_600_000));
        Ok((UnixMillis::from_millis(from), UnixMillis::from_millis(to)))
    }

    fn agg(&self, default: Aggregation) -> Result<Aggregation, ApiError> {
        self.one("agg")
            .map_or(Ok(default), str::parse)
            .map_err(|e| map_ingest(e).into())
    }
}

/// Decodes `application/x-www-form-urlencoded` query text with `form_urlencoded`, strictly.
///
/// `form_urlencoded` is lossy where a query is wrong: it keeps a bad `%` escape as literal
/// text and replaces bytes that are not UTF-8 with U+FFFD. Both are refused here (400)
/// instead of being answered for a parameter the client did not send:
/// * every `%` must start a two-hex-digit escape (checked on the raw text);
/// * the decoded text may hold U+FFFD only as often as the raw text spells that character
///   itself (`%EF%BF%BD`, any case, or the character literally): each invalid byte sequence
///   yields at least one more, since U+FFFD's own encoding never merges with a neighbouring
///   invalid sequence (0xEF is not a continuation byte).
fn decode_query(raw: &str) -> Result<Vec<(String, String)>, ApiError> {
    let bytes = raw.as_bytes();
    for (i, _) in raw.match_indices('%') {
        let ok = bytes
            .get(i + 1..i + 3)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
        if !ok {
            return Err(Error::invalid(
                "query",
                format!("bad percent-encoding at byte {i}: '%' must be followed by two hex digits"),
            )
            .into());
        }
    }
    let pairs: Vec<(String, String)> = form_urlencoded::parse(bytes).into_owned().collect();
    let spelled =
        raw.to_ascii_uppercase().matches("%EF%BF%BD").count() + raw.matches('\u{FFFD}').count();
    let decoded: usize = pairs
        .iter()
        .map(|(k, v)| k.matches('\u{FFFD}').count() + v.matches('\u{FFFD}').count())
        .sum();
    if decoded > spelled {
        return Err(Error::invalid("query", "percent-encoded bytes are not UTF-8").into());
    }
    Ok(pairs)
}

/// Presence of one agent.
#[derive(Serialize, ToSchema)]
pub(crate) struct AgentPresence {
    agent_id: String,
    /// Null for a pusher the control store does not know (deleted while data remained).
    name: Option<String>,
    /// Null for a pusher the control store does not know.
    revoked: Option<bool>,
    /// `online`, `stale`, `offline` or `never`.
    #[schema(pattern = "^(online|stale|offline|never)$")]
    presence: String,
    /// Last push, Unix ms; null if never.
    last_seen_ms: Option<i64>,
}

/// `GET /api/v1/presence`.
#[derive(Serialize, ToSchema)]
pub(crate) struct PresenceList {
    /// The time presence was computed for, Unix ms.
    at_ms: i64,
    agents: Vec<AgentPresence>,
}

/// `GET /api/v1/metrics/names`.
#[derive(Serialize, ToSchema)]
pub(crate) struct NameList {
    names: Vec<String>,
}

/// `GET /api/v1/metrics/series`: one entry per matching series.
#[derive(Serialize, ToSchema)]
pub(crate) struct SeriesList {
    series: Vec<SeriesInfo>,
}

/// `GET /api/v1/metrics/history`: the points of each matching series.
#[derive(Serialize, ToSchema)]
pub(crate) struct HistoryList {
    series: Vec<SeriesHistory>,
}

/// `GET /api/v1/metrics/percentiles`: the percentiles of each matching series with samples.
#[derive(Serialize, ToSchema)]
pub(crate) struct PercentileList {
    series: Vec<SeriesPercentiles>,
}

/// `GET /api/v1/metrics/latest`: the newest value of each matching series.
#[derive(Serialize, ToSchema)]
pub(crate) struct LatestList {
    values: Vec<LatestValue>,
}

/// `GET /api/v1/metrics/aggregate` and `/top`: one value per series.
#[derive(Serialize, ToSchema)]
pub(crate) struct ValueList {
    values: Vec<SeriesValue>,
}

/// Largest `n` of `GET /api/v1/metrics/top`.
const MAX_TOP_N: usize = 10_000;

const SELECTOR_KEYS: [&str; 3] = ["name", "agent", "label"];

fn keys(extra: &[&'static str]) -> Vec<&'static str> {
    SELECTOR_KEYS.iter().chain(extra).copied().collect()
}

// ------------------------------------------------------------------ status

#[utoipa::path(
    get,
    path = "/api/v1/status",
    tag = "status",
    security(("bearer" = [])),
    description = "Status of every agent, interface and peer (handshake age, rx/tx rates, endpoint, online; for declared interfaces `managed`: desired and applied version, in sync, drift, apply errors), from the in-memory status cache.",
    responses(
        (status = 200, description = "Fleet status", body = StatusSnapshot),
        (status = 503, description = "No metrics store is attached, or it failed; retry", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
    )
)]
pub(crate) async fn status(State(st): State<AppState>, _u: Viewer) -> Res<Response> {
    let snapshot: StatusSnapshot = ingest(&st)?.status().snapshot();
    Ok(Json(snapshot).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/status/agents/{id}",
    tag = "status",
    security(("bearer" = [])),
    description = "Status of one agent.",
    params(
        ("id" = String, Path, description = "Agent id", pattern = r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$", max_length = 64),
    ),
    responses(
        (status = 200, description = "Agent status", body = AgentStatus),
        (status = 400, description = "Malformed request or a value outside the rules; nothing changed", body = ErrorBody),
        (status = 404, description = "No such agent status", body = ErrorBody),
        (status = 503, description = "No metrics store is attached, or it failed; retry", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
    )
)]
pub(crate) async fn agent_status(
    State(st): State<AppState>,
    _u: Viewer,
    Path(id): Path<String>,
) -> Res<Response> {
    let id = super::extract::agent_id(&id)?;
    let s: AgentStatus = ingest(&st)?
        .status()
        .agent_at(&id, UnixMillis::now())
        .ok_or_else(|| Error::not_found("agent status", id.as_str()))?;
    Ok(Json(s).into_response())
}

/// Presence of every enrolled agent: `online`, `stale`, `offline` from its pushes, or
/// `never` if it has not pushed since it was enrolled (or since its data was deleted).
#[utoipa::path(
    get,
    path = "/api/v1/presence",
    tag = "status",
    security(("bearer" = [])),
    description = "Presence of every enrolled agent: online, stale, offline or never.",
    responses(
        (status = 200, description = "Presence", body = PresenceList),
        (status = 503, description = "No metrics store is attached, or it failed; retry", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
    )
)]
pub(crate) async fn presence(State(st): State<AppState>, _u: Viewer) -> Res<Response> {
    let ingest = ingest(&st)?;
    let snapshot = ingest.status().snapshot();
    let mut seen: BTreeMap<String, (String, i64)> = snapshot
        .agents
        .iter()
        .map(|a| {
            (
                a.agent_id.clone(),
                (presence_name(a.presence), a.last_seen_ms),
            )
        })
        .collect();
    let mut agents = Vec::new();
    for a in st.store.list_agents().await? {
        let (presence, last_seen_ms) = seen
            .remove(&a.agent_id)
            .map_or(("never".to_owned(), None), |(p, t)| (p, Some(t)));
        agents.push(AgentPresence {
            revoked: Some(a.revoked_ms.is_some()),
            agent_id: a.agent_id,
            name: Some(a.name),
            presence,
            last_seen_ms,
        });
    }
    // Pushers unknown to the control store (e.g. deleted while data remained).
    for (agent_id, (presence, t)) in seen {
        agents.push(AgentPresence {
            agent_id,
            name: None,
            revoked: None,
            presence,
            last_seen_ms: Some(t),
        });
    }
    Ok(Json(PresenceList {
        at_ms: snapshot.at_ms,
        agents,
    })
    .into_response())
}

// ------------------------------------------------------------------ metric queries

#[utoipa::path(
    get,
    path = "/api/v1/metrics/names",
    tag = "metrics",
    security(("bearer" = [])),
    description = "Metric names.",
    params(
        ("agent" = Option<String>, Query, description = "Only this agent", pattern = r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$"),
    ),
    responses(
        (status = 200, description = "Names", body = NameList),
        (status = 400, description = "Malformed selector or range, or a query over the limits (series, points); nothing changed", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
        (status = 503, description = "No metrics store is attached, or it failed; retry", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
    )
)]
pub(crate) async fn names(
    State(st): State<AppState>,
    _u: Viewer,
    RawQuery(q): RawQuery,
) -> Res<Response> {
    let p = Params::parse(q)?;
    p.check_known(&["agent"])?;
    let agent = p.one("agent").map(super::extract::agent_id).transpose()?;
    let names = ingest(&st)?
        .query()
        .names(agent.as_ref())
        .await
        .map_err(map_ingest)?;
    Ok(Json(NameList { names }).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/metrics/series",
    tag = "metrics",
    security(("bearer" = [])),
    description = "Series matching a selector.",
    params(
        super::openapi::SelectorParams,
    ),
    responses(
        (status = 200, description = "Series", body = SeriesList),
        (status = 400, description = "Malformed selector or range, or a query over the limits (series, points); nothing changed", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
        (status = 503, description = "No metrics store is attached, or it failed; retry", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
    )
)]
pub(crate) async fn series(
    State(st): State<AppState>,
    _u: Viewer,
    RawQuery(q): RawQuery,
) -> Res<Response> {
    let p = Params::parse(q)?;
    p.check_known(&SELECTOR_KEYS)?;
    let s = ingest(&st)?
        .query()
        .series(&p.selector()?)
        .await
        .map_err(map_ingest)?;
    Ok(Json(SeriesList { series: s }).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/metrics/latest",
    tag = "metrics",
    security(("bearer" = [])),
    description = "Newest value of each matching series.",
    params(
        super::openapi::SelectorParams,
    ),
    responses(
        (status = 200, description = "Values", body = LatestList),
        (status = 400, description = "Malformed selector or range, or a query over the limits (series, points); nothing changed", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
        (status = 503, description = "No metrics store is attached, or it failed; retry", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
    )
)]
pub(crate) async fn latest(
    State(st): State<AppState>,
    _u: Viewer,
    RawQuery(q): RawQuery,
) -> Res<Response> {
    let p = Params::parse(q)?;
    p.check_known(&SELECTOR_KEYS)?;
    let v = ingest(&st)?
        .query()
        .latest(&p.selector()?)
        .await
        .map_err(map_ingest)?;
    Ok(Json(LatestList { values: v }).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/metrics/history",
    tag = "metrics",
    security(("bearer" = [])),
    description = "Values per step over a range; served from rollups where they suffice.",
    params(
        super::openapi::SelectorParams,
        super::openapi::RangeParams,
        ("step_ms" = Option<u64>, Query, description = "Step, ms (default 60000)", minimum = 1),
        ("agg" = Option<String>, Query, description = "avg (default), min, max, sum, count or last", pattern = r"^(avg|min|max|sum|count|last)$"),
        ("resolution" = Option<String>, Query, description = "auto (default), raw, minute or hour", pattern = r"^(auto|raw|minute|hour)$"),
    ),
    responses(
        (status = 200, description = "Series", body = HistoryList),
        (status = 400, description = "Malformed selector or range, or a query over the limits (series, points); nothing changed", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
        (status = 503, description = "No metrics store is attached, or it failed; retry", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
    )
)]
pub(crate) async fn history(
    State(st): State<AppState>,
    _u: Viewer,
    RawQuery(q): RawQuery,
) -> Res<Response> {
    let p = Params::parse(q)?;
    p.check_known(&keys(&["from", "to", "step_ms", "agg", "resolution"]))?;
    let (from, to) = p.range()?;
    let step = match p.num::<i64>("step_ms")? {
        None => 60_000,
        Some(s) => u64::try_from(s)
            .ok()
            .filter(|s| *s >= 1)
            .ok_or_else(|| Error::invalid("step_ms", "must be at least 1"))?,
    };
    let range = Range::new(from, to, Duration::from_millis(step)).map_err(map_ingest)?;
    let res = match p.one("resolution").unwrap_or("auto") {
        "auto" => Resolution::Auto,
        "raw" => Resolution::Raw,
        "minute" => Resolution::Minute,
        "hour" => Resolution::Hour,
        _ => return Err(Error::invalid("resolution", "auto, raw, minute or hour").into()),
    };
    let h = ingest(&st)?
        .query()
        .history(&p.selector()?, range, p.agg(Aggregation::Avg)?, res)
        .await
        .map_err(map_ingest)?;
    Ok(Json(HistoryList { series: h }).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/metrics/aggregate",
    tag = "metrics",
    security(("bearer" = [])),
    description = "One aggregate per series over a range.",
    params(
        super::openapi::SelectorParams,
        super::openapi::RangeParams,
        ("agg" = Option<String>, Query, description = "avg (default), min, max, sum, count or last", pattern = r"^(avg|min|max|sum|count|last)$"),
    ),
    responses(
        (status = 200, description = "Values", body = ValueList),
        (status = 400, description = "Malformed selector or range, or a query over the limits (series, points); nothing changed", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
        (status = 503, description = "No metrics store is attached, or it failed; retry", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
    )
)]
pub(crate) async fn aggregate(
    State(st): State<AppState>,
    _u: Viewer,
    RawQuery(q): RawQuery,
) -> Res<Response> {
    let p = Params::parse(q)?;
    p.check_known(&keys(&["from", "to", "agg"]))?;
    let (from, to) = p.range()?;
    let v = ingest(&st)?
        .query()
        .aggregate(&p.selector()?, from, to, p.agg(Aggregation::Avg)?)
        .await
        .map_err(map_ingest)?;
    Ok(Json(ValueList { values: v }).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/metrics/top",
    tag = "metrics",
    security(("bearer" = [])),
    description = "Top-N series by an aggregate.",
    params(
        super::openapi::SelectorParams,
        super::openapi::RangeParams,
        ("agg" = Option<String>, Query, description = "avg (default), min, max, sum, count or last", pattern = r"^(avg|min|max|sum|count|last)$"),
        ("n" = Option<u32>, Query, description = "How many (default 10)", minimum = 0, maximum = 10000),
        ("order" = Option<String>, Query, description = "desc (default) or asc", pattern = r"^(asc|desc)$"),
    ),
    responses(
        (status = 200, description = "Values", body = ValueList),
        (status = 400, description = "Malformed selector or range, or a query over the limits (series, points); nothing changed", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
        (status = 503, description = "No metrics store is attached, or it failed; retry", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
    )
)]
pub(crate) async fn top(
    State(st): State<AppState>,
    _u: Viewer,
    RawQuery(q): RawQuery,
) -> Res<Response> {
    let p = Params::parse(q)?;
    p.check_known(&keys(&["from", "to", "agg", "n", "order"]))?;
    let (from, to) = p.range()?;
    let n = p.num::<usize>("n")?.unwrap_or(10);
    if n > MAX_TOP_N {
        return Err(Error::invalid("n", "at most 10000").into());
    }
    let order = match p.one("order").unwrap_or("desc") {
        "desc" => Order::Desc,
        "asc" => Order::Asc,
        _ => return Err(Error::invalid("order", "asc or desc").into()),
    };
    let v = ingest(&st)?
        .query()
        .top_n(&p.selector()?, from, to, p.agg(Aggregation::Avg)?, n, order)
        .await
        .map_err(map_ingest)?;
    Ok(Json(ValueList { values: v }).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/metrics/percentiles",
    tag = "metrics",
    security(("bearer" = [])),
    description = "Percentiles of raw samples per series (default q 0.5, 0.9, 0.99).",
    params(
        super::openapi::SelectorParams,
        super::openapi::RangeParams,
        ("q" = Option<Vec<f64>>, Query, description = "Quantile in [0, 1]; repeat for several", explode = true, style = Form),
    ),
    responses(
        (status = 200, description = "Series", body = PercentileList),
        (status = 400, description = "Malformed selector or range, or a query over the limits (series, points); nothing changed", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
        (status = 503, description = "No metrics store is attached, or it failed; retry", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
    )
)]
pub(crate) async fn percentiles(
    State(st): State<AppState>,
    _u: Viewer,
    RawQuery(q): RawQuery,
) -> Res<Response> {
    let p = Params::parse(q)?;
    p.check_known(&keys(&["from", "to", "q"]))?;
    let (from, to) = p.range()?;
    let mut qs = Vec::new();
    for q in p.all("q") {
        qs.push(
            q.parse::<f64>()
                .map_err(|_| Error::invalid("q", "not a number"))?,
        );
    }
    if qs.is_empty() {
        qs = vec![0.5, 0.9, 0.99];
    }
    let v = ingest(&st)?
        .query()
        .percentiles(&p.selector()?, from, to, &qs)
        .await
        .map_err(map_ingest)?;
    Ok(Json(PercentileList { series: v }).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/metrics/export",
    tag = "metrics",
    security(("bearer" = [])),
    description = "Raw samples as CSV or JSON.",
    params(
        super::openapi::SelectorParams,
        super::openapi::RangeParams,
        ("format" = Option<String>, Query, description = "csv (default) or json", pattern = r"^(csv|json)$"),
    ),
    responses(
        (status = 200, description = "Samples: CSV (format=csv) or a JSON document (format=json)", content((String = "text/csv"), (Vec<sentra_ingest::ExportRow<'static>> = "application/json"))),
        (status = 400, description = "Malformed selector or range, or a query over the limits (series, points); nothing changed", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
        (status = 503, description = "No metrics store is attached, or it failed; retry", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
    )
)]
pub(crate) async fn export(
    State(st): State<AppState>,
    _u: Viewer,
    RawQuery(q): RawQuery,
) -> Res<Response> {
    let p = Params::parse(q)?;
    p.check_known(&keys(&["from", "to", "format"]))?;
    let (from, to) = p.range()?;
    let format = match p.one("format").unwrap_or("csv") {
        "csv" => ExportFormat::Csv,
        "json" => ExportFormat::Json,
        _ => return Err(Error::invalid("format", "csv or json").into()),
    };
    let e = ingest(&st)?
        .query()
        .export(&p.selector()?, from, to, format)
        .await
        .map_err(map_ingest)?;
    Ok(([(header::CONTENT_TYPE, e.content_type())], e.body).into_response())
}

// ------------------------------------------------------------------ live stream

/// `GET /api/v1/status/stream`: Server-Sent Events. First a `snapshot` event with the
/// whole status, then an `agent` event with the agent's new status after every stored
/// batch; after a lag (`lagged` event) a fresh `snapshot` follows. Keep-alive comments
/// every 15 s.
/// How often an idle live stream re-checks that its token still speaks for its user
/// (changes made by this process are seen before the next event anyway).
const SESSION_RECHECK: Duration = Duration::from_secs(5);

/// The session behind a live stream: re-checked before each event when a user changed in
/// this process, and at least every [`SESSION_RECHECK`].
struct StreamSession {
    store: crate::ControlStore,
    username: String,
    token_version: u64,
    epoch: u64,
    checked: tokio::time::Instant,
}

impl StreamSession {
    async fn still_valid(&mut self) -> bool {
        let epoch = self.store.user_epoch();
        if epoch == self.epoch && self.checked.elapsed() < SESSION_RECHECK {
            return true;
        }
        self.epoch = epoch;
        self.checked = tokio::time::Instant::now();
        self.store
            .session_valid(&self.username, self.token_version)
            .await
    }
}

struct Live {
    pending: Option<SseEvent>,
    sub: sentra_ingest::Subscription,
    ingest: Arc<Ingest>,
    session: StreamSession,
    ended: bool,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

#[utoipa::path(
    get,
    path = "/api/v1/status/stream",
    tag = "status",
    security(("bearer" = [])),
    description = "Live status, Server-Sent Events: snapshot first, then agent after every stored batch; lagged then snapshot after a lag; session_ended when the token ends.",
    responses(
        (status = 200, description = "Event stream", body = String, content_type = "text/event-stream"),
        (status = 503, description = "No metrics store is attached, or it failed; retry", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
    )
)]
pub(crate) async fn stream(State(st): State<AppState>, user: Viewer) -> Res<Response> {
    let ingest = Arc::clone(ingest(&st)?);
    let permit = Arc::clone(&st.streams)
        .try_acquire_owned()
        .map_err(|_| Error::Unavailable("too many live streams"))?;
    let sub = ingest.subscribe();
    let first = snapshot_event(&ingest);
    let live = Live {
        pending: Some(first),
        sub,
        ingest,
        session: StreamSession {
            epoch: st.store.user_epoch(),
            store: st.store.clone(),
            username: user.username,
            token_version: user.token_version,
            checked: tokio::time::Instant::now(),
        },
        ended: false,
        _permit: permit,
    };
    let stream = futures_util::stream::unfold(live, |mut live| async move {
        if live.ended {
            return None;
        }
        if let Some(ev) = live.pending.take() {
            return Some((Ok::<_, Infallible>(ev), live));
        }
        loop {
            let event = tokio::select! {
                e = live.sub.recv() => Some(e?),
                () = tokio::time::sleep(SESSION_RECHECK) => None,
            };
            if !live.session.still_valid().await {
                tracing::info!(user = %live.session.username, "live stream ended: the session ended");
                live.ended = true;
                let ev = SseEvent::default().event("session_ended").data(
                    "the access token was ended (user deleted or disabled, logout or password change)",
                );
                return Some((Ok(ev), live));
            }
            let Some(event) = event else { continue };
            let ev = match event {
                sentra_ingest::Event::Stored(b) => {
                    agent_event(&live.ingest, &b.agent_id, b.seq.get())
                }
                sentra_ingest::Event::Lagged(n) => {
                    live.pending = Some(snapshot_event(&live.ingest));
                    SseEvent::default().event("lagged").data(n.to_string())
                }
                _ => snapshot_event(&live.ingest),
            };
            return Some((Ok(ev), live));
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// `online`, `stale` or `offline`: the name `Presence` serialises as.
fn presence_name(p: sentra_ingest::Presence) -> String {
    serde_json::to_value(p)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn snapshot_event(ingest: &Ingest) -> SseEvent {
    SseEvent::default()
        .event("snapshot")
        .json_data(ingest.status().snapshot())
        .unwrap_or_else(|_| SseEvent::default().event("error").data("encoding failed"))
}

fn agent_event(ingest: &Ingest, agent: &AgentId, seq: u64) -> SseEvent {
    let status = ingest.status().agent_at(agent, UnixMillis::now());
    SseEvent::default()
        .event("agent")
        .id(format!("{agent}:{seq}"))
        .json_data(json!({ "agent_id": agent.as_str(), "seq": seq, "status": status }))
        .unwrap_or_else(|_| SseEvent::default().event("error").data("encoding failed"))
}

#[cfg(test)]
mod tests {
    use super::decode_query;

    fn ok(raw: &str) -> Vec<(String, String)> {
        decode_query(raw).unwrap_or_else(|e| panic!("{raw:?} refused: {e:?}"))
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn decodes_like_a_form() {
        assert_eq!(ok(""), pairs(&[]));
        assert_eq!(ok("&&"), pairs(&[]));
        assert_eq!(
            ok("name=wg_peer_rx&label=iface%3Dwg0&label=a+b"),
            pairs(&[
                ("name", "wg_peer_rx"),
                ("label", "iface=wg0"),
                ("label", "a b")
            ])
        );
        // '=' after the first belongs to the value; a key alone has an empty value.
        assert_eq!(ok("a=b=c&flag"), pairs(&[("a", "b=c"), ("flag", "")]));
        // Escaped '+', '&', '%' are data; hex digits in either case.
        assert_eq!(ok("k=%2b%26%25%2F"), pairs(&[("k", "+&%/")]));
        assert_eq!(ok("k=%E2%9C%93"), pairs(&[("k", "\u{2713}")]));
        // U+FFFD spelled out by the client is kept.
        assert_eq!(
            ok("k=%ef%bf%bd&j=%EF%BF%BD"),
            pairs(&[("k", "\u{FFFD}"), ("j", "\u{FFFD}")])
        );
    }

    #[test]
    fn refuses_bad_escapes() {
        for raw in [
            "name=%ZZ",
            "name=%",
            "name=%4",
            "%=x",
            "a=1&b=%G0",
            "k=%%41",
            "k=%+1",
        ] {
            let e = decode_query(raw).expect_err(raw);
            let text = e.0.to_string();
            assert!(text.contains("bad percent-encoding"), "{raw}: {text}");
        }
    }

    #[test]
    fn refuses_bytes_that_are_not_utf8() {
        for raw in [
            "k=%FF",
            "k=%C3%28",
            "%80=v",
            "k=%ED%A0%80",          // a UTF-16 surrogate
            "k=%C0%AF",             // overlong '/'
            "k=%E2%9C",             // cut short
            "k=%EF%BF%BD%FF",       // a real U+FFFD next to a bad byte
            "k=%EF%EF%BF%BD",       // a bad lead byte before a real U+FFFD
            "a=%EF%BF%BD&b=%BF%BD", // counts across pairs
        ] {
            let e = decode_query(raw).expect_err(raw);
            let text = e.0.to_string();
            assert!(text.contains("not UTF-8"), "{raw}: {text}");
        }
    }
}
