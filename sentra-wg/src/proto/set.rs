//! Splitting a [`DeviceUpdate`] into `WG_CMD_SET_DEVICE` messages.
//!
//! The kernel reads one `WGDEVICE_A_PEERS` nest per message and an attribute's length is a
//! `u16`, so a message can carry at most 65 535 bytes of peers (`netlink-packet-core` panics
//! beyond that). The rules, as in `wg(8)`'s `kernel_set_device`:
//!
//! * every message names the device (IFNAME or IFINDEX);
//! * device attributes (private key, listen port, fwmark, `REPLACE_PEERS`) only in message 1;
//! * a peer that does not fit continues in the next message: its first fragment carries
//!   preshared key, endpoint, keepalive and `REPLACE_ALLOWEDIPS`; each continuation carries
//!   the public key, `REMOVE_ME`/`UPDATE_ONLY` again (so a peer that vanished is not re-created
//!   with half its allowed IPs) and further allowed IPs only;
//! * peers are packed greedily by encoded size, so 100 000 one-address peers take about 220
//!   messages;
//! * after `REPLACE_PEERS` every peer is created afresh, so a peer's first appearance leaves out
//!   what equals a new peer's defaults: an all-zero preshared key, a keepalive of 0 and
//!   `REPLACE_ALLOWEDIPS` (44 of the 196 bytes of a peer with two allowed IPs and an IPv6
//!   endpoint; 100 000 such peers take 233 messages instead of 300).

use std::net::{IpAddr, SocketAddr};

use netlink_packet_core::{
    DefaultNla, NLM_F_ACK, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_generic::GenlMessage;
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute,
    WireguardCmd, WireguardDeviceFlags, WireguardMessage, WireguardPeer, WireguardPeerAttribute,
    WireguardPeerFlags,
};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};
use crate::key::Key;
use crate::model::{AllowedIp, DeviceRef, DeviceUpdate, PeerUpdate};

const WGPEER_A_ENDPOINT: u16 = 4;
/// Largest `WGDEVICE_A_PEERS` payload: the attribute length (header included) is a `u16`.
const MAX_PEERS_PAYLOAD: usize = u16::MAX as usize - 4;

/// The default (and largest) number of payload bytes of peers per message.
pub const fn peers_nest_budget() -> usize {
    MAX_PEERS_PAYLOAD
}

/// One serialized `WG_CMD_SET_DEVICE` request (`NLM_F_REQUEST | NLM_F_ACK`).
///
/// The bytes may contain a private or preshared key and are zeroized on drop.
#[derive(Clone)]
pub struct SetMessage {
    bytes: Zeroizing<Vec<u8>>,
    first_peer: Option<Key>,
    peer_fragments: usize,
}

impl std::fmt::Debug for SetMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetMessage")
            .field("len", &self.bytes.len())
            .field("first_peer", &self.first_peer)
            .field("peer_fragments", &self.peer_fragments)
            .finish()
    }
}

impl SetMessage {
    /// The netlink message (sequence number 0 until the socket layer sets it).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
    /// The first peer this message touches (for error reports).
    pub fn first_peer(&self) -> Option<Key> {
        self.first_peer
    }
    /// How many peer nests (first fragments and continuations) the message carries.
    pub fn peer_fragments(&self) -> usize {
        self.peer_fragments
    }
}

fn ip_size(ip: &AllowedIp) -> usize {
    // nest header + family (u16 → 8) + address (4 + 4|16) + cidr (u8 → 8)
    4 + 8 + 4 + if ip.addr().is_ipv4() { 4 } else { 16 } + 8
}

/// Where a peer nest stands: the first fragment of a peer or a continuation, and whether the
/// peer is new for certain (the update replaces all peers and this key appears for the first
/// time), so attributes equal to a new peer's defaults can be left out.
#[derive(Clone, Copy)]
struct Frag {
    first: bool,
    fresh: bool,
}

fn flags_of(p: &PeerUpdate, Frag { first, fresh }: Frag) -> u32 {
    let mut f = 0;
    if p.remove {
        f |= 1;
    }
    // a new peer has no allowed IPs to replace
    if p.replace_allowed_ips && first && !fresh && !p.remove {
        f |= 2;
    }
    if p.update_only {
        f |= 4;
    }
    f
}

