//! Prometheus exposition of the pipeline's counters and the fleet's WireGuard status, as
//! [`prometheus-client`](prometheus_client) metrics the host registers in its own registry
//! (see [`Ingest::register_metrics`](crate::Ingest::register_metrics)).

use std::sync::Arc;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};
use tokio::sync::{mpsc, watch};

use crate::{
    IngestHealth, StorageHealth,
    service::Counters,
    status::{Presence, StatusCache, StatusSnapshot},
    writer::Request,
};

/// Escapes a label value for the text format (prometheus-client writes values verbatim).
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// What the fleet part of `/metrics` shows beyond the exporter-compatible series.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetMetricsOptions {
    /// Adds `wireguard_peer_endpoint_info{agent,interface,public_key,endpoint} 1` per peer
    /// with a known endpoint (alert on endpoint changes). Off by default: endpoints are
    /// client addresses.
    pub peer_endpoints: bool,
}

impl FleetMetricsOptions {
    /// The defaults (no endpoint series).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`FleetMetricsOptions::peer_endpoints`].
    #[must_use]
    pub fn with_peer_endpoints(mut self, on: bool) -> Self {
        self.peer_endpoints = on;
        self
    }
}

/// A [`Collector`] of the fleet's WireGuard status, read from the status cache on every
/// scrape, with the metric names and labels of prometheus_wireguard_exporter plus an `agent`
/// label, so existing Grafana dashboards work:
///
/// * `wireguard_sent_bytes_total`, `wireguard_received_bytes_total` (counters) and
///   `wireguard_latest_handshake_seconds` (gauge, Unix seconds, 0 = never) with labels
///   `agent`, `interface`, `public_key`, `allowed_ips` (comma-separated);
/// * `wireguard_peer_up` (1 if the last handshake is recent enough);
/// * `wireguard_peers{agent,interface}` (configured peers) and
///   `wireguard_peers_connected{agent,interface}` (of those, with a recent handshake);
/// * opt-in `wireguard_peer_endpoint_info` (see [`FleetMetricsOptions`]);
/// * `sentra_agent_up` (1 online, 0 stale or offline) and
///   `sentra_agent_last_seen_seconds` per `agent`.
///
/// Peers have no names yet, so there is no `friendly_name` label.
#[derive(Debug)]
pub struct FleetCollector {
    status: StatusCache,
    options: FleetMetricsOptions,
}

impl FleetCollector {
    /// Reads `status` on every scrape.
    #[must_use]
    pub fn new(status: StatusCache, options: FleetMetricsOptions) -> Self {
        Self { status, options }
    }
}

impl Collector for FleetCollector {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        encode_snapshot(&self.status.snapshot(), self.options, encoder)
    }
}

type Labels = Vec<(&'static str, String)>;

fn family<V: Copy>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    series: &[(Labels, V)],
    encode: impl Fn(V, prometheus_client::encoding::MetricEncoder<'_>) -> std::fmt::Result,
) -> std::fmt::Result {
    let mut m = encoder.encode_descriptor(name, help, None, kind)?;
    if let [(labels, v)] = series
        && labels.is_empty()
    {
        return encode(*v, m);
    }
    for (labels, v) in series {
        encode(*v, m.encode_family(labels)?)?;
    }
    Ok(())
}

fn counters(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &[(Labels, u64)],
) -> std::fmt::Result {
    family(encoder, name, help, MetricType::Counter, series, |v, e| {
        ConstCounter::new(v).encode(e)
    })
}

fn gauges<V: prometheus_client::encoding::EncodeGaugeValue + Copy>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &[(Labels, V)],
) -> std::fmt::Result {
    family(encoder, name, help, MetricType::Gauge, series, |v, e| {
        ConstGauge::new(v).encode(e)
    })
}

