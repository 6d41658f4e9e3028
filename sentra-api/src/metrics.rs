//! The one metrics registry behind `/metrics` (prometheus-client).
//!
//! The API's own series (HTTP requests by route and status, latency, login, enrolment and
//! key-fetch outcomes, agents with keys, component readiness) are registered here, next to
//! the ingest pipeline's (when the API serves one) and whatever the host adds with
//! [`Api::register_metrics`](crate::Api::register_metrics) (the gRPC transport's). Nothing
//! is global: two `Api`s in one process have two registries.
//!
//! The page is served in the Prometheus text format 0.0.4, or OpenMetrics text to a
//! scraper that asks for it (`Accept: application/openmetrics-text`), with `HELP` and
//! `TYPE` for every family (see [`to_text_format`]).

use std::{
    fmt::Write as _,
    sync::{PoisonError, RwLock},
    time::Duration,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        MetricType, counter::Counter, family::Family, gauge::ConstGauge, histogram::Histogram,
    },
    registry::Registry,
};

use crate::{DbKeyring, Readiness, SecretString};

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

impl Event {
    /// `(family, outcome)` of the event.
    fn series(self) -> (usize, &'static str) {
        match self {
            Self::LoginSuccess => (0, "success"),
            Self::LoginFailure => (0, "failure"),
            Self::LoginRateLimited => (0, "rate_limited"),
            Self::EnrolSuccess => (1, "success"),
            Self::EnrolFailure => (1, "failure"),
            Self::KeyFetchSuccess => (2, "success"),
            Self::KeyFetchFailure => (2, "failure"),
        }
    }
}

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: &'static str,
    status: u16,
}

type OutcomeLabel = [(&'static str, &'static str); 1];

/// The registry `/metrics` serves, and the API's own series in it.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: RwLock<Registry>,
    requests: Family<RequestLabels, Counter>,
    duration: Histogram,
    events: [Family<OutcomeLabel, Counter>; 3],
}

/// `sentra_api_agents_with_keys` and `sentra_component_ready`, read on every scrape.
struct StateCollector {
    keyring: DbKeyring,
    readiness: Readiness,
}