/// The preshared key a first fragment carries: none if it equals a new peer's (all zero).
fn psk_of(p: &PeerUpdate, fr: Frag) -> Option<&crate::key::PresharedKey> {
    p.preshared_key
        .as_ref()
        .filter(|k| fr.first && !p.remove && !(fr.fresh && k.is_zero()))
}

/// The keepalive a first fragment carries: none if it equals a new peer's (0, off).
fn keepalive_of(p: &PeerUpdate, fr: Frag) -> Option<u16> {
    p.persistent_keepalive
        .filter(|&k| fr.first && !p.remove && !(fr.fresh && k == 0))
}

/// Bytes of a peer nest before its allowed IPs (header, key, flags, first-fragment extras,
/// and the ALLOWEDIPS nest header if `with_ips`).
fn peer_base_size(p: &PeerUpdate, fr: Frag, with_ips: bool) -> usize {
    let mut n = 4 + 4 + 32;
    if flags_of(p, fr) != 0 {
        n += 8;
    }
    if psk_of(p, fr).is_some() {
        n += 36;
    }
    if fr.first
        && !p.remove
        && let Some(e) = p.endpoint
    {
        n += 4 + if e.is_ipv4() { 16 } else { 28 };
    }
    if keepalive_of(p, fr).is_some() {
        n += 8;
    }
    if with_ips {
        n += 4;
    }
    n
}

pub(crate) fn endpoint_bytes(e: &SocketAddr) -> Vec<u8> {
    // Written by hand: netlink-packet-wireguard 0.5 emits sin6_flowinfo host-endian, the
    // kernel's `struct sockaddr_in6` has it big-endian.
    match e {
        SocketAddr::V4(a) => {
            let mut v = Vec::with_capacity(16);
            v.extend_from_slice(&2u16.to_ne_bytes());
            v.extend_from_slice(&a.port().to_be_bytes());
            v.extend_from_slice(&a.ip().octets());
            v.extend_from_slice(&[0; 8]);
            v
        }
        SocketAddr::V6(a) => {
            let mut v = Vec::with_capacity(28);
            v.extend_from_slice(&10u16.to_ne_bytes());
            v.extend_from_slice(&a.port().to_be_bytes());
            v.extend_from_slice(&a.flowinfo().to_be_bytes());
            v.extend_from_slice(&a.ip().octets());
            v.extend_from_slice(&a.scope_id().to_ne_bytes());
            v
        }
    }
}

fn fragment(p: &PeerUpdate, fr: Frag, ips: &[AllowedIp]) -> WireguardPeer {
    let mut attrs = vec![WireguardPeerAttribute::PublicKey(*p.public_key.as_bytes())];
    let flags = flags_of(p, fr);
    if flags != 0 {
        attrs.push(WireguardPeerAttribute::Flags(
            WireguardPeerFlags::from_bits_retain(flags),
        ));
    }
    if let Some(psk) = psk_of(p, fr) {
        attrs.push(WireguardPeerAttribute::PresharedKey(*psk.as_bytes()));
    }
    if fr.first
        && !p.remove
        && let Some(e) = &p.endpoint
    {
        attrs.push(WireguardPeerAttribute::Other(DefaultNla::new(
            WGPEER_A_ENDPOINT,
            endpoint_bytes(e),
        )));
    }
    if let Some(k) = keepalive_of(p, fr) {
        attrs.push(WireguardPeerAttribute::PersistentKeepalive(k));
    }
    if !ips.is_empty() {
        attrs.push(WireguardPeerAttribute::AllowedIps(
            ips.iter()
                .map(|ip| {
                    WireguardAllowedIp(vec![
                        WireguardAllowedIpAttr::Family(match ip.addr() {
                            IpAddr::V4(_) => WireguardAddressFamily::Ipv4,
                            IpAddr::V6(_) => WireguardAddressFamily::Ipv6,
                        }),
                        WireguardAllowedIpAttr::IpAddr(ip.addr()),
                        WireguardAllowedIpAttr::Cidr(ip.cidr()),
                    ])
                })
                .collect(),
        ));
    }
    WireguardPeer(attrs)
}

struct Chunk {
    attrs: Vec<WireguardAttribute>,
    peers: Vec<WireguardPeer>,
    first_peer: Option<Key>,
    used: usize,
}

