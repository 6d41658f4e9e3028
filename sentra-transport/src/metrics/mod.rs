//! Counts requests and records latency by method and outcome.
//!
//! The outcome is `ok` for a successful call (for `Push`: the `Ack` status, `accepted`,
//! `duplicate` or `rejected`), or the gRPC code the error maps to (`resource_exhausted`,
//! `unauthenticated`, …; see [`status`](crate::status)). [`Metrics::render_prometheus`]
//! writes the Prometheus text format for the server's `/metrics`; nothing here depends on a
//! metrics library.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use sentra_core::proto::{Ack, AckStatus};
//! use sentra_transport::{BoxError, metrics::{Metrics, MetricsLayer}};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! let metrics = Metrics::new();
//! let svc = MetricsLayer::new(metrics.clone(), "push").layer(service_fn(|_: ()| async {
//!     Ok::<_, BoxError>(Ack { status: AckStatus::Accepted.into(), ..Default::default() })
//! }));
//! svc.oneshot(()).await.unwrap();
//! assert_eq!(metrics.count("push", "accepted"), 1);
//! assert!(metrics.render_prometheus().contains("sentra_transport_requests_total"));
//! # }
//! ```

pub mod future;
mod layer;
mod service;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::Duration,
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

#[derive(Clone, Debug, Default)]
struct Series {
    count: u64,
    sum_seconds: f64,
    buckets: [u64; LATENCY_BUCKETS.len()],
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

/// A shared metrics registry; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    series: Arc<Mutex<BTreeMap<(&'static str, &'static str), Series>>>,
    closed: Arc<Mutex<BTreeMap<&'static str, u64>>>,
}

impl Metrics {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one request.
    pub fn record(&self, method: &'static str, outcome: &'static str, latency: Duration) {
        let secs = latency.as_secs_f64();
        let mut map = self
            .series
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let s = map.entry((method, outcome)).or_default();
        s.count += 1;
        s.sum_seconds += secs;
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *le {
                s.buckets[i] += 1;
            }
        }
    }

    /// Requests seen for `method` with `outcome`.
    #[must_use]
    pub fn count(&self, method: &str, outcome: &str) -> u64 {
        let map = self
            .series
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.iter()
            .filter(|((m, o), _)| *m == method && *o == outcome)
            .map(|(_, s)| s.count)
            .sum()
    }

    /// Records a connection closed or refused by the server for `reason` (one of
    /// [`close_reason`]).
    pub fn record_connection_closed(&self, reason: &'static str) {
        *self
            .closed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(reason)
            .or_default() += 1;
    }

    /// Connections closed or refused for `reason` (see [`close_reason`]).
    #[must_use]
    pub fn connections_closed(&self, reason: &str) -> u64 {
        self.closed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|(r, _)| **r == reason)
            .map(|(_, n)| *n)
            .sum()
    }

    /// All `(method, outcome, count)` triples.
    #[must_use]
    pub fn counts(&self) -> Vec<(&'static str, &'static str, u64)> {
        let map = self
            .series
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.iter().map(|((m, o), s)| (*m, *o, s.count)).collect()
    }

    /// The Prometheus text exposition of every series.
    #[must_use]
    pub fn render_prometheus(&self) -> String {
        let map = self
            .series
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut out = String::new();
        out.push_str(
            "# HELP sentra_transport_requests_total gRPC ingest requests by method and outcome.\n",
        );
        out.push_str("# TYPE sentra_transport_requests_total counter\n");
        for ((m, o), s) in &map {
            let _ = writeln!(
                out,
                "sentra_transport_requests_total{{method=\"{m}\",outcome=\"{o}\"}} {}",
                s.count
            );
        }
        out.push_str("# HELP sentra_transport_request_duration_seconds Request latency by method and outcome.\n");
        out.push_str("# TYPE sentra_transport_request_duration_seconds histogram\n");
        for ((m, o), s) in &map {
            for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "sentra_transport_request_duration_seconds_bucket{{method=\"{m}\",outcome=\"{o}\",le=\"{le}\"}} {}",
                    s.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "sentra_transport_request_duration_seconds_bucket{{method=\"{m}\",outcome=\"{o}\",le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                out,
                "sentra_transport_request_duration_seconds_sum{{method=\"{m}\",outcome=\"{o}\"}} {}",
                s.sum_seconds
            );
            let _ = writeln!(
                out,
                "sentra_transport_request_duration_seconds_count{{method=\"{m}\",outcome=\"{o}\"}} {}",
                s.count
            );
        }
        let closed = self
            .closed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        out.push_str("# HELP sentra_transport_connections_closed_total Connections the server closed or refused, by reason.\n");
        out.push_str("# TYPE sentra_transport_connections_closed_total counter\n");
        for (r, n) in &closed {
            let _ = writeln!(
                out,
                "sentra_transport_connections_closed_total{{reason=\"{r}\"}} {n}"
            );
        }
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
        assert!(text.contains("le=\"+Inf\"} 2"));
    }
}
