//! The axum router: routes, shared state and layers.

mod error;
mod extract;
mod fleet;
mod handlers;
pub(crate) mod openapi;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::{MatchedPath, Request, State},
    http::{HeaderName, StatusCode, header},
    middleware::{self, Next},
    response::Response,
    routing::{MethodRouter, delete, get, post, put},
};
use sentra_core::{AgentId, UnixMillis, Verifier};
use tower::ServiceBuilder;
use tower_http::{
    limit::RequestBodyLimitLayer, sensitive_headers::SetSensitiveRequestHeadersLayer,
    timeout::TimeoutLayer, trace::TraceLayer,
};

pub(crate) use error::ApiError;

use crate::{
    Actor, ApiConfig, ControlStore, auth::Tokens, metrics::Metrics, ratelimit::FailureLimiter,
};

/// Remembers the fingerprints of signed agent requests inside the skew window, so a
/// captured `POST /api/v1/agent/key` cannot be replayed.
#[derive(Debug, Default)]
pub(crate) struct ReplayGuard {
    seen: Mutex<HashMap<[u8; 32], i64>>,
}

impl ReplayGuard {
    /// `true` the first time a fingerprint is presented.
    pub(crate) fn first_use(&self, fingerprint: &[u8; 32], now: UnixMillis) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let now = now.as_millis();
        if seen.len() > 4096 {
            seen.retain(|_, expiry| *expiry > now);
        }
        // Twice the skew window: an envelope is verifiable at most that long.
        let expiry = now.saturating_add(
            2 * i64::try_from(sentra_core::envelope::MAX_SKEW_LIMIT_MS).unwrap_or(i64::MAX),
        );
        match seen.get(fingerprint) {
            Some(e) if *e > now => false,
            _ => {
                seen.insert(*fingerprint, expiry);
                true
            }
        }
    }
}

/// Shared by every handler.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) store: ControlStore,
    pub(crate) tokens: Arc<Tokens>,
    pub(crate) config: Arc<ApiConfig>,
    pub(crate) login_user_limit: Arc<FailureLimiter>,
    pub(crate) login_ip_limit: Arc<FailureLimiter>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) replay: Arc<ReplayGuard>,
    pub(crate) verifier: Verifier,
    pub(crate) ingest: Option<Arc<sentra_ingest::Ingest>>,
    pub(crate) streams: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    pub(crate) fn new(
        store: ControlStore,
        tokens: Tokens,
        config: ApiConfig,
        ingest: Option<Arc<sentra_ingest::Ingest>>,
    ) -> Self {
        Self {
            ingest,
            streams: Arc::new(tokio::sync::Semaphore::new(fleet_max_streams())),
            login_user_limit: Arc::new(FailureLimiter::new(
                config.login_failures_per_user,
                config.login_window,
            )),
            login_ip_limit: Arc::new(FailureLimiter::new(
                config.login_failures_per_ip,
                config.login_window,
            )),
            store,
            tokens: Arc::new(tokens),
            config: Arc::new(config),
            metrics: Arc::new(Metrics::default()),
            replay: Arc::new(ReplayGuard::default()),
            verifier: Verifier::new(),
        }
    }

    /// Asks the ingest side to delete an agent's stored data, if an ingest handle was given.
    /// The outcome is audited as `agent.delete_data`; a failure is logged and audited but
    /// does not undo the (already committed) deletion of the agent.
    pub(crate) async fn delete_agent_data(&self, actor: &Actor, agent: &AgentId) {
        let Some(ingest) = &self.ingest else { return };
        let (outcome, detail) = match ingest.delete_agent(agent).await {
            Ok(existed) => ("success", format!("data_existed={existed}")),
            Err(e) => {
                tracing::error!(agent_id = %agent, error = %e, "deleting agent data failed");
                ("error", "metrics store failed".to_owned())
            }
        };
        if let Err(e) = self
            .store
            .record_audit(actor, "agent.delete_data", agent.as_str(), outcome, &detail)
            .await
        {
            tracing::error!(error = %e, "cannot write audit entry");
        }
    }

    /// Appends the fleet's WireGuard metrics, if an ingest handle was given.
    pub(crate) fn append_fleet_metrics(&self, out: &mut String) {
        if let Some(ingest) = &self.ingest {
            out.push_str(&sentra_ingest::render_prometheus(
                &ingest.status().snapshot(),
            ));
        }
    }
}