fn wipe(attrs: &mut [WireguardAttribute]) {
    for a in attrs {
        match a {
            WireguardAttribute::PrivateKey(k) => k.zeroize(),
            WireguardAttribute::Peers(peers) => {
                for p in peers {
                    for pa in &mut p.0 {
                        if let WireguardPeerAttribute::PresharedKey(k) = pa {
                            k.zeroize();
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

fn finish_chunk(chunk: Chunk, family: u16, out: &mut Vec<SetMessage>) {
    let Chunk {
        mut attrs,
        peers,
        first_peer,
        used,
    } = chunk;
    let peer_fragments = peers.len();
    if !peers.is_empty() {
        attrs.push(WireguardAttribute::Peers(peers));
    }
    let mut genl = GenlMessage::from_payload(WireguardMessage {
        cmd: WireguardCmd::SetDevice,
        attributes: attrs,
    });
    genl.set_resolved_family_id(family);
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(genl));
    msg.finalize();
    let mut bytes = Zeroizing::new(vec![0u8; msg.buffer_len()]);
    msg.serialize(&mut bytes);
    if let NetlinkPayload::InnerMessage(g) = &mut msg.payload {
        wipe(&mut g.payload.attributes);
    }
    debug_assert!(used <= MAX_PEERS_PAYLOAD, "peers nest of {used} bytes");
    out.push(SetMessage {
        bytes,
        first_peer,
        peer_fragments,
    });
}

fn device_attr(device: &DeviceRef) -> WireguardAttribute {
    match device {
        DeviceRef::Name(n) => WireguardAttribute::IfName(n.clone()),
        DeviceRef::Index(i) => WireguardAttribute::IfIndex(*i),
    }
}

/// Splits `update` into SET messages for `device` on generic-netlink family `family`, with at
/// most `peers_budget` bytes of peers per message (use [`peers_nest_budget`]; smaller values
/// are for tests). An empty update yields no messages at all.
pub fn build_set(
    device: &DeviceRef,
    update: &DeviceUpdate,
    family: u16,
    peers_budget: usize,
) -> Result<Vec<SetMessage>> {
    device.validate()?;
    if !(256..=MAX_PEERS_PAYLOAD).contains(&peers_budget) {
        return Err(Error::InvalidArgument(format!(
            "peers budget {peers_budget} outside 256..={MAX_PEERS_PAYLOAD}"
        )));
    }
    let mut out = Vec::new();
    if update.is_empty() {
        return Ok(out);
    }
    let new_chunk = |first: bool| {
        let mut attrs = vec![device_attr(device)];
        if first {
            if let Some(k) = &update.private_key {
                attrs.push(WireguardAttribute::PrivateKey(*k.as_bytes()));
            }
            if let Some(p) = update.listen_port {
                attrs.push(WireguardAttribute::ListenPort(p));
            }
            if let Some(m) = update.fwmark {
                attrs.push(WireguardAttribute::Fwmark(m));
            }
            if update.replace_peers {
                attrs.push(WireguardAttribute::Flags(
                    WireguardDeviceFlags::ReplacePeers,
                ));
            }
        }
        Chunk {
            attrs,
            peers: Vec::new(),
            first_peer: None,
            used: 0,
        }
    };
    let mut chunk = new_chunk(true);
    // With REPLACE_PEERS (message 1) every key is new at its first appearance.
    let mut seen = update
        .replace_peers
        .then(|| std::collections::HashSet::with_capacity(update.peers.len()));
    for p in &update.peers {
        let ips: &[AllowedIp] = if p.remove { &[] } else { &p.allowed_ips };
        let fresh = seen.as_mut().is_some_and(|s| s.insert(p.public_key));
        let mut i = 0;
        let mut first = true;
        loop {
            let fr = Frag { first, fresh };
            let base = peer_base_size(p, fr, i < ips.len());
            let need = base + ips.get(i).map_or(0, ip_size);
            if chunk.used + need > peers_budget {
                let old = std::mem::replace(&mut chunk, new_chunk(false));
                finish_chunk(old, family, &mut out);
                continue;
            }
            let mut used = base;
            let mut j = i;
            while j < ips.len() && chunk.used + used + ip_size(&ips[j]) <= peers_budget {
                used += ip_size(&ips[j]);
                j += 1;
            }
            chunk.peers.push(fragment(p, fr, &ips[i..j]));
            chunk.first_peer.get_or_insert(p.public_key);
            chunk.used += used;
            i = j;
            first = false;
            if i >= ips.len() {
                break;
            }
            let old = std::mem::replace(&mut chunk, new_chunk(false));
            finish_chunk(old, family, &mut out);
        }
    }
    finish_chunk(chunk, family, &mut out);
    Ok(out)
}
