//! The stable JSON document printed by `sentra-agent --once --output json`.
//!
//! Shape (version `sentra-agent/once/v1`; fields are only ever added):
//!
//! ```json
//! {
//!   "format": "sentra-agent/once/v1",
//!   "agent_id": "edge-01",                      // null when not enrolled
//!   "created_ms": 1763900000000,                // collection time, Unix ms
//!   "wireguard": {
//!     "available": true,
//!     "error": null,                            // {"kind": "not_available" | "permission_denied" | "failed", "reason": "..."}
//!     "devices": [{
//!       "name": "wg0", "ifindex": 4,
//!       "public_key": "base64",                 // null when no private key is set
//!       "listen_port": 51820, "fwmark": 0,
//!       "peers": [{
//!         "public_key": "base64",
//!         "endpoint": "192.0.2.1:51820",        // null for wg's "(none)"
//!         "allowed_ips": ["10.0.0.2/32"],       // [] for wg's "(none)"
//!         "last_handshake": 1763899990,         // Unix seconds, 0 = never (as `wg show dump`)
//!         "last_handshake_ms": 1763899990123,   // Unix ms, 0 = never
//!         "rx_bytes": 1234, "tx_bytes": 5678,
//!         "persistent_keepalive": 25,           // seconds, 0 = off (wg's "off")
//!         "has_preshared_key": false
//!       }]
//!     }]
//!   },
//!   "samples": [
//!     {"name": "node_load1", "labels": {}, "timestamp_ms": 1763900000000, "type": "gauge", "value": 0.52},
//!     {"name": "node_network_receive_bytes_total", "labels": {"device": "eth0"}, "timestamp_ms": 1763900000000, "type": "counter", "value": 1234}
//!   ],
//!   "problems": ["/proc/diskstats: No such file or directory"]
//! }
//! ```
//!
//! Devices and peers keep kernel order, which is also `wg show dump`'s order. Keys are
//! standard base64 with padding, exactly as `wg` prints them. A non-finite gauge prints as
//! `null` (JSON has no NaN).

use std::collections::BTreeMap;

use sentra_core::{AgentId, Sample, UnixMillis, Value, WgDevice};
use serde::Serialize;

use crate::wireguard::WgUnavailable;

/// Version tag of the document.
pub const FORMAT: &str = "sentra-agent/once/v1";

/// One full collection (every collector once), before it becomes a batch.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Snapshot {
    /// Collection time.
    pub created: UnixMillis,
    /// Host and agent samples.
    pub samples: Vec<Sample>,
    /// WireGuard devices.
    pub wg_devices: Vec<WgDevice>,
    /// Why WireGuard could not be read, if it could not.
    pub wg_unavailable: Option<WgUnavailable>,
    /// Sources that could not be read, for the operator.
    pub problems: Vec<String>,
}

#[derive(Serialize)]
struct Doc<'a> {
    format: &'static str,
    agent_id: Option<&'a str>,
    created_ms: i64,
    wireguard: Wg<'a>,
    samples: Vec<JsonSample<'a>>,
    problems: &'a [String],
}

#[derive(Serialize)]
struct Wg<'a> {
    available: bool,
    error: Option<WgError<'a>>,
    devices: Vec<JsonDevice>,
}

#[derive(Serialize)]
struct WgError<'a> {
    kind: &'static str,
    reason: &'a str,
}

/// A device in the JSON document.
#[derive(Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JsonDevice {
    /// Interface name.
    pub name: String,
    /// Interface index.
    pub ifindex: u32,
    /// Public key, base64.
    pub public_key: Option<String>,
    /// Listen port.
    pub listen_port: u16,
    /// Firewall mark.
    pub fwmark: u32,
    /// Peers in kernel order.
    pub peers: Vec<JsonPeer>,
}

