//! The WireGuard collector (via `sentra-wg`) and the conversion of `sentra-wg`'s kernel
//! model into `sentra-core`'s wire-side status types.
//!
//! Conversion lives here, not in either library, because `sentra-wg` depends on no other
//! sentra crate. It never copies a private or preshared key: only whether a preshared key
//! is set.

use std::time::UNIX_EPOCH;

use sentra_core::{IpPrefix, UnixMillis, WgDevice, WgPeer, WgPublicKey};

/// Why WireGuard could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WgUnavailable {
    /// The kernel has no WireGuard (module missing).
    NotAvailable(String),
    /// The process lacks `CAP_NET_ADMIN`.
    PermissionDenied(String),
    /// Another error (socket, malformed reply, interrupted dumps).
    Failed(String),
}

impl WgUnavailable {
    /// Human-readable reason.
    #[must_use]
    pub fn reason(&self) -> &str {
        match self {
            Self::NotAvailable(r) | Self::PermissionDenied(r) | Self::Failed(r) => r,
        }
    }

    /// Short machine-readable kind: `not_available`, `permission_denied` or `failed`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotAvailable(_) => "not_available",
            Self::PermissionDenied(_) => "permission_denied",
            Self::Failed(_) => "failed",
        }
    }

    fn from_wg(e: &sentra_wg::Error) -> Self {
        match e {
            sentra_wg::Error::NotAvailable => Self::NotAvailable(e.to_string()),
            sentra_wg::Error::PermissionDenied { .. } => Self::PermissionDenied(e.to_string()),
            other => Self::Failed(other.to_string()),
        }
    }
}

/// Converts one device read from the kernel into its wire status.
///
/// # Errors
///
/// A message if a field cannot be represented (an interface name the wire type rejects);
/// the collector then skips that device and counts it.
pub fn convert_device(d: &sentra_wg::Device) -> Result<WgDevice, String> {
    let mut peers = Vec::with_capacity(d.peers.len());
    for p in &d.peers {
        peers.push(convert_peer(p)?);
    }
    let dev = WgDevice::new(d.name.clone(), d.ifindex)
        .with_public_key(d.public_key.map(|k| WgPublicKey::from_bytes(*k.as_bytes())))
        .with_listen_port(d.listen_port)
        .with_fwmark(d.fwmark)
        .with_peers(peers);
    // Round-trip through the wire validation so what we store is what the server accepts.
    WgDevice::try_from(sentra_core::proto::WgDevice::from(&dev))
        .map_err(|e| format!("device {}: {e}", d.name))
}

fn convert_peer(p: &sentra_wg::Peer) -> Result<WgPeer, String> {
    let allowed_ips = p
        .allowed_ips
        .iter()
        .map(|a| IpPrefix::new(a.addr(), a.cidr()).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let last_handshake = p.last_handshake.and_then(|t| {
        let ms = t.duration_since(UNIX_EPOCH).ok()?.as_millis();
        let ms = i64::try_from(ms).ok()?;
        (ms > 0).then(|| UnixMillis::from_millis(ms))
    });
    Ok(
        WgPeer::new(WgPublicKey::from_bytes(*p.public_key.as_bytes()))
            .with_endpoint(p.endpoint)
            .with_allowed_ips(allowed_ips)
            .with_last_handshake(last_handshake)
            .with_transfer(p.rx_bytes, p.tx_bytes)
            .with_persistent_keepalive_s(
                (p.persistent_keepalive != 0).then_some(p.persistent_keepalive),
            )
            .with_preshared_key(p.preshared_key.is_some()),
    )
}

/// Result of one WireGuard collection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WgCollection {
    /// Devices read (possibly none: WireGuard present but no interface).
    Devices {
        /// The devices.
        devices: Vec<WgDevice>,
        /// Devices that could not be converted, with the reason.
        skipped: Vec<String>,
    },
    /// WireGuard could not be read.
    Unavailable(WgUnavailable),
}

/// Reads WireGuard devices, connecting lazily and reconnecting after failures.
///
/// It reports availability changes to the log once per change (not once per interval), so
/// a machine without WireGuard logs one line at start-up and then stays quiet.
#[derive(Debug, Default)]
pub struct WgCollector {
    client: Option<sentra_wg::Client>,
    last_state: Option<Result<(), WgUnavailable>>,
}

