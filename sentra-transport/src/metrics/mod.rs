//! Counts requests and records latency by method and outcome.
//!
//! The outcome is `ok` for a successful call (for `Push`: the `Ack` status, `accepted`,
//! `duplicate` or `rejected`), or the gRPC code the error maps to (`resource_exhausted`,
//! `unauthenticated`, …; see [`status`](crate::status)). The series are
//! [`prometheus-client`](prometheus_client) metrics: the host registers them in **its**
//! registry with [`Metrics::register`] (nothing global), and serves that registry on its
//! `/metrics`. [`Metrics::render_prometheus`] encodes them alone (tests, small hosts).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use prometheus_client::registry::Registry;
//! use sentra_core::proto::{Ack, AckStatus};
//! use sentra_transport::{BoxError, metrics::{Metrics, MetricsLayer}};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! let metrics = Metrics::new();
//! let mut registry = Registry::default();
//! metrics.register(&mut registry);
//! let svc = MetricsLayer::new(metrics.clone(), "push").layer(service_fn(|_: ()| async {
//!     Ok::<_, BoxError>(Ack { status: AckStatus::Accepted.into(), ..Default::default() })
//! }));
//! svc.oneshot(()).await.unwrap();
//! assert_eq!(metrics.count("push", "accepted"), 1);
//! let mut text = String::new();
//! prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
//! assert!(text.contains(r#"sentra_transport_requests_total{method="push",outcome="accepted"} 1"#));
//! # }
//! ```

pub mod future;
mod layer;
mod service;

use std::time::Duration;

use prometheus_client::{
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

pub use layer::MetricsLayer;
use sentra_core::proto::{Ack, AckStatus, DesiredState};
pub use service::MetricsService;

/// Upper bounds of the latency histogram, in seconds.
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Responses that name their outcome for the metrics label.
pub trait Outcome {
    /// `ok`, or a more specific success label.
    fn outcome(&self) -> &'static str;
}

impl Outcome for Ack {
    fn outcome(&self) -> &'static str {
        match self.status() {
            AckStatus::Accepted => "accepted",
            AckStatus::Duplicate => "duplicate",
            AckStatus::Rejected => "rejected",
            AckStatus::Unspecified => "ok",
        }
    }
}

impl Outcome for DesiredState {
    fn outcome(&self) -> &'static str {
        "ok"
    }
}

impl Outcome for () {
    fn outcome(&self) -> &'static str {
        "ok"
    }
}

/// Reasons the accept loop closes or refuses a connection, the label values of
/// `sentra_transport_connections_closed_total{reason}`.
pub mod close_reason {
    /// Refused at once: the client address already holds
    /// [`Limits::max_connections_per_address`](crate::Limits::max_connections_per_address).
    pub const ADDRESS_CAP: &str = "address_cap";
    /// The TLS handshake did not finish within the handshake timeout.
    pub const TLS_HANDSHAKE_TIMEOUT: &str = "tls_handshake_timeout";
    /// The TLS handshake failed.
    pub const TLS_HANDSHAKE_FAILED: &str = "tls_handshake_failed";
    /// No HTTP/2 request (preface and HEADERS frame) within the handshake timeout.
    pub const FIRST_REQUEST_TIMEOUT: &str = "first_request_timeout";
    /// No byte from the peer for [`Limits::idle_timeout`](crate::Limits::idle_timeout).
    pub const IDLE_TIMEOUT: &str = "idle_timeout";
}

type MethodOutcome = [(&'static str, &'static str); 2];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The transport's metrics; cheap to clone (clones share the series).
///
/// * `sentra_transport_requests_total{method,outcome}` (counter),
/// * `sentra_transport_request_duration_seconds{method,outcome}` (histogram),
/// * `sentra_transport_connections_closed_total{reason}` (counter; see [`close_reason`]).
#[derive(Clone, Debug)]
pub struct Metrics {
    requests: Family<MethodOutcome, Counter>,
    latency: Family<MethodOutcome, Histogram, fn() -> Histogram>,
    closed: Family<[(&'static str, &'static str); 1], Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let closed = Family::default();
        // Every reason from the start (at 0), so rate() over them is defined at once.
        for r in [
            close_reason::ADDRESS_CAP,
            close_reason::TLS_HANDSHAKE_TIMEOUT,
            close_reason::TLS_HANDSHAKE_FAILED,
            close_reason::FIRST_REQUEST_TIMEOUT,
            close_reason::IDLE_TIMEOUT,
        ] {
            drop(closed.get_or_create(&[("reason", r)]));
        }
        Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            closed,
        }
    }
}

