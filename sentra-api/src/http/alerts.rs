//! `/api/v1/alerts`: active alerts, rules, silences, receiver tests and dead letters of the
//! alerting engine the server attached ([`crate::Api::attach_alerts`]). Without one, every
//! endpoint answers `503 unavailable`, saying why: alerting is off, or this server is a
//! standby of the alert lease ([`crate::Api::alerts_standby`]) and the holder serves alerts. Reads need any role, writes the admin role; writes
//! are audited (`alerts.silence.create`, `alerts.silence.expire`, `alerts.receiver.test`,
//! `alerts.dead_letter.resend`).

use std::{
    collections::BTreeMap,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use axum::{
    Json,
    extract::{FromRequestParts, Path},
    http::{StatusCode, request::Parts},
};
use sentra_alerts::{Matcher, Silence, SilenceId, engine::Engine, route::SilenceState};
use sentra_core::UnixMillis;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    AppState,
    extract::{Admin, JsonBody, Viewer},
    openapi::ErrorBody,
};
use crate::Error;

type Res<T> = Result<T, super::ApiError>;

/// Longest silence accepted (one year).
const MAX_SILENCE: Duration = Duration::from_secs(366 * 24 * 3600);
const MAX_MATCHERS: usize = 32;
const MAX_COMMENT: usize = 1024;

impl crate::Api {
    /// Serves `engine` under `/api/v1/alerts` (once; a second call is ignored and
    /// returns `false`).
    pub fn attach_alerts(&self, engine: Arc<Engine>) -> bool {
        self.alerts.set(engine).is_ok()
    }

    /// Marks this server as a standby of the alert lease (a shared control database with
    /// `[alerts] lease`): until [`attach_alerts`](Self::attach_alerts), `/api/v1/alerts`
    /// answers 503 saying that the lease holder serves alerts and how to find it, instead
    /// of "not enabled".
    pub fn alerts_standby(&self) {
        self.alerts_standby.store(true, Ordering::Relaxed);
    }
}

impl crate::Api {
    /// The alerting engine's feed from `ingest`: every stored batch, in order, and
    /// [`Feed::Lagged`](sentra_alerts::engine::Feed::Lagged) when this subscriber fell
    /// behind. A task forwards [`sentra_ingest::Ingest::subscribe`] into a channel of
    /// `capacity` (waiting when it is full, so a lag shows up as `Lagged` from the
    /// ingest's own buffer); it ends when the ingest shuts down or the receiver is dropped.
    #[must_use]
    pub fn alert_feed(
        ingest: &sentra_ingest::Ingest,
        capacity: usize,
    ) -> tokio::sync::mpsc::Receiver<sentra_alerts::engine::Feed> {
        use sentra_alerts::engine::Feed;
        let mut sub = ingest.subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
        tokio::spawn(async move {
            while let Some(event) = sub.recv().await {
                let item = match event {
                    sentra_ingest::Event::Stored(b) => {
                        Feed::Batch(Arc::clone(&b.batch), b.received)
                    }
                    sentra_ingest::Event::Lagged(n) => Feed::Lagged(n),
                    _ => continue,
                };
                if tx.send(item).await.is_err() {
                    break;
                }
            }
        });
        rx
    }
}

/// The 503 message of a standby server: which server answers is not recorded anywhere (the
/// lease is a PostgreSQL advisory lock), so say how to find it.
pub(crate) const STANDBY: &str = "this server is a standby for the alert lease: another \
    server sharing the control database holds it, evaluates the rules and serves \
    /api/v1/alerts; ask that server (the one whose /metrics shows sentra_alerts_leader 1, \
    or whose log says it holds the alert lease). This server takes over when the holder \
    stops, within seconds";

