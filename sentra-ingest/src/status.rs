//! The in-memory status cache: latest state per agent, interface and peer.
//!
//! The writer updates it after every durable commit; readers take a [`StatusSnapshot`]
//! without touching the database. On startup it is rebuilt from the stored high-water
//! marks and the latest stored WireGuard status of each agent.
//!
//! Rates are computed from consecutive statuses of the same peer: `(now - before) /
//! elapsed`. A counter that goes down (the interface was recreated, the host rebooted) is a
//! reset: the new value is taken as the increase since the previous status, as Prometheus'
//! `rate()` does, and the reset is counted.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, PoisonError, RwLock},
};

use sentra_core::{AgentId, Batch, UnixMillis, WgDevice, WgPublicKey};
use serde::Serialize;

use crate::PresenceConfig;

/// Whether an agent is reporting.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Presence {
    /// Heard from within [`PresenceConfig::stale_after`].
    Online,
    /// Silent for longer than `stale_after` but not yet `offline_after`.
    Stale,
    /// Silent for longer than [`PresenceConfig::offline_after`].
    Offline,
}

/// A point-in-time copy of the whole cache.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"at_ms": 1764480012500_i64, "agents": [{"agent_id": "edge-01", "presence": "online", "last_seen_ms": 1764480012000_i64, "high_water": 42, "status_time_ms": 1764480010000_i64, "interfaces": [{"name": "wg0", "public_key": "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=", "listen_port": 51820, "peers": [{"public_key": "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=", "endpoint": "192.0.2.1:51820", "allowed_ips": ["10.0.0.2/32"], "last_handshake_ms": 1764480000000_i64, "handshake_age_s": 12.5, "online": true, "rx_bytes": 1048576, "tx_bytes": 524288, "rx_rate_bps": 2048.0, "tx_rate_bps": 1024.0, "counter_resets": 0, "persistent_keepalive_s": 25, "has_preshared_key": false}], "managed": null}]}]})))]
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct StatusSnapshot {
    /// The time presence and ages were computed for, Unix ms.
    pub at_ms: i64,
    /// Agents, ordered by id.
    pub agents: Vec<AgentStatus>,
}

/// The status of one agent.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"agent_id": "edge-01", "presence": "online", "last_seen_ms": 1764480012000_i64, "high_water": 42, "status_time_ms": 1764480010000_i64, "interfaces": [{"name": "wg0", "public_key": "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=", "listen_port": 51820, "peers": [{"public_key": "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=", "endpoint": "192.0.2.1:51820", "allowed_ips": ["10.0.0.2/32"], "last_handshake_ms": 1764480000000_i64, "handshake_age_s": 12.5, "online": true, "rx_bytes": 1048576, "tx_bytes": 524288, "rx_rate_bps": 2048.0, "tx_rate_bps": 1024.0, "counter_resets": 0, "persistent_keepalive_s": 25, "has_preshared_key": false}], "managed": null}]})))]
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct AgentStatus {
    /// The agent id.
    pub agent_id: String,
    /// Presence at [`StatusSnapshot::at_ms`].
    pub presence: Presence,
    /// When the server last received a verified push from it, Unix ms.
    pub last_seen_ms: i64,
    /// Its durable high-water mark (highest stored seq).
    pub high_water: u64,
    /// Collection time of the WireGuard status below, Unix ms (`None`: no status yet).
    pub status_time_ms: Option<i64>,
    /// WireGuard interfaces, by name.
    pub interfaces: Vec<InterfaceStatus>,
}

/// The status of one WireGuard interface.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct InterfaceStatus {
    /// Interface name.
    pub name: String,
    /// Its public key (base64), if it has a private key.
    pub public_key: Option<String>,
    /// UDP listen port.
    pub listen_port: u16,
    /// Peers, by public key.
    pub peers: Vec<PeerStatus>,
    /// What the agent's peer applier reported with this status (`None`: the interface is
    /// not declared, or the agent reported nothing for it).
    pub managed: Option<ManagedStatus>,
}

