//! Prometheus text exposition of the fleet's WireGuard status.

use std::fmt::Write as _;

use crate::status::{Presence, StatusSnapshot};

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

/// Renders a status snapshot in the Prometheus text format (version 0.0.4) with the metric
/// names and labels of prometheus_wireguard_exporter, plus an `agent` label, so existing
/// Grafana dashboards work:
///
/// * `wireguard_sent_bytes_total`, `wireguard_received_bytes_total` (counters) and
///   `wireguard_latest_handshake_seconds` (gauge, Unix seconds, 0 = never) with labels
///   `agent`, `interface`, `public_key`, `allowed_ips` (comma-separated);
/// * `wireguard_peer_up` (1 if the last handshake is recent enough);
/// * `sentra_agent_up` (1 online, 0 stale or offline) and
///   `sentra_agent_last_seen_seconds` per `agent`.
///
/// Samples carry no timestamps (the scrape time applies), as the exporter does.
///
/// ```
/// # #[allow(dead_code)]
/// fn metrics_body(ingest: &sentra_ingest::Ingest) -> String {
///     sentra_ingest::render_prometheus(&ingest.status().snapshot())
/// }
/// ```
#[must_use]
#[allow(clippy::cast_precision_loss)]
pub fn render_prometheus(snapshot: &StatusSnapshot) -> String {
    let mut out = String::new();
    let mut peers = Vec::new();
    for a in &snapshot.agents {
        for i in &a.interfaces {
            for p in &i.peers {
                let labels = format!(
                    "agent=\"{}\",interface=\"{}\",public_key=\"{}\",allowed_ips=\"{}\"",
                    escape(&a.agent_id),
                    escape(&i.name),
                    escape(&p.public_key),
                    escape(&p.allowed_ips.join(","))
                );
                peers.push((labels, p));
            }
        }
    }
    let families: [(&str, &str, &str); 4] = [
        (
            "wireguard_sent_bytes_total",
            "counter",
            "Bytes sent to the peer",
        ),
        (
            "wireguard_received_bytes_total",
            "counter",
            "Bytes received from the peer",
        ),
        (
            "wireguard_latest_handshake_seconds",
            "gauge",
            "UNIX timestamp seconds of the latest handshake",
        ),
        (
            "wireguard_peer_up",
            "gauge",
            "1 if the peer's latest handshake is recent",
        ),
    ];
    for (i, (name, kind, help)) in families.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, p) in &peers {
            let value = match i {
                0 => p.tx_bytes.to_string(),
                1 => p.rx_bytes.to_string(),
                2 => (p.last_handshake_ms.unwrap_or(0) / 1000).to_string(),
                _ => u8::from(p.online).to_string(),
            };
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
    let _ = writeln!(
        out,
        "# HELP sentra_agent_up 1 if the agent pushed recently\n# TYPE sentra_agent_up gauge"
    );
    for a in &snapshot.agents {
        let _ = writeln!(
            out,
            "sentra_agent_up{{agent=\"{}\"}} {}",
            escape(&a.agent_id),
            u8::from(a.presence == Presence::Online)
        );
    }
    let _ = writeln!(
        out,
        "# HELP sentra_agent_last_seen_seconds UNIX time the agent last pushed\n# TYPE sentra_agent_last_seen_seconds gauge"
    );
    for a in &snapshot.agents {
        let _ = writeln!(
            out,
            "sentra_agent_last_seen_seconds{{agent=\"{}\"}} {}",
            escape(&a.agent_id),
            a.last_seen_ms as f64 / 1000.0
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
