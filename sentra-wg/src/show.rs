//! Text output identical to `wg show` (wireguard-tools `src/show.c`), without colours.
//!
//! * [`pretty`] is `wg show <iface>`: peers sorted by latest handshake (newest first, never
//!   last, otherwise kernel order), keys hidden unless asked, human durations and sizes.
//! * [`dump`] is `wg show <iface> dump` (or `wg show all dump` with `with_interface`): one
//!   tab-separated line for the interface, one per peer. `wg` prints the private and preshared
//!   keys there in clear; this module prints `(hidden)` unless [`Secrets::Show`] is passed.
//!
//! Addresses are printed as glibc's `inet_ntop` prints them (`::1.2.3.4` for an
//! IPv4-compatible address, `::ffff:1.2.3.4` for a mapped one, see [`ipv6`]), and a scoped
//! IPv6 endpoint with the interface name `getnameinfo` finds for a link-local address
//! (`[fe80::1%lo]:51820`, see [`ScopeNames`] and [`endpoint_named`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::model::{Device, Peer};

/// Whether private and preshared keys are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Secrets {
    /// Print `(hidden)` (the default of `wg show`, and of this crate for dumps too).
    Hide,
    /// Print the keys in base64 (`wg show` with `WG_HIDE_KEYS=never`, and `wg show dump`).
    Show,
}

fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            // floor, like tv_sec of a negative timespec
            -(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)) - i64::from(d.subsec_nanos() > 0)
        }
    }
}

/// The `tv_sec` the kernel reported for the last handshake (0 = never), as `wg` prints it.
pub fn handshake_secs(peer: &Peer) -> i64 {
    peer.last_handshake.map_or(0, unix_secs)
}

fn pretty_time(out: &mut String, mut left: u64) {
    let years = left / (365 * 24 * 60 * 60);
    left %= 365 * 24 * 60 * 60;
    let days = left / (24 * 60 * 60);
    left %= 24 * 60 * 60;
    let hours = left / (60 * 60);
    left %= 60 * 60;
    let minutes = left / 60;
    let seconds = left % 60;
    let start = out.len();
    for (n, unit) in [
        (years, "year"),
        (days, "day"),
        (hours, "hour"),
        (minutes, "minute"),
        (seconds, "second"),
    ] {
        if n != 0 {
            let sep = if out.len() > start { ", " } else { "" };
            let plural = if n == 1 { "" } else { "s" };
            let _ = write!(out, "{sep}{n} {unit}{plural}");
        }
    }
}

fn ago(out: &mut String, then: i64, now: i64) {
    if now == then {
        out.push_str("Now");
    } else if now < then {
        out.push_str("(System clock wound backward; connection problems may ensue.)");
    } else {
        pretty_time(out, now.abs_diff(then));
        out.push_str(" ago");
    }
}

/// `"%.2f"` of `b / 1024^k`, rounded half-to-even on the exact value as glibc's printf does.
fn two_decimals(b: u64, shift: u32) -> String {
    let num = u128::from(b) * 100;
    let den = 1u128 << shift;
    let mut q = num >> shift;
    let r = num & (den - 1);
    if 2 * r > den || (2 * r == den && q & 1 == 1) {
        q += 1;
    }
    format!("{}.{:02}", q / 100, q % 100)
}

fn bytes(b: u64) -> String {
    const K: u64 = 1024;
    if b < K {
        format!("{b} B")
    } else if b < K * K {
        format!("{} KiB", two_decimals(b, 10))
    } else if b < K * K * K {
        format!("{} MiB", two_decimals(b, 20))
    } else if b < K * K * K * K {
        format!("{} GiB", two_decimals(b, 30))
    } else {
        format!("{} TiB", two_decimals(b, 40))
    }
}