#[allow(
    clippy::cast_precision_loss,
    reason = "Prometheus gauges are f64; counts and seconds above 2^53 lose only low digits"
)]
fn encode_snapshot(
    snapshot: &StatusSnapshot,
    options: FleetMetricsOptions,
    mut encoder: DescriptorEncoder<'_>,
) -> std::fmt::Result {
    let (mut sent, mut received, mut handshake, mut up) = (vec![], vec![], vec![], vec![]);
    let (mut configured, mut connected, mut endpoints) = (vec![], vec![], vec![]);
    let (mut agent_up, mut last_seen) = (vec![], vec![]);
    for a in &snapshot.agents {
        let agent = escape(&a.agent_id);
        for i in &a.interfaces {
            let interface = escape(&i.name);
            let ifl: Labels = vec![("agent", agent.clone()), ("interface", interface.clone())];
            configured.push((ifl.clone(), i.peers.len() as i64));
            connected.push((ifl, i.peers.iter().filter(|p| p.online).count() as i64));
            for p in &i.peers {
                let labels: Labels = vec![
                    ("agent", agent.clone()),
                    ("interface", interface.clone()),
                    ("public_key", escape(&p.public_key)),
                    ("allowed_ips", escape(&p.allowed_ips.join(","))),
                ];
                sent.push((labels.clone(), p.tx_bytes));
                received.push((labels.clone(), p.rx_bytes));
                handshake.push((labels.clone(), p.last_handshake_ms.unwrap_or(0) / 1000));
                up.push((labels, i64::from(p.online)));
                if let (true, Some(endpoint)) = (options.peer_endpoints, &p.endpoint) {
                    endpoints.push((
                        vec![
                            ("agent", agent.clone()),
                            ("interface", interface.clone()),
                            ("public_key", escape(&p.public_key)),
                            ("endpoint", escape(endpoint)),
                        ],
                        1_i64,
                    ));
                }
            }
        }
        let al: Labels = vec![("agent", agent.clone())];
        agent_up.push((al.clone(), i64::from(a.presence == Presence::Online)));
        last_seen.push((al, a.last_seen_ms as f64 / 1000.0));
    }
    let e = &mut encoder;
    counters(e, "wireguard_sent_bytes", "Bytes sent to the peer", &sent)?;
    counters(
        e,
        "wireguard_received_bytes",
        "Bytes received from the peer",
        &received,
    )?;
    gauges(
        e,
        "wireguard_latest_handshake_seconds",
        "UNIX timestamp seconds of the latest handshake",
        &handshake,
    )?;
    gauges(
        e,
        "wireguard_peer_up",
        "1 if the peer's latest handshake is recent",
        &up,
    )?;
    gauges(
        e,
        "wireguard_peers",
        "Peers configured on the interface",
        &configured,
    )?;
    gauges(
        e,
        "wireguard_peers_connected",
        "Peers of the interface with a recent handshake",
        &connected,
    )?;
    if options.peer_endpoints {
        gauges(
            e,
            "wireguard_peer_endpoint_info",
            "The peer's current endpoint as a label (value 1)",
            &endpoints,
        )?;
    }
    gauges(
        e,
        "sentra_agent_up",
        "1 if the agent pushed recently",
        &agent_up,
    )?;
    gauges(
        e,
        "sentra_agent_last_seen_seconds",
        "UNIX time the agent last pushed",
        &last_seen,
    )
}

/// Queue depth and storage health, read on every scrape.
#[derive(Debug)]
pub(crate) struct PipelineCollector {
    /// Weak: the registry must not keep the writer's queue open after shutdown.
    pub(crate) tx: mpsc::WeakSender<Request>,
    pub(crate) health: watch::Receiver<IngestHealth>,
}

impl Collector for PipelineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let depth = self
            .tx
            .upgrade()
            .map_or(0, |tx| tx.max_capacity().saturating_sub(tx.capacity()));
        let h = self.health.borrow().clone();
        let (healthy, failed) = match &h.storage {
            StorageHealth::Failing { failed_commits, .. } => (0, *failed_commits),
            _ => (1, 0),
        };
        let e = &mut encoder;
        let none: Labels = Vec::new();
        gauges(
            e,
            "sentra_ingest_queue_depth",
            "Batches waiting for the storage writer.",
            &[(none.clone(), depth as i64)],
        )?;
        gauges(
            e,
            "sentra_storage_healthy",
            "1 while metrics storage commits; 0 while commits fail (nothing is acknowledged then).",
            &[(none.clone(), healthy)],
        )?;
        gauges(
            e,
            "sentra_storage_failed_commits",
            "Failed commits in the current storage failure (0 while healthy).",
            &[(none.clone(), failed as i64)],
        )?;
        gauges(
            e,
            "sentra_ingest_tasks_up",
            "1 while every internal ingest task runs; 0 after one died.",
            &[(none, i64::from(h.dead_task.is_none()))],
        )
    }
}