impl WgCollector {
    /// A collector that has not connected yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The client, connecting first if needed (for the peer applier).
    pub(crate) async fn client(&mut self) -> Result<&sentra_wg::Client, WgUnavailable> {
        if self.client.is_none() {
            let c = sentra_wg::Client::connect()
                .await
                .map_err(|e| WgUnavailable::from_wg(&e))?;
            self.client = Some(c);
        }
        Ok(self.client.as_ref().expect("just set"))
    }

    /// Reads every device. Must run inside a tokio runtime.
    pub async fn collect(&mut self) -> WgCollection {
        let result = match self.client().await {
            Ok(c) => c.devices().await.map_err(|e| WgUnavailable::from_wg(&e)),
            Err(e) => Err(e),
        };
        let out = match result {
            Ok(devs) => {
                let mut devices = Vec::with_capacity(devs.len());
                let mut skipped = Vec::new();
                for d in &devs {
                    match convert_device(d) {
                        Ok(w) => devices.push(w),
                        Err(e) => skipped.push(e),
                    }
                }
                for s in &skipped {
                    tracing::warn!(reason = %s, "skipping a WireGuard device that cannot be reported");
                }
                WgCollection::Devices { devices, skipped }
            }
            Err(e) => {
                if matches!(e, WgUnavailable::Failed(_)) {
                    // A broken socket is not a reason to keep it: reconnect next time.
                    self.client = None;
                }
                WgCollection::Unavailable(e)
            }
        };
        self.note_state(&out);
        out
    }