impl std::fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateCollector").finish_non_exhaustive()
    }
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let agents = i64::try_from(self.keyring.agents()).unwrap_or(i64::MAX);
        ConstGauge::new(agents).encode(encoder.encode_descriptor(
            "sentra_api_agents_with_keys",
            "Agents that currently hold at least one valid signing key.",
            None,
            MetricType::Gauge,
        )?)?;
        let components = self.readiness.components();
        if !components.is_empty() {
            let mut m = encoder.encode_descriptor(
                "sentra_component_ready",
                "1 while a server component runs; 0 once it failed.",
                None,
                MetricType::Gauge,
            )?;
            for (name, failing) in components {
                let labels = [("component", escape(&name))];
                ConstGauge::new(i64::from(failing.is_none())).encode(m.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

impl Metrics {
    /// The registry with the API's series, the state gauges and (if given) the ingest
    /// pipeline's series.
    pub(crate) fn new(
        keyring: DbKeyring,
        readiness: Readiness,
        ingest: Option<&sentra_ingest::Ingest>,
        fleet: sentra_ingest::FleetMetricsOptions,
    ) -> Self {
        let m = Self {
            registry: RwLock::new(Registry::default()),
            requests: Family::default(),
            duration: Histogram::new(BUCKETS_S),
            events: Default::default(),
        };
        m.register(|r| {
            r.register(
                "sentra_api_http_requests",
                "HTTP requests served by the API, by route and status",
                m.requests.clone(),
            );
            r.register(
                "sentra_api_http_request_duration_seconds",
                "Time to produce a response (headers)",
                m.duration.clone(),
            );
            let help = [
                ("sentra_api_logins", "Login attempts by outcome"),
                ("sentra_api_enrolments", "Agent enrolments by outcome"),
                (
                    "sentra_api_agent_key_fetches",
                    "Signed agent key fetches by outcome",
                ),
            ];
            for ((name, help), family) in help.into_iter().zip(&m.events) {
                r.register(name, help, family.clone());
            }
            r.register_collector(Box::new(StateCollector { keyring, readiness }));
            if let Some(ingest) = ingest {
                ingest.register_metrics(r, fleet);
            }
        });
        // Every outcome from the start, so a rate over them is defined before the first event.
        for e in [
            Event::LoginSuccess,
            Event::LoginFailure,
            Event::LoginRateLimited,
            Event::EnrolSuccess,
            Event::EnrolFailure,
            Event::KeyFetchSuccess,
            Event::KeyFetchFailure,
        ] {
            let (i, outcome) = e.series();
            drop(m.events[i].get_or_create(&[("outcome", outcome)]));
        }
        m
    }

    /// Runs `f` on the registry (to register more series).
    pub(crate) fn register(&self, f: impl FnOnce(&mut Registry)) {
        f(&mut self
            .registry
            .write()
            .unwrap_or_else(PoisonError::into_inner));
    }

    pub(crate) fn event(&self, e: Event) {
        let (i, outcome) = e.series();
        self.events[i].get_or_create(&[("outcome", outcome)]).inc();
    }

    pub(crate) fn request(
        &self,
        method: &'static str,
        route: &'static str,
        status: u16,
        took: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status: status_label(status),
            })
            .inc();
        self.duration.observe(took.as_secs_f64());
    }

    /// The whole registry as OpenMetrics text (ends with `# EOF`).
    pub(crate) fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.read().unwrap_or_else(PoisonError::into_inner);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    /// The whole registry in the Prometheus text format 0.0.4.
    pub(crate) fn render(&self) -> String {
        to_text_format(&self.encode_openmetrics())
    }
}

/// Turns OpenMetrics text (what prometheus-client writes) into the Prometheus text format
/// 0.0.4 that `promtool check metrics` and older scrapers read: a counter family is named
/// with its `_total` suffix in `HELP`/`TYPE` (OpenMetrics names the family without it),
/// and the `# EOF` line is dropped. Every other line is the same in both formats.
///
/// Public so that other `/metrics` pages built on a `prometheus_client` registry (the
/// scale-out roles' observe listener) answer exactly as the REST API does.
///
/// ```
/// let om = "# HELP jobs Jobs done.\n# TYPE jobs counter\njobs_total 3\n# EOF\n";
/// assert_eq!(
///     sentra_api::to_text_format(om),
///     "# HELP jobs_total Jobs done.\n# TYPE jobs_total counter\njobs_total 3\n"
/// );
/// ```
pub fn to_text_format(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let lines: Vec<&str> = openmetrics.lines().collect();
    let counters: std::collections::HashSet<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    for line in lines {
        if line == "# EOF" {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|r| ("HELP", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("TYPE", r)))
            .or_else(|| line.strip_prefix("# UNIT ").map(|r| ("UNIT", r)));
        match meta {
            Some(("UNIT", _)) => {}
            Some((kind, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) && !name.ends_with("_total") {
                    "_total"
                } else {
                    ""
                };
                let _ = writeln!(out, "# {kind} {name}{suffix} {tail}");
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Whether a `/metrics` request carries the scrape token (`Authorization: Bearer <token>`).
/// Compares SHA-256 digests, so the time taken depends neither on where the bytes differ
/// nor on the token's length.
#[must_use]
pub fn scrape_authorized(headers: &axum::http::HeaderMap, token: &SecretString) -> bool {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let a = ring::digest::digest(&ring::digest::SHA256, given.as_bytes());
    let b = ring::digest::digest(&ring::digest::SHA256, token.expose_secret().as_bytes());
    a.as_ref()
        .iter()
        .zip(b.as_ref())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrape_token_compare() {
        let token = SecretString::new("s3cret");
        let with = |v: &str| {
            let mut h = axum::http::HeaderMap::new();
            h.insert(axum::http::header::AUTHORIZATION, v.parse().unwrap());
            h
        };
        assert!(scrape_authorized(&with("Bearer s3cret"), &token));
        assert!(!scrape_authorized(&with("Bearer s3cres"), &token));
        assert!(!scrape_authorized(&with("Bearer s3cret2"), &token));
        assert!(!scrape_authorized(&with("Basic s3cret"), &token));
        assert!(!scrape_authorized(&axum::http::HeaderMap::new(), &token));
    }

    #[test]
    fn renders() {
        let readiness = Readiness::new();
        readiness.set_ready("grpc");
        readiness.set_failing("local \"agent\"", "x");
        let m = Metrics::new(
            DbKeyring::default(),
            readiness,
            None,
            sentra_ingest::FleetMetricsOptions::default(),
        );
        m.request("GET", "/healthz", 200, Duration::from_millis(3));
        assert_eq!(
            method_label(&axum::http::Method::from_bytes(b"FOO1").unwrap()),
            "other"
        );
        assert_eq!(route_label("/api/v1/agents/{id}"), "/api/v1/agents/{id}");
        assert_eq!(route_label("/made/up"), UNMATCHED_ROUTE);
        m.event(Event::LoginFailure);
        let text = m.render();
        for want in [
            "sentra_api_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1\n",
            "# TYPE sentra_api_http_requests_total counter\n",
            "# HELP sentra_api_logins_total Login attempts by outcome.\n",
            "sentra_api_logins_total{outcome=\"failure\"} 1\n",
            "sentra_api_logins_total{outcome=\"success\"} 0\n",
            "sentra_api_http_request_duration_seconds_bucket{le=\"0.005\"} 1\n",
            "sentra_api_agents_with_keys 0\n",
            "sentra_component_ready{component=\"grpc\"} 1\n",
            "sentra_component_ready{component=\"local \\\"agent\\\"\"} 0\n",
        ] {
            assert!(text.contains(want), "{want} missing in\n{text}");
        }
        assert!(!text.contains("# EOF"));
        assert!(m.encode_openmetrics().ends_with("# EOF\n"));
    }

    #[test]
    fn text_format_names_counter_families_with_total() {
        let om = "# HELP a_b Things.\n# TYPE a_b counter\na_b_total{x=\"1\"} 2\n\
                  # HELP g A gauge.\n# TYPE g gauge\ng 1\n# EOF\n";
        assert_eq!(
            to_text_format(om),
            "# HELP a_b_total Things.\n# TYPE a_b_total counter\na_b_total{x=\"1\"} 2\n\
             # HELP g A gauge.\n# TYPE g gauge\ng 1\n"
        );
    }
}
