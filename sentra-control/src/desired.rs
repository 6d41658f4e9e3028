//! Desired peers: validation and normalisation.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
};

use sentra_core::{IpPrefix, proto};
use serde::{Deserialize, Serialize};

use crate::{Error, Result, SecretString, util};

/// Most peers accepted on one interface.
pub const MAX_PEERS_PER_INTERFACE: usize = 10_000;
/// Most allowed IPs accepted on one peer.
pub const MAX_ALLOWED_IPS_PER_PEER: usize = 1_024;

/// One peer as an operator declares it (the body of the admin endpoint).
//
// The schema's patterns describe a subset of what the server accepts (IPv4 only, no
// surrounding blanks): every value they allow is accepted, and IPv6 is in the docs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
#[cfg_attr(feature = "openapi", schema(example = json!({"public_key": "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=", "endpoint": "192.0.2.1:51820", "allowed_ips": ["10.0.0.2/32"], "persistent_keepalive_s": 25})))]
pub struct PeerSpec {
    /// Curve25519 public key, standard base64 (44 characters, as `wg` prints it).
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$")
    )]
    pub public_key: String,
    /// `ip:port` or `[ipv6]:port`; empty or absent for a peer without endpoint.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = r"^(|((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9]):(6553[0-5]|655[0-2][0-9]|65[0-4][0-9][0-9]|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))$"
        )
    )]
    pub endpoint: String,
    /// Allowed IPs as prefixes (`10.0.0.0/24`); a bare address means a host route, and
    /// host bits are cleared (`10.0.0.1/24` becomes `10.0.0.0/24`).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = allowed_ips_schema))]
    pub allowed_ips: Vec<String>,
    /// Persistent keepalive in seconds; 0 or absent means off.
    #[serde(default, deserialize_with = "util::integral")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 65535))]
    pub persistent_keepalive_s: u16,
}

impl PeerSpec {
    /// A peer with a public key and nothing else.
    #[must_use]
    pub fn new(public_key: impl Into<String>) -> Self {
        Self {
            public_key: public_key.into(),
            endpoint: String::new(),
            allowed_ips: Vec::new(),
            persistent_keepalive_s: 0,
        }
    }

    /// Sets the allowed IPs.
    #[must_use]
    pub fn with_allowed_ips<I: Into<String>>(mut self, ips: impl IntoIterator<Item = I>) -> Self {
        self.allowed_ips = ips.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the endpoint.
    #[must_use]
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = endpoint.into();
        self
    }
}

/// An IPv4 address with an optional prefix length.
#[cfg(feature = "openapi")]
const ALLOWED_IP_PATTERN: &str = r"^(((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(/(3[0-2]|[12]?[0-9]))?|(([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,7}:|([0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,5}(:[0-9a-fA-F]{1,4}){1,2}|([0-9a-fA-F]{1,4}:){1,4}(:[0-9a-fA-F]{1,4}){1,3}|([0-9a-fA-F]{1,4}:){1,3}(:[0-9a-fA-F]{1,4}){1,4}|([0-9a-fA-F]{1,4}:){1,2}(:[0-9a-fA-F]{1,4}){1,5}|[0-9a-fA-F]{1,4}:(:[0-9a-fA-F]{1,4}){1,6}|:((:[0-9a-fA-F]{1,4}){1,7}|:))(/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))?)$";

#[cfg(feature = "openapi")]
/// The OpenAPI schema of `allowed_ips`: IPv4 and IPv6 prefixes (IPv6 with an embedded IPv4
/// part is accepted too, though the pattern does not list it).
fn allowed_ips_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(ALLOWED_IP_PATTERN)),
        )
        .max_items(Some(MAX_ALLOWED_IPS_PER_PEER))
        .description(Some(
            "Allowed IPs as prefixes (IPv4 or IPv6); a bare address is a host route; host bits are cleared.",
        ))
        .build()
}

/// Validates an interface name like the kernel does (1–15 bytes, no `/`, whitespace or `:`).
///
/// # Errors
///
/// [`Error::Invalid`].
pub fn check_interface(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "interface",
            "1 to 15 printable ASCII characters without '/', ':' or whitespace",
        ))
    }
}