impl Metrics {
    /// Fresh series, registered nowhere yet (see [`Metrics::register`]).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers every series in `registry` (the host's; call once per registry).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "sentra_transport_requests",
            "gRPC ingest requests by method and outcome",
            self.requests.clone(),
        );
        registry.register(
            "sentra_transport_request_duration_seconds",
            "gRPC request latency by method and outcome",
            self.latency.clone(),
        );
        registry.register(
            "sentra_transport_connections_closed",
            "Connections the server closed or refused, by reason",
            self.closed.clone(),
        );
    }

    /// Records one request.
    pub fn record(&self, method: &'static str, outcome: &'static str, latency: Duration) {
        let labels = [("method", method), ("outcome", outcome)];
        self.requests.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&labels)
            .observe(latency.as_secs_f64());
    }

    /// Requests seen for `method` with `outcome`.
    #[must_use]
    pub fn count(&self, method: &'static str, outcome: &'static str) -> u64 {
        self.requests
            .get(&[("method", method), ("outcome", outcome)])
            .map_or(0, |c| c.get())
    }

    /// Records a connection closed or refused by the server for `reason` (one of
    /// [`close_reason`]).
    pub fn record_connection_closed(&self, reason: &'static str) {
        self.closed.get_or_create(&[("reason", reason)]).inc();
    }

    /// Connections closed or refused for `reason` (see [`close_reason`]).
    #[must_use]
    pub fn connections_closed(&self, reason: &'static str) -> u64 {
        self.closed
            .get(&[("reason", reason)])
            .map_or(0, |c| c.get())
    }

    /// These series alone in the text exposition format (OpenMetrics text, which Prometheus
    /// scrapes). A server serves its whole registry instead (see [`Metrics::register`]).
    #[must_use]
    pub fn render_prometheus(&self) -> String {
        let mut registry = Registry::default();
        self.register(&mut registry);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use sentra_core::proto::{Ack, AckStatus};
    use tower::{ServiceExt, service_fn};
    use tower_layer::Layer;

    use super::*;
    use crate::{BoxError, rate_limit::RateLimited};

    #[tokio::test]
    async fn counts_by_outcome_and_histogram_is_consistent() {
        let m = Metrics::new();
        let svc = MetricsLayer::new(m.clone(), "push").layer(service_fn(|i: u32| async move {
            match i {
                0 => Ok(Ack {
                    status: AckStatus::Accepted.into(),
                    ..Default::default()
                }),
                1 => Ok(Ack {
                    status: AckStatus::Duplicate.into(),
                    ..Default::default()
                }),
                2 => Err::<Ack, BoxError>(Box::new(RateLimited::new(Duration::from_secs(1)))),
                _ => Err("storage down".into()),
            }
        }));
        for i in [0, 0, 1, 2, 3] {
            let _ = svc.clone().oneshot(i).await;
        }
        assert_eq!(m.count("push", "accepted"), 2);
        assert_eq!(m.count("push", "duplicate"), 1);
        assert_eq!(m.count("push", "resource_exhausted"), 1);
        assert_eq!(m.count("push", "unavailable"), 1);
        let text = m.render_prometheus();
        assert!(text.contains(
            "sentra_transport_request_duration_seconds_count{method=\"push\",outcome=\"accepted\"} 2"
        ), "{text}");
        assert!(
            text.contains(
                "sentra_transport_request_duration_seconds_bucket{le=\"+Inf\",method=\"push\",outcome=\"accepted\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("# HELP sentra_transport_requests gRPC"),
            "{text}"
        );
    }
}