/// The peer applier's report for one declared interface: desired against applied
/// revision, drift, errors (from the `sentra_wg_*` samples the agent ships with its
/// WireGuard status).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ManagedStatus {
    /// Revision of the declaration the agent holds.
    pub desired_version: u64,
    /// Revision the kernel was last made to match (0: never).
    pub applied_version: u64,
    /// Whether the kernel matches the desired revision.
    pub in_sync: bool,
    /// Whether the agent only observes the interface (drift reported, never corrected).
    pub observe_only: bool,
    /// Peers found different from the declaration at the last check (changed by hand).
    pub drift_peers: u64,
    /// Listed drifted peers (at most 20): public key and `missing`, `unexpected` or
    /// `changed`.
    pub drift: Vec<PeerNote>,
    /// Peers the kernel refused (listed, at most 20), with the reason.
    pub peer_errors: Vec<PeerNote>,
    /// Why the interface as a whole was not applied (a rejected declaration, a kernel error).
    pub error: Option<String>,
}

/// A peer named in a [`ManagedStatus`].
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PeerNote {
    /// Public key, base64.
    pub public_key: String,
    /// The drift kind or the error.
    pub note: String,
}

/// The applier's reports in a batch's samples, by interface.
fn managed_from_samples(batch: &Batch) -> BTreeMap<String, ManagedStatus> {
    let mut out: BTreeMap<String, ManagedStatus> = BTreeMap::new();
    for s in &batch.samples {
        let name = s.name.as_str();
        if !name.starts_with("sentra_wg_") {
            continue;
        }
        let Some(iface) = s.labels.get("interface") else {
            continue;
        };
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a finite, non-negative gauge; `as` saturates at u64::MAX"
        )]
        let v = match s.value {
            sentra_core::Value::Gauge(g) if g.is_finite() && g >= 0.0 => g as u64,
            sentra_core::Value::Counter(c) => c,
            _ => continue,
        };
        let note = |kind: &str| PeerNote {
            public_key: s.labels.get("peer").unwrap_or_default().to_owned(),
            note: s.labels.get(kind).unwrap_or_default().to_owned(),
        };
        let e = match name {
            "sentra_wg_desired_revision"
            | "sentra_wg_applied_revision"
            | "sentra_wg_in_sync"
            | "sentra_wg_observe_only"
            | "sentra_wg_drift_peers"
            | "sentra_wg_drift_peer"
            | "sentra_wg_apply_peer_error"
            | "sentra_wg_apply_error" => out.entry(iface.to_owned()).or_default(),
            _ => continue,
        };
        match name {
            "sentra_wg_desired_revision" => e.desired_version = v,
            "sentra_wg_applied_revision" => e.applied_version = v,
            "sentra_wg_in_sync" => e.in_sync = v == 1,
            "sentra_wg_observe_only" => e.observe_only = v == 1,
            "sentra_wg_drift_peers" => e.drift_peers = v,
            "sentra_wg_drift_peer" => e.drift.push(note("kind")),
            "sentra_wg_apply_peer_error" => e.peer_errors.push(note("error")),
            _ => e.error = s.labels.get("error").map(str::to_owned),
        }
    }
    out
}

/// The status of one WireGuard peer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct PeerStatus {
    /// Public key, base64 as `wg` prints it.
    pub public_key: String,
    /// Current endpoint, `ip:port`.
    pub endpoint: Option<String>,
    /// Allowed IPs, CIDR.
    pub allowed_ips: Vec<String>,
    /// Last handshake, Unix ms (`None`: never).
    pub last_handshake_ms: Option<i64>,
    /// Seconds since the last handshake at [`StatusSnapshot::at_ms`].
    pub handshake_age_s: Option<f64>,
    /// Whether the last handshake is within [`PresenceConfig::peer_handshake_timeout`].
    pub online: bool,
    /// Bytes received (kernel counter).
    pub rx_bytes: u64,
    /// Bytes sent (kernel counter).
    pub tx_bytes: u64,
    /// Receive rate between the last two statuses, bytes/s (`None` until two statuses).
    pub rx_rate_bps: Option<f64>,
    /// Send rate between the last two statuses, bytes/s.
    pub tx_rate_bps: Option<f64>,
    /// Counter resets observed since the server started.
    pub counter_resets: u64,
    /// Persistent keepalive, seconds.
    pub persistent_keepalive_s: Option<u16>,
    /// Whether a preshared key is configured.
    pub has_preshared_key: bool,
}