fn engine(st: &AppState) -> Res<Arc<Engine>> {
    if let Some(engine) = st.alerts.get() {
        return Ok(Arc::clone(engine));
    }
    Err(if st.alerts_standby.load(Ordering::Relaxed) {
        Error::Unavailable(STANDBY)
    } else {
        Error::Unavailable(
            "alerting is not enabled on this server (the server's [alerts] configuration)",
        )
    }
    .into())
}

/// A read of the engine: any authenticated user (401 first), then the engine (503 without).
pub(crate) struct Reader(Arc<Engine>);

impl FromRequestParts<AppState> for Reader {
    type Rejection = super::ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Res<Self> {
        Viewer::from_request_parts(parts, st).await?;
        Ok(Self(engine(st)?))
    }
}

/// A write to the engine: an admin (401, 403 first), then the engine (503 without); every
/// write goes through [`Writer::audited`].
pub(crate) struct Writer {
    engine: Arc<Engine>,
    admin: Admin,
    st: AppState,
}

impl FromRequestParts<AppState> for Writer {
    type Rejection = super::ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Res<Self> {
        let admin = Admin::from_request_parts(parts, st).await?;
        Ok(Self {
            engine: engine(st)?,
            admin,
            st: st.clone(),
        })
    }
}

impl Writer {
    /// Runs `op` on the engine and records `action` on `target` (given what `op` returned
    /// on success) in the audit log with its outcome (`success` and `detail`, or `failed`
    /// and the error), whatever the outcome.
    async fn audited<T, F>(
        &self,
        action: &str,
        target: impl FnOnce(Option<&T>) -> String,
        detail: &str,
        op: impl FnOnce(Arc<Engine>) -> F,
    ) -> Result<T, sentra_alerts::Error>
    where
        F: std::future::Future<Output = Result<T, sentra_alerts::Error>>,
    {
        let result = op(Arc::clone(&self.engine)).await;
        let (outcome, detail, target) = match &result {
            Ok(v) => ("success", detail.to_owned(), target(Some(v))),
            Err(e) => ("failed", e.to_string(), target(None)),
        };
        if let Err(e) = self
            .st
            .store
            .record_audit(&self.admin.actor(), action, &target, outcome, &detail)
            .await
        {
            tracing::error!(error = %e, "cannot write audit entry");
        }
        result
    }
}

/// Parses a numeric path id (`what`: "silence", "dead letter"): 1 to 2^63-1, as the
/// OpenAPI document states, else a 400 saying so.
fn path_id(raw: &str, what: &str) -> Res<u64> {
    raw.parse::<i64>()
        .ok()
        .filter(|&n| n >= 1)
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| {
            Error::invalid(
                "id",
                format!("a {what} id is a whole number from 1 to 9223372036854775807"),
            )
            .into()
        })
}

fn alerts_error(e: &sentra_alerts::Error) -> super::ApiError {
    match e {
        sentra_alerts::Error::NotFound(what) => Error::NotFound {
            kind: "alerting object",
            id: what.clone(),
        }
        .into(),
        sentra_alerts::Error::Closed => {
            Error::Unavailable("the alerting engine is shutting down").into()
        }
        other => Error::Conflict(other.to_string()).into(),
    }
}

fn labels(v: &[(String, String)]) -> BTreeMap<String, String> {
    v.iter().cloned().collect()
}

/// One firing or pending alert.
#[derive(Serialize, ToSchema)]
pub(crate) struct AlertInfo {
    /// Stable identity (16 hex digits).
    fingerprint: String,
    /// Rule name (also the `alertname` label).
    rule: String,
    /// `firing` or `pending`.
    status: String,
    /// Severity.
    severity: String,
    /// Alert labels.
    labels: BTreeMap<String, String>,
    /// The value that made the condition true.
    value: f64,
    /// When the condition became true (Unix ms).
    since_ms: i64,
    /// Rendered summary.
    summary: String,
    /// Rendered description.
    description: String,
}

/// `GET /api/v1/alerts`.
#[derive(Serialize, ToSchema)]
pub(crate) struct AlertList {
    alerts: Vec<AlertInfo>,
}

