//! Emitting a dump the way the kernel does (for tests, benchmarks and fuzz seeds).

use std::net::IpAddr;
use std::time::UNIX_EPOCH;

use netlink_packet_core::{DefaultNla, Emitable as _};
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute,
    WireguardPeer, WireguardPeerAttribute, WireguardTimeSpec,
};

use super::{GENL_HDRLEN, NLMSG_DONE, NLMSG_HDRLEN, align4};
use crate::model::{AllowedIp, Device, Peer};

const NLM_F_MULTI: u16 = 2;
const WGPEER_A_ENDPOINT: u16 = 4;

fn allowed(ip: &AllowedIp) -> WireguardAllowedIp {
    WireguardAllowedIp(vec![
        WireguardAllowedIpAttr::Family(match ip.addr() {
            IpAddr::V4(_) => WireguardAddressFamily::Ipv4,
            IpAddr::V6(_) => WireguardAddressFamily::Ipv6,
        }),
        WireguardAllowedIpAttr::IpAddr(ip.addr()),
        WireguardAllowedIpAttr::Cidr(ip.cidr()),
    ])
}

fn peer_head(p: &Peer) -> Vec<WireguardPeerAttribute> {
    let ts = match p.last_handshake {
        None => WireguardTimeSpec::default(),
        Some(t) => {
            let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
            WireguardTimeSpec {
                seconds: d.as_secs() as i64,
                nano_seconds: i64::from(d.subsec_nanos()),
            }
        }
    };
    let mut v = vec![
        WireguardPeerAttribute::PublicKey(*p.public_key.as_bytes()),
        WireguardPeerAttribute::PresharedKey(
            p.preshared_key.as_ref().map_or([0; 32], |k| *k.as_bytes()),
        ),
        WireguardPeerAttribute::LastHandshake(ts),
        WireguardPeerAttribute::PersistentKeepalive(p.persistent_keepalive),
        WireguardPeerAttribute::TxBytes(p.tx_bytes),
        WireguardPeerAttribute::RxBytes(p.rx_bytes),
        WireguardPeerAttribute::ProtocolVersion(p.protocol_version),
    ];
    if let Some(e) = &p.endpoint {
        v.push(WireguardPeerAttribute::Other(DefaultNla::new(
            WGPEER_A_ENDPOINT,
            super::set::endpoint_bytes(e),
        )));
    }
    v
}

fn message(out: &mut Vec<u8>, family: u16, seq: u32, attrs: &[WireguardAttribute]) {
    let len = NLMSG_HDRLEN + GENL_HDRLEN + attrs.buffer_len();
    let start = out.len();
    out.resize(start + align4(len), 0);
    let b = &mut out[start..];
    b[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
    b[4..6].copy_from_slice(&family.to_ne_bytes());
    b[6..8].copy_from_slice(&NLM_F_MULTI.to_ne_bytes());
    b[8..12].copy_from_slice(&seq.to_ne_bytes());
    b[16] = 0; // WG_CMD_GET_DEVICE
    b[17] = 1; // version
    attrs.emit(&mut b[NLMSG_HDRLEN + GENL_HDRLEN..len]);
}

/// Emits `device` as the kernel's `WG_CMD_GET_DEVICE` dump would: device attributes in the
/// first message only, peers packed into messages of at most `max_msg` bytes, a peer whose
/// allowed IPs do not fit continued in the next message with only its public key and more
/// allowed IPs, then `NLMSG_DONE`. All messages are concatenated.
pub fn emit_dump(device: &Device, family: u16, seq: u32, max_msg: usize) -> Vec<u8> {
    let max_msg = max_msg.max(512);
    let mut out = Vec::new();
    let mut attrs = vec![
        WireguardAttribute::ListenPort(device.listen_port),
        WireguardAttribute::Fwmark(device.fwmark),
        WireguardAttribute::IfIndex(device.ifindex),
        WireguardAttribute::IfName(device.name.clone()),
    ];
    if let Some(k) = &device.private_key {
        attrs.push(WireguardAttribute::PrivateKey(*k.as_bytes()));
    }
    if let Some(k) = &device.public_key {
        attrs.push(WireguardAttribute::PublicKey(*k.as_bytes()));
    }
    let budget = max_msg - NLMSG_HDRLEN - GENL_HDRLEN;
    let mut peers: Vec<WireguardPeer> = Vec::new();
    let flush =
        |out: &mut Vec<u8>, attrs: &mut Vec<WireguardAttribute>, peers: &mut Vec<WireguardPeer>| {
            if !peers.is_empty() {
                attrs.push(WireguardAttribute::Peers(std::mem::take(peers)));
            }
            message(out, family, seq, attrs);
            attrs.clear();
        };
    let used = |attrs: &Vec<WireguardAttribute>, peers: &Vec<WireguardPeer>| {
        attrs.as_slice().buffer_len()
            + if peers.is_empty() {
                0
            } else {
                4 + peers.as_slice().buffer_len()
            }
    };
    for p in &device.peers {
        let mut i = 0;
        let mut first = true;
        loop {
            let mut frag = if first {
                peer_head(p)
            } else {
                vec![WireguardPeerAttribute::PublicKey(*p.public_key.as_bytes())]
            };
            let head_len = 4 + frag.as_slice().buffer_len() + if peers.is_empty() { 4 } else { 0 };
            let mut ips = Vec::new();
            let mut ips_len = if i < p.allowed_ips.len() { 4 } else { 0 };
            while i < p.allowed_ips.len() {
                let a = allowed(&p.allowed_ips[i]);
                let l = a.buffer_len();
                if used(&attrs, &peers) + head_len + ips_len + l > budget {
                    break;
                }
                ips_len += l;
                ips.push(a);
                i += 1;
            }
            let fits = used(&attrs, &peers) + head_len + ips_len <= budget;
            let made_progress = !ips.is_empty() || (first && i >= p.allowed_ips.len());
            if !fits || !made_progress {
                assert!(
                    !peers.is_empty() || !attrs.is_empty(),
                    "a single peer head never exceeds {max_msg} bytes"
                );
                flush(&mut out, &mut attrs, &mut peers);
                continue;
            }
            if !ips.is_empty() {
                frag.push(WireguardPeerAttribute::AllowedIps(ips));
            }
            peers.push(WireguardPeer(frag));
            first = false;
            if i >= p.allowed_ips.len() {
                break;
            }
            flush(&mut out, &mut attrs, &mut peers);
        }
    }
    if !peers.is_empty() || !attrs.is_empty() {
        flush(&mut out, &mut attrs, &mut peers);
    }
    let start = out.len();
    out.resize(start + NLMSG_HDRLEN + 4, 0);
    let b = &mut out[start..];
    b[0..4].copy_from_slice(&((NLMSG_HDRLEN + 4) as u32).to_ne_bytes());
    b[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
    b[6..8].copy_from_slice(&NLM_F_MULTI.to_ne_bytes());
    b[8..12].copy_from_slice(&seq.to_ne_bytes());
    out
}