#[derive(Debug, Default)]
struct AgentEntry {
    last_seen: i64,
    high_water: u64,
    status_time: Option<i64>,
    interfaces: BTreeMap<String, IfaceEntry>,
}

#[derive(Debug)]
struct IfaceEntry {
    public_key: Option<WgPublicKey>,
    listen_port: u16,
    peers: BTreeMap<WgPublicKey, PeerEntry>,
    managed: Option<ManagedStatus>,
}

#[derive(Debug)]
struct PeerEntry {
    endpoint: Option<String>,
    allowed_ips: Vec<String>,
    last_handshake: Option<i64>,
    rx: u64,
    tx: u64,
    rx_rate: Option<f64>,
    tx_rate: Option<f64>,
    resets: u64,
    keepalive: Option<u16>,
    psk: bool,
}

/// Rate of a counter between two readings `dt_ms` apart; a decrease is a reset, after which
/// the new value itself is the increase. Returns `(rate, reset)`.
#[allow(
    clippy::cast_precision_loss,
    reason = "a rate in bytes per second; f64 is exact below 2^53 bytes"
)]
pub(crate) fn counter_rate(before: u64, after: u64, dt_ms: i64) -> (Option<f64>, bool) {
    if dt_ms <= 0 {
        return (None, false);
    }
    let (increase, reset) = if after >= before {
        (after - before, false)
    } else {
        (after, true)
    };
    (Some(increase as f64 * 1000.0 / dt_ms as f64), reset)
}

/// The status cache. Cheap to clone (shared state).
#[derive(Clone, Debug)]
pub struct StatusCache {
    inner: Arc<RwLock<HashMap<AgentId, AgentEntry>>>,
    config: PresenceConfig,
}

impl StatusCache {
    pub(crate) fn new(config: PresenceConfig) -> Self {
        Self {
            inner: Arc::default(),
            config,
        }
    }

    /// A heartbeat: `agent` pushed at `received` (server clock) with high-water mark `hw`.
    pub(crate) fn touch(&self, agent: &AgentId, received: UnixMillis, hw: u64) {
        let mut map = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let e = map.entry(agent.clone()).or_default();
        e.last_seen = e.last_seen.max(received.as_millis());
        e.high_water = e.high_water.max(hw);
    }

    /// Applies the WireGuard status of a stored batch. Statuses older than the one held are
    /// ignored (a late out-of-order batch must not move rates backwards).
    pub(crate) fn apply_wg(&self, batch: &Batch) {
        if batch.wg_devices.is_empty() {
            return;
        }
        let mut map = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let e = map.entry(batch.agent_id.clone()).or_default();
        let t = batch.created.as_millis();
        let prev_time = e.status_time;
        if prev_time.is_some_and(|p| t <= p) {
            return;
        }
        let dt = prev_time.map_or(0, |p| t - p);
        let mut managed = managed_from_samples(batch);
        let mut old = std::mem::take(&mut e.interfaces);
        for d in &batch.wg_devices {
            let mut old_peers = old.remove(&d.name).map(|i| i.peers).unwrap_or_default();
            let peers = d
                .peers
                .iter()
                .map(|p| {
                    let prev = old_peers.remove(&p.public_key);
                    let (rx_rate, rx_reset) = prev
                        .as_ref()
                        .map_or((None, false), |o| counter_rate(o.rx, p.rx_bytes, dt));
                    let (tx_rate, tx_reset) = prev
                        .as_ref()
                        .map_or((None, false), |o| counter_rate(o.tx, p.tx_bytes, dt));
                    let resets =
                        prev.as_ref().map_or(0, |o| o.resets) + u64::from(rx_reset || tx_reset);
                    let entry = PeerEntry {
                        endpoint: p.endpoint.map(|e| e.to_string()),
                        allowed_ips: p.allowed_ips.iter().map(ToString::to_string).collect(),
                        last_handshake: p.last_handshake.map(UnixMillis::as_millis),
                        rx: p.rx_bytes,
                        tx: p.tx_bytes,
                        rx_rate,
                        tx_rate,
                        resets,
                        keepalive: p.persistent_keepalive_s,
                        psk: p.has_preshared_key,
                    };
                    (p.public_key, entry)
                })
                .collect();
            let mut entry = iface(d, peers);
            entry.managed = managed.remove(&d.name);
            e.interfaces.insert(d.name.clone(), entry);
        }
        e.status_time = Some(t);
    }

