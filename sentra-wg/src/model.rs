//! The typed WireGuard model: what a device is ([`Device`], [`Peer`]), what it should be
//! ([`DeviceConfig`], [`PeerConfig`]) and the low-level change set sent to the kernel
//! ([`DeviceUpdate`], [`PeerUpdate`]).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::key::{Key, PresharedKey, PrivateKey};

/// An allowed-IP prefix, always normalised: host bits are cleared on construction, exactly as
/// the kernel does on read-back, so two spellings of one prefix compare equal.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllowedIp {
    addr: IpAddr,
    cidr: u8,
}

impl AllowedIp {
    /// Builds a prefix, masking host bits. Fails if `cidr` exceeds 32 (IPv4) or 128 (IPv6).
    pub fn new(addr: IpAddr, cidr: u8) -> Result<Self> {
        match addr {
            IpAddr::V4(a) if cidr <= 32 => {
                let mask = if cidr == 0 {
                    0
                } else {
                    u32::MAX << (32 - cidr)
                };
                Ok(Self {
                    addr: IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask)),
                    cidr,
                })
            }
            IpAddr::V6(a) if cidr <= 128 => {
                let mask = if cidr == 0 {
                    0
                } else {
                    u128::MAX << (128 - cidr)
                };
                Ok(Self {
                    addr: IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask)),
                    cidr,
                })
            }
            _ => Err(Error::InvalidArgument(format!(
                "prefix length /{cidr} too long for {addr}"
            ))),
        }
    }
    /// A single-address prefix (/32 or /128).
    pub fn host(addr: IpAddr) -> Self {
        let cidr = if addr.is_ipv4() { 32 } else { 128 };
        Self { addr, cidr }
    }
    /// The network address (host bits zero).
    pub const fn addr(&self) -> IpAddr {
        self.addr
    }
    /// The prefix length.
    pub const fn cidr(&self) -> u8 {
        self.cidr
    }
}

impl fmt::Display for AllowedIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.cidr)
    }
}

impl fmt::Debug for AllowedIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for AllowedIp {
    type Err = Error;
    /// Parses `addr/len` or a bare address (meaning a host prefix).
    fn from_str(s: &str) -> Result<Self> {
        let err = || Error::Parse {
            what: "allowed IP prefix",
            input: s.to_owned(),
        };
        let s = s.trim();
        match s.split_once('/') {
            Some((a, l)) => {
                let addr: IpAddr = a.parse().map_err(|_| err())?;
                let cidr: u8 = l.parse().map_err(|_| err())?;
                Self::new(addr, cidr)
            }
            None => s.parse().map(Self::host).map_err(|_| err()),
        }
    }
}

/// A WireGuard device as read from the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Device {
    /// Interface index (per network namespace; reused after deletion).
    pub ifindex: u32,
    /// Interface name.
    pub name: String,
    /// The private key, if one is set. Redacted in `Debug`, zeroized on drop.
    pub private_key: Option<PrivateKey>,
    /// The public key derived by the kernel, if a private key is set.
    pub public_key: Option<Key>,
    /// UDP listen port (0 before the device has been brought up with a random port).
    pub listen_port: u16,
    /// Firewall mark for outgoing packets (0 = off).
    pub fwmark: u32,
    /// Peers, in kernel order (continuations already coalesced).
    pub peers: Vec<Peer>,
}

/// A peer as read from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Peer {
    /// The peer's public key.
    pub public_key: Key,
    /// The preshared key, if one is set (the kernel reports all-zero as "none").
    pub preshared_key: Option<PresharedKey>,
    /// The current endpoint, if known.
    pub endpoint: Option<SocketAddr>,
    /// Persistent keepalive interval in seconds (0 = off).
    pub persistent_keepalive: u16,
    /// Wall-clock time of the last completed handshake, `None` if never.
    pub last_handshake: Option<SystemTime>,
    /// Bytes received from this peer (resets when the peer is re-created).
    pub rx_bytes: u64,
    /// Bytes sent to this peer (resets when the peer is re-created).
    pub tx_bytes: u64,
    /// Allowed IPs, normalised, in kernel order.
    pub allowed_ips: Vec<AllowedIp>,
    /// WireGuard protocol version (1).
    pub protocol_version: u32,
}

