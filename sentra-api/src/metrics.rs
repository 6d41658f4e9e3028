//! The API server's own metrics, in Prometheus text exposition format.
//!
//! A small fixed registry rather than the `metrics` facade: a library must not install a
//! process-global recorder (two `Api`s in one test process would fight over it), and the
//! set of series is small and known.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

const BUCKETS_S: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Counters of security-relevant events.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Event {
    LoginSuccess,
    LoginFailure,
    LoginRateLimited,
    EnrolSuccess,
    EnrolFailure,
    KeyFetchSuccess,
    KeyFetchFailure,
}

const EVENTS: [(Event, &str, &str); 7] = [
    (
        Event::LoginSuccess,
        "sentra_api_logins_total",
        "outcome=\"success\"",
    ),
    (
        Event::LoginFailure,
        "sentra_api_logins_total",
        "outcome=\"failure\"",
    ),
    (
        Event::LoginRateLimited,
        "sentra_api_logins_total",
        "outcome=\"rate_limited\"",
    ),
    (
        Event::EnrolSuccess,
        "sentra_api_enrolments_total",
        "outcome=\"success\"",
    ),
    (
        Event::EnrolFailure,
        "sentra_api_enrolments_total",
        "outcome=\"failure\"",
    ),
    (
        Event::KeyFetchSuccess,
        "sentra_api_agent_key_fetches_total",
        "outcome=\"success\"",
    ),
    (
        Event::KeyFetchFailure,
        "sentra_api_agent_key_fetches_total",
        "outcome=\"failure\"",
    ),
];

/// The `route` label of a request that matched no route.
pub(crate) const UNMATCHED_ROUTE: &str = "unmatched";

/// The `method` label: one of the standard methods, or `other`.
pub(crate) fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method as M;
    match *method {
        M::GET => "GET",
        M::HEAD => "HEAD",
        M::POST => "POST",
        M::PUT => "PUT",
        M::DELETE => "DELETE",
        M::PATCH => "PATCH",
        M::OPTIONS => "OPTIONS",
        M::CONNECT => "CONNECT",
        M::TRACE => "TRACE",
        _ => "other",
    }
}

/// The `route` label of a matched route: the registered template (static), or
/// [`UNMATCHED_ROUTE`] for anything the router did not register.
pub(crate) fn route_label(matched: &str) -> &'static str {
    static TEMPLATES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    TEMPLATES
        .get_or_init(|| {
            let mut t: Vec<_> = crate::http::routes_templates();
            t.sort_unstable();
            t.dedup();
            t
        })
        .iter()
        .find(|t| **t == matched)
        .copied()
        .unwrap_or(UNMATCHED_ROUTE)
}

/// Status codes from 100 to 599 (anything else is counted as 599, which no handler sends).
fn status_label(status: u16) -> u16 {
    if (100..=599).contains(&status) {
        status
    } else {
        599
    }
}

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Keyed by `(method, route, status)`, all from closed sets.
    requests: Mutex<BTreeMap<(&'static str, &'static str, u16), u64>>,
    buckets: [AtomicU64; BUCKETS_S.len()],
    duration_count: AtomicU64,
    duration_sum_us: AtomicU64,
    events: [AtomicU64; EVENTS.len()],
}

impl Metrics {
    pub(crate) fn event(&self, e: Event) {
        self.events[e as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn request(
        &self,
        method: &'static str,
        route: &'static str,
        status: u16,
        took: Duration,
    ) {
        *self
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((method, route, status_label(status)))
            .or_default() += 1;
        let s = took.as_secs_f64();
        for (b, le) in self.buckets.iter().zip(BUCKETS_S) {
            if s <= le {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.duration_count.fetch_add(1, Ordering::Relaxed);
        self.duration_sum_us.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Renders every series; `agents_with_keys` is a gauge read from the keyring.
    pub(crate) fn render(&self, agents_with_keys: usize) -> String {
        let mut out = String::new();
        out.push_str("# HELP sentra_api_http_requests_total HTTP requests served by the API, by route and status.\n");
        out.push_str("# TYPE sentra_api_http_requests_total counter\n");
        for ((method, route, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                out,
                "sentra_api_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        out.push_str("# HELP sentra_api_http_request_duration_seconds Time to produce a response (headers).\n");
        out.push_str("# TYPE sentra_api_http_request_duration_seconds histogram\n");
        for (b, le) in self.buckets.iter().zip(BUCKETS_S) {
            let _ = writeln!(
                out,
                "sentra_api_http_request_duration_seconds_bucket{{le=\"{le}\"}} {}",
                b.load(Ordering::Relaxed)
            );
        }
        let count = self.duration_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "sentra_api_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        #[allow(clippy::cast_precision_loss)]
        let sum = self.duration_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "sentra_api_http_request_duration_seconds_sum {sum}");
        let _ = writeln!(
            out,
            "sentra_api_http_request_duration_seconds_count {count}"
        );
        let mut last = "";
        for (i, (_, name, labels)) in EVENTS.iter().enumerate() {
            if *name != last {
                let _ = writeln!(out, "# TYPE {name} counter");
                last = name;
            }
            let _ = writeln!(
                out,
                "{name}{{{labels}}} {}",
                self.events[i].load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP sentra_api_agents_with_keys Agents that currently hold at least one valid signing key.\n");
        out.push_str("# TYPE sentra_api_agents_with_keys gauge\n");
        let _ = writeln!(out, "sentra_api_agents_with_keys {agents_with_keys}");
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders() {
        let m = Metrics::default();
        m.request("GET", "/healthz", 200, Duration::from_millis(3));
        assert_eq!(
            method_label(&axum::http::Method::from_bytes(b"FOO1").unwrap()),
            "other"
        );
        assert_eq!(route_label("/api/v1/agents/{id}"), "/api/v1/agents/{id}");
        assert_eq!(route_label("/made/up"), UNMATCHED_ROUTE);
        m.event(Event::LoginFailure);
        let text = m.render(2);
        assert!(text.contains(
            "sentra_api_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1"
        ));
        assert!(text.contains("sentra_api_logins_total{outcome=\"failure\"} 1"));
        assert!(text.contains("sentra_api_http_request_duration_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("sentra_api_agents_with_keys 2"));
    }
}