#[utoipa::path(
    get,
    path = "/api/v1/alerts",
    tag = "alerts",
    security(("bearer" = [])),
    description = "Firing and pending alerts as of the last evaluation tick.",
    responses(
        (status = 200, description = "Active alerts", body = AlertList),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody),
        (status = 503, description = "Alerting is not enabled on this server, or this server is a standby for the alert lease and another server serves alerts (the message says which, and how to find the holder)", body = ErrorBody, example = json!({"error": {"code": "unavailable", "message": STANDBY}})),
    )
)]
pub(crate) async fn list_alerts(Reader(e): Reader) -> Res<Json<AlertList>> {
    let alerts = e
        .alerts()
        .into_iter()
        .map(|t| AlertInfo {
            fingerprint: t.fingerprint.to_string(),
            rule: t.rule,
            status: match t.status {
                sentra_alerts::Status::Pending => "pending",
                _ => "firing",
            }
            .to_owned(),
            severity: t.severity,
            labels: labels(&t.labels),
            value: if t.value.is_finite() { t.value } else { 0.0 },
            since_ms: t.active_since.as_millis(),
            summary: t.summary,
            description: t.description,
        })
        .collect();
    Ok(Json(AlertList { alerts }))
}

/// One configured rule.
#[derive(Serialize, ToSchema)]
pub(crate) struct RuleInfo {
    /// Name.
    name: String,
    /// Kind as in the rule file (`threshold`, `wg_handshake_stale`, …).
    kind: String,
    /// Severity.
    severity: String,
    /// `for` in seconds.
    for_s: u64,
    /// `keep_firing_for` in seconds.
    keep_firing_for_s: u64,
    /// Selecting matchers.
    matchers: Vec<String>,
    /// Extra labels.
    labels: BTreeMap<String, String>,
}

/// `GET /api/v1/alerts/rules`.
#[derive(Serialize, ToSchema)]
pub(crate) struct RuleList {
    rules: Vec<RuleInfo>,
}

#[utoipa::path(
    get,
    path = "/api/v1/alerts/rules",
    tag = "alerts",
    security(("bearer" = [])),
    description = "The rules the engine evaluates.",
    responses(
        (status = 200, description = "Rules", body = RuleList),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody),
        (status = 503, description = "Alerting is not enabled on this server, or this server is a standby for the alert lease and another server serves alerts (the message says which, and how to find the holder)", body = ErrorBody, example = json!({"error": {"code": "unavailable", "message": STANDBY}})),
    )
)]
pub(crate) async fn list_rules(Reader(e): Reader) -> Res<Json<RuleList>> {
    let rules = e
        .rules()
        .iter()
        .map(|r| RuleInfo {
            name: r.name.clone(),
            kind: r.kind.as_str().to_owned(),
            severity: r.severity.as_str().to_owned(),
            for_s: r.for_.as_secs(),
            keep_firing_for_s: r.keep_firing_for.as_secs(),
            matchers: r.matchers.iter().map(ToString::to_string).collect(),
            labels: r.labels.clone().into_iter().collect(),
        })
        .collect();
    Ok(Json(RuleList { rules }))
}

/// One silence.
#[derive(Serialize, ToSchema)]
pub(crate) struct SilenceInfo {
    /// Identity.
    id: u64,
    /// Matchers, e.g. `agent="gw-1"`.
    matchers: Vec<String>,
    /// Start (Unix ms).
    starts_ms: i64,
    /// End, exclusive (Unix ms).
    ends_ms: i64,
    /// `pending`, `active` or `expired`.
    state: String,
    /// Who created it.
    created_by: String,
    /// Why.
    comment: String,
}

/// `GET /api/v1/alerts/silences`.
#[derive(Serialize, ToSchema)]
pub(crate) struct SilenceList {
    silences: Vec<SilenceInfo>,
}