impl Peer {
    /// A peer with only a public key set.
    pub fn new(public_key: Key) -> Self {
        Self {
            public_key,
            preshared_key: None,
            endpoint: None,
            persistent_keepalive: 0,
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
            allowed_ips: Vec::new(),
            protocol_version: 0,
        }
    }

    /// The configuration part of this peer (drops statistics).
    pub fn to_config(&self) -> PeerConfig {
        PeerConfig {
            public_key: self.public_key,
            preshared_key: self.preshared_key.clone(),
            endpoint: self.endpoint,
            persistent_keepalive: self.persistent_keepalive,
            allowed_ips: self.allowed_ips.clone(),
        }
    }
}

impl Device {
    /// The desired-state view of this device (everything configurable, no statistics).
    pub fn to_config(&self) -> DeviceConfig {
        DeviceConfig {
            private_key: self.private_key.clone(),
            listen_port: Some(self.listen_port),
            fwmark: Some(self.fwmark),
            peers: self.peers.iter().map(Peer::to_config).collect(),
        }
    }
}

/// Desired state of a device, for [`crate::diff()`] and `apply`.
///
/// `None` for a device attribute means "leave it as it is". The peer list is exact: peers on
/// the device that are not listed here are removed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DeviceConfig {
    /// Private key to set (`None` = leave unchanged).
    pub private_key: Option<PrivateKey>,
    /// Listen port to set (`None` = leave unchanged, `Some(0)` = random).
    pub listen_port: Option<u16>,
    /// Firewall mark to set (`None` = leave unchanged, `Some(0)` = off).
    pub fwmark: Option<u32>,
    /// The complete desired peer list.
    pub peers: Vec<PeerConfig>,
}

impl DeviceConfig {
    /// An empty configuration: no peers, device attributes untouched.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Desired state of one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerConfig {
    /// The peer's public key.
    pub public_key: Key,
    /// Preshared key (`None` = no preshared key).
    pub preshared_key: Option<PresharedKey>,
    /// Endpoint (`None` = leave whatever the kernel learned; WireGuard cannot unset one).
    pub endpoint: Option<SocketAddr>,
    /// Persistent keepalive in seconds (0 = off).
    pub persistent_keepalive: u16,
    /// Exact set of allowed IPs (order does not matter).
    pub allowed_ips: Vec<AllowedIp>,
}

impl PeerConfig {
    /// A peer with no allowed IPs, no endpoint, no keepalive, no preshared key.
    pub fn new(public_key: Key) -> Self {
        Self {
            public_key,
            preshared_key: None,
            endpoint: None,
            persistent_keepalive: 0,
            allowed_ips: Vec::new(),
        }
    }
    /// Adds an allowed IP (builder style).
    #[must_use]
    pub fn with_allowed_ip(mut self, ip: AllowedIp) -> Self {
        self.allowed_ips.push(ip);
        self
    }
    /// Sets the endpoint (builder style).
    #[must_use]
    pub fn with_endpoint(mut self, endpoint: SocketAddr) -> Self {
        self.endpoint = Some(endpoint);
        self
    }
    /// Sets the persistent keepalive (builder style).
    #[must_use]
    pub fn with_keepalive(mut self, seconds: u16) -> Self {
        self.persistent_keepalive = seconds;
        self
    }
    /// Sets the preshared key (builder style).
    #[must_use]
    pub fn with_preshared_key(mut self, psk: PresharedKey) -> Self {
        self.preshared_key = Some(psk);
        self
    }
}

/// The device to address in a request: by name or by index (the kernel accepts exactly one).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeviceRef {
    /// By interface name (at most 15 bytes).
    Name(String),
    /// By interface index.
    Index(u32),
}

impl DeviceRef {
    /// Validates the name length (IFNAMSIZ - 1 = 15 bytes, no NUL, not empty).
    pub(crate) fn validate(&self) -> Result<()> {
        match self {
            Self::Name(n)
                if n.is_empty() || n.len() > 15 || n.contains('\0') || n.contains('/') =>
            {
                Err(Error::InvalidArgument(format!(
                    "invalid interface name {n:?} (1-15 bytes)"
                )))
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for DeviceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(n) => f.write_str(n),
            Self::Index(i) => write!(f, "#{i}"),
        }
    }
}

impl From<&str> for DeviceRef {
    fn from(s: &str) -> Self {
        Self::Name(s.to_owned())
    }
}
impl From<String> for DeviceRef {
    fn from(s: String) -> Self {
        Self::Name(s)
    }
}
impl From<u32> for DeviceRef {
    fn from(i: u32) -> Self {
        Self::Index(i)
    }
}

/// One `WG_CMD_SET_DEVICE` change set (before it is split into messages).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DeviceUpdate {
    /// New private key (all-zero removes the identity).
    pub private_key: Option<PrivateKey>,
    /// New listen port.
    pub listen_port: Option<u16>,
    /// New firewall mark.
    pub fwmark: Option<u32>,
    /// `WGDEVICE_F_REPLACE_PEERS`: drop every peer not listed (tears down all sessions).
    pub replace_peers: bool,
    /// Per-peer changes, applied in order.
    pub peers: Vec<PeerUpdate>,
}

