//! `/readyz`, `/healthz` and `/metrics` of the ingest and worker roles (`[observe] listen`):
//! a `--role all` server has them on its REST API; an ingest server or a storage worker has
//! no REST API, so it serves these three on a small plaintext listener of its own.
//!
//! Readiness reuses the API's component states ([`sentra_api::Readiness`]): the role marks
//! `nats` and `postgres` (and the worker `storage`) failing with the reason, and the body
//! has the same shape as the API's `/readyz`. `/metrics` is a `prometheus-client` registry
//! with the bus's `sentra_bus_*`, the transport's or the storage pipeline's series, and
//! `sentra_component_ready{component}` / `sentra_database_reachable`.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use axum::{
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::Counter, gauge::ConstGauge, gauge::Gauge},
    registry::Registry,
};
use sentra_api::{Readiness, SecretString};
use tokio::{sync::watch, task::JoinHandle};

/// Component names in `/readyz` and `sentra_component_ready`.
pub(crate) const NATS: &str = "nats";
pub(crate) const POSTGRES: &str = "postgres";
pub(crate) const STORAGE: &str = "storage";

/// Marks `component` of `readiness` ready, or failing with `why`; logs each change once
/// (not every probe that finds the same state).
pub(crate) fn set_component(readiness: &Readiness, component: &str, why: Option<String>) {
    let before = readiness
        .components()
        .into_iter()
        .find(|(c, _)| c == component)
        .map(|(_, m)| m);
    match why {
        None => {
            if matches!(before, Some(Some(_))) {
                tracing::info!(component, "ready again");
            }
            readiness.set_ready(component);
        }
        Some(why) => {
            if !matches!(&before, Some(Some(m)) if *m == why) {
                tracing::warn!(component, reason = %why, "not ready");
            }
            readiness.set_failing(component, why);
        }
    }
}

/// The readiness states and the metrics registry of an ingest or worker process.
#[derive(Clone)]
pub(crate) struct Observer {
    readiness: Readiness,
    registry: Arc<Mutex<Registry>>,
    db_reachable: Gauge,
    db_probe_failures: Counter,
}

impl Observer {
    pub(crate) fn new() -> Self {
        let readiness = Readiness::new();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ComponentCollector(readiness.clone())));
        let db_reachable = Gauge::default();
        let db_probe_failures = Counter::default();
        registry.register(
            "sentra_database_reachable",
            "1 while this process's PostgreSQL database answers its probe (every second), else 0",
            db_reachable.clone(),
        );
        registry.register(
            "sentra_database_probe_failures",
            "PostgreSQL probes that failed or timed out (3 s)",
            db_probe_failures.clone(),
        );
        Self {
            readiness,
            registry: Arc::new(Mutex::new(registry)),
            db_reachable,
            db_probe_failures,
        }
    }

    /// Registers more series (each name once).
    pub(crate) fn register(&self, f: impl FnOnce(&mut Registry)) {
        f(&mut self.registry.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Marks `component` ready, or failing with `why` (logged once per change).
    pub(crate) fn set(&self, component: &str, why: Option<String>) {
        set_component(&self.readiness, component, why);
    }

    /// The outcome of one database probe: readiness, `sentra_database_reachable` and
    /// the failure counter.
    pub(crate) fn database_probe(&self, result: Result<(), String>) {
        match result {
            Ok(()) => {
                self.db_reachable.set(1);
                self.set(POSTGRES, None);
            }
            Err(why) => {
                self.db_reachable.set(0);
                self.db_probe_failures.inc();
                self.set(POSTGRES, Some(why));
            }
        }
    }

    /// Binds `addr` and serves until `stop` turns true.
    pub(crate) async fn serve(
        &self,
        addr: SocketAddr,
        token: Option<SecretString>,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<(SocketAddr, JoinHandle<std::io::Result<()>>)> {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("binding the observe listener (/readyz, /metrics) to {addr}")
        })?;
        let local = listener.local_addr()?;
        let state = Arc::new((self.clone(), token));
        let router = axum::Router::new()
            .route("/readyz", get(readyz))
            .route(
                "/healthz",
                get(|| async { json(StatusCode::OK, "{\"status\":\"ok\"}".to_owned()) }),
            )
            .route("/metrics", get(metrics))
            .with_state(state);
        let task = tokio::spawn(
            axum::serve(listener, router)
                .with_graceful_shutdown(crate::wait(stop))
                .into_future(),
        );
        Ok((local, task))
    }
}

type Shared = Arc<(Observer, Option<SecretString>)>;

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn readyz(State(st): State<Shared>) -> Response {
    let failing = st.0.readiness.failing();
    if failing.is_empty() {
        return json(StatusCode::OK, "{\"status\":\"ready\"}".to_owned());
    }
    let reasons: Vec<serde_json::Value> = failing
        .iter()
        .map(|(c, m)| serde_json::json!({ "component": c, "message": m }))
        .collect();
    let summary = failing
        .iter()
        .map(|(c, m)| format!("{c}: {m}"))
        .collect::<Vec<_>>()
        .join("; ");
    let body = serde_json::json!({
        "status": "unavailable",
        "reasons": reasons,
        "error": { "code": "unavailable", "message": summary },
    });
    json(StatusCode::SERVICE_UNAVAILABLE, body.to_string())
}

async fn metrics(State(st): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(token) = &st.1
        && !sentra_api::scrape_authorized(&headers, token)
    {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"metrics\"")],
            "/metrics needs the scrape token: Authorization: Bearer <token>\n",
        )
            .into_response();
    }
    let mut text = String::new();
    let encoded = {
        let registry = st.0.registry.lock().unwrap_or_else(|p| p.into_inner());
        prometheus_client::encoding::text::encode(&mut text, &registry)
    };
    if encoded.is_err() {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed\n",
        )
            .into_response();
    }
    // As the REST API's /metrics: OpenMetrics when asked for, else the text format 0.0.4.
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    if openmetrics {
        (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response()
    } else {
        (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            sentra_api::to_text_format(&text),
        )
            .into_response()
    }
}

/// `sentra_component_ready{component}`: 1 ready, 0 failing.
#[derive(Debug)]
struct ComponentCollector(Readiness);

impl Collector for ComponentCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let components = self.0.components();
        if components.is_empty() {
            return Ok(());
        }
        let mut m = encoder.encode_descriptor(
            "sentra_component_ready",
            "1 when the component works, 0 when it fails (see /readyz for why).",
            None,
            MetricType::Gauge,
        )?;
        for (component, failing) in components {
            let labels = [("component", component)];
            ConstGauge::new(i64::from(failing.is_none())).encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Runs `probe` every second until `stop`; each run bounded by 3 s.
pub(crate) async fn every_second<F, Fut>(mut stop: watch::Receiver<bool>, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        let _ = tokio::time::timeout(Duration::from_secs(3), probe()).await;
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