    fn note_state(&mut self, out: &WgCollection) {
        let state = match out {
            WgCollection::Devices { .. } => Ok(()),
            WgCollection::Unavailable(e) => Err(e.clone()),
        };
        if self.last_state.as_ref() == Some(&state) {
            return;
        }
        match (&self.last_state, &state) {
            (_, Err(e)) => tracing::warn!(
                kind = e.kind(),
                reason = e.reason(),
                "WireGuard cannot be read; the agent keeps running and reports host metrics only (said once until this changes)"
            ),
            (Some(Err(_)), Ok(())) => tracing::info!("WireGuard can be read again"),
            (None, Ok(())) => tracing::info!("WireGuard collector ready"),
            (Some(Ok(())), Ok(())) => {}
        }
        self.last_state = Some(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn key(b: u8) -> sentra_wg::Key {
        sentra_wg::Key::from_bytes([b; 32])
    }

    #[test]
    fn converts_every_public_field_and_no_secret() {
        let mut d = sentra_wg::Device::default();
        d.name = "wg0".into();
        d.ifindex = 7;
        d.public_key = Some(key(1));
        d.private_key = Some(sentra_wg::PrivateKey::from_bytes([9; 32]));
        d.listen_port = 51820;
        d.fwmark = 0x10;
        let mut p = sentra_wg::Peer::new(key(2));
        p.endpoint = Some("192.0.2.1:51820".parse().expect("addr"));
        p.allowed_ips = vec![
            "10.0.0.2/32".parse().expect("ip"),
            "fd00::/64".parse().expect("ip"),
        ];
        p.last_handshake = Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
        p.rx_bytes = 10;
        p.tx_bytes = 20;
        p.persistent_keepalive = 25;
        p.preshared_key = Some(sentra_wg::PresharedKey::from_bytes([8; 32]));
        let mut never = sentra_wg::Peer::new(key(3));
        never.last_handshake = Some(SystemTime::UNIX_EPOCH);
        d.peers = vec![p, never];

        let w = convert_device(&d).expect("convert");
        assert_eq!(w.name, "wg0");
        assert_eq!(w.ifindex, 7);
        assert_eq!(w.public_key, Some(WgPublicKey::from_bytes([1; 32])));
        assert_eq!((w.listen_port, w.fwmark), (51820, 0x10));
        let p = &w.peers[0];
        assert_eq!(
            p.endpoint.map(|e| e.to_string()).as_deref(),
            Some("192.0.2.1:51820")
        );
        assert_eq!(
            p.allowed_ips
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["10.0.0.2/32", "fd00::/64"]
        );
        assert_eq!(
            p.last_handshake,
            Some(UnixMillis::from_millis(1_700_000_000_123))
        );
        assert_eq!((p.rx_bytes, p.tx_bytes), (10, 20));
        assert_eq!(p.persistent_keepalive_s, Some(25));
        assert!(p.has_preshared_key);
        let n = &w.peers[1];
        assert_eq!(n.last_handshake, None, "epoch means never");
        assert_eq!(n.persistent_keepalive_s, None);
        assert!(!n.has_preshared_key);
        let wire = sentra_core::proto::WgDevice::from(&w);
        let bytes = prost::Message::encode_to_vec(&wire);
        assert!(
            !bytes.windows(32).any(|x| x == [9; 32] || x == [8; 32]),
            "no private or preshared key on the wire"
        );
    }

    #[test]
    fn rejects_names_the_wire_refuses() {
        let mut d = sentra_wg::Device::default();
        d.name = "this-name-is-far-too-long".into();
        assert!(convert_device(&d).is_err());
    }

    /// WireGuard interfaces of this network namespace, as sysfs lists them.
    fn wireguard_interfaces_in_sysfs() -> Vec<String> {
        let mut out = Vec::new();
        let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
            return out;
        };
        for e in dir.flatten() {
            let uevent = std::fs::read_to_string(e.path().join("uevent")).unwrap_or_default();
            if uevent.lines().any(|l| l == "DEVTYPE=wireguard") {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        out.sort();
        out
    }

    /// Whether this process has CAP_NET_ADMIN (bit 12 of the effective set).
    fn has_cap_net_admin() -> bool {
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .expect("CapEff")
            .trim();
        u64::from_str_radix(hex, 16).expect("hex") & (1 << 12) != 0
    }

    fn outcome(c: &WgCollection) -> Result<Vec<String>, &'static str> {
        match c {
            WgCollection::Devices { devices, .. } => {
                let mut names: Vec<String> = devices.iter().map(|d| d.name.clone()).collect();
                names.sort();
                Ok(names)
            }
            WgCollection::Unavailable(e) => Err(e.kind()),
        }
    }

    #[tokio::test]
    async fn absent_or_forbidden_wireguard_is_a_value_not_an_error() {
        // On this machine WireGuard is either missing or not permitted (or present in a
        // privileged CI); all three must produce a collection that agrees with what the
        // kernel shows elsewhere, never a panic.
        let mut c = WgCollector::new();
        let first = c.collect().await;
        let in_sysfs = wireguard_interfaces_in_sysfs();
        match &first {
            WgCollection::Devices { devices, skipped } => {
                assert_eq!(
                    devices.len() + skipped.len(),
                    in_sysfs.len(),
                    "every WireGuard interface sysfs lists is read: {in_sysfs:?}"
                );
                for d in devices {
                    assert!(in_sysfs.contains(&d.name), "{} not in {in_sysfs:?}", d.name);
                }
            }
            WgCollection::Unavailable(e) => {
                assert!(!e.reason().is_empty());
                match e {
                    WgUnavailable::NotAvailable(_) => {
                        assert!(
                            in_sysfs.is_empty(),
                            "not available, yet sysfs lists WireGuard interfaces {in_sysfs:?}"
                        );
                        assert!(
                            !std::path::Path::new("/sys/module/wireguard").exists(),
                            "not available, yet the wireguard module is loaded"
                        );
                    }
                    WgUnavailable::PermissionDenied(_) => assert!(
                        !has_cap_net_admin(),
                        "permission denied although the process has CAP_NET_ADMIN"
                    ),
                    WgUnavailable::Failed(_) => {}
                }
            }
        }
        let state = first_state(&first);
        assert_eq!(c.last_state, Some(state.clone()), "the state is remembered");
        // A second call gives the same answer and does not change state (so it does not log
        // again).
        let second = c.collect().await;
        assert_eq!(outcome(&second), outcome(&first));
        assert_eq!(c.last_state, Some(state));
    }

    fn first_state(c: &WgCollection) -> Result<(), WgUnavailable> {
        match c {
            WgCollection::Devices { .. } => Ok(()),
            WgCollection::Unavailable(e) => Err(e.clone()),
        }
    }
}