impl DeviceUpdate {
    /// An update that changes nothing.
    pub fn new() -> Self {
        Self::default()
    }
    /// `true` if sending this would change nothing.
    pub fn is_empty(&self) -> bool {
        self.private_key.is_none()
            && self.listen_port.is_none()
            && self.fwmark.is_none()
            && !self.replace_peers
            && self.peers.is_empty()
    }
}

/// A change to one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerUpdate {
    /// Which peer.
    pub public_key: Key,
    /// `WGPEER_F_REMOVE_ME`: remove the peer (other fields are ignored).
    pub remove: bool,
    /// `WGPEER_F_UPDATE_ONLY`: do nothing if the peer does not exist.
    pub update_only: bool,
    /// `WGPEER_F_REPLACE_ALLOWEDIPS`: replace the allowed IPs with [`Self::allowed_ips`].
    pub replace_allowed_ips: bool,
    /// New preshared key (`Some(all-zero)` removes it).
    pub preshared_key: Option<PresharedKey>,
    /// New endpoint.
    pub endpoint: Option<SocketAddr>,
    /// New persistent keepalive (0 = off).
    pub persistent_keepalive: Option<u16>,
    /// Allowed IPs to add (or the full list with `replace_allowed_ips`).
    pub allowed_ips: Vec<AllowedIp>,
}

impl PeerUpdate {
    /// An update for `public_key` that changes nothing yet (creates the peer if missing).
    pub fn new(public_key: Key) -> Self {
        Self {
            public_key,
            remove: false,
            update_only: false,
            replace_allowed_ips: false,
            preshared_key: None,
            endpoint: None,
            persistent_keepalive: None,
            allowed_ips: Vec::new(),
        }
    }
    /// Removes the peer.
    pub fn remove(public_key: Key) -> Self {
        Self {
            remove: true,
            ..Self::new(public_key)
        }
    }
    /// Creates or updates a peer to exactly `config` (allowed IPs replaced).
    pub fn from_config(config: &PeerConfig) -> Self {
        Self {
            replace_allowed_ips: true,
            preshared_key: Some(
                config
                    .preshared_key
                    .clone()
                    .unwrap_or(PresharedKey::from_bytes([0; 32])),
            ),
            endpoint: config.endpoint,
            persistent_keepalive: Some(config.persistent_keepalive),
            allowed_ips: config.allowed_ips.clone(),
            ..Self::new(config.public_key)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_normalised() {
        let a: AllowedIp = "10.1.2.3/24".parse().unwrap();
        assert_eq!(a.to_string(), "10.1.2.0/24");
        let b: AllowedIp = "fd00::1:2/64".parse().unwrap();
        assert_eq!(b.to_string(), "fd00::/64");
        assert_eq!("0.0.0.0/0".parse::<AllowedIp>().unwrap().cidr(), 0);
        assert_eq!("::/0".parse::<AllowedIp>().unwrap().to_string(), "::/0");
        assert_eq!(
            "10.0.0.1".parse::<AllowedIp>().unwrap().to_string(),
            "10.0.0.1/32"
        );
        assert!("10.0.0.0/33".parse::<AllowedIp>().is_err());
        assert!("fd00::/129".parse::<AllowedIp>().is_err());
        assert!("nonsense/3".parse::<AllowedIp>().is_err());
    }

    #[test]
    fn device_names_are_validated() {
        assert!(DeviceRef::from("wg0").validate().is_ok());
        assert!(DeviceRef::from("0123456789abcdef").validate().is_err());
        assert!(DeviceRef::from("").validate().is_err());
        assert!(DeviceRef::Index(0).validate().is_ok());
    }
}