/// A peer in the JSON document.
#[derive(Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JsonPeer {
    /// Public key, base64.
    pub public_key: String,
    /// `ip:port` / `[ip6]:port`, or null.
    pub endpoint: Option<String>,
    /// Allowed IP prefixes.
    pub allowed_ips: Vec<String>,
    /// Last handshake, Unix seconds; 0 = never.
    pub last_handshake: i64,
    /// Last handshake, Unix milliseconds; 0 = never.
    pub last_handshake_ms: i64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Persistent keepalive in seconds; 0 = off.
    pub persistent_keepalive: u16,
    /// Whether a preshared key is set.
    pub has_preshared_key: bool,
}

#[derive(Serialize)]
struct JsonSample<'a> {
    name: &'a str,
    labels: BTreeMap<&'a str, &'a str>,
    timestamp_ms: i64,
    #[serde(rename = "type")]
    kind: &'static str,
    value: serde_json::Value,
}

/// The JSON form of a device.
#[must_use]
pub fn json_device(d: &WgDevice) -> JsonDevice {
    JsonDevice {
        name: d.name.clone(),
        ifindex: d.ifindex,
        public_key: d.public_key.map(|k| k.to_string()),
        listen_port: d.listen_port,
        fwmark: d.fwmark,
        peers: d
            .peers
            .iter()
            .map(|p| {
                let ms = p.last_handshake.map_or(0, UnixMillis::as_millis);
                JsonPeer {
                    public_key: p.public_key.to_string(),
                    endpoint: p.endpoint.map(|e| e.to_string()),
                    allowed_ips: p.allowed_ips.iter().map(ToString::to_string).collect(),
                    last_handshake: ms.div_euclid(1000),
                    last_handshake_ms: ms,
                    rx_bytes: p.rx_bytes,
                    tx_bytes: p.tx_bytes,
                    persistent_keepalive: p.persistent_keepalive_s.unwrap_or(0),
                    has_preshared_key: p.has_preshared_key,
                }
            })
            .collect(),
    }
}

fn json_sample(s: &Sample) -> JsonSample<'_> {
    let (kind, value) = match &s.value {
        Value::Gauge(g) => (
            "gauge",
            serde_json::Number::from_f64(*g).map_or(serde_json::Value::Null, Into::into),
        ),
        Value::Counter(c) => ("counter", (*c).into()),
        Value::Histogram(h) => (
            "histogram",
            serde_json::json!({
                "count": h.count(),
                "sum": h.sum(),
                "buckets": h.buckets().iter().map(|b| serde_json::json!({
                    "le": b.upper_bound, "count": b.cumulative_count
                })).collect::<Vec<_>>(),
            }),
        ),
        _ => ("unknown", serde_json::Value::Null),
    };
    JsonSample {
        name: s.name.as_str(),
        labels: s.labels.iter().collect(),
        timestamp_ms: s.timestamp.as_millis(),
        kind,
        value,
    }
}

/// Renders a snapshot as the pretty-printed JSON document described above.
#[must_use]
pub fn to_json(snapshot: &Snapshot, agent_id: Option<&AgentId>) -> String {
    let doc = Doc {
        format: FORMAT,
        agent_id: agent_id.map(AgentId::as_str),
        created_ms: snapshot.created.as_millis(),
        wireguard: Wg {
            available: snapshot.wg_unavailable.is_none(),
            error: snapshot.wg_unavailable.as_ref().map(|e| WgError {
                kind: e.kind(),
                reason: e.reason(),
            }),
            devices: snapshot.wg_devices.iter().map(json_device).collect(),
        },
        samples: snapshot.samples.iter().map(json_sample).collect(),
        problems: &snapshot.problems,
    };
    serde_json::to_string_pretty(&doc).expect("serialising plain data cannot fail")
}

