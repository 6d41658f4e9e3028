//! The axum router: routes, shared state and layers.

pub(crate) mod alerts;
mod error;
mod extract;
mod fleet;
mod handlers;
mod ingest_ledger;
pub(crate) mod openapi;
mod peers;
pub(crate) mod tls;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::{MatchedPath, Request, State},
    http::{HeaderName, StatusCode, header},
    middleware::{self, Next},
    response::Response,
    routing::{MethodRouter, delete, get, patch, post, put},
};
use sentra_core::{AgentId, Verifier};
use tower::ServiceBuilder;
use tower_http::{
    limit::RequestBodyLimitLayer, sensitive_headers::SetSensitiveRequestHeadersLayer,
    timeout::TimeoutLayer, trace::TraceLayer,
};

pub(crate) use error::ApiError;

use crate::{Actor, ApiConfig, ControlStore, metrics::Metrics, ratelimit::FailureLimiter};

/// Shared by every handler.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) store: ControlStore,
    pub(crate) tokens: Arc<sentra_control::Tokens>,
    pub(crate) config: Arc<ApiConfig>,
    pub(crate) login_user_limit: Arc<FailureLimiter>,
    pub(crate) login_ip_limit: Arc<FailureLimiter>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) replay: Arc<sentra_control::ReplayGuard>,
    pub(crate) verifier: Verifier,
    pub(crate) ingest: Option<Arc<sentra_ingest::Ingest>>,
    pub(crate) streams: Arc<tokio::sync::Semaphore>,
    /// Component states fed by the serving process (`/readyz`, `/metrics`).
    pub(crate) readiness: crate::Readiness,
    /// The alerting engine, once the server attached one (`/api/v1/alerts`).
    pub(crate) alerts: Arc<std::sync::OnceLock<Arc<sentra_alerts::engine::Engine>>>,
    /// Set while this server waits for the alert lease another server holds.
    pub(crate) alerts_standby: Arc<std::sync::atomic::AtomicBool>,
}

