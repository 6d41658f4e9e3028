//! The peer applier: fetch the peers an operator declared for this agent's interfaces
//! (`FetchDesiredState`) and make the kernel match with `sentra-wg`'s minimal diff.
//!
//! * Only listed interfaces are managed; a listed interface's peers become exactly the
//!   declared ones (others are removed). Device attributes (private key, port) are never
//!   touched, and preshared keys are not managed (the wire format carries none).
//! * The agent remembers the revision it applied and sends it as `known_revision`, so an
//!   unchanged state costs one small round trip. A revision is remembered only after every
//!   interface was applied; a failure is retried at the next interval.
//! * Where WireGuard is unavailable the applier skips quietly (the collector already said
//!   why, once); a declared interface that does not exist is logged once per revision.

use std::net::SocketAddr;

use prost::Message as _;
use sentra_core::{Method, Nonce, Seq, UnixMillis, proto};
use sentra_wg::{AllowedIp, DeviceConfig, Key, PeerConfig};

use crate::ship::{Ingest, KeyState, current};
use crate::wireguard::WgCollector;

/// Converts one declared interface to `sentra-wg`'s desired configuration.
///
/// # Errors
///
/// A message naming the bad field (a key that is not 32 bytes, a bad endpoint or prefix).
pub fn desired_config(iface: &proto::DesiredInterface) -> Result<DeviceConfig, String> {
    let mut cfg = DeviceConfig::new();
    for (i, p) in iface.peers.iter().enumerate() {
        let bytes: [u8; 32] = p
            .public_key
            .as_slice()
            .try_into()
            .map_err(|_| format!("peers[{i}].public_key is {} bytes", p.public_key.len()))?;
        let mut peer = PeerConfig::new(Key::from_bytes(bytes));
        if !p.endpoint.is_empty() {
            let ep: SocketAddr = p
                .endpoint
                .parse()
                .map_err(|_| format!("peers[{i}].endpoint {:?} is not ip:port", p.endpoint))?;
            peer = peer.with_endpoint(ep);
        }
        for a in &p.allowed_ips {
            let ip: AllowedIp = a
                .parse()
                .map_err(|_| format!("peers[{i}].allowed_ips {a:?} is not a prefix"))?;
            peer = peer.with_allowed_ip(ip);
        }
        let ka = u16::try_from(p.persistent_keepalive_s)
            .map_err(|_| format!("peers[{i}].persistent_keepalive_s too large"))?;
        if ka != 0 {
            peer = peer.with_keepalive(ka);
        }
        cfg.peers.push(peer);
    }
    Ok(cfg)
}

/// Applier state between rounds.
#[derive(Debug, Default)]
pub(crate) struct Applier {
    applied_revision: u64,
    unimplemented_logged: bool,
}

impl Applier {
    /// One round: fetch, and apply if changed.
    pub(crate) async fn round(
        &mut self,
        ingest: &dyn Ingest,
        creds: &KeyState,
        wg: &tokio::sync::Mutex<WgCollector>,
    ) {
        let creds = current(creds);
        let query = proto::DesiredStateQuery {
            agent_id: creds.agent_id().as_str().to_owned(),
            known_revision: self.applied_revision,
        };
        let envelope = creds.signer().sign(
            Method::FetchDesiredState,
            Seq::FIRST,
            UnixMillis::now(),
            Nonce::random(),
            query.encode_to_vec().into(),
        );
        let state = match ingest.fetch_desired_state(envelope).await {
            Ok(s) => s,
            Err(e) if e.unimplemented => {
                if !self.unimplemented_logged {
                    tracing::info!(
                        "the server manages no peers (FetchDesiredState unimplemented); applier idle"
                    );
                    self.unimplemented_logged = true;
                }
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "fetching desired peers failed; retrying next interval");
                return;
            }
        };
        if state.unchanged || (state.revision == self.applied_revision && state.revision != 0) {
            return;
        }
        // The netlink client is shared with the WireGuard collector: hold the lock only to
        // get (or connect) it, not across the applying.
        let client = match wg.lock().await.client().await {
            Ok(c) => c.clone(),
            Err(e) => {
                tracing::debug!(
                    reason = e.reason(),
                    "desired peers not applied: WireGuard unavailable"
                );
                return;
            }
        };
        let mut all_ok = true;
        for iface in &state.interfaces {
            let cfg = match desired_config(iface) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(interface = %iface.name, revision = state.revision, error = %e, "desired state is invalid; interface left unchanged");
                    continue;
                }
            };
            match client.apply(iface.name.as_str(), &cfg).await {
                Ok(r) if r.messages == 0 => {
                    tracing::debug!(interface = %iface.name, "peers already as declared");
                }
                Ok(r) => tracing::info!(
                    interface = %iface.name,
                    revision = state.revision,
                    added = r.added,
                    updated = r.updated,
                    removed = r.removed,
                    "applied declared peers"
                ),
                Err(e) if e.is_unavailable() => {
                    tracing::debug!(error = %e, "desired peers not applied: WireGuard unavailable");
                    return;
                }
                Err(e) if e.is_no_device() => {
                    tracing::warn!(interface = %iface.name, revision = state.revision, error = %e, "declared interface does not exist here; skipped for this revision");
                }
                Err(e) => {
                    all_ok = false;
                    tracing::warn!(interface = %iface.name, error = %e, "applying declared peers failed; retrying next interval");
                }
            }
        }
        if all_ok {
            self.applied_revision = state.revision;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_declared_peers() {
        let iface = proto::DesiredInterface {
            name: "wg0".into(),
            peers: vec![proto::DesiredPeer {
                public_key: vec![1; 32],
                endpoint: "[2001:db8::1]:51820".into(),
                allowed_ips: vec!["10.0.0.2/32".into(), "fd00::/64".into()],
                persistent_keepalive_s: 25,
            }],
        };
        let cfg = desired_config(&iface).expect("valid");
        assert_eq!(cfg.peers.len(), 1);
        let p = &cfg.peers[0];
        assert_eq!(p.public_key, Key::from_bytes([1; 32]));
        assert_eq!(
            p.endpoint.map(|e| e.to_string()).as_deref(),
            Some("[2001:db8::1]:51820")
        );
        assert_eq!(p.allowed_ips.len(), 2);
        assert_eq!(p.persistent_keepalive, 25);
        assert!(
            cfg.private_key.is_none() && cfg.listen_port.is_none(),
            "device attributes untouched"
        );
    }

    #[test]
    fn rejects_bad_fields() {
        let mut iface = proto::DesiredInterface {
            name: "wg0".into(),
            peers: vec![proto::DesiredPeer {
                public_key: vec![1; 31],
                ..Default::default()
            }],
        };
        assert!(desired_config(&iface).unwrap_err().contains("public_key"));
        iface.peers[0].public_key = vec![1; 32];
        iface.peers[0].endpoint = "nope".into();
        assert!(desired_config(&iface).unwrap_err().contains("endpoint"));
        iface.peers[0].endpoint.clear();
        iface.peers[0].allowed_ips = vec!["10.0.0.0/40".into()];
        assert!(desired_config(&iface).unwrap_err().contains("allowed_ips"));
        iface.peers[0].allowed_ips.clear();
        iface.peers[0].persistent_keepalive_s = 70_000;
        assert!(desired_config(&iface).is_err());
    }
}