/// Registers the pipeline counters in `registry`.
pub(crate) fn register_counters(c: &Arc<Counters>, registry: &mut Registry) {
    registry.register(
        "sentra_ingest_batches_accepted",
        "Batches stored",
        c.accepted.clone(),
    );
    registry.register(
        "sentra_ingest_batches_duplicate",
        "Batches answered DUPLICATE (retries of a stored seq; nothing stored)",
        c.duplicates.clone(),
    );
    registry.register(
        "sentra_ingest_seq_conflicts",
        "Duplicates of a stored seq carried by a different envelope (re-signed or forged)",
        c.conflicts.clone(),
    );
    registry.register(
        "sentra_ingest_batches_rejected",
        "Batches rejected (nothing stored), by reason",
        c.rejected.clone(),
    );
    registry.register(
        "sentra_ingest_storage_errors",
        "Pushes that failed with a storage error (retryable; nothing stored)",
        c.failed.clone(),
    );
    registry.register(
        "sentra_ingest_samples",
        "Samples stored (including derived series)",
        c.samples.clone(),
    );
    registry.register(
        "sentra_ingest_clamped_samples",
        "Sample timestamps ahead of the server clock, stored with the receive time",
        c.clamped.clone(),
    );
    registry.register(
        "sentra_ingest_commit_duration_seconds",
        "Time from handing a batch to the storage writer until its commit is durable (queueing included)",
        c.commit_latency.clone(),
    );
}

/// Renders a status snapshot alone in the text exposition format (OpenMetrics text; see
/// [`FleetCollector`] for the series). A server registers a [`FleetCollector`] in its
/// registry instead ([`Ingest::register_metrics`](crate::Ingest::register_metrics)).
///
/// ```
/// # #[allow(dead_code)]
/// fn metrics_body(ingest: &sentra_ingest::Ingest) -> String {
///     sentra_ingest::render_prometheus(&ingest.status().snapshot())
/// }
/// ```
#[must_use]
pub fn render_prometheus(snapshot: &StatusSnapshot) -> String {
    #[derive(Debug)]
    struct Fixed(StatusSnapshot);
    impl Collector for Fixed {
        fn encode(&self, encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
            encode_snapshot(&self.0, FleetMetricsOptions::default(), encoder)
        }
    }
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Fixed(snapshot.clone())));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{AgentStatus, InterfaceStatus, PeerStatus};

    fn peer(key: &str, endpoint: Option<&str>, online: bool) -> PeerStatus {
        PeerStatus {
            public_key: key.to_owned(),
            endpoint: endpoint.map(str::to_owned),
            allowed_ips: vec!["10.0.0.2/32".to_owned()],
            last_handshake_ms: online.then_some(1_700_000_000_000),
            handshake_age_s: None,
            online,
            rx_bytes: 10,
            tx_bytes: 20,
            rx_rate_bps: None,
            tx_rate_bps: None,
            counter_resets: 0,
            persistent_keepalive_s: None,
            has_preshared_key: false,
        }
    }

    fn render(snapshot: &StatusSnapshot, options: FleetMetricsOptions) -> String {
        #[derive(Debug)]
        struct C(StatusSnapshot, FleetMetricsOptions);
        impl Collector for C {
            fn encode(&self, e: DescriptorEncoder<'_>) -> std::fmt::Result {
                encode_snapshot(&self.0, self.1, e)
            }
        }
        let mut r = Registry::default();
        r.register_collector(Box::new(C(snapshot.clone(), options)));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        out
    }

    #[test]
    fn peer_counts_and_opt_in_endpoint_info() {
        let snapshot = StatusSnapshot {
            at_ms: 0,
            agents: vec![AgentStatus {
                agent_id: "gw-1".to_owned(),
                presence: Presence::Online,
                last_seen_ms: 1_700_000_000_000,
                high_water: 1,
                status_time_ms: None,
                interfaces: vec![InterfaceStatus {
                    name: "wg0".to_owned(),
                    public_key: None,
                    listen_port: 51820,
                    peers: vec![
                        peer("A=", Some("203.0.113.7:51820"), true),
                        peer("B=", None, false),
                    ],
                    managed: None,
                }],
            }],
        };
        let off = render(&snapshot, FleetMetricsOptions::default());
        assert!(
            off.contains("wireguard_peers{agent=\"gw-1\",interface=\"wg0\"} 2\n"),
            "{off}"
        );
        assert!(
            off.contains("wireguard_peers_connected{agent=\"gw-1\",interface=\"wg0\"} 1\n"),
            "{off}"
        );
        assert!(!off.contains("endpoint"), "{off}");
        let on = render(
            &snapshot,
            FleetMetricsOptions::new().with_peer_endpoints(true),
        );
        assert!(
            on.contains(
                "wireguard_peer_endpoint_info{agent=\"gw-1\",interface=\"wg0\",public_key=\"A=\",endpoint=\"203.0.113.7:51820\"} 1\n"
            ),
            "{on}"
        );
        assert_eq!(
            on.matches("wireguard_peer_endpoint_info{").count(),
            1,
            "{on}"
        );
    }

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