    /// Restores an entry at startup.
    pub(crate) fn restore(&self, agent: &AgentId, last_seen: i64, hw: u64, status: Option<&Batch>) {
        self.touch(agent, UnixMillis::from_millis(last_seen), hw);
        if let Some(b) = status {
            self.apply_wg(b);
        }
    }

    /// Forgets an agent (after its data was deleted).
    pub(crate) fn remove(&self, agent: &AgentId) {
        self.inner
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(agent);
    }

    /// A snapshot of every agent, presence and ages computed for the current time.
    #[must_use]
    pub fn snapshot(&self) -> StatusSnapshot {
        self.snapshot_at(UnixMillis::now())
    }

    /// A snapshot with presence and ages computed for time `now`.
    #[must_use]
    pub fn snapshot_at(&self, now: UnixMillis) -> StatusSnapshot {
        let map = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let mut agents: Vec<AgentStatus> = map
            .iter()
            .map(|(id, e)| self.agent_status(id, e, now.as_millis()))
            .collect();
        drop(map);
        agents.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        StatusSnapshot {
            at_ms: now.as_millis(),
            agents,
        }
    }

    /// The status of one agent at time `now`, if it has ever been seen.
    #[must_use]
    pub fn agent_at(&self, agent: &AgentId, now: UnixMillis) -> Option<AgentStatus> {
        let map = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        map.get(agent)
            .map(|e| self.agent_status(agent, e, now.as_millis()))
    }

    /// The presence of one agent now (`None`: never seen).
    #[must_use]
    pub fn presence(&self, agent: &AgentId) -> Option<Presence> {
        let map = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        map.get(agent)
            .map(|e| self.presence_of(e.last_seen, UnixMillis::now().as_millis()))
    }

    fn presence_of(&self, last_seen: i64, now: i64) -> Presence {
        let silent = u128::try_from(now.saturating_sub(last_seen)).unwrap_or(0);
        if silent > self.config.offline_after.as_millis() {
            Presence::Offline
        } else if silent > self.config.stale_after.as_millis() {
            Presence::Stale
        } else {
            Presence::Online
        }
    }