/// An IPv6 address exactly as glibc's `inet_ntop` prints it: the longest run (leftmost on a
/// tie) of two or more zero groups becomes `::`, and an IPv4-compatible (`::a.b.c.d` with a
/// non-zero seventh group) or IPv4-mapped (`::ffff:a.b.c.d`) address keeps its dotted tail.
/// Rust's `Display` prints the IPv4-compatible form as `::102:304`.
pub fn ipv6(a: &Ipv6Addr) -> String {
    let w = a.segments();
    // longest run of zero groups, leftmost on ties; runs of one are not compressed
    let (mut best, mut cur): ((usize, usize), Option<(usize, usize)>) = ((0, 0), None);
    for (i, &g) in w.iter().enumerate() {
        if g == 0 {
            let c = cur.get_or_insert((i, 0));
            c.1 += 1;
            if c.1 > best.1 {
                best = *c;
            }
        } else {
            cur = None;
        }
    }
    if best.1 < 2 {
        best = (usize::MAX, 0);
    }
    let mut o = String::with_capacity(40);
    let mut i = 0;
    while i < 8 {
        if i == best.0 {
            o.push(':');
            i += best.1;
            if i == 8 {
                o.push(':');
            }
            continue;
        }
        if i != 0 {
            o.push(':');
        }
        // glibc: an encapsulated IPv4 address after six zero groups, or five and ffff
        if i == 6 && best.0 == 0 && (best.1 == 6 || (best.1 == 5 && w[5] == 0xffff)) {
            let [.., a1, b1, c1, d1] = a.octets();
            let _ = write!(o, "{a1}.{b1}.{c1}.{d1}");
            return o;
        }
        let _ = write!(o, "{:x}", w[i]);
        i += 1;
    }
    o
}

/// An IP address as `inet_ntop` prints it (see [`ipv6`]).
pub fn ip(a: &IpAddr) -> String {
    match a {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => ipv6(a),
    }
}

/// An allowed IP as `wg` prints it: `inet_ntop` form, `/`, prefix length.
pub fn allowed_ip(a: &crate::AllowedIp) -> String {
    format!("{}/{}", ip(&a.addr()), a.cidr())
}

/// Interface index → name, to print scoped endpoints like `wg` (`getnameinfo` calls
/// `if_indextoname`). Fill it from a link dump (for example
/// [`Client::link_names`](crate::Client::link_names)); an unknown index prints as its number,
/// as `getnameinfo` does when the lookup fails.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeNames(HashMap<u32, String>);

impl ScopeNames {
    /// No names known: scope ids print as numbers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the name of interface `index`.
    pub fn insert(&mut self, index: u32, name: impl Into<String>) {
        self.0.insert(index, name.into());
    }

    /// The name of interface `index`, if known.
    pub fn get(&self, index: u32) -> Option<&str> {
        self.0.get(&index).map(String::as_str)
    }
}