#[utoipa::path(
    get,
    path = "/api/v1/alerts/silences",
    tag = "alerts",
    security(("bearer" = [])),
    description = "Silences, including expired ones not yet purged.",
    responses(
        (status = 200, description = "Silences", body = SilenceList),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody),
        (status = 503, description = "Alerting is not enabled on this server, or this server is a standby for the alert lease and another server serves alerts (the message says which, and how to find the holder)", body = ErrorBody, example = json!({"error": {"code": "unavailable", "message": STANDBY}})),
    )
)]
pub(crate) async fn list_silences(Reader(e): Reader) -> Res<Json<SilenceList>> {
    let now = UnixMillis::now();
    let silences = e
        .silences()
        .await
        .map_err(|e| alerts_error(&e))?
        .into_iter()
        .map(|(id, s)| SilenceInfo {
            id: id.0,
            matchers: s.matchers.iter().map(ToString::to_string).collect(),
            starts_ms: s.starts_at.as_millis(),
            ends_ms: s.ends_at.as_millis(),
            state: match s.state(now) {
                SilenceState::Pending => "pending",
                SilenceState::Active => "active",
                _ => "expired",
            }
            .to_owned(),
            created_by: s.created_by.clone(),
            comment: s.comment.clone(),
        })
        .collect();
    Ok(Json(SilenceList { silences }))
}

/// `POST /api/v1/alerts/silences`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewSilence {
    /// 1–32 matchers such as `agent="gw-1"`, `alertname=~"Wg.*"`.
    #[schema(min_items = 1, max_items = 32, example = json!(["agent=\"gw-1\""]))]
    matchers: Vec<String>,
    /// How long, in seconds (1 s to 366 days; fractions allowed), from now.
    #[schema(minimum = 1, maximum = 31_622_400)]
    duration_s: f64,
    /// Why (at most 1024 bytes).
    #[serde(default)]
    #[schema(max_length = 1024)]
    comment: String,
}

/// A created silence.
#[derive(Serialize, ToSchema)]
pub(crate) struct SilenceCreated {
    /// Its identity.
    id: u64,
}

#[utoipa::path(
    post,
    path = "/api/v1/alerts/silences",
    tag = "alerts",
    security(("bearer" = [])),
    description = "Mute alerts matching every matcher for a while (admin).",
    request_body = NewSilence,
    responses(
        (status = 201, description = "Silence created", body = SilenceCreated),
        (status = 400, description = "Malformed request or a bad matcher; nothing changed", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody),
        (status = 403, description = "Admin role needed", body = ErrorBody),
        (status = 413, description = "Request body larger than the limit", body = ErrorBody),
        (status = 503, description = "Alerting is not enabled on this server, or this server is a standby for the alert lease and another server serves alerts (the message says which, and how to find the holder)", body = ErrorBody, example = json!({"error": {"code": "unavailable", "message": STANDBY}})),
    )
)]
pub(crate) async fn create_silence(
    w: Writer,
    JsonBody(req): JsonBody<NewSilence>,
) -> Res<(StatusCode, Json<SilenceCreated>)> {
    if req.matchers.is_empty() || req.matchers.len() > MAX_MATCHERS {
        return Err(Error::invalid("matchers", "between 1 and 32 matchers").into());
    }
    if req.comment.len() > MAX_COMMENT {
        return Err(Error::invalid("comment", "at most 1024 bytes").into());
    }
    if !(req.duration_s.is_finite()
        && req.duration_s >= 1.0
        && req.duration_s <= MAX_SILENCE.as_secs_f64())
    {
        return Err(Error::invalid("duration_s", "between 1 s and 366 days").into());
    }
    let duration = Duration::from_secs_f64(req.duration_s);
    let mut matchers = Vec::with_capacity(req.matchers.len());
    for (i, m) in req.matchers.iter().enumerate() {
        matchers.push(
            Matcher::parse(m)
                .map_err(|err| Error::invalid(format!("matchers[{i}]"), err.to_string()))?,
        );
    }
    let mut silence = Silence::new(matchers, UnixMillis::now(), duration);
    silence.created_by.clone_from(&w.admin.username);
    silence.comment = req.comment;
    let detail = silence
        .matchers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let id = w
        .audited(
            "alerts.silence.create",
            |id: Option<&SilenceId>| id.map_or_else(|| "new".to_owned(), ToString::to_string),
            &detail,
            |e| async move { e.add_silence(silence).await },
        )
        .await
        .map_err(|err| match err {
            sentra_alerts::Error::Config(m) => Error::invalid("matchers", m).into(),
            other => alerts_error(&other),
        })?;
    Ok((StatusCode::CREATED, Json(SilenceCreated { id: id.0 })))
}