/// Renders a snapshot as short human-readable text.
#[must_use]
pub fn to_text(snapshot: &Snapshot) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    match &snapshot.wg_unavailable {
        Some(e) => {
            let _ = writeln!(out, "wireguard: unavailable ({}): {}", e.kind(), e.reason());
        }
        None => {
            let _ = writeln!(out, "wireguard: {} device(s)", snapshot.wg_devices.len());
        }
    }
    for d in &snapshot.wg_devices {
        let _ = writeln!(
            out,
            "  {} port {} key {} peers {}",
            d.name,
            d.listen_port,
            d.public_key
                .map_or_else(|| "(none)".into(), |k| k.to_string()),
            d.peers.len()
        );
    }
    let _ = writeln!(out, "samples: {}", snapshot.samples.len());
    for s in &snapshot.samples {
        let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        let v = match &s.value {
            Value::Gauge(g) => g.to_string(),
            Value::Counter(c) => c.to_string(),
            _ => "(histogram)".into(),
        };
        let _ = writeln!(out, "  {}{{{}}} {v}", s.name, labels.join(","));
    }
    for p in &snapshot.problems {
        let _ = writeln!(out, "problem: {p}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sentra_core::{WgPeer, WgPublicKey};

    #[test]
    fn device_and_peer_keys_are_the_documented_ones() {
        let dev = WgDevice::new("wg0", 3)
            .with_public_key(WgPublicKey::from_bytes([0xff; 32]))
            .with_listen_port(51820)
            .with_peers(vec![
                WgPeer::new(WgPublicKey::from_bytes([0; 32]))
                    .with_endpoint(
                        "[2001:db8::1]:51820"
                            .parse::<std::net::SocketAddr>()
                            .expect("addr"),
                    )
                    .with_allowed_ips(vec!["10.0.0.0/24".parse().expect("ip")])
                    .with_last_handshake(UnixMillis::from_millis(1_700_000_000_999))
                    .with_transfer(1, 2)
                    .with_persistent_keepalive_s(25)
                    .with_preshared_key(true),
                WgPeer::new(WgPublicKey::from_bytes([1; 32])),
            ]);
        let snap = Snapshot {
            created: UnixMillis::from_millis(1_700_000_001_000),
            samples: vec![],
            wg_devices: vec![dev],
            wg_unavailable: None,
            problems: vec![],
        };
        let v: serde_json::Value = serde_json::from_str(&to_json(&snap, None)).expect("valid json");
        let expected = serde_json::json!({
            "name": "wg0", "ifindex": 3,
            "public_key": "//////////////////////////////////////////8=",
            "listen_port": 51820, "fwmark": 0,
            "peers": [{
                "public_key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                "endpoint": "[2001:db8::1]:51820",
                "allowed_ips": ["10.0.0.0/24"],
                "last_handshake": 1_700_000_000,
                "last_handshake_ms": 1_700_000_000_999_i64,
                "rx_bytes": 1, "tx_bytes": 2,
                "persistent_keepalive": 25,
                "has_preshared_key": true
            }, {
                "public_key": "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
                "endpoint": null,
                "allowed_ips": [],
                "last_handshake": 0,
                "last_handshake_ms": 0,
                "rx_bytes": 0, "tx_bytes": 0,
                "persistent_keepalive": 0,
                "has_preshared_key": false
            }]
        });
        assert_eq!(v["wireguard"]["devices"][0], expected);
        assert_eq!(v["wireguard"]["available"], true);
        assert_eq!(v["format"], FORMAT);
        // Round trip through the public structs.
        let back: JsonDevice =
            serde_json::from_value(v["wireguard"]["devices"][0].clone()).expect("decode");
        assert_eq!(back.peers.len(), 2);
    }

    #[test]
    fn non_finite_gauges_are_null() {
        let s = sentra_core::Sample::new(
            sentra_core::MetricName::new("x").expect("name"),
            sentra_core::Labels::new(),
            UnixMillis::from_millis(1),
            Value::Gauge(f64::NAN),
        );
        let snap = Snapshot {
            created: UnixMillis::from_millis(1),
            samples: vec![s],
            wg_devices: vec![],
            wg_unavailable: Some(WgUnavailable::PermissionDenied("no CAP_NET_ADMIN".into())),
            problems: vec![],
        };
        let v: serde_json::Value = serde_json::from_str(&to_json(&snap, None)).expect("json");
        assert!(v["samples"][0]["value"].is_null());
        assert_eq!(v["wireguard"]["available"], false);
        assert_eq!(v["wireguard"]["error"]["kind"], "permission_denied");
    }
}
