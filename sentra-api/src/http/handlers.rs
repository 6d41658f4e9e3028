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
use utoipa::{IntoParams, ToSchema};

use super::{
    ApiError, AppState,
    extract::{Admin, ClientIp, JsonBody, QueryParams, Viewer, agent_id},
    openapi::{
        AgentList, AuditList, DesiredChange, ErrorBody, Health, Me, RotationResponse,
        SequenceReset, TokenList, UserList,
    },
};
use crate::{AuditQuery, Error, Password, PeerSpec, Role, SecretString, metrics::Event, util};

type Res<T> = Result<T, ApiError>;

// ------------------------------------------------------------------ auth

/// `POST /api/v1/auth/login` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"username": "alice", "password": "correct horse battery"}))]
pub(crate) struct LoginRequest {
    #[schema(max_length = 256)]
    username: String,
    #[schema(value_type = String, max_length = 1024)]
    password: Password,
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "auth",
    security(()),
    description = "Exchange user name and password for a Bearer access token (15 min). Failed attempts are limited per account and per client address (429).",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Access token", body = sentra_control::IssuedAccessToken),
        (status = 400, description = "Malformed request or a value outside the rules; nothing changed", body = ErrorBody),
        (status = 401, description = "Unknown user, wrong password or disabled user", body = ErrorBody),
        (status = 413, description = "Request body larger than the limit", body = ErrorBody),
        (status = 429, description = "Too many failed attempts for this account or from this address", body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds until the next attempt is accepted"))),
        (status = 503, description = "Password hashing is overloaded; retry", body = ErrorBody),
        (status = 413, description = "Request body larger than the limit", body = ErrorBody),
    )
)]
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

#[utoipa::path(
    get,
    path = "/api/v1/auth/me",
    tag = "auth",
    security(("bearer" = [])),
    description = "The authenticated user and role.",
    responses(
        (status = 200, description = "The caller", body = super::openapi::Me),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
    )
)]
pub(crate) async fn me(user: Viewer) -> Json<Me> {
    Json(Me {
        username: user.username,
        role: user.role,
    })
}