/// Builds the router while recording every `(method, path)` it registers, so the OpenAPI
/// document can be checked against it.
pub(crate) struct Routes {
    router: Router<AppState>,
    registered: Vec<(&'static str, &'static str)>,
}

impl Routes {
    fn new() -> Self {
        Self {
            router: Router::new(),
            registered: Vec::new(),
        }
    }

    fn add(mut self, method: &'static str, path: &'static str, mr: MethodRouter<AppState>) -> Self {
        self.registered.push((method, path));
        self.router = self.router.route(path, mr);
        self
    }
}

pub(crate) fn routes() -> Routes {
    use handlers as h;
    Routes::new()
        .add("GET", "/healthz", get(h::healthz))
        .add("GET", "/readyz", get(h::readyz))
        .add("GET", "/metrics", get(h::metrics))
        .add("GET", "/api/v1/openapi.json", get(h::openapi))
        .add("POST", "/api/v1/auth/login", post(h::login))
        .add("GET", "/api/v1/auth/me", get(h::me))
        .add("GET", "/api/v1/users", get(h::list_users))
        .add("POST", "/api/v1/users", post(h::create_user))
        .add("DELETE", "/api/v1/users/{username}", delete(h::delete_user))
        .add("GET", "/api/v1/tokens", get(h::list_tokens))
        .add("POST", "/api/v1/tokens", post(h::issue_token))
        .add("POST", "/api/v1/agents/enroll", post(h::enroll))
        .add("GET", "/api/v1/agents", get(h::list_agents))
        .add("GET", "/api/v1/agents/{id}", get(h::get_agent))
        .add("DELETE", "/api/v1/agents/{id}", delete(h::delete_agent))
        .add("POST", "/api/v1/agents/{id}/revoke", post(h::revoke_agent))
        .add(
            "POST",
            "/api/v1/agents/{id}/rotate-key",
            post(h::rotate_key),
        )
        .add("POST", "/api/v1/agent/key", post(h::agent_key))
        .add("GET", "/api/v1/agents/{id}/desired", get(h::get_desired))
        .add(
            "PUT",
            "/api/v1/agents/{id}/desired/{interface}",
            put(h::put_desired),
        )
        .add(
            "DELETE",
            "/api/v1/agents/{id}/desired/{interface}",
            delete(h::delete_desired),
        )
        .add("GET", "/api/v1/audit", get(h::audit_log))
        .add("GET", "/api/v1/status", get(fleet::status))
        .add(
            "GET",
            "/api/v1/status/agents/{id}",
            get(fleet::agent_status),
        )
        .add("GET", "/api/v1/status/stream", get(fleet::stream))
        .add("GET", "/api/v1/presence", get(fleet::presence))
        .add("GET", "/api/v1/metrics/names", get(fleet::names))
        .add("GET", "/api/v1/metrics/series", get(fleet::series))
        .add("GET", "/api/v1/metrics/latest", get(fleet::latest))
        .add("GET", "/api/v1/metrics/history", get(fleet::history))
        .add("GET", "/api/v1/metrics/aggregate", get(fleet::aggregate))
        .add("GET", "/api/v1/metrics/top", get(fleet::top))
        .add(
            "GET",
            "/api/v1/metrics/percentiles",
            get(fleet::percentiles),
        )
        .add("GET", "/api/v1/metrics/export", get(fleet::export))
}

const fn fleet_max_streams() -> usize {
    64
}

/// Every `(method, path)` the router serves.
#[cfg(test)]
pub(crate) fn registered_routes() -> Vec<(&'static str, &'static str)> {
    routes().registered
}

async fn track_metrics(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let resp = next.run(req).await;
    st.metrics
        .request(&method, &route, resp.status().as_u16(), started.elapsed());
    resp
}

pub(crate) fn router(state: AppState) -> Router {
    let body_limit = state.config.body_limit_bytes;
    let timeout: Duration = state.config.request_timeout;
    let sensitive: [HeaderName; 3] = [header::AUTHORIZATION, header::COOKIE, header::SET_COOKIE];
    routes()
        .router
        .fallback(handlers::no_route)
        .layer(middleware::from_fn_with_state(state.clone(), track_metrics))
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                // Outermost first: mark secrets before anything can log the request.
                .layer(SetSensitiveRequestHeadersLayer::new(sensitive))
                .layer(TraceLayer::new_for_http())
                .layer(middleware::from_fn(error::json_errors))
                .layer(RequestBodyLimitLayer::new(body_limit))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    timeout,
                )),
        )
}
