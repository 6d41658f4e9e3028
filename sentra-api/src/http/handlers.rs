//! Route handlers of the control plane.

use std::time::Duration;

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use prost::Message as _;
use sentra_core::{Keyring as _, Method, UnixMillis, proto};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    ApiError, AppState,
    extract::{Admin, ClientIp, JsonBody, QueryParams, Viewer, agent_id},
};
use crate::{AuditQuery, Error, Password, PeerSpec, Role, SecretString, metrics::Event, util};

type Res<T> = Result<T, ApiError>;

// ------------------------------------------------------------------ auth

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginRequest {
    username: String,
    password: Password,
}

pub(crate) async fn login(
    State(st): State<AppState>,
    ClientIp(ip): ClientIp,
    JsonBody(req): JsonBody<LoginRequest>,
) -> Res<Response> {
    let user_key = format!("user:{}", req.username);
    let ip_key = ip.map(|ip| format!("ip:{ip}"));
    let limited = st.login_user_limit.check(&user_key).err().or_else(|| {
        ip_key
            .as_deref()
            .and_then(|k| st.login_ip_limit.check(k).err())
    });
    if let Some(retry_after_s) = limited {
        st.metrics.event(Event::LoginRateLimited);
        return Err(Error::RateLimited { retry_after_s }.into());
    }
    match st
        .store
        .authenticate_session(&req.username, req.password)
        .await
    {
        Ok((user, token_version)) => {
            st.login_user_limit.clear(&user_key);
            st.metrics.event(Event::LoginSuccess);
            let issued = st.tokens.issue(&user.username, user.role, token_version)?;
            Ok(Json(issued).into_response())
        }
        Err(Error::Unauthenticated) => {
            st.login_user_limit.fail(&user_key);
            if let Some(k) = &ip_key {
                st.login_ip_limit.fail(k);
            }
            st.metrics.event(Event::LoginFailure);
            Err(Error::Unauthenticated.into())
        }
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn me(user: Viewer) -> Json<serde_json::Value> {
    Json(json!({ "username": user.username, "role": user.role }))
}

/// `POST /api/v1/auth/logout`: ends every access token of the caller.
pub(crate) async fn logout(State(st): State<AppState>, user: Viewer) -> Res<StatusCode> {
    st.store
        .end_sessions(&crate::Actor::user(&user.username), &user.username)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChangePassword {
    current_password: Password,
    new_password: Password,
}

/// `POST /api/v1/auth/password`: the caller changes its own password; every token of the
/// caller ends (log in again).
pub(crate) async fn change_password(
    State(st): State<AppState>,
    user: Viewer,
    JsonBody(req): JsonBody<ChangePassword>,
) -> Res<StatusCode> {
    st.store
        .change_password(&user.username, req.current_password, req.new_password)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ------------------------------------------------------------------ users

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateUser {
    username: String,
    password: Password,
    role: Role,
}

pub(crate) async fn create_user(
    State(st): State<AppState>,
    admin: Admin,
    JsonBody(req): JsonBody<CreateUser>,
) -> Res<Response> {
    let user = st
        .store
        .create_user(&admin.actor(), &req.username, req.password, req.role)
        .await?;
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateUser {
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    disabled: Option<bool>,
    #[serde(default)]
    password: Option<Password>,
}

/// `PATCH /api/v1/users/{username}`: role, disabled, password (admin).
pub(crate) async fn update_user(
    State(st): State<AppState>,
    admin: Admin,
    Path(username): Path<String>,
    JsonBody(req): JsonBody<UpdateUser>,
) -> Res<Response> {
    let update = crate::UserUpdate {
        role: req.role,
        disabled: req.disabled,
        password: req.password,
    };
    let user = st
        .store
        .update_user(&admin.actor(), &username, update)
        .await?;
    Ok(Json(user).into_response())
}

pub(crate) async fn list_users(State(st): State<AppState>, _admin: Admin) -> Res<Response> {
    Ok(Json(json!({ "users": st.store.list_users().await? })).into_response())
}

pub(crate) async fn delete_user(
    State(st): State<AppState>,
    admin: Admin,
    Path(username): Path<String>,
) -> Res<StatusCode> {
    st.store.delete_user(&admin.actor(), &username).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ------------------------------------------------------------------ bootstrap tokens

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IssueToken {
    /// Lifetime in seconds (default from the config, at most 7 days).
    #[serde(default)]
    ttl_s: Option<u64>,
    #[serde(default)]
    note: String,
}

pub(crate) async fn issue_token(
    State(st): State<AppState>,
    admin: Admin,
    JsonBody(req): JsonBody<IssueToken>,
) -> Res<Response> {
    let ttl = req
        .ttl_s
        .map_or(st.config.default_bootstrap_token_ttl, Duration::from_secs);
    let issued = st
        .store
        .issue_bootstrap_token(&admin.actor(), ttl, &req.note)
        .await?;
    Ok((StatusCode::CREATED, no_store(), Json(issued)).into_response())
}

pub(crate) async fn list_tokens(State(st): State<AppState>, _admin: Admin) -> Res<Response> {
    Ok(Json(json!({ "tokens": st.store.list_bootstrap_tokens().await? })).into_response())
}

fn no_store() -> [(header::HeaderName, &'static str); 1] {
    [(header::CACHE_CONTROL, "no-store")]
}

// ------------------------------------------------------------------ agents

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnrollRequest {
    token: SecretString,
    name: String,
}

#[derive(Serialize)]
struct EnrollResponse {
    agent_id: String,
    key_id: u32,
    /// 32-byte HMAC secret, standard base64.
    secret: SecretString,
    envelope_version: u32,
}

pub(crate) async fn enroll(
    State(st): State<AppState>,
    JsonBody(req): JsonBody<EnrollRequest>,
) -> Res<Response> {
    match st.store.enroll(&req.token, &req.name).await {
        Ok(e) => {
            st.metrics.event(Event::EnrolSuccess);
            let body = EnrollResponse {
                agent_id: e.agent_id.to_string(),
                key_id: e.key_id.get(),
                secret: SecretString::new(util::b64(e.secret.expose_secret())),
                envelope_version: sentra_core::envelope::ENVELOPE_VERSION,
            };
            Ok((StatusCode::CREATED, no_store(), Json(body)).into_response())
        }
        Err(e) => {
            st.metrics.event(Event::EnrolFailure);
            Err(e.into())
        }
    }
}

pub(crate) async fn list_agents(State(st): State<AppState>, _user: Viewer) -> Res<Response> {
    Ok(Json(json!({ "agents": st.store.list_agents().await? })).into_response())
}

pub(crate) async fn get_agent(
    State(st): State<AppState>,
    _user: Viewer,
    Path(id): Path<String>,
) -> Res<Response> {
    let id = agent_id(&id)?;
    Ok(Json(st.store.get_agent(&id).await?).into_response())
}

pub(crate) async fn revoke_agent(
    State(st): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Res<Response> {
    let id = agent_id(&id)?;
    st.store.revoke_agent(&admin.actor(), &id).await?;
    Ok(Json(st.store.get_agent(&id).await?).into_response())
}

pub(crate) async fn delete_agent(
    State(st): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Res<StatusCode> {
    let id = agent_id(&id)?;
    st.store.delete_agent(&admin.actor(), &id).await?;
    st.delete_agent_data(&admin.actor(), &id).await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateParams {
    overlap_s: Option<u64>,
    /// Also forget the agent's sequence high-water mark in the metrics store, so batches
    /// refused as `SEQ_BELOW_HIGH_WATER` (a far-ahead seq signed with its key, or lost
    /// agent state) are accepted again.
    #[serde(default)]
    reset_sequence: bool,
}

/// Shortest overlap accepted: the agent needs time to fetch and persist the new key.
const MIN_OVERLAP: Duration = Duration::from_secs(60);
/// Longest overlap accepted.
const MAX_OVERLAP: Duration = Duration::from_secs(30 * 24 * 3600);

pub(crate) async fn rotate_key(
    State(st): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    QueryParams(params): QueryParams<RotateParams>,
) -> Res<Response> {
    let id = agent_id(&id)?;
    let overlap = params
        .overlap_s
        .map_or(st.config.key_overlap, Duration::from_secs);
    if !(MIN_OVERLAP..=MAX_OVERLAP).contains(&overlap) {
        return Err(Error::invalid("overlap_s", "must be between 60 s and 30 days").into());
    }
    if params.reset_sequence && st.ingest.is_none() {
        return Err(Error::Conflict(
            "reset_sequence needs the metrics store, and this API runs without one; nothing was changed"
                .into(),
        )
        .into());
    }
    let rotation = st.store.rotate_key(&admin.actor(), &id, overlap).await?;
    let mut body = serde_json::to_value(&rotation)
        .map_err(|e| Error::Internal(format!("rotation to JSON: {e}")))?;
    if params.reset_sequence {
        let previous = st.reset_sequence(&admin.actor(), &id).await?;
        body["sequence_reset"] = json!({ "previous_high_water": previous });
    }
    Ok(Json(body).into_response())
}

#[derive(Serialize)]
struct AgentKeyResponse {
    agent_id: String,
    /// The newest key's id; equal to the signing key's id when there is nothing new.
    key_id: u32,
    /// The newest key's 32-byte secret, standard base64.
    secret: SecretString,
    /// The key that signed this request, and until when it stays valid.
    signed_with_key_id: u32,
    signed_with_not_after_ms: Option<i64>,
}

/// `POST /api/v1/agent/key`: an agent collects its newest key with a request signed by a
/// key it already holds. See the crate docs for the protocol.
pub(crate) async fn agent_key(State(st): State<AppState>, body: Bytes) -> Res<Response> {
    let res = agent_key_inner(&st, body).await;
    st.metrics.event(if res.is_ok() {
        Event::KeyFetchSuccess
    } else {
        Event::KeyFetchFailure
    });
    res
}

async fn agent_key_inner(st: &AppState, body: Bytes) -> Res<Response> {
    let envelope = proto::SignedBatch::decode(body)
        .map_err(|_| Error::invalid("body", "not a protobuf SignedBatch"))?;
    let now = UnixMillis::now();
    let keyring = st.store.keyring();
    let verified = st
        .verifier
        .verify(&envelope, Method::FetchKey, now, &keyring)
        .map_err(|e| {
            tracing::info!(agent_id = %envelope.agent_id, key_id = envelope.key_id, reason = %e, "agent key fetch refused");
            match e {
                sentra_core::Error::ClockSkew { .. } => Error::ClockSkew {
                    server_time_ms: now.as_millis(),
                },
                e if e.reject_reason() == proto::RejectReason::Unauthenticated => {
                    Error::Unauthenticated
                }
                e => Error::invalid("envelope", e.to_string()),
            }
        })?;
    verified
        .decode_desired_state_query()
        .map_err(|e| Error::invalid("payload", e.to_string()))?;
    if !st.replay.first_use(verified.fingerprint(), now) {
        tracing::info!(agent_id = %verified.agent_id(), "agent key fetch refused: replayed envelope");
        return Err(Error::Unauthenticated.into());
    }
    let agent = verified.agent_id().clone();
    let newest = st.store.newest_key(&agent).await.map_err(|e| match e {
        Error::NotFound { .. } => Error::Unauthenticated,
        e => e,
    })?;
    let signed_with = keyring
        .lookup(&agent, verified.key_id())
        .and_then(|k| k.validity().not_after)
        .map(UnixMillis::as_millis);
    st.store
        .audit_key_fetch(&agent, newest.key_id, verified.key_id())
        .await;
    let body = AgentKeyResponse {
        agent_id: agent.to_string(),
        key_id: newest.key_id.get(),
        secret: SecretString::new(util::b64(newest.secret.expose_secret())),
        signed_with_key_id: verified.key_id().get(),
        signed_with_not_after_ms: signed_with,
    };
    Ok((no_store(), Json(body)).into_response())
}

// ------------------------------------------------------------------ desired peers

pub(crate) async fn get_desired(
    State(st): State<AppState>,
    _user: Viewer,
    Path(id): Path<String>,
) -> Res<Response> {
    let id = agent_id(&id)?;
    Ok(Json(st.store.desired(&id).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PutDesired {
    peers: Vec<PeerSpec>,
}

pub(crate) async fn put_desired(
    State(st): State<AppState>,
    admin: Admin,
    Path((id, interface)): Path<(String, String)>,
    JsonBody(req): JsonBody<PutDesired>,
) -> Res<Response> {
    let id = agent_id(&id)?;
    let revision = st
        .store
        .set_desired_interface(&admin.actor(), &id, &interface, req.peers)
        .await?;
    Ok(
        Json(json!({ "agent_id": id.as_str(), "interface": interface, "revision": revision }))
            .into_response(),
    )
}

pub(crate) async fn delete_desired(
    State(st): State<AppState>,
    admin: Admin,
    Path((id, interface)): Path<(String, String)>,
) -> Res<Response> {
    let id = agent_id(&id)?;
    let revision = st
        .store
        .delete_desired_interface(&admin.actor(), &id, &interface)
        .await?;
    Ok(
        Json(json!({ "agent_id": id.as_str(), "interface": interface, "revision": revision }))
            .into_response(),
    )
}

// ------------------------------------------------------------------ audit, health, docs

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditParams {
    before_id: Option<i64>,
    since_ms: Option<i64>,
    limit: Option<u32>,
}

pub(crate) async fn audit_log(
    State(st): State<AppState>,
    _admin: Admin,
    QueryParams(p): QueryParams<AuditParams>,
) -> Res<Response> {
    let q = AuditQuery {
        before_id: p.before_id,
        since_ms: p.since_ms,
        limit: p.limit,
    };
    Ok(Json(json!({ "entries": st.store.audit_log(&q).await? })).into_response())
}

pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 `{"status":"ready"}`, or 503 `{"status":"unavailable","reasons":[{"component",
/// "message", …}],"error":{…}}` naming every failing part: the control store, metrics
/// storage (commits failing), a dead ingest task, a component the server marked failing.
pub(crate) async fn readyz(State(st): State<AppState>) -> Response {
    let mut reasons = Vec::new();
    if !st.store.ping().await {
        reasons.push(json!({
            "component": "control_store",
            "message": "control database not reachable",
        }));
    }
    reasons.extend(crate::readiness::reasons(
        st.ingest.as_deref(),
        &st.readiness,
    ));
    if reasons.is_empty() {
        return Json(json!({ "status": "ready" })).into_response();
    }
    let summary = reasons
        .iter()
        .map(|r| {
            format!(
                "{}: {}",
                r["component"].as_str().unwrap_or("?"),
                r["message"].as_str().unwrap_or("?")
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({
            "status": "unavailable",
            "reasons": reasons,
            // The usual error shape too, for clients that show `error.message`.
            "error": { "code": "unavailable", "message": summary },
        })),
    )
        .into_response()
}

pub(crate) async fn openapi() -> Response {
    (
        [(header::CACHE_CONTROL, "public, max-age=60")],
        Json(super::openapi::document()),
    )
        .into_response()
}

pub(crate) async fn metrics(
    State(st): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Response {
    if let Some(token) = &st.config.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // Compare digests: constant time, and no length leak.
        let a = ring::digest::digest(&ring::digest::SHA256, given.as_bytes());
        let b = ring::digest::digest(&ring::digest::SHA256, token.expose_secret().as_bytes());
        let same = a
            .as_ref()
            .iter()
            .zip(b.as_ref())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0;
        if !same {
            let mut resp = super::error::json_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "/metrics needs the scrape token: Authorization: Bearer <token>",
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"metrics\""),
            );
            return resp;
        }
    }
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    if openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            st.metrics.encode_openmetrics(),
        )
            .into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            st.metrics.render(),
        )
            .into_response()
    }
}

pub(crate) async fn no_route() -> Response {
    super::error::json_error(StatusCode::NOT_FOUND, "no_route", "no such endpoint")
}