impl AppState {
    pub(crate) fn new(
        store: ControlStore,
        tokens: sentra_control::Tokens,
        config: ApiConfig,
        ingest: Option<Arc<sentra_ingest::Ingest>>,
    ) -> Self {
        let readiness = crate::Readiness::new();
        let metrics = Arc::new(Metrics::new(
            store.keyring(),
            readiness.clone(),
            ingest.as_deref(),
            sentra_ingest::FleetMetricsOptions::new()
                .with_peer_endpoints(config.metrics_peer_endpoints),
        ));
        Self {
            alerts: Arc::default(),
            alerts_standby: Arc::default(),
            replay: store.replay_guard(),
            ingest,
            readiness,
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
            metrics,
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
            Err(e @ sentra_ingest::Error::ReadOnly(_)) => {
                tracing::warn!(agent_id = %agent, error = %e, "agent deleted, its metrics kept");
                (
                    "skipped",
                    "metrics kept: this API server only reads the metrics store (--role api)"
                        .to_owned(),
                )
            }
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

    /// Forgets `agent`'s sequence high-water mark in the metrics store (after a key
    /// rotation), audited as `agent.reset_sequence` with the previous high-water mark.
    /// Returns that mark (`None`: the store had none).
    pub(crate) async fn reset_sequence(
        &self,
        actor: &Actor,
        agent: &AgentId,
    ) -> crate::Result<Option<u64>> {
        let Some(ingest) = &self.ingest else {
            return Err(crate::Error::Conflict(
                "reset_sequence needs the metrics store, and this API runs without one".into(),
            ));
        };
        let (res, outcome, detail) = match ingest.reset_sequence(agent).await {
            Ok(previous) => {
                let previous = previous.map(sentra_core::Seq::get);
                tracing::warn!(agent_id = %agent, previous_high_water = ?previous, "agent sequence reset");
                let detail = previous.map_or_else(
                    || "previous_high_water=none".to_owned(),
                    |p| format!("previous_high_water={p}"),
                );
                (Ok(previous), "success", detail)
            }
            Err(e) => {
                tracing::error!(agent_id = %agent, error = %e, "resetting the agent's sequence failed");
                (
                    Err(crate::Error::Unavailable(
                        "the metrics store could not reset the sequence (the key was rotated); retry",
                    )),
                    "error",
                    "metrics store failed".to_owned(),
                )
            }
        };
        if let Err(e) = self
            .store
            .record_audit(
                actor,
                "agent.reset_sequence",
                agent.as_str(),
                outcome,
                &detail,
            )
            .await
        {
            tracing::error!(error = %e, "cannot write audit entry");
        }
        res
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
        .add("POST", "/api/v1/auth/logout", post(h::logout))
        .add("POST", "/api/v1/auth/password", post(h::change_password))
        .add("GET", "/api/v1/users", get(h::list_users))
        .add("POST", "/api/v1/users", post(h::create_user))
        .add("DELETE", "/api/v1/users/{username}", delete(h::delete_user))
        .add("PATCH", "/api/v1/users/{username}", patch(h::update_user))
        .add("GET", "/api/v1/tokens", get(h::list_tokens))
        .add("POST", "/api/v1/tokens", post(h::issue_token))
        .add("POST", "/api/v1/agents/enroll", post(h::enroll))
        .add("GET", "/api/v1/agents", get(h::list_agents))
        .add("GET", "/api/v1/agents/{id}", get(h::get_agent))
        .add(
            "GET",
            "/api/v1/agents/{id}/ingest",
            get(ingest_ledger::agent_ingest),
        )
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
        .add(
            "GET",
            "/api/v1/agents/{id}/interfaces/{interface}/pool",
            get(peers::get_pool),
        )
        .add(
            "PUT",
            "/api/v1/agents/{id}/interfaces/{interface}/pool",
            put(peers::put_pool),
        )
        .add(
            "GET",
            "/api/v1/agents/{id}/interfaces/{interface}/peers",
            get(peers::list_peers),
        )
        .add(
            "POST",
            "/api/v1/agents/{id}/interfaces/{interface}/peers",
            post(peers::add_peer),
        )
        .add(
            "GET",
            "/api/v1/agents/{id}/interfaces/{interface}/peers/{public_key}",
            get(peers::get_peer),
        )
        .add(
            "DELETE",
            "/api/v1/agents/{id}/interfaces/{interface}/peers/{public_key}",
            delete(peers::remove_peer),
        )
        .add(
            "GET",
            "/api/v1/agents/{id}/interfaces/{interface}/peers/{public_key}/config",
            get(peers::peer_config),
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
        .add("GET", "/api/v1/alerts", get(alerts::list_alerts))
        .add("GET", "/api/v1/alerts/rules", get(alerts::list_rules))
        .add("GET", "/api/v1/alerts/silences", get(alerts::list_silences))
        .add(
            "POST",
            "/api/v1/alerts/silences",
            post(alerts::create_silence),
        )
        .add(
            "DELETE",
            "/api/v1/alerts/silences/{id}",
            delete(alerts::expire_silence),
        )
        .add(
            "POST",
            "/api/v1/alerts/receivers/{name}/test",
            post(alerts::test_receiver),
        )
        .add(
            "GET",
            "/api/v1/alerts/dead-letters",
            get(alerts::list_dead_letters),
        )
        .add(
            "POST",
            "/api/v1/alerts/dead-letters/{id}/resend",
            post(alerts::resend_dead_letter),
        )
}

const fn fleet_max_streams() -> usize {
    64
}

/// Every path template the router registers (the closed set of `route` metric labels).
pub(crate) fn routes_templates() -> Vec<&'static str> {
    routes().registered.into_iter().map(|(_, p)| p).collect()
}

/// Every `(method, path)` the router serves.
#[cfg(test)]
pub(crate) fn registered_routes() -> Vec<(&'static str, &'static str)> {
    routes().registered
}

async fn track_metrics(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    // Label values from a closed set only: a made-up method or path must not add series.
    let method = crate::metrics::method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(crate::metrics::UNMATCHED_ROUTE, |p| {
            crate::metrics::route_label(p.as_str())
        });
    let resp = next.run(req).await;
    st.metrics
        .request(method, route, resp.status().as_u16(), started.elapsed());
    resp
}

pub(crate) fn router(state: AppState) -> Router {
    let body_limit = state.config.body_limit_bytes;
    let timeout: Duration = state.config.request_timeout;
    let sensitive: [HeaderName; 3] = [header::AUTHORIZATION, header::COOKIE, header::SET_COOKIE];
    routes()
        .router
        // The web dashboard: `/` and `/assets/{file}` (sentra-dashboard).
        .merge(sentra_dashboard::router())
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