impl FromIterator<(u32, String)> for ScopeNames {
    fn from_iter<T: IntoIterator<Item = (u32, String)>>(iter: T) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// An endpoint as `wg` prints it (`1.2.3.4:51820`, `[fd00::1]:51820`, `[::1.2.3.4]:51820`),
/// with a scope id as a number (`[fe80::1%1]:51820`); see [`endpoint_named`] for names.
pub fn endpoint(e: &SocketAddr) -> String {
    endpoint_named(e, &ScopeNames::new())
}

/// An endpoint exactly as `wg` prints it: like glibc's `getnameinfo(NI_NUMERICHOST)`, the
/// scope of a link-local (`fe80::/10`) or link-local multicast address is the interface name
/// when `names` knows it (`[fe80::1%lo]:51820`), any other scope id stays a number.
pub fn endpoint_named(e: &SocketAddr, names: &ScopeNames) -> String {
    match e {
        SocketAddr::V4(a) => a.to_string(),
        SocketAddr::V6(a) if a.scope_id() != 0 => {
            let ip = a.ip();
            let link_local = (ip.segments()[0] & 0xffc0) == 0xfe80
                || (ip.octets()[0] == 0xff && ip.octets()[1] & 0x0f == 0x02);
            let id = a.scope_id();
            match names.get(id).filter(|_| link_local) {
                Some(name) => format!("[{}%{name}]:{}", ipv6(ip), a.port()),
                None => format!("[{}%{id}]:{}", ipv6(ip), a.port()),
            }
        }
        SocketAddr::V6(a) => format!("[{}]:{}", ipv6(a.ip()), a.port()),
    }
}

fn secret(out: &mut String, present: bool, b64: impl FnOnce() -> String, secrets: Secrets) {
    match (present, secrets) {
        (false, _) => out.push_str("(none)"),
        (true, Secrets::Hide) => out.push_str("(hidden)"),
        (true, Secrets::Show) => out.push_str(&b64()),
    }
}

/// Peers in `wg show` order: newest handshake first, never-handshaked last, ties in kernel
/// order (glibc's `qsort` is a stable merge sort for these sizes).
pub fn sorted_peers(device: &Device) -> Vec<&Peer> {
    let mut peers: Vec<&Peer> = device.peers.iter().collect();
    peers.sort_by(|a, b| match (a.last_handshake, b.last_handshake) {
        (None, None) => std::cmp::Ordering::Equal,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (Some(_), None) => std::cmp::Ordering::Less,
        (Some(x), Some(y)) => y.cmp(&x),
    });
    peers
}

/// `wg show <iface>` text for one device, as of `now` (for "latest handshake: … ago"), with
/// scope ids as numbers (see [`pretty_named`]).
pub fn pretty(device: &Device, now: SystemTime, secrets: Secrets) -> String {
    pretty_named(device, now, secrets, &ScopeNames::new())
}

/// [`pretty`] with scoped link-local endpoints named from `names`, as `wg` prints them.
pub fn pretty_named(
    device: &Device,
    now: SystemTime,
    secrets: Secrets,
    names: &ScopeNames,
) -> String {
    let now = unix_secs(now);
    let mut o = String::with_capacity(256 + device.peers.len() * 160);
    let _ = writeln!(o, "interface: {}", device.name);
    if let Some(k) = &device.public_key {
        let _ = writeln!(o, "  public key: {k}");
    }
    if let Some(k) = &device.private_key {
        o.push_str("  private key: ");
        secret(&mut o, true, || k.expose_base64(), secrets);
        o.push('\n');
    }
    if device.listen_port != 0 {
        let _ = writeln!(o, "  listening port: {}", device.listen_port);
    }
    if device.fwmark != 0 {
        let _ = writeln!(o, "  fwmark: 0x{:x}", device.fwmark);
    }
    let peers = sorted_peers(device);
    if !peers.is_empty() {
        o.push('\n');
    }
    for (i, p) in peers.iter().enumerate() {
        let _ = writeln!(o, "peer: {}", p.public_key);
        if let Some(psk) = &p.preshared_key {
            o.push_str("  preshared key: ");
            secret(&mut o, true, || psk.expose_base64(), secrets);
            o.push('\n');
        }
        if let Some(e) = &p.endpoint {
            let _ = writeln!(o, "  endpoint: {}", endpoint_named(e, names));
        }
        o.push_str("  allowed ips: ");
        if p.allowed_ips.is_empty() {
            o.push_str("(none)");
        }
        for (j, ip) in p.allowed_ips.iter().enumerate() {
            if j > 0 {
                o.push_str(", ");
            }
            o.push_str(&allowed_ip(ip));
        }
        o.push('\n');
        let hs = handshake_secs(p);
        if hs != 0 {
            o.push_str("  latest handshake: ");
            ago(&mut o, hs, now);
            o.push('\n');
        }
        if p.rx_bytes != 0 || p.tx_bytes != 0 {
            let _ = writeln!(
                o,
                "  transfer: {} received, {} sent",
                bytes(p.rx_bytes),
                bytes(p.tx_bytes)
            );
        }
        if p.persistent_keepalive != 0 {
            o.push_str("  persistent keepalive: every ");
            pretty_time(&mut o, u64::from(p.persistent_keepalive));
            o.push('\n');
        }
        if i + 1 < peers.len() {
            o.push('\n');
        }
    }
    o
}

/// `wg show <iface> dump` text (`with_interface`: `wg show all dump`, every line prefixed with
/// the interface name). Peers in kernel order. Scope ids as numbers (see [`dump_named`]).
pub fn dump(device: &Device, with_interface: bool, secrets: Secrets) -> String {
    dump_named(device, with_interface, secrets, &ScopeNames::new())
}

/// [`dump`] with scoped link-local endpoints named from `names`, as `wg` prints them.
pub fn dump_named(
    device: &Device,
    with_interface: bool,
    secrets: Secrets,
    names: &ScopeNames,
) -> String {
    let mut o = String::with_capacity(128 + device.peers.len() * 160);
    let prefix = |o: &mut String| {
        if with_interface {
            o.push_str(&device.name);
            o.push('\t');
        }
    };
    prefix(&mut o);
    secret(
        &mut o,
        device.private_key.is_some(),
        || {
            device
                .private_key
                .as_ref()
                .map(|k| k.expose_base64())
                .unwrap_or_default()
        },
        secrets,
    );
    o.push('\t');
    match &device.public_key {
        Some(k) => {
            let _ = write!(o, "{k}");
        }
        None => o.push_str("(none)"),
    }
    let _ = write!(o, "\t{}\t", device.listen_port);
    if device.fwmark != 0 {
        let _ = writeln!(o, "0x{:x}", device.fwmark);
    } else {
        o.push_str("off\n");
    }
    for p in &device.peers {
        prefix(&mut o);
        let _ = write!(o, "{}\t", p.public_key);
        secret(
            &mut o,
            p.preshared_key.is_some(),
            || {
                p.preshared_key
                    .as_ref()
                    .map(|k| k.expose_base64())
                    .unwrap_or_default()
            },
            secrets,
        );
        o.push('\t');
        match &p.endpoint {
            Some(e) => o.push_str(&endpoint_named(e, names)),
            None => o.push_str("(none)"),
        }
        o.push('\t');
        if p.allowed_ips.is_empty() {
            o.push_str("(none)");
        }
        for (j, ip) in p.allowed_ips.iter().enumerate() {
            if j > 0 {
                o.push(',');
            }
            o.push_str(&allowed_ip(ip));
        }
        // wg prints tv_sec as unsigned long long
        let _ = write!(
            o,
            "\t{}\t{}\t{}\t",
            handshake_secs(p) as u64,
            p.rx_bytes,
            p.tx_bytes
        );
        if p.persistent_keepalive != 0 {
            let _ = writeln!(o, "{}", p.persistent_keepalive);
        } else {
            o.push_str("off\n");
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{Key, PresharedKey, PrivateKey};
    use std::time::Duration;

    fn dev() -> Device {
        let mut d = Device {
            name: "wg0".into(),
            ifindex: 4,
            private_key: Some(PrivateKey::from_bytes([1; 32])),
            public_key: Some(Key::from_bytes([2; 32])),
            listen_port: 51820,
            fwmark: 0x1234,
            peers: vec![],
        };
        let mut a = Peer::new(Key::from_bytes([3; 32]));
        a.allowed_ips = vec!["10.0.0.1/32".parse().unwrap(), "fd00::/64".parse().unwrap()];
        a.endpoint = Some("[fd00::9]:51821".parse().unwrap());
        let mut b = Peer::new(Key::from_bytes([4; 32]));
        b.preshared_key = Some(PresharedKey::from_bytes([5; 32]));
        b.last_handshake = Some(UNIX_EPOCH + Duration::from_secs(1_000_000));
        b.rx_bytes = 1152; // 1.125 KiB: glibc rounds the tie to even -> 1.12
        b.tx_bytes = 3 * 1024 * 1024 + 5000;
        b.persistent_keepalive = 25;
        b.endpoint = Some("127.0.0.1:51821".parse().unwrap());
        d.peers = vec![a, b];
        d
    }

    #[test]
    fn pretty_matches_wg_layout() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000 + 3 * 86400 + 61);
        let got = pretty(&dev(), now, Secrets::Hide);
        let want = "interface: wg0
  public key: AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=
  private key: (hidden)
  listening port: 51820
  fwmark: 0x1234

peer: BAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ=
  preshared key: (hidden)
  endpoint: 127.0.0.1:51821
  allowed ips: (none)
  latest handshake: 3 days, 1 minute, 1 second ago
  transfer: 1.12 KiB received, 3.00 MiB sent
  persistent keepalive: every 25 seconds

peer: AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=
  endpoint: [fd00::9]:51821
  allowed ips: 10.0.0.1/32, fd00::/64
";
        assert_eq!(got, want);
    }

    #[test]
    fn dump_matches_wg_layout() {
        let got = dump(&dev(), false, Secrets::Show);
        let want = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\tAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=\t51820\t0x1234
AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=\t(none)\t[fd00::9]:51821\t10.0.0.1/32,fd00::/64\t0\t0\t0\toff
BAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ=\tBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQU=\t127.0.0.1:51821\t(none)\t1000000\t1152\t3150728\t25
";
        assert_eq!(got, want);
        let hidden = dump(&dev(), true, Secrets::Hide);
        assert!(hidden.starts_with("wg0\t(hidden)\tAgIC"));
        assert!(hidden.contains("wg0\tBAQE"));
        assert!(!hidden.contains("BQUFBQUF"));
    }

    /// Expected strings are what glibc's `inet_ntop` / `getnameinfo` print (checked with
    /// Python's `socket.inet_ntop` on this glibc).
    #[test]
    fn ipv6_like_inet_ntop() {
        for (addr, want) in [
            ("::1.2.3.4", "::1.2.3.4"),
            ("::ffff:1.2.3.4", "::ffff:1.2.3.4"),
            ("::1", "::1"),
            ("::", "::"),
            ("::0.0.1.2", "::102"),
            ("::0.1.0.0", "::0.1.0.0"),
            ("::ffff:0:0", "::ffff:0.0.0.0"),
            ("1::", "1::"),
            ("fe80::1", "fe80::1"),
            ("::1:0:0:0", "::1:0:0:0"),
            ("0:0:1::", "0:0:1::"),
            ("::1:1.2.3.4", "::1:102:304"),
            ("1:0:0:1:0:0:0:1", "1:0:0:1::1"),
            ("1:0:1:0:1:0:1:0", "1:0:1:0:1:0:1:0"),
            ("64:ff9b::1.2.3.4", "64:ff9b::102:304"),
            ("::fffe:1.2.3.4", "::fffe:102:304"),
            ("fd00:0:0:1::", "fd00:0:0:1::"),
        ] {
            let a: Ipv6Addr = addr.parse().unwrap();
            assert_eq!(ipv6(&a), want, "{addr}");
        }
    }

    #[test]
    fn v4_compatible_and_scoped_endpoints_like_wg() {
        let mut d = dev();
        d.fwmark = 0;
        d.peers[0].allowed_ips = vec![
            "::1.2.3.4/128".parse().unwrap(),
            "::ffff:10.0.0.1/128".parse().unwrap(),
        ];
        d.peers[0].endpoint = Some("[::1.2.3.4]:51821".parse().unwrap());
        d.peers[1].endpoint = Some(SocketAddr::V6(std::net::SocketAddrV6::new(
            "fe80::1".parse().unwrap(),
            51822,
            0,
            1,
        )));
        let names: ScopeNames = [(1, "lo".to_owned())].into_iter().collect();
        let got = dump_named(&d, false, Secrets::Hide, &names);
        let lines: Vec<&str> = got.lines().collect();
        assert_eq!(
            lines[1],
            "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=\t(none)\t[::1.2.3.4]:51821\t::1.2.3.4/128,::ffff:10.0.0.1/128\t0\t0\t0\toff"
        );
        assert!(lines[2].contains("\t[fe80::1%lo]:51822\t"), "{}", lines[2]);
        let now = UNIX_EPOCH + Duration::from_secs(2_000_000);
        let pretty = pretty_named(&d, now, Secrets::Hide, &names);
        assert!(
            pretty.contains("  endpoint: [fe80::1%lo]:51822\n"),
            "{pretty}"
        );
        assert!(
            pretty.contains("  endpoint: [::1.2.3.4]:51821\n"),
            "{pretty}"
        );
        assert!(
            pretty.contains("  allowed ips: ::1.2.3.4/128, ::ffff:10.0.0.1/128\n"),
            "{pretty}"
        );
        // unknown index, or a scope on a non-link-local address: the number, like getnameinfo
        assert!(dump(&d, false, Secrets::Hide).contains("\t[fe80::1%1]:51822\t"));
        let global = SocketAddr::V6(std::net::SocketAddrV6::new(
            "fd00::1".parse().unwrap(),
            1,
            0,
            1,
        ));
        assert_eq!(endpoint_named(&global, &names), "[fd00::1%1]:1");
        let mc = SocketAddr::V6(std::net::SocketAddrV6::new(
            "ff02::1".parse().unwrap(),
            1,
            0,
            1,
        ));
        assert_eq!(endpoint_named(&mc, &names), "[ff02::1%lo]:1");
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.00 KiB");
        assert_eq!(bytes(1029), "1.00 KiB"); // 1.0048828125
        assert_eq!(bytes(1030), "1.01 KiB"); // 1.005859375
        assert_eq!(bytes(1024 * 1024 * 1024 * 1024 * 3), "3.00 TiB");
        let mut s = String::new();
        pretty_time(&mut s, 365 * 86400 + 3600);
        assert_eq!(s, "1 year, 1 hour");
        let mut s = String::new();
        ago(&mut s, 10, 10);
        assert_eq!(s, "Now");
    }
}