/// Validates and normalises a declaration: keys are 32 bytes, endpoints are socket
/// addresses, prefixes are normalised, sorted and de-duplicated. Two peers with the same
/// key, or an allowed IP claimed by two peers, is a [`Error::Conflict`] (WireGuard would
/// silently move the route to whichever peer comes last).
///
/// # Errors
///
/// [`Error::Invalid`] or [`Error::Conflict`].
pub fn normalise(peers: Vec<PeerSpec>) -> Result<Vec<PeerSpec>> {
    if peers.len() > MAX_PEERS_PER_INTERFACE {
        return Err(Error::invalid(
            "peers",
            format!("at most {MAX_PEERS_PER_INTERFACE} peers per interface"),
        ));
    }
    let mut keys = HashSet::new();
    let mut claimed: HashMap<IpPrefix, usize> = HashMap::new();
    let mut out = Vec::with_capacity(peers.len());
    for (i, peer) in peers.into_iter().enumerate() {
        let field = |f: &str| format!("peers[{i}].{f}");
        let key = util::b64_decode(peer.public_key.trim())
            .filter(|k| k.len() == 32)
            .ok_or_else(|| Error::invalid(field("public_key"), "must be 32 bytes, base64"))?;
        if !keys.insert(key.clone()) {
            return Err(Error::Conflict(format!(
                "peers[{i}]: public key declared twice on this interface"
            )));
        }
        let endpoint = peer.endpoint.trim();
        let endpoint = if endpoint.is_empty() {
            String::new()
        } else {
            endpoint
                .parse::<SocketAddr>()
                .map_err(|_| Error::invalid(field("endpoint"), "must be ip:port or [ipv6]:port"))?
                .to_string()
        };
        if peer.allowed_ips.len() > MAX_ALLOWED_IPS_PER_PEER {
            return Err(Error::invalid(
                field("allowed_ips"),
                format!("at most {MAX_ALLOWED_IPS_PER_PEER} entries"),
            ));
        }
        let mut prefixes = Vec::with_capacity(peer.allowed_ips.len());
        for (j, raw) in peer.allowed_ips.iter().enumerate() {
            let p = parse_prefix(raw.trim()).ok_or_else(|| {
                Error::invalid(field(&format!("allowed_ips[{j}]")), "not an IP prefix")
            })?;
            prefixes.push(p);
        }
        prefixes.sort();
        prefixes.dedup();
        for p in &prefixes {
            if let Some(other) = claimed.insert(*p, i) {
                return Err(Error::Conflict(format!(
                    "allowed IP {p} is claimed by peers[{other}] and peers[{i}]"
                )));
            }
        }
        out.push(PeerSpec {
            public_key: util::b64(&key),
            endpoint,
            allowed_ips: prefixes.iter().map(ToString::to_string).collect(),
            persistent_keepalive_s: peer.persistent_keepalive_s,
        });
    }
    Ok(out)
}

/// Parses `addr/len` or a bare address, clearing host bits.
fn parse_prefix(s: &str) -> Option<IpPrefix> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a.parse::<IpAddr>().ok()?, Some(l.parse::<u8>().ok()?)),
        None => (s.parse::<IpAddr>().ok()?, None),
    };
    let width = if addr.is_ipv4() { 32 } else { 128 };
    let len = len.unwrap_or(width);
    if len > width {
        return None;
    }
    let masked = match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    };
    IpPrefix::new(masked, len).ok()
}

/// The wire form of a declared peer, with its stored preshared key if it has one.
pub(crate) fn to_proto(peer: &PeerSpec, psk: Option<&SecretString>) -> proto::DesiredPeer {
    proto::DesiredPeer {
        public_key: util::b64_decode(&peer.public_key).unwrap_or_default(),
        endpoint: peer.endpoint.clone(),
        allowed_ips: peer.allowed_ips.clone(),
        persistent_keepalive_s: u32::from(peer.persistent_keepalive_s),
        // Stored as base64 of the 32 bytes (as `wg` prints it); the wire holds the bytes.
        preshared_key: psk
            .and_then(|k| util::b64_decode(k.expose_secret()))
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    const K2: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

    #[test]
    fn normalises_prefixes() {
        let out = normalise(vec![
            PeerSpec::new(K1)
                .with_allowed_ips(["10.0.0.7/24", "10.0.0.0/24", "fd00::1", "192.168.1.1"])
                .with_endpoint(" 192.0.2.1:51820 "),
        ])
        .unwrap();
        assert_eq!(
            out[0].allowed_ips,
            ["10.0.0.0/24", "192.168.1.1/32", "fd00::1/128"]
        );
        assert_eq!(out[0].endpoint, "192.0.2.1:51820");
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            PeerSpec::new("short"),
            PeerSpec::new(K1).with_allowed_ips(["10.0.0.0/33"]),
            PeerSpec::new(K1).with_allowed_ips(["nope"]),
            PeerSpec::new(K1).with_endpoint("example.com:1"),
        ] {
            assert!(matches!(normalise(vec![bad]), Err(Error::Invalid { .. })));
        }
    }

    #[test]
    fn conflicts() {
        let dup_ip = vec![
            PeerSpec::new(K1).with_allowed_ips(["10.0.0.1/24"]),
            PeerSpec::new(K2).with_allowed_ips(["10.0.0.0/24"]),
        ];
        assert!(matches!(normalise(dup_ip), Err(Error::Conflict(_))));
        let dup_key = vec![PeerSpec::new(K1), PeerSpec::new(K1)];
        assert!(matches!(normalise(dup_key), Err(Error::Conflict(_))));
        // More specific routes on another peer are legitimate WireGuard configuration.
        let nested = vec![
            PeerSpec::new(K1).with_allowed_ips(["10.0.0.0/24"]),
            PeerSpec::new(K2).with_allowed_ips(["10.0.0.5/32"]),
        ];
        assert!(normalise(nested).is_ok());
    }

    #[test]
    fn interface_names() {
        assert!(check_interface("wg0").is_ok());
        for bad in ["", "a/b", "wg 0", "0123456789abcdef", ".."] {
            assert!(check_interface(bad).is_err(), "{bad}");
        }
    }
}