#[utoipa::path(
    delete,
    path = "/api/v1/alerts/silences/{id}",
    tag = "alerts",
    security(("bearer" = [])),
    description = "Expire a silence now (admin).",
    params(("id" = i64, Path, description = "Silence id", minimum = 1)),
    responses(
        (status = 204, description = "Expired"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody),
        (status = 403, description = "Admin role needed", body = ErrorBody),
        (status = 404, description = "No such silence", body = ErrorBody),
        (status = 409, description = "Already expired", body = ErrorBody),
        (status = 503, description = "Alerting is not enabled on this server, or this server is a standby for the alert lease and another server serves alerts (the message says which, and how to find the holder)", body = ErrorBody, example = json!({"error": {"code": "unavailable", "message": STANDBY}})),
    )
)]
pub(crate) async fn expire_silence(w: Writer, Path(id): Path<String>) -> Res<StatusCode> {
    let id = path_id(&id, "silence")?;
    w.audited(
        "alerts.silence.expire",
        |_| id.to_string(),
        "",
        |e| async move { e.expire_silence(SilenceId(id)).await },
    )
    .await
    .map_err(|err| alerts_error(&err))?;
    Ok(StatusCode::NO_CONTENT)
}

/// A receiver's answer to a test or re-sent notification.
#[derive(Serialize, ToSchema)]
pub(crate) struct DeliveryInfo {
    /// Attempts it took.
    attempts: u32,
    /// The receiver's HTTP status.
    status: u16,
    /// The start of the receiver's answer (at most 256 bytes).
    body: String,
}

impl From<sentra_alerts::notify::Delivery> for DeliveryInfo {
    fn from(d: sentra_alerts::notify::Delivery) -> Self {
        Self {
            attempts: d.attempts,
            status: d.status,
            body: d.body,
        }
    }
}

fn delivery_error(err: sentra_alerts::Error) -> super::ApiError {
    match err {
        sentra_alerts::Error::NotFound(_) | sentra_alerts::Error::Closed => alerts_error(&err),
        // the receiver's failure is the answer the caller asked for (no secrets in it)
        other => Error::Conflict(other.to_string()).into(),
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/alerts/receivers/{name}/test",
    tag = "alerts",
    security(("bearer" = [])),
    description = "Send a real test notification to a receiver and show its answer (admin). 409 carries the receiver's failure.",
    params(("name" = String, Path, description = "Receiver name", pattern = r"^[A-Za-z0-9_.-]{1,64}$")),
    responses(
        (status = 200, description = "The receiver's answer", body = DeliveryInfo),
        (status = 400, description = "Malformed receiver name", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody),
        (status = 403, description = "Admin role needed", body = ErrorBody),
        (status = 404, description = "No such receiver", body = ErrorBody),
        (status = 409, description = "The receiver failed", body = ErrorBody),
        (status = 503, description = "Alerting is not enabled on this server, or this server is a standby for the alert lease and another server serves alerts (the message says which, and how to find the holder)", body = ErrorBody, example = json!({"error": {"code": "unavailable", "message": STANDBY}})),
    )
)]
pub(crate) async fn test_receiver(w: Writer, Path(name): Path<String>) -> Res<Json<DeliveryInfo>> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return Err(Error::invalid("name", "1-64 of A-Z a-z 0-9 _ . -").into());
    }
    let target = name.clone();
    let result = w
        .audited(
            "alerts.receiver.test",
            |_| target,
            "delivered",
            |e| async move { e.test(&name).await },
        )
        .await;
    Ok(Json(result.map_err(delivery_error)?.into()))
}