    #[allow(
        clippy::cast_precision_loss,
        reason = "ages in seconds from millisecond differences, far below 2^53"
    )]
    fn agent_status(&self, id: &AgentId, e: &AgentEntry, now: i64) -> AgentStatus {
        let timeout =
            i64::try_from(self.config.peer_handshake_timeout.as_millis()).unwrap_or(i64::MAX);
        AgentStatus {
            agent_id: id.as_str().to_owned(),
            presence: self.presence_of(e.last_seen, now),
            last_seen_ms: e.last_seen,
            high_water: e.high_water,
            status_time_ms: e.status_time,
            interfaces: e
                .interfaces
                .iter()
                .map(|(name, i)| InterfaceStatus {
                    name: name.clone(),
                    public_key: i.public_key.map(|k| k.to_string()),
                    listen_port: i.listen_port,
                    managed: i.managed.clone(),
                    peers: i
                        .peers
                        .iter()
                        .map(|(k, p)| {
                            let age_ms = p.last_handshake.map(|h| now.saturating_sub(h).max(0));
                            PeerStatus {
                                public_key: k.to_string(),
                                endpoint: p.endpoint.clone(),
                                allowed_ips: p.allowed_ips.clone(),
                                last_handshake_ms: p.last_handshake,
                                handshake_age_s: age_ms.map(|a| a as f64 / 1000.0),
                                online: age_ms.is_some_and(|a| a <= timeout),
                                rx_bytes: p.rx,
                                tx_bytes: p.tx,
                                rx_rate_bps: p.rx_rate,
                                tx_rate_bps: p.tx_rate,
                                counter_resets: p.resets,
                                persistent_keepalive_s: p.keepalive,
                                has_preshared_key: p.psk,
                            }
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

fn iface(d: &WgDevice, peers: BTreeMap<WgPublicKey, PeerEntry>) -> IfaceEntry {
    IfaceEntry {
        public_key: d.public_key,
        listen_port: d.listen_port,
        peers,
        managed: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sentra_core::{Labels, MetricName, Sample, Seq, Value};

    fn sample(name: &str, labels: &[(&str, &str)], v: f64) -> Sample {
        Sample::new(
            MetricName::new(name).unwrap(),
            Labels::from_pairs(labels.iter().copied()).unwrap(),
            UnixMillis::from_millis(1_700_000_000_000),
            Value::Gauge(v),
        )
    }

    #[test]
    fn the_applier_report_is_shown_per_interface() {
        let cache = StatusCache::new(PresenceConfig::default());
        let agent = AgentId::new("gw-1".to_owned()).unwrap();
        let mut b = Batch::new(
            agent.clone(),
            Seq::new(1).unwrap(),
            UnixMillis::from_millis(1_700_000_000_000),
        );
        for name in ["wg0", "wg1"] {
            b.wg_devices
                .push(WgDevice::new(name, 3).with_listen_port(51820));
        }
        let i: &[(&str, &str)] = &[("interface", "wg0")];
        b.samples = vec![
            sample("sentra_wg_desired_revision", i, 7.0),
            sample("sentra_wg_applied_revision", i, 6.0),
            sample("sentra_wg_in_sync", i, 0.0),
            sample("sentra_wg_observe_only", i, 1.0),
            sample("sentra_wg_drift_peers", i, 1.0),
            sample(
                "sentra_wg_drift_peer",
                &[
                    ("interface", "wg0"),
                    ("peer", "AAA="),
                    ("kind", "unexpected"),
                ],
                1.0,
            ),
            sample("sentra_agent_unrelated", i, 5.0),
        ];
        cache.apply_wg(&b);
        let snap = cache.snapshot();
        let ifaces = &snap.agents[0].interfaces;
        let m = ifaces[0].managed.clone().expect("wg0 is managed");
        assert_eq!(
            (
                m.desired_version,
                m.applied_version,
                m.in_sync,
                m.observe_only
            ),
            (7, 6, false, true)
        );
        assert_eq!(m.drift_peers, 1);
        assert_eq!(
            m.drift,
            vec![PeerNote {
                public_key: "AAA=".into(),
                note: "unexpected".into()
            }]
        );
        assert_eq!(ifaces[1].managed, None, "wg1 is not declared");
        let json = serde_json::to_value(&snap).unwrap();
        assert_eq!(
            json["agents"][0]["interfaces"][0]["managed"]["applied_version"],
            6
        );
    }

    #[test]
    fn rates_and_resets() {
        assert_eq!(counter_rate(1000, 3000, 2000), (Some(1000.0), false));
        assert_eq!(counter_rate(5000, 500, 1000), (Some(500.0), true));
        assert_eq!(counter_rate(5, 6, 0), (None, false));
    }
}
