//! Parsing and coalescing `WG_CMD_GET_DEVICE` dumps.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{
    Attrs, GENL_HDRLEN, NLM_F_DUMP_INTR, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN,
    messages, payload_errno,
};
use crate::error::{Error, Op, Result};
use crate::key::{KEY_LEN, Key, PresharedKey, PrivateKey};
use crate::model::{AllowedIp, Device, Peer};

const WGDEVICE_A_IFINDEX: u16 = 1;
const WGDEVICE_A_IFNAME: u16 = 2;
const WGDEVICE_A_PRIVATE_KEY: u16 = 3;
const WGDEVICE_A_PUBLIC_KEY: u16 = 4;
const WGDEVICE_A_LISTEN_PORT: u16 = 6;
const WGDEVICE_A_FWMARK: u16 = 7;
const WGDEVICE_A_PEERS: u16 = 8;

const WGPEER_A_PUBLIC_KEY: u16 = 1;
const WGPEER_A_PRESHARED_KEY: u16 = 2;
const WGPEER_A_ENDPOINT: u16 = 4;
const WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL: u16 = 5;
const WGPEER_A_LAST_HANDSHAKE_TIME: u16 = 6;
const WGPEER_A_RX_BYTES: u16 = 7;
const WGPEER_A_TX_BYTES: u16 = 8;
const WGPEER_A_ALLOWEDIPS: u16 = 9;
const WGPEER_A_PROTOCOL_VERSION: u16 = 10;