/// A notification that could not be delivered.
#[derive(Serialize, ToSchema)]
pub(crate) struct DeadLetterInfo {
    /// Identity (for resend).
    id: u64,
    /// Receiver.
    receiver: String,
    /// `firing` or `resolved`.
    status: String,
    /// Alerts in it.
    alerts: usize,
    /// Group labels.
    group_labels: BTreeMap<String, String>,
    /// Why it failed.
    error: String,
    /// When (Unix ms).
    at_ms: i64,
}

/// `GET /api/v1/alerts/dead-letters`.
#[derive(Serialize, ToSchema)]
pub(crate) struct DeadLetterList {
    dead_letters: Vec<DeadLetterInfo>,
}

#[utoipa::path(
    get,
    path = "/api/v1/alerts/dead-letters",
    tag = "alerts",
    security(("bearer" = [])),
    description = "Notifications that failed after every retry (kept in memory, bounded).",
    responses(
        (status = 200, description = "Dead letters", body = DeadLetterList),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody),
        (status = 503, description = "Alerting is not enabled on this server, or this server is a standby for the alert lease and another server serves alerts (the message says which, and how to find the holder)", body = ErrorBody, example = json!({"error": {"code": "unavailable", "message": STANDBY}})),
    )
)]
pub(crate) async fn list_dead_letters(Reader(e): Reader) -> Res<Json<DeadLetterList>> {
    let dead_letters = e
        .dead_letters()
        .into_iter()
        .map(|d| DeadLetterInfo {
            id: d.id,
            receiver: d.notification.receiver.clone(),
            status: match d.notification.status {
                sentra_alerts::Status::Resolved => "resolved",
                _ => "firing",
            }
            .to_owned(),
            alerts: d.notification.alerts.len(),
            group_labels: labels(&d.notification.group_labels),
            error: d.error,
            at_ms: d.at.as_millis(),
        })
        .collect();
    Ok(Json(DeadLetterList { dead_letters }))
}

#[utoipa::path(
    post,
    path = "/api/v1/alerts/dead-letters/{id}/resend",
    tag = "alerts",
    security(("bearer" = [])),
    description = "Send a dead letter again (admin); on success it leaves the list.",
    params(("id" = i64, Path, description = "Dead letter id", minimum = 1)),
    responses(
        (status = 200, description = "The receiver's answer", body = DeliveryInfo),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody),
        (status = 403, description = "Admin role needed", body = ErrorBody),
        (status = 404, description = "No such dead letter", body = ErrorBody),
        (status = 409, description = "The receiver failed again", body = ErrorBody),
        (status = 503, description = "Alerting is not enabled on this server, or this server is a standby for the alert lease and another server serves alerts (the message says which, and how to find the holder)", body = ErrorBody, example = json!({"error": {"code": "unavailable", "message": STANDBY}})),
    )
)]
pub(crate) async fn resend_dead_letter(
    w: Writer,
    Path(id): Path<String>,
) -> Res<Json<DeliveryInfo>> {
    let id = path_id(&id, "dead letter")?;
    let result = w
        .audited(
            "alerts.dead_letter.resend",
            |_| id.to_string(),
            "delivered",
            |e| async move { e.resend(id).await },
        )
        .await;
    Ok(Json(result.map_err(delivery_error)?.into()))
}
