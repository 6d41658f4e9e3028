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
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct StatusSnapshot {
    /// The time presence and ages were computed for, Unix ms.
    pub at_ms: i64,
    /// Agents, ordered by id.
    pub agents: Vec<AgentStatus>,
}

/// The status of one agent.
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
}

/// The status of one WireGuard peer.
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
#[allow(clippy::cast_precision_loss)]
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
            e.interfaces.insert(d.name.clone(), iface(d, peers));
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

    #[allow(clippy::cast_precision_loss)]
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
    }
}

#[cfg(test)]
mod tests {
    use super::counter_rate;

    #[test]
    fn rates_and_resets() {
        assert_eq!(counter_rate(1000, 3000, 2000), (Some(1000.0), false));
        assert_eq!(counter_rate(5000, 500, 1000), (Some(500.0), true));
        assert_eq!(counter_rate(5, 6, 0), (None, false));
    }
}