const WGALLOWEDIP_A_FAMILY: u16 = 1;
const WGALLOWEDIP_A_IPADDR: u16 = 2;
const WGALLOWEDIP_A_CIDR_MASK: u16 = 3;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Where a dump stands after a datagram was fed to [`DumpParser::feed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DumpStatus {
    /// More datagrams follow.
    More,
    /// `NLMSG_DONE` arrived with success. Check [`DumpParser::interrupted`] before trusting
    /// the result.
    Done,
}

/// Incremental parser for the replies to one `WG_CMD_GET_DEVICE` dump.
///
/// Feed it every datagram received after the request; it accumulates a [`Device`], merges a
/// peer that continues in the next message (same public key, only more allowed IPs) into the
/// previous one, and accepts device attributes in any message (the kernel repeats them when
/// the first peer's allowed IPs overflow message 1, and omits them afterwards).
#[derive(Debug, Default)]
pub struct DumpParser {
    device: Device,
    expect_seq: Option<u32>,
    interrupted: bool,
    done: bool,
    messages: usize,
}

fn bad(what: &str) -> Error {
    Error::Malformed(what.to_owned())
}

fn u16_of(v: &[u8], what: &str) -> Result<u16> {
    <[u8; 2]>::try_from(v)
        .map(u16::from_ne_bytes)
        .map_err(|_| bad(what))
}
fn u32_of(v: &[u8], what: &str) -> Result<u32> {
    <[u8; 4]>::try_from(v)
        .map(u32::from_ne_bytes)
        .map_err(|_| bad(what))
}
fn u64_of(v: &[u8], what: &str) -> Result<u64> {
    <[u8; 8]>::try_from(v)
        .map(u64::from_ne_bytes)
        .map_err(|_| bad(what))
}
fn key_of(v: &[u8], what: &str) -> Result<[u8; KEY_LEN]> {
    <[u8; KEY_LEN]>::try_from(v).map_err(|_| bad(what))
}

impl DumpParser {
    /// A parser accepting messages with any sequence number.
    pub fn new() -> Self {
        Self::default()
    }

    /// A parser that ignores messages whose sequence number is not `seq` (stale replies to an
    /// earlier, abandoned request on the same socket).
    pub fn with_seq(seq: u32) -> Self {
        Self {
            expect_seq: Some(seq),
            ..Self::default()
        }
    }

    /// `true` if any message carried `NLM_F_DUMP_INTR`: the device changed during the dump, the
    /// result may be truncated or mixed, and the dump must be repeated.
    pub fn interrupted(&self) -> bool {
        self.interrupted
    }

    /// Number of WireGuard data messages seen so far.
    pub fn message_count(&self) -> usize {
        self.messages
    }

    /// Parses one datagram (one or more netlink messages).
    ///
    /// An `NLMSG_ERROR` or an `NLMSG_DONE` carrying an errno becomes the matching [`Error`];
    /// `device` is only used for that error's text.
    pub fn feed(&mut self, datagram: &[u8]) -> Result<DumpStatus> {
        self.feed_for(datagram, "device")
    }

    pub(crate) fn feed_for(&mut self, datagram: &[u8], device: &str) -> Result<DumpStatus> {
        for msg in messages(datagram) {
            let msg = msg?;
            if self.expect_seq.is_some_and(|s| s != msg.seq) {
                continue;
            }
            if self.done {
                return Err(bad("message after NLMSG_DONE"));
            }
            if msg.flags & NLM_F_DUMP_INTR != 0 {
                self.interrupted = true;
            }
            match msg.ty {
                NLMSG_NOOP => {}
                NLMSG_DONE => {
                    // Old kernels may send an empty DONE; treat it as success.
                    let errno = if msg.payload.len() >= 4 {
                        payload_errno(msg.payload)?
                    } else {
                        0
                    };
                    if errno != 0 {
                        return Err(Error::from_errno(errno, Op::GetDevice, device));
                    }
                    self.done = true;
                }
                NLMSG_ERROR => {
                    let errno = payload_errno(msg.payload)?;
                    if errno != 0 {
                        return Err(Error::from_errno(errno, Op::GetDevice, device));
                    }
                    // An ACK ends a request that did not produce a dump.
                    self.done = true;
                }
                NLMSG_OVERRUN => return Err(bad("NLMSG_OVERRUN in dump")),
                t if t < 16 => {
                    return Err(Error::Malformed(format!(
                        "unexpected netlink message type {t}"
                    )));
                }
                _ => {
                    self.messages += 1;
                    let attrs = msg
                        .payload
                        .get(GENL_HDRLEN..)
                        .ok_or_else(|| bad("generic netlink header missing"))?;
                    self.parse_device_attrs(attrs)?;
                }
            }
        }
        Ok(if self.done {
            DumpStatus::Done
        } else {
            DumpStatus::More
        })
    }

    fn parse_device_attrs(&mut self, attrs: &[u8]) -> Result<()> {
        for a in Attrs::new(attrs) {
            let (kind, v) = a?;
            let d = &mut self.device;
            match kind {
                WGDEVICE_A_IFINDEX => d.ifindex = u32_of(v, "WGDEVICE_A_IFINDEX")?,
                WGDEVICE_A_IFNAME => {
                    let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
                    let name = std::str::from_utf8(&v[..end])
                        .map_err(|_| bad("WGDEVICE_A_IFNAME not UTF-8"))?;
                    if d.name != name {
                        d.name = name.to_owned();
                    }
                }
                WGDEVICE_A_PRIVATE_KEY => {
                    let k = PrivateKey::from_bytes(key_of(v, "WGDEVICE_A_PRIVATE_KEY")?);
                    d.private_key = (!k.is_zero()).then_some(k);
                }
                WGDEVICE_A_PUBLIC_KEY => {
                    let k = Key::from_bytes(key_of(v, "WGDEVICE_A_PUBLIC_KEY")?);
                    d.public_key = (!k.is_zero()).then_some(k);
                }
                WGDEVICE_A_LISTEN_PORT => d.listen_port = u16_of(v, "WGDEVICE_A_LISTEN_PORT")?,
                WGDEVICE_A_FWMARK => d.fwmark = u32_of(v, "WGDEVICE_A_FWMARK")?,
                WGDEVICE_A_PEERS => {
                    for p in Attrs::new(v) {
                        let (_index, pv) = p?;
                        self.parse_peer(pv)?;
                    }
                }
                _ => {} // pad, flags (input only) and attributes from newer kernels
            }
        }
        Ok(())
    }

    fn parse_peer(&mut self, attrs: &[u8]) -> Result<()> {
        // Find the key first: it decides between a new peer and a continuation.
        let mut key = None;
        for a in Attrs::new(attrs) {
            let (kind, v) = a?;
            if kind == WGPEER_A_PUBLIC_KEY {
                key = Some(Key::from_bytes(key_of(v, "WGPEER_A_PUBLIC_KEY")?));
                break;
            }
        }
        let key = key.ok_or_else(|| bad("peer without WGPEER_A_PUBLIC_KEY"))?;
        let peers = &mut self.device.peers;
        if peers.last().is_none_or(|p| p.public_key != key) {
            peers.push(Peer::new(key));
        }
        let peer = peers.last_mut().expect("pushed above");
        let context = |what: &str| Error::Malformed(format!("{what} of peer {key}"));
        for a in Attrs::new(attrs) {
            let (kind, v) = a?;
            match kind {
                WGPEER_A_PRESHARED_KEY => {
                    let k = PresharedKey::from_bytes(key_of(v, "WGPEER_A_PRESHARED_KEY")?);
                    peer.preshared_key = (!k.is_zero()).then_some(k);
                }
                WGPEER_A_ENDPOINT => {
                    peer.endpoint = parse_endpoint(v).ok_or_else(|| context("bad endpoint"))?
                }
                WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL => {
                    peer.persistent_keepalive =
                        u16_of(v, "WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL")?;
                }
                WGPEER_A_LAST_HANDSHAKE_TIME => {
                    peer.last_handshake =
                        parse_timespec(v).ok_or_else(|| context("bad last handshake time"))?;
                }
                WGPEER_A_RX_BYTES => peer.rx_bytes = u64_of(v, "WGPEER_A_RX_BYTES")?,
                WGPEER_A_TX_BYTES => peer.tx_bytes = u64_of(v, "WGPEER_A_TX_BYTES")?,
                WGPEER_A_PROTOCOL_VERSION => {
                    peer.protocol_version = u32_of(v, "WGPEER_A_PROTOCOL_VERSION")?
                }
                WGPEER_A_ALLOWEDIPS => {
                    for ip in Attrs::new(v) {
                        let (_index, iv) = ip?;
                        peer.allowed_ips
                            .push(parse_allowed_ip(iv).map_err(|e| match e {
                                Error::Malformed(m) => context(&m),
                                e => e,
                            })?);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Ends the dump and returns the device. Fails if `NLMSG_DONE` was not seen or the dump
    /// was interrupted (`NLM_F_DUMP_INTR`).
    pub fn finish(self) -> Result<Device> {
        if !self.done {
            return Err(bad("dump ended without NLMSG_DONE"));
        }
        if self.interrupted {
            return Err(Error::Interrupted { attempts: 1 });
        }
        Ok(self.device)
    }
}

fn parse_allowed_ip(attrs: &[u8]) -> Result<AllowedIp> {
    let (mut family, mut addr, mut cidr) = (None, None, None);
    for a in Attrs::new(attrs) {
        let (kind, v) = a?;
        match kind {
            WGALLOWEDIP_A_FAMILY => family = Some(u16_of(v, "WGALLOWEDIP_A_FAMILY")?),
            WGALLOWEDIP_A_IPADDR => addr = Some(v),
            WGALLOWEDIP_A_CIDR_MASK => {
                cidr = Some(
                    *v.first()
                        .ok_or_else(|| bad("empty WGALLOWEDIP_A_CIDR_MASK"))?,
                )
            }
            _ => {}
        }
    }
    let (Some(family), Some(addr), Some(cidr)) = (family, addr, cidr) else {
        return Err(bad("allowed IP missing family, address or mask"));
    };
    let ip = match (family, addr.len()) {
        (AF_INET, 4) => Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]).into(),
        (AF_INET6, 16) => {
            Ipv6Addr::from(<[u8; 16]>::try_from(addr).expect("length checked")).into()
        }
        _ => {
            return Err(Error::Malformed(format!(
                "allowed IP family {family} with {} address bytes",
                addr.len()
            )));
        }
    };
    AllowedIp::new(ip, cidr)
        .map_err(|_| Error::Malformed(format!("allowed IP mask /{cidr} too long")))
}

/// Raw `sockaddr_in` / `sockaddr_in6` → `SocketAddr`. `Some(None)` for `AF_UNSPEC`.
fn parse_endpoint(v: &[u8]) -> Option<Option<SocketAddr>> {
    let family = u16::from_ne_bytes([*v.first()?, *v.get(1)?]);
    match (family, v.len()) {
        (0, _) => Some(None),
        (AF_INET, 16..) => {
            let port = u16::from_be_bytes([v[2], v[3]]);
            Some(Some(
                SocketAddrV4::new(Ipv4Addr::new(v[4], v[5], v[6], v[7]), port).into(),
            ))
        }
        (AF_INET6, 28..) => {
            let port = u16::from_be_bytes([v[2], v[3]]);
            let flow = u32::from_be_bytes([v[4], v[5], v[6], v[7]]);
            let ip = Ipv6Addr::from(<[u8; 16]>::try_from(&v[8..24]).ok()?);
            let scope = u32::from_ne_bytes([v[24], v[25], v[26], v[27]]);
            Some(Some(SocketAddrV6::new(ip, port, flow, scope).into()))
        }
        _ => None,
    }
}

/// `struct __kernel_timespec` → wall-clock time; `{0, 0}` = never.
fn parse_timespec(v: &[u8]) -> Option<Option<SystemTime>> {
    let (sec, nsec) = match v.len() {
        16 => (
            i64::from_ne_bytes(v[..8].try_into().ok()?),
            i64::from_ne_bytes(v[8..16].try_into().ok()?),
        ),
        _ => return None,
    };
    if sec == 0 && nsec == 0 {
        return Some(None);
    }
    if !(0..1_000_000_000).contains(&nsec) {
        return None;
    }
    let t = if sec >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(sec as u64, nsec as u32))?
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(sec.unsigned_abs()))?
            .checked_add(Duration::from_nanos(nsec as u64))?
    };
    Some(Some(t))
}

/// Parses a complete dump given as the concatenation of all its reply datagrams (for
/// captured fixtures, fuzzing and benchmarks).
///
/// Fails on malformed input, on an error reply, if `NLMSG_DONE` is missing, and if any
/// message carries `NLM_F_DUMP_INTR`.
pub fn parse_dump(bytes: &[u8]) -> Result<Device> {
    let mut p = DumpParser::new();
    p.feed(bytes)?;
    p.finish()
}
