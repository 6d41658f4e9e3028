//! Request extractors: authentication, roles, JSON bodies and queries with JSON errors.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{ConnectInfo, FromRequest, FromRequestParts, Request},
    http::{header, request::Parts},
};
use serde::de::DeserializeOwned;

use super::{ApiError, AppState};
use crate::{Error, Role};

/// An authenticated user (admin or viewer).
#[derive(Debug, Clone)]
pub(crate) struct Viewer {
    pub(crate) username: String,
    pub(crate) role: Role,
    /// The token's version, for requests that outlive the check (the live stream).
    pub(crate) token_version: u64,
}

/// An authenticated admin.
#[derive(Debug, Clone)]
pub(crate) struct Admin {
    pub(crate) username: String,
}

impl Admin {
    pub(crate) fn actor(&self) -> crate::Actor {
        crate::Actor::user(&self.username)
    }
}

const MAX_TOKEN_LEN: usize = 4096;

impl FromRequestParts<AppState> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or(Error::Unauthenticated)?;
        let value = value.to_str().map_err(|_| Error::Unauthenticated)?;
        let (scheme, token) = value.split_once(' ').ok_or(Error::Unauthenticated)?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.len() > MAX_TOKEN_LEN {
            return Err(Error::Unauthenticated.into());
        }
        let claims = state.tokens.verify(token.trim())?;
        // The token must still speak for the user as it is now.
        match state.store.token_subject(&claims.sub).await? {
            Some(now) if !now.disabled && now.token_version == claims.ver => Ok(Self {
                username: claims.sub,
                role: now.role,
                token_version: claims.ver,
            }),
            now => {
                let reason = match now {
                    None => "user no longer exists",
                    Some(n) if n.disabled => "user is disabled",
                    Some(_) => "token was ended (logout, password change or re-created user)",
                };
                tracing::info!(user = %claims.sub, reason, "access token refused");
                Err(Error::Unauthenticated.into())
            }
        }
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let user = Viewer::from_request_parts(parts, state).await?;
        if user.role != Role::Admin {
            tracing::info!(user = %user.username, path = %parts.uri.path(), "forbidden: admin role needed");
            return Err(Error::Forbidden { needed: "admin" }.into());
        }
        Ok(Self {
            username: user.username,
        })
    }
}

/// The peer address, when the server was started with
/// `into_make_service_with_connect_info::<SocketAddr>()`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientIp(pub(crate) Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// `axum::Json`, with every rejection (bad syntax, wrong shape, truncated, wrong content
/// type) turned into a 400 JSON error that does not echo the body.
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(rejection) => {
                use axum::extract::rejection::JsonRejection as R;
                let reason = match &rejection {
                    R::MissingJsonContentType(_) => {
                        "expected Content-Type: application/json".to_owned()
                    }
                    R::JsonSyntaxError(_) => "body is not valid JSON".to_owned(),
                    R::JsonDataError(e) => data_error(&e.body_text()),
                    R::BytesRejection(e)
                        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
                    {
                        return Err(Error::invalid("body", "request body exceeds the limit").into());
                    }
                    _ => "body could not be read".to_owned(),
                };
                Err(Error::invalid("body", reason).into())
            }
        }
    }
}

/// serde's message names the field and the expected type; cut anything after the
/// position marker and never include input values (serde does not quote values for
/// `invalid type`, but `unknown variant` would quote them).
fn data_error(text: &str) -> String {
    let text = text
        .strip_prefix("Failed to deserialize the JSON body into the target type: ")
        .unwrap_or(text);
    let field = text.split(':').next().unwrap_or("");
    if text.contains("missing field") {
        let name = text.split('`').nth(1).unwrap_or("?");
        format!("missing field `{name}`")
    } else if text.contains("unknown field") {
        let name = text.split('`').nth(1).unwrap_or("?");
        format!("unknown field `{name}`")
    } else if !field.is_empty() && !field.contains(' ') {
        format!("field `{field}` has the wrong type or value")
    } else {
        "body has the wrong shape".to_owned()
    }
}

/// `axum::extract::Query` with 400 JSON errors.
#[derive(Debug)]
pub(crate) struct QueryParams<T>(pub(crate) T);

impl<T, S> FromRequestParts<S> for QueryParams<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e| Error::invalid("query", e.body_text()).into())
    }
}

/// A path segment that must be an agent id.
pub(crate) fn agent_id(raw: &str) -> Result<sentra_core::AgentId, ApiError> {
    sentra_core::AgentId::new(raw).map_err(|e| Error::invalid("agent_id", e.to_string()).into())
}