/// `POST /api/v1/auth/logout`: ends every access token of the caller.
#[utoipa::path(
    post,
    path = "/api/v1/auth/logout",
    tag = "auth",
    security(("bearer" = [])),
    description = "End every access token of the caller (all sessions).",
    responses(
        (status = 204, description = "Every token of the caller ended"),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
    )
)]
pub(crate) async fn logout(State(st): State<AppState>, user: Viewer) -> Res<StatusCode> {
    st.store
        .end_sessions(&crate::Actor::user(&user.username), &user.username)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/auth/password` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"current_password": "correct horse battery", "new_password": "staple battery horse"}))]
pub(crate) struct ChangePassword {
    #[schema(value_type = String, max_length = 1024)]
    current_password: Password,
    /// 8-128 characters.
    #[schema(value_type = String, min_length = 8, max_length = 128)]
    new_password: Password,
}

/// `POST /api/v1/auth/password`: the caller changes its own password; every token of the
/// caller ends (log in again).
#[utoipa::path(
    post,
    path = "/api/v1/auth/password",
    tag = "auth",
    security(("bearer" = [])),
    description = "Change the caller's own password; every token of the caller ends (log in again).",
    request_body = ChangePassword,
    responses(
        (status = 204, description = "Password changed; log in again"),
        (status = 400, description = "Malformed request or a value outside the rules; nothing changed", body = ErrorBody),
        (status = 503, description = "Password hashing is overloaded; retry", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
        (status = 413, description = "Request body larger than the limit", body = ErrorBody),
    )
)]
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

/// `POST /api/v1/users` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"username": "bob", "password": "correct horse battery", "role": "viewer"}))]
pub(crate) struct CreateUser {
    /// 1-64 of `A-Z a-z 0-9 _ - . @`.
    #[schema(pattern = r"^[A-Za-z0-9_.@-]{1,64}$")]
    username: String,
    /// 8-128 characters.
    #[schema(value_type = String, min_length = 8, max_length = 128)]
    password: Password,
    role: Role,
}

#[cfg(test)]
impl CreateUser {
    /// The server's rules for a new user (for the document's example).
    pub(crate) fn check(&self) -> crate::Result<()> {
        sentra_control::check_username(&self.username)?;
        self.password.check_policy()
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "users",
    security(("bearer" = [])),
    description = "Create a user (password 8-128 characters).",
    request_body = CreateUser,
    responses(
        (status = 201, description = "The new user", body = crate::User),
        (status = 400, description = "Malformed request or a value outside the rules; nothing changed", body = ErrorBody),
        (status = 409, description = "A user with this name exists", body = ErrorBody),
        (status = 503, description = "Password hashing is overloaded; retry", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
        (status = 403, description = "The admin role is required", body = ErrorBody),
        (status = 413, description = "Request body larger than the limit", body = ErrorBody),
    )
)]
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

/// `PATCH /api/v1/users/{username}` body: at least one field.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"role": "viewer", "disabled": false}), min_properties = 1)]
pub(crate) struct UpdateUser {
    // Absent means "unchanged"; `null` is refused (400), as the schema says.
    #[serde(default, deserialize_with = "util::present")]
    #[schema(nullable = false)]
    role: Option<Role>,
    #[serde(default, deserialize_with = "util::present")]
    #[schema(nullable = false)]
    disabled: Option<bool>,
    /// 8-128 characters.
    #[serde(default, deserialize_with = "util::present")]
    #[schema(value_type = String, required = false, min_length = 8, max_length = 128)]
    password: Option<Password>,
}

/// `PATCH /api/v1/users/{username}`: role, disabled, password (admin).
#[utoipa::path(
    patch,
    path = "/api/v1/users/{username}",
    tag = "users",
    security(("bearer" = [])),
    description = "Change a user's role (applies at once), disable or enable it, or set its password; disabling and a new password end its tokens. Not for the last enabled admin's role or state.",
    params(
        ("username" = String, Path, description = "User name", pattern = r"^[A-Za-z0-9_.@-]{1,64}$", max_length = 64),
    ),
    request_body = UpdateUser,
    responses(
        (status = 200, description = "The user as it is now", body = crate::User),
        (status = 400, description = "Malformed request or a value outside the rules; nothing changed", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "The last enabled admin cannot lose its role or be disabled", body = ErrorBody),
        (status = 503, description = "Password hashing is overloaded; retry", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
        (status = 403, description = "The admin role is required", body = ErrorBody),
        (status = 413, description = "Request body larger than the limit", body = ErrorBody),
    )
)]
pub(crate) async fn update_user(
    State(st): State<AppState>,
    admin: Admin,
    Path(username): Path<String>,
    JsonBody(req): JsonBody<UpdateUser>,
) -> Res<Response> {
    let mut update = crate::UserUpdate::default();
    update.role = req.role;
    update.disabled = req.disabled;
    update.password = req.password;
    let user = st
        .store
        .update_user(&admin.actor(), &username, update)
        .await?;
    Ok(Json(user).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "users",
    security(("bearer" = [])),
    description = "List users.",
    responses(
        (status = 200, description = "Every user", body = super::openapi::UserList),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
        (status = 403, description = "The admin role is required", body = ErrorBody),
    )
)]
pub(crate) async fn list_users(State(st): State<AppState>, _admin: Admin) -> Res<Response> {
    let users = st.store.list_users().await?;
    Ok(Json(UserList { users }).into_response())
}

#[utoipa::path(
    delete,
    path = "/api/v1/users/{username}",
    tag = "users",
    security(("bearer" = [])),
    description = "Delete a user (not the last admin); its tokens stop at once.",
    params(
        ("username" = String, Path, description = "User name", pattern = r"^[A-Za-z0-9_.@-]{1,64}$", max_length = 64),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed request or a value outside the rules; nothing changed", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "The last admin cannot be deleted", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
        (status = 403, description = "The admin role is required", body = ErrorBody),
    )
)]
pub(crate) async fn delete_user(
    State(st): State<AppState>,
    admin: Admin,
    Path(username): Path<String>,
) -> Res<StatusCode> {
    st.store.delete_user(&admin.actor(), &username).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ------------------------------------------------------------------ bootstrap tokens

/// `POST /api/v1/tokens` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"ttl_s": 3600, "note": "rack 4"}))]
pub(crate) struct IssueToken {
    /// Lifetime in seconds (default from the config, at most 7 days).
    #[serde(default, deserialize_with = "util::integral_opt")]
    #[schema(minimum = 1, maximum = 604_800)]
    ttl_s: Option<u64>,
    /// Free text, at most 200 printable characters.
    #[serde(default)]
    #[schema(max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    note: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "agents",
    security(("bearer" = [])),
    description = "Issue a single-use, expiring bootstrap token; shown once.",
    request_body = IssueToken,
    responses(
        (status = 201, description = "The token (shown once)", body = crate::IssuedBootstrapToken, headers(("Cache-Control" = String, description = "no-store"))),
        (status = 400, description = "Malformed request or a value outside the rules; nothing changed", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
        (status = 403, description = "The admin role is required", body = ErrorBody),
        (status = 413, description = "Request body larger than the limit", body = ErrorBody),
    )
)]
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

#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "agents",
    security(("bearer" = [])),
    description = "List bootstrap tokens (never the tokens themselves).",
    responses(
        (status = 200, description = "Every bootstrap token", body = super::openapi::TokenList),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
        (status = 403, description = "The admin role is required", body = ErrorBody),
    )
)]
pub(crate) async fn list_tokens(State(st): State<AppState>, _admin: Admin) -> Res<Response> {
    let tokens = st.store.list_bootstrap_tokens().await?;
    Ok(Json(TokenList { tokens }).into_response())
}

fn no_store() -> [(header::HeaderName, &'static str); 1] {
    [(header::CACHE_CONTROL, "no-store")]
}

// ------------------------------------------------------------------ agents

/// `POST /api/v1/agents/enroll` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"token": "sntb_0123456789abcdef", "name": "edge-01"}))]
pub(crate) struct EnrollRequest {
    /// The bootstrap token.
    #[schema(value_type = String, max_length = 1024)]
    token: SecretString,
    /// 1-64 printable characters.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$")]
    name: String,
}

/// `POST /api/v1/agents/enroll` answer.
#[derive(Serialize, ToSchema)]
struct EnrollResponse {
    agent_id: String,
    key_id: u32,
    /// 32-byte HMAC secret, standard base64.
    #[schema(value_type = String)]
    secret: SecretString,
    envelope_version: u32,
}

#[utoipa::path(
    post,
    path = "/api/v1/agents/enroll",
    tag = "agents",
    security(()),
    description = "Enrol an agent with a bootstrap token; returns agent_id, key_id and the base64 secret once.",
    request_body = EnrollRequest,
    responses(
        (status = 201, description = "The agent and its first key (shown once)", body = EnrollResponse, headers(("Cache-Control" = String, description = "no-store"))),
        (status = 400, description = "Malformed request or a value outside the rules; nothing changed", body = ErrorBody),
        (status = 401, description = "Bootstrap token unknown, expired or used", body = ErrorBody),
        (status = 413, description = "Request body larger than the limit", body = ErrorBody),
        (status = 413, description = "Request body larger than the limit", body = ErrorBody),
    )
)]
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

#[utoipa::path(
    get,
    path = "/api/v1/agents",
    tag = "agents",
    security(("bearer" = [])),
    description = "List agents and their key metadata.",
    responses(
        (status = 200, description = "Every agent", body = super::openapi::AgentList),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
    )
)]
pub(crate) async fn list_agents(State(st): State<AppState>, _user: Viewer) -> Res<Response> {
    let agents = st.store.list_agents().await?;
    Ok(Json(AgentList { agents }).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/agents/{id}",
    tag = "agents",
    security(("bearer" = [])),
    description = "One agent.",
    params(
        ("id" = String, Path, description = "Agent id", pattern = r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$", max_length = 64),
    ),
    responses(
        (status = 200, description = "The agent", body = crate::AgentInfo),
        (status = 400, description = "Malformed request or a value outside the rules; nothing changed", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
    )
)]
pub(crate) async fn get_agent(
    State(st): State<AppState>,
    _user: Viewer,
    Path(id): Path<String>,
) -> Res<Response> {
    let id = agent_id(&id)?;
    Ok(Json(st.store.get_agent(&id).await?).into_response())
}

#[utoipa::path(
    post,
    path = "/api/v1/agents/{id}/revoke",
    tag = "agents",
    security(("bearer" = [])),
    description = "Revoke an agent: its keys stop verifying at once.",
    params(
        ("id" = String, Path, description = "Agent id", pattern = r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$", max_length = 64),
    ),
    responses(
        (status = 200, description = "The agent, revoked", body = crate::AgentInfo),
        (status = 400, description = "Malformed request or a value outside the rules; nothing changed", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
        (status = 409, description = "The agent is already revoked", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
        (status = 403, description = "The admin role is required", body = ErrorBody),
    )
)]
pub(crate) async fn revoke_agent(
    State(st): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Res<Response> {
    let id = agent_id(&id)?;
    st.store.revoke_agent(&admin.actor(), &id).await?;
    Ok(Json(st.store.get_agent(&id).await?).into_response())
}

#[utoipa::path(
    delete,
    path = "/api/v1/agents/{id}",
    tag = "agents",
    security(("bearer" = [])),
    description = "Delete an agent, its keys, its desired peers and its stored data. An API server of a scale-out deployment (--role api) only reads the metrics store: there the agent's metrics are kept, and the audit entry agent.delete_data says so.",
    params(
        ("id" = String, Path, description = "Agent id", pattern = r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$", max_length = 64),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed request or a value outside the rules; nothing changed", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
        (status = 403, description = "The admin role is required", body = ErrorBody),
    )
)]
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

/// Query of `POST /api/v1/agents/{id}/rotate-key`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct RotateParams {
    /// How long older keys stay valid, seconds (60 s to 30 days; default from the config).
    #[param(minimum = 60, maximum = 2_592_000)]
    overlap_s: Option<u64>,
    /// Also forget the agent's sequence high-water mark in the metrics store, so batches
    /// refused as `SEQ_BELOW_HIGH_WATER` (a far-ahead seq signed with its key, or lost
    /// agent state) are accepted again.
    #[serde(default)]
    #[param(required = false)]
    reset_sequence: bool,
}

/// Shortest overlap accepted: the agent needs time to fetch and persist the new key.
const MIN_OVERLAP: Duration = Duration::from_secs(60);
/// Longest overlap accepted.
const MAX_OVERLAP: Duration = Duration::from_secs(30 * 24 * 3600);

#[utoipa::path(
    post,
    path = "/api/v1/agents/{id}/rotate-key",
    tag = "agents",
    security(("bearer" = [])),
    description = "Create key N+1; older keys stay valid for the overlap (default 24 h). With reset_sequence=true, also forget the agent's sequence high-water mark in the metrics store (for an agent whose batches are refused as SEQ_BELOW_HIGH_WATER after a far-ahead seq was signed with its key); 409 if the server has no metrics store or only reads it (an API server of a scale-out deployment, --role api).",
    params(
        ("id" = String, Path, description = "Agent id", pattern = r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$", max_length = 64),
        RotateParams,
    ),
    responses(
        (status = 200, description = "The new key", body = super::openapi::RotationResponse),
        (status = 400, description = "Malformed request or a value outside the rules; nothing changed", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
        (status = 409, description = "The agent is revoked, or reset_sequence on a server without a metrics store or with a read-only one (--role api)", body = ErrorBody),
        (status = 503, description = "No metrics store is attached, or it failed; retry", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
        (status = 403, description = "The admin role is required", body = ErrorBody),
    )
)]
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
    if params.reset_sequence {
        match &st.ingest {
            None => {
                return Err(Error::Conflict(
                    "reset_sequence needs the metrics store, and this API runs without one; nothing was changed"
                        .into(),
                )
                .into());
            }
            // before rotating: a refusal must leave the key as it was
            Some(ingest) if ingest.is_read_only() => {
                return Err(Error::Conflict(
                    "reset_sequence needs the metric writer, and this API server only reads the metrics store (--role api: the storage workers own the sequence state); nothing was changed"
                        .into(),
                )
                .into());
            }
            Some(_) => {}
        }
    }
    let rotation = st.store.rotate_key(&admin.actor(), &id, overlap).await?;
    let sequence_reset = if params.reset_sequence {
        let previous_high_water = st.reset_sequence(&admin.actor(), &id).await?;
        Some(SequenceReset {
            previous_high_water,
        })
    } else {
        None
    };
    Ok(Json(RotationResponse {
        rotation,
        sequence_reset,
    })
    .into_response())
}

/// `POST /api/v1/agent/key` answer.
#[derive(Serialize, ToSchema)]
struct AgentKeyResponse {
    agent_id: String,
    /// The newest key's id; equal to the signing key's id when there is nothing new.
    key_id: u32,
    /// The newest key's 32-byte secret, standard base64.
    #[schema(value_type = String)]
    secret: SecretString,
    /// The key that signed this request, and until when it stays valid.
    signed_with_key_id: u32,
    signed_with_not_after_ms: Option<i64>,
}

/// `POST /api/v1/agent/key`: an agent collects its newest key with a request signed by a
/// key it already holds. See the crate docs for the protocol.
#[utoipa::path(
    post,
    path = "/api/v1/agent/key",
    tag = "agents",
    security(()),
    description = "An agent collects its newest key. Body: protobuf SignedBatch signed for method \"POST /api/v1/agent/key\" with a key it holds; payload: DesiredStateQuery with its agent_id.",
    request_body(content = Vec<u8>, content_type = "application/x-protobuf", description = "protobuf sentra.v1.SignedBatch (bytes)"),
    responses(
        (status = 200, description = "The newest key", body = AgentKeyResponse, headers(("Cache-Control" = String, description = "no-store"))),
        (status = 400, description = "Malformed request or a value outside the rules; nothing changed", body = ErrorBody),
        (status = 401, description = "Signature, key, clock or replay check failed", body = ErrorBody),
        (status = 413, description = "Request body larger than the limit", body = ErrorBody),
    )
)]
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

#[utoipa::path(
    get,
    path = "/api/v1/agents/{id}/desired",
    tag = "desired",
    security(("bearer" = [])),
    description = "Declared peers of every interface of an agent, with the revision.",
    params(
        ("id" = String, Path, description = "Agent id", pattern = r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$", max_length = 64),
    ),
    responses(
        (status = 200, description = "The declaration", body = crate::DesiredInfo),
        (status = 400, description = "Malformed request or a value outside the rules; nothing changed", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
    )
)]
pub(crate) async fn get_desired(
    State(st): State<AppState>,
    _user: Viewer,
    Path(id): Path<String>,
) -> Res<Response> {
    let id = agent_id(&id)?;
    Ok(Json(st.store.desired(&id).await?).into_response())
}

/// `PUT /api/v1/agents/{id}/desired/{interface}` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"peers": [{"public_key": "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=", "endpoint": "192.0.2.1:51820", "allowed_ips": ["10.0.0.2/32"], "persistent_keepalive_s": 25}]}))]
pub(crate) struct PutDesired {
    /// At most 10 000 peers.
    #[schema(max_items = 10_000)]
    peers: Vec<PeerSpec>,
}

#[cfg(test)]
impl PutDesired {
    /// The server's rules for a declaration (for the document's example).
    pub(crate) fn check(&self) -> crate::Result<()> {
        sentra_control::normalise(self.peers.clone()).map(drop)
    }
}

#[utoipa::path(
    put,
    path = "/api/v1/agents/{id}/desired/{interface}",
    tag = "desired",
    security(("bearer" = [])),
    description = "Declare the peers of one interface (replaces the list). Keys are 32-byte base64; prefixes are normalised; an allowed IP or key claimed twice is a 409.",
    params(
        ("id" = String, Path, description = "Agent id", pattern = r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$", max_length = 64),
        ("interface" = String, Path, description = "Interface name: 1-15 printable ASCII characters without / or :, not . or ..", pattern = r"^([!-\x2d0-9;-~]|[!-.0-9;-~][!-\x2d0-9;-~]|[!-\x2d0-9;-~]\.|[!-.0-9;-~]{3,15})$", max_length = 15),
    ),
    request_body = PutDesired,
    responses(
        (status = 200, description = "Declared", body = super::openapi::DesiredChange),
        (status = 400, description = "Malformed request or a value outside the rules; nothing changed", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
        (status = 409, description = "An allowed IP or public key is declared twice, or the agent is revoked", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
        (status = 403, description = "The admin role is required", body = ErrorBody),
        (status = 413, description = "Request body larger than the limit", body = ErrorBody),
    )
)]
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
    Ok(Json(DesiredChange {
        agent_id: id.to_string(),
        interface,
        revision,
    })
    .into_response())
}

#[utoipa::path(
    delete,
    path = "/api/v1/agents/{id}/desired/{interface}",
    tag = "desired",
    security(("bearer" = [])),
    description = "Stop managing an interface.",
    params(
        ("id" = String, Path, description = "Agent id", pattern = r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$", max_length = 64),
        ("interface" = String, Path, description = "Interface name: 1-15 printable ASCII characters without / or :, not . or ..", pattern = r"^([!-\x2d0-9;-~]|[!-.0-9;-~][!-\x2d0-9;-~]|[!-\x2d0-9;-~]\.|[!-.0-9;-~]{3,15})$", max_length = 15),
    ),
    responses(
        (status = 200, description = "No longer managed", body = super::openapi::DesiredChange),
        (status = 400, description = "Malformed request or a value outside the rules; nothing changed", body = ErrorBody),
        (status = 404, description = "No such agent or interface", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
        (status = 403, description = "The admin role is required", body = ErrorBody),
    )
)]
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
    Ok(Json(DesiredChange {
        agent_id: id.to_string(),
        interface,
        revision,
    })
    .into_response())
}

// ------------------------------------------------------------------ audit, health, docs

/// Query of `GET /api/v1/audit`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditParams {
    /// Only entries with an id below this (paging).
    before_id: Option<i64>,
    /// Only entries at or after this time, Unix ms.
    since_ms: Option<i64>,
    /// At most this many (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "audit",
    security(("bearer" = [])),
    description = "The audit log, newest first.",
    params(
        AuditParams,
    ),
    responses(
        (status = 200, description = "Entries", body = super::openapi::AuditList),
        (status = 400, description = "Malformed request or a value outside the rules; nothing changed", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
        (status = 403, description = "The admin role is required", body = ErrorBody),
    )
)]
pub(crate) async fn audit_log(
    State(st): State<AppState>,
    _admin: Admin,
    QueryParams(p): QueryParams<AuditParams>,
) -> Res<Response> {
    if p.limit.is_some_and(|l| !(1..=1000).contains(&l)) {
        return Err(Error::invalid("limit", "must be between 1 and 1000").into());
    }
    let mut q = AuditQuery::default();
    q.before_id = p.before_id;
    q.since_ms = p.since_ms;
    q.limit = p.limit;
    let entries = st.store.audit_log(&q).await?;
    Ok(Json(AuditList { entries }).into_response())
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    security(()),
    description = "Liveness: the process serves HTTP.",
    responses(
        (status = 200, description = "Serving", body = super::openapi::Health),
    )
)]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
    })
}

/// 200 `{"status":"ready"}`, or 503 `{"status":"unavailable","reasons":[{"component",
/// "message", …}],"error":{…}}` naming every failing part: the control store, metrics
/// storage (commits failing), a dead ingest task, a component the server marked failing.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    security(()),
    description = "Readiness: the control database answers, storage commits, every server task runs.",
    responses(
        (status = 200, description = "Ready", body = super::openapi::Health),
        (status = 503, description = "Not ready, with every failing component", body = super::openapi::NotReady),
    )
)]
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
        return Json(Health {
            status: "ready".to_owned(),
        })
        .into_response();
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

#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "health",
    security(()),
    description = "This document.",
    responses(
        (status = 200, description = "OpenAPI 3.1 document", body = Object),
    )
)]
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
    if let Some(token) = &st.config.metrics_token
        && !crate::metrics::scrape_authorized(&headers, token)
    {
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
