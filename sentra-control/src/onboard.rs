//! Onboarding a WireGuard client: address pools, key pairs and the client's wg-quick
//! configuration.
//!
//! These are the rules, without storage: an interface's [`AddressPool`] hands out the
//! lowest free host address of each family that no declared peer's allowed IPs cover
//! (so an address is never given twice while its peer exists, and is free again once
//! the peer is deleted); [`check_pools_disjoint`] and [`check_address_free`] refuse
//! overlaps with an [`Error::Conflict`] naming the other interface or peer;
//! [`KeyPair::generate`] makes an x25519 key pair as `wg genkey` does; [`ClientConfig`]
//! renders the wg-quick file the client imports. Private keys live in [`SecretString`]
//! (zeroed on drop, redacted in `Debug`) and are never part of an error.

use std::{fmt::Write as _, net::IpAddr};

use sentra_core::IpPrefix;

use crate::{Error, PeerSpec, Result, SecretString, util};

/// The address pool of one interface: one or more prefixes (IPv4, IPv6 or both) that
/// client addresses are taken from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressPool {
    prefixes: Vec<IpPrefix>,
}

/// An inclusive range of addresses of one family, as integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Range {
    start: u128,
    end: u128,
}

fn width(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

fn to_int(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_int(v4: bool, v: u128) -> IpAddr {
    if v4 {
        // Callers stay inside an IPv4 prefix, so the value fits.
        IpAddr::V4(u32::try_from(v).unwrap_or(u32::MAX).into())
    } else {
        IpAddr::V6(v.into())
    }
}

fn range(p: &IpPrefix) -> Range {
    let host_bits = u32::from(width(p.addr()) - p.prefix_len());
    let start = to_int(p.addr());
    let span = if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    Range {
        start,
        end: start.saturating_add(span),
    }
}

fn overlaps(a: &IpPrefix, b: &IpPrefix) -> bool {
    if a.addr().is_ipv4() != b.addr().is_ipv4() {
        return false;
    }
    let (ra, rb) = (range(a), range(b));
    ra.start <= rb.end && rb.start <= ra.end
}

/// Parses a prefix as the desired-peer rules do: a bare address is a host route; the
/// host bits must be clear.
fn parse_cidr(field: &str, raw: &str) -> Result<IpPrefix> {
    let raw = raw.trim();
    let with_len = if raw.contains('/') {
        raw.to_owned()
    } else {
        let addr: IpAddr = raw
            .parse()
            .map_err(|_| Error::invalid(field, format!("{raw:?} is not an IP prefix")))?;
        format!("{addr}/{}", width(addr))
    };
    with_len
        .parse::<IpPrefix>()
        .map_err(|e| Error::invalid(field, e.to_string()))
}

/// A host prefix (`/32` or `/128`) for one address.
fn host(addr: IpAddr) -> Result<IpPrefix> {
    IpPrefix::new(addr, width(addr)).map_err(|e| Error::Internal(e.to_string()))
}

impl AddressPool {
    /// Parses the pool's prefixes (`10.8.0.0/24`, `fd00:8::/64`).
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for an empty list, a malformed prefix or host bits set;
    /// [`Error::Conflict`] when two of the pool's prefixes overlap.
    pub fn parse<S: AsRef<str>>(cidrs: impl IntoIterator<Item = S>) -> Result<Self> {
        let mut prefixes = Vec::new();
        for (i, raw) in cidrs.into_iter().enumerate() {
            prefixes.push(parse_cidr(&format!("pool[{i}]"), raw.as_ref())?);
        }
        if prefixes.is_empty() {
            return Err(Error::invalid("pool", "at least one prefix is needed"));
        }
        for (i, a) in prefixes.iter().enumerate() {
            if let Some(b) = prefixes[..i].iter().find(|b| overlaps(a, b)) {
                return Err(Error::Conflict(format!(
                    "pool prefixes {b} and {a} overlap"
                )));
            }
        }
        Ok(Self { prefixes })
    }

    /// The pool's prefixes, in the order given.
    #[must_use]
    pub fn prefixes(&self) -> &[IpPrefix] {
        &self.prefixes
    }

    /// Whether an address belongs to the pool.
    #[must_use]
    pub fn contains(&self, addr: IpAddr) -> bool {
        host(addr).is_ok_and(|h| self.prefixes.iter().any(|p| overlaps(p, &h)))
    }

    /// The next free address of each prefix of the pool, as host prefixes: the lowest
    /// host address that no declared peer's allowed IPs cover and that is not
    /// `reserved` (the interface's own addresses). The all-zero host of a prefix is
    /// never handed out, nor an IPv4 prefix's broadcast address (prefixes of /31, /32
    /// and /127, /128 have no such addresses to spare).
    ///
    /// # Errors
    ///
    /// [`Error::Conflict`] naming the prefix when one of them has no free address left.
    pub fn next_free(&self, peers: &[PeerSpec], reserved: &[IpAddr]) -> Result<Vec<IpPrefix>> {
        let used: Vec<IpPrefix> = peers
            .iter()
            .flat_map(|p| p.allowed_ips.iter())
            .filter_map(|raw| parse_cidr("allowed_ips", raw).ok())
            .collect();
        let mut out = Vec::with_capacity(self.prefixes.len());
        for pool in &self.prefixes {
            let v4 = pool.addr().is_ipv4();
            let mut taken: Vec<Range> = used
                .iter()
                .filter(|u| overlaps(u, pool))
                .map(range)
                .chain(
                    reserved
                        .iter()
                        .filter(|a| a.is_ipv4() == v4)
                        .map(|a| Range {
                            start: to_int(*a),
                            end: to_int(*a),
                        }),
                )
                .collect();
            taken.sort_unstable();
            let whole = range(pool);
            let host_bits = width(pool.addr()) - pool.prefix_len();
            let (mut cand, last) = if host_bits >= 2 {
                (whole.start + 1, if v4 { whole.end - 1 } else { whole.end })
            } else {
                (whole.start, whole.end)
            };
            let mut exhausted = false;
            for r in &taken {
                if r.end < cand {
                    continue;
                }
                if r.start > cand {
                    break;
                }
                match r.end.checked_add(1) {
                    Some(next) => cand = next,
                    None => {
                        exhausted = true;
                        break;
                    }
                }
            }
            if exhausted || cand > last {
                return Err(Error::Conflict(format!(
                    "address pool {pool} has no free address left"
                )));
            }
            out.push(host(from_int(v4, cand))?);
        }
        Ok(out)
    }
}

/// Refuses pools of different interfaces that overlap. `pools` pairs a label (the
/// interface, as `agent/interface`) with its pool.
///
/// # Errors
///
/// [`Error::Conflict`] naming both interfaces and the overlapping prefixes.
pub fn check_pools_disjoint(pools: &[(&str, &AddressPool)]) -> Result<()> {
    for (i, (name_a, a)) in pools.iter().enumerate() {
        for (name_b, b) in &pools[..i] {
            for pa in a.prefixes() {
                if let Some(pb) = b.prefixes().iter().find(|pb| overlaps(pa, pb)) {
                    return Err(Error::Conflict(format!(
                        "address pool {pa} of {name_a} overlaps {pb} of {name_b}"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Refuses a static address (or prefix) that another declared peer's allowed IPs
/// overlap. `except` is the public key of the peer being changed, whose own allowed IPs
/// do not count.
///
/// # Errors
///
/// [`Error::Invalid`] for a malformed address; [`Error::Conflict`] naming the other
/// peer's public key and its allowed IP.
pub fn check_address_free(address: &str, peers: &[PeerSpec], except: Option<&str>) -> Result<()> {
    let wanted = parse_cidr("address", address)?;
    for peer in peers {
        if except.is_some_and(|k| k == peer.public_key) {
            continue;
        }
        for raw in &peer.allowed_ips {
            if let Ok(p) = parse_cidr("allowed_ips", raw)
                && overlaps(&p, &wanted)
            {
                return Err(Error::Conflict(format!(
                    "{wanted} overlaps {p}, an allowed IP of peer {}",
                    peer.public_key
                )));
            }
        }
    }
    Ok(())
}

/// An x25519 key pair for a WireGuard client, as `wg genkey | wg pubkey` makes it.
/// The private half is returned to the caller once and is never stored.
#[derive(Debug)]
#[allow(
    clippy::exhaustive_structs,
    reason = "the two halves of an x25519 key pair; nothing else belongs in it"
)]
pub struct KeyPair {
    /// The private key, standard base64 (redacted in `Debug`, zeroed on drop).
    pub private_key: SecretString,
    /// The public key, standard base64.
    pub public_key: String,
}

fn random32() -> Result<[u8; 32]> {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| Error::Internal("the system random source failed".into()))?;
    Ok(bytes)
}

impl KeyPair {
    /// A fresh key pair from the operating system's CSPRNG (the private key clamped as
    /// `wg genkey` clamps it).
    ///
    /// # Errors
    ///
    /// [`Error::Internal`] if the system random source fails.
    pub fn generate() -> Result<Self> {
        let mut bytes = zeroize::Zeroizing::new(random32()?);
        bytes[0] &= 248;
        bytes[31] &= 127;
        bytes[31] |= 64;
        let secret = x25519_dalek::StaticSecret::from(*bytes);
        let public = x25519_dalek::PublicKey::from(&secret);
        Ok(Self {
            private_key: SecretString::new(util::b64(&*bytes)),
            public_key: util::b64(public.as_bytes()),
        })
    }
}

/// The public key of a base64 private key (what `wg pubkey` prints).
///
/// # Errors
///
/// [`Error::Invalid`] unless the key is 32 bytes of standard base64 (the value is
/// never part of the error).
pub fn public_key_of(private_key: &SecretString) -> Result<String> {
    let bytes = util::b64_decode(private_key.expose_secret().trim())
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .map(zeroize::Zeroizing::new)
        .ok_or_else(|| Error::invalid("private_key", "must be 32 bytes, base64"))?;
    let secret = x25519_dalek::StaticSecret::from(*bytes);
    Ok(util::b64(x25519_dalek::PublicKey::from(&secret).as_bytes()))
}

/// A fresh preshared key, standard base64 (what `wg genpsk` prints).
///
/// # Errors
///
/// [`Error::Internal`] if the system random source fails.
pub fn generate_psk() -> Result<SecretString> {
    let bytes = zeroize::Zeroizing::new(random32()?);
    Ok(SecretString::new(util::b64(&*bytes)))
}

/// Which traffic the client sends through the tunnel.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tunnel {
    /// Everything (`0.0.0.0/0, ::/0`).
    Full,
    /// Only these prefixes (typically the interface's networks).
    Split(Vec<String>),
}

/// The client side of an onboarded peer: everything its wg-quick file holds.
#[derive(Debug)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The client's private key (from [`KeyPair::generate`]); `None` when the client
    /// brought its own key pair, and the file has a placeholder for it.
    pub private_key: Option<SecretString>,
    /// The client's tunnel addresses (`[Interface] Address`).
    pub addresses: Vec<IpPrefix>,
    /// DNS servers for the client (may be empty).
    pub dns: Vec<IpAddr>,
    /// The server interface's public key.
    pub server_public_key: String,
    /// The server's endpoint as the client reaches it (`vpn.example.com:51820`).
    pub server_endpoint: String,
    /// The preshared key, if any.
    pub preshared_key: Option<SecretString>,
    /// What the client routes through the tunnel.
    pub tunnel: Tunnel,
    /// Persistent keepalive in seconds (0: off).
    pub persistent_keepalive_s: u16,
}

/// The placeholder written for a private key the server never saw.
pub const PRIVATE_KEY_PLACEHOLDER: &str = "<client private key>";

impl ClientConfig {
    /// A configuration with the required parts; DNS empty, full tunnel, no PSK,
    /// no keepalive.
    #[must_use]
    pub fn new(
        private_key: Option<SecretString>,
        addresses: Vec<IpPrefix>,
        server_public_key: impl Into<String>,
        server_endpoint: impl Into<String>,
    ) -> Self {
        Self {
            private_key,
            addresses,
            dns: Vec::new(),
            server_public_key: server_public_key.into(),
            server_endpoint: server_endpoint.into(),
            preshared_key: None,
            tunnel: Tunnel::Full,
            persistent_keepalive_s: 0,
        }
    }

    /// The wg-quick file. It holds the private key when one was generated, so it is a
    /// [`SecretString`] too.
    #[must_use]
    pub fn render(&self) -> SecretString {
        let join = |items: Vec<String>| items.join(", ");
        let mut s = String::from("[Interface]\n");
        let private = self
            .private_key
            .as_ref()
            .map_or(PRIVATE_KEY_PLACEHOLDER, SecretString::expose_secret);
        let _ = writeln!(s, "PrivateKey = {private}");
        let _ = writeln!(
            s,
            "Address = {}",
            join(self.addresses.iter().map(ToString::to_string).collect())
        );
        if !self.dns.is_empty() {
            let _ = writeln!(
                s,
                "DNS = {}",
                join(self.dns.iter().map(ToString::to_string).collect())
            );
        }
        s.push_str("\n[Peer]\n");
        let _ = writeln!(s, "PublicKey = {}", self.server_public_key);
        if let Some(psk) = &self.preshared_key {
            let _ = writeln!(s, "PresharedKey = {}", psk.expose_secret());
        }
        let allowed = match &self.tunnel {
            Tunnel::Full => "0.0.0.0/0, ::/0".to_owned(),
            Tunnel::Split(p) => join(p.clone()),
        };
        let _ = writeln!(s, "AllowedIPs = {allowed}");
        let _ = writeln!(s, "Endpoint = {}", self.server_endpoint);
        if self.persistent_keepalive_s > 0 {
            let _ = writeln!(s, "PersistentKeepalive = {}", self.persistent_keepalive_s);
        }
        SecretString::new(s)
    }
}

/// Quiet zone around a QR code, in modules (the standard's minimum).
const QR_QUIET: usize = 4;

fn qr_code(config: &SecretString) -> Result<qrcode::QrCode> {
    qrcode::QrCode::new(config.expose_secret().as_bytes())
        .map_err(|e| Error::invalid("config", format!("does not fit a QR code: {e}")))
}

/// A QR code of a wg-quick file for a terminal: Unicode half blocks, two modules per
/// character cell, with the quiet zone (what `qrencode -t ansiutf8` shows). It encodes
/// the private key when the file holds one, so it is a [`SecretString`].
///
/// # Errors
///
/// [`Error::Invalid`] when the file is too large for a QR code.
pub fn qr_terminal(config: &SecretString) -> Result<SecretString> {
    use qrcode::render::unicode::Dense1x2;
    let code = qr_code(config)?;
    Ok(SecretString::new(
        code.render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    ))
}

/// A QR code of a wg-quick file as a PNG (8-bit grayscale, `scale` pixels per module,
/// 1 to 32, with the quiet zone). The bytes encode the private key when the file holds
/// one: they are zeroed on drop.
///
/// # Errors
///
/// [`Error::Invalid`] for a scale outside 1..=32 or a file too large for a QR code;
/// [`Error::Internal`] if the PNG encoder fails.
pub fn qr_png(config: &SecretString, scale: u32) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    if !(1..=32).contains(&scale) {
        return Err(Error::invalid("scale", "must be 1 to 32"));
    }
    let code = qr_code(config)?;
    let modules = code.width();
    let colors = code.to_colors();
    let side_modules = modules + 2 * QR_QUIET;
    let scale_px = scale as usize;
    let side = side_modules * scale_px;
    let mut pixels = zeroize::Zeroizing::new(vec![255u8; side * side]);
    for y in 0..modules {
        for x in 0..modules {
            if colors[y * modules + x] == qrcode::Color::Dark {
                for dy in 0..scale_px {
                    let row = ((y + QR_QUIET) * scale_px + dy) * side;
                    let col = (x + QR_QUIET) * scale_px;
                    pixels[row + col..row + col + scale_px].fill(0);
                }
            }
        }
    }
    let side_u32 = u32::try_from(side).map_err(|e| Error::Internal(e.to_string()))?;
    let mut out = zeroize::Zeroizing::new(Vec::new());
    {
        let mut enc = png::Encoder::new(&mut *out, side_u32, side_u32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc
            .write_header()
            .map_err(|e| Error::Internal(format!("PNG encoder: {e}")))?;
        w.write_image_data(&pixels)
            .map_err(|e| Error::Internal(format!("PNG encoder: {e}")))?;
        w.finish()
            .map_err(|e| Error::Internal(format!("PNG encoder: {e}")))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(key_byte: u8, ips: &[&str]) -> PeerSpec {
        PeerSpec::new(util::b64(&[key_byte; 32])).with_allowed_ips(ips.iter().copied())
    }

    #[test]
    fn next_free_skips_network_reserved_and_taken_addresses() {
        let pool = AddressPool::parse(["10.8.0.0/24", "fd00:8::/64"]).unwrap();
        let server: Vec<IpAddr> = vec!["10.8.0.1".parse().unwrap(), "fd00:8::1".parse().unwrap()];
        let got = pool.next_free(&[], &server).unwrap();
        assert_eq!(got[0].to_string(), "10.8.0.2/32");
        assert_eq!(got[1].to_string(), "fd00:8::2/128");
        let peers = vec![
            peer(1, &["10.8.0.2/32", "fd00:8::2/128"]),
            peer(2, &["10.8.0.3"]),
            // A wider allowed IP covers every address in it.
            peer(3, &["10.8.0.4/30", "192.168.1.0/24"]),
        ];
        let got = pool.next_free(&peers, &server).unwrap();
        assert_eq!(got[0].to_string(), "10.8.0.8/32");
        assert_eq!(got[1].to_string(), "fd00:8::3/128");
        // Deleting the first peer frees its addresses again.
        let got = pool.next_free(&peers[1..], &server).unwrap();
        assert_eq!(got[0].to_string(), "10.8.0.2/32");
    }

    #[test]
    fn allocation_never_repeats_and_exhaustion_is_a_conflict() {
        let pool = AddressPool::parse(["10.9.0.0/29"]).unwrap();
        let server = ["10.9.0.1".parse().unwrap()];
        let mut peers = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for i in 0..5u8 {
            let a = pool.next_free(&peers, &server).unwrap().remove(0);
            assert!(seen.insert(a), "{a} handed out twice");
            peers.push(peer(i, &[&a.to_string()]));
        }
        // .0 network, .1 server, .2-.6 peers, .7 broadcast.
        let err = pool.next_free(&peers, &server).unwrap_err();
        assert!(
            matches!(&err, Error::Conflict(m) if m.contains("10.9.0.0/29")),
            "{err}"
        );
    }

    #[test]
    fn overlapping_pools_and_taken_static_addresses_name_the_other_side() {
        let err = AddressPool::parse(["10.0.0.0/16", "10.0.5.0/24"]).unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err}");
        let a = AddressPool::parse(["10.0.0.0/16"]).unwrap();
        let b = AddressPool::parse(["fd00::/64", "10.0.128.0/24"]).unwrap();
        let c = AddressPool::parse(["10.1.0.0/16"]).unwrap();
        check_pools_disjoint(&[("a/wg0", &a), ("c/wg0", &c)]).unwrap();
        let err = check_pools_disjoint(&[("a/wg0", &a), ("b/wg1", &b)]).unwrap_err();
        assert!(
            matches!(&err, Error::Conflict(m) if m.contains("a/wg0") && m.contains("b/wg1")),
            "{err}"
        );
        let peers = vec![peer(7, &["10.0.0.0/28"])];
        let err = check_address_free("10.0.0.5", &peers, None).unwrap_err();
        assert!(
            matches!(&err, Error::Conflict(m) if m.contains(&peers[0].public_key)),
            "{err}"
        );
        check_address_free("10.0.0.16", &peers, None).unwrap();
        check_address_free("10.0.0.5", &peers, Some(&peers[0].public_key)).unwrap();
        assert!(matches!(
            check_address_free("10.0.0.300", &peers, None),
            Err(Error::Invalid { .. })
        ));
    }

    #[test]
    fn key_pairs_match_wg_and_stay_out_of_debug() {
        // RFC 7748 section 6.1: Alice's private and public keys.
        let private = SecretString::new(util::b64(&[
            0x77, 0x07, 0x6d, 0x0a, 0x73, 0x18, 0xa5, 0x7d, 0x3c, 0x16, 0xc1, 0x72, 0x51, 0xb2,
            0x66, 0x45, 0xdf, 0x4c, 0x2f, 0x87, 0xeb, 0xc0, 0x99, 0x2a, 0xb1, 0x77, 0xfb, 0xa5,
            0x1d, 0xb9, 0x2c, 0x2a,
        ]));
        let public = public_key_of(&private).unwrap();
        let expected = util::b64(&[
            0x85, 0x20, 0xf0, 0x09, 0x89, 0x30, 0xa7, 0x54, 0x74, 0x8b, 0x7d, 0xdc, 0xb4, 0x3e,
            0xf7, 0x5a, 0x0d, 0xbf, 0x3a, 0x0d, 0x26, 0x38, 0x1a, 0xf4, 0xeb, 0xa4, 0xa9, 0x8e,
            0xaa, 0x9b, 0x4e, 0x6a,
        ]);
        assert_eq!(public, expected);
        let pair = KeyPair::generate().unwrap();
        assert_eq!(public_key_of(&pair.private_key).unwrap(), pair.public_key);
        let raw = util::b64_decode(pair.private_key.expose_secret()).unwrap();
        assert_eq!(raw[0] & 7, 0);
        assert_eq!(raw[31] & 0xc0, 0x40);
        assert!(!format!("{pair:?}").contains(pair.private_key.expose_secret()));
        assert_ne!(KeyPair::generate().unwrap().public_key, pair.public_key);
    }

    #[test]
    fn client_config_is_a_wg_quick_file() {
        let pair = KeyPair::generate().unwrap();
        let psk = generate_psk().unwrap();
        let mut cfg = ClientConfig::new(
            Some(pair.private_key),
            vec![
                "10.8.0.2/32".parse().unwrap(),
                "fd00:8::2/128".parse().unwrap(),
            ],
            util::b64(&[9; 32]),
            "vpn.example.com:51820",
        );
        cfg.dns = vec!["10.8.0.1".parse().unwrap()];
        cfg.preshared_key = Some(psk);
        cfg.tunnel = Tunnel::Split(vec!["10.8.0.0/24".into(), "fd00:8::/64".into()]);
        cfg.persistent_keepalive_s = 25;
        let text = cfg.render();
        let text = text.expose_secret();
        let priv_line = format!(
            "PrivateKey = {}",
            cfg.private_key.as_ref().unwrap().expose_secret()
        );
        assert!(
            text.starts_with(&format!("[Interface]\n{priv_line}\n")),
            "{text}"
        );
        for line in [
            "Address = 10.8.0.2/32, fd00:8::2/128",
            "DNS = 10.8.0.1",
            "[Peer]",
            "AllowedIPs = 10.8.0.0/24, fd00:8::/64",
            "Endpoint = vpn.example.com:51820",
            "PersistentKeepalive = 25",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(text.contains("PresharedKey = "));
        cfg.tunnel = Tunnel::Full;
        cfg.private_key = None;
        let text = cfg.render();
        assert!(
            text.expose_secret()
                .contains("AllowedIPs = 0.0.0.0/0, ::/0")
        );
        assert!(text.expose_secret().contains(PRIVATE_KEY_PLACEHOLDER));
    }

    #[test]
    fn qr_codes_of_a_config_for_terminal_and_png() {
        let pair = KeyPair::generate().unwrap();
        let cfg = ClientConfig::new(
            Some(pair.private_key),
            vec!["10.8.0.2/32".parse().unwrap()],
            util::b64(&[9; 32]),
            "192.0.2.1:51820",
        )
        .render();
        let code = qr_code(&cfg).unwrap();
        let modules = code.width();
        let term = qr_terminal(&cfg).unwrap();
        let lines: Vec<&str> = term.expose_secret().lines().collect();
        // Two modules per line, quiet zone on every side.
        assert_eq!(lines.len(), (modules + 2 * QR_QUIET).div_ceil(2));
        assert!(
            lines
                .iter()
                .all(|l| l.chars().count() == modules + 2 * QR_QUIET)
        );
        let png_bytes = qr_png(&cfg, 4).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes.to_vec()));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        let side = (modules + 2 * QR_QUIET) * 4;
        assert_eq!((info.width as usize, info.height as usize), (side, side));
        // The top-left finder pattern's corner module is dark; the quiet zone is white.
        assert_eq!(buf[QR_QUIET * 4 * side + QR_QUIET * 4], 0);
        assert_eq!(buf[0], 255);
        assert!(matches!(qr_png(&cfg, 0), Err(Error::Invalid { .. })));
        let huge = SecretString::new("x".repeat(5000));
        assert!(matches!(qr_terminal(&huge), Err(Error::Invalid { .. })));
    }
}
