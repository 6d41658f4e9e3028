//! JSON error bodies.

use axum::{
    body::Body,
    extract::Request,
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::Error;

/// An [`Error`] on its way to the client.
#[derive(Debug)]
pub(crate) struct ApiError(pub(crate) Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

pub(crate) fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::Invalid { .. } => StatusCode::BAD_REQUEST,
        Error::Unauthenticated | Error::InvalidBootstrapToken | Error::ClockSkew { .. } => {
            StatusCode::UNAUTHORIZED
        }
        Error::Forbidden { .. } => StatusCode::FORBIDDEN,
        Error::NotFound { .. } => StatusCode::NOT_FOUND,
        Error::Conflict(_) => StatusCode::CONFLICT,
        Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        // Database, I/O, internal, and variants added later.
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

pub(crate) fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "error": { "code": code, "message": message } });
    (status, axum::Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = status_of(&e);
        let message = if status.is_server_error() && !matches!(e, Error::Unavailable(_)) {
            tracing::error!(error = %e, "request failed");
            "internal server error".to_owned()
        } else {
            e.to_string()
        };
        let mut resp = json_error(status, e.code(), &message);
        match e {
            Error::RateLimited { retry_after_s } => {
                if let Ok(v) = HeaderValue::from_str(&retry_after_s.to_string()) {
                    resp.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            Error::Unauthenticated => {
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        resp
    }
}

/// Turns every non-JSON error response (unknown route, wrong method, body over the limit,
/// timeout, a rejection from a layer) into the JSON error format, dropping its body.
pub(crate) async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return resp;
    }
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("no_route", "no such endpoint"),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", "method not allowed on this endpoint")
        }
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "request body exceeds the limit"),
        StatusCode::REQUEST_TIMEOUT => ("timeout", "request took too long"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("invalid_request", "unsupported content type"),
        s if s.is_server_error() => ("internal", "internal server error"),
        _ => ("invalid_request", "request rejected"),
    };
    let (mut parts, _) = resp.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let fresh = json_error(status, code, message);
    let (fresh_parts, body) = fresh.into_parts();
    parts.headers.insert(
        header::CONTENT_TYPE,
        fresh_parts
            .headers
            .get(header::CONTENT_TYPE)
            .cloned()
            .unwrap_or(HeaderValue::from_static("application/json")),
    );
    Response::from_parts(parts, Body::new(body))
}
