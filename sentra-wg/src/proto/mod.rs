//! Sans-IO generic netlink for WireGuard: message building and reply parsing, no sockets.
//!
//! * [`DumpParser`] turns the datagrams of a `WG_CMD_GET_DEVICE` dump into a [`Device`],
//!   coalescing peers that the kernel continued across messages, tolerating repeated or missing
//!   device attributes, and reporting `NLM_F_DUMP_INTR` and the errno carried by `NLMSG_DONE`.
//! * [`build_set`] splits a [`DeviceUpdate`] into `WG_CMD_SET_DEVICE` messages whose
//!   `WGDEVICE_A_PEERS` nest never exceeds 65 535 bytes, following the kernel's flag rules.
//! * [`get_device_request`] and [`resolve_family_request`] build the other two requests.
//!
//! Requests are emitted with `netlink-packet-core` / `netlink-packet-generic` /
//! `netlink-packet-wireguard`. Replies are parsed by hand in this module instead of with
//! `netlink-packet-wireguard`, because that crate (0.5.0) panics on an empty
//! `WGALLOWEDIP_A_CIDR_MASK` attribute (it indexes `payload[0]`), allocates a `Vec` per
//! attribute level (about 4× slower than this zero-copy walk on a 100 000-peer dump), and has
//! no notion of `NLM_F_DUMP_INTR` or continuation peers. The golden-byte tests check both
//! parsers agree on real kernel output.
//!
//! [`Device`]: crate::Device
//! [`DeviceUpdate`]: crate::DeviceUpdate

mod dump;
mod emit;
mod set;
#[cfg(test)]
mod tests_prop;

pub use dump::{DumpParser, DumpStatus, parse_dump};
pub use emit::emit_dump;
pub use set::{SetMessage, build_set, peers_nest_budget};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_generic::GenlMessage;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd, nlas::GenlCtrlAttrs};
use netlink_packet_wireguard::{WireguardAttribute, WireguardCmd, WireguardMessage};

use crate::error::{Error, Result};
use crate::model::DeviceRef;

pub(crate) const NLMSG_HDRLEN: usize = 16;
pub(crate) const GENL_HDRLEN: usize = 4;
pub(crate) const NLMSG_NOOP: u16 = 1;
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const NLMSG_OVERRUN: u16 = 4;
/// The generic netlink controller's fixed family id.
pub const GENL_ID_CTRL: u16 = 16;
pub(crate) const NLM_F_DUMP_INTR: u16 = 16;
const NLA_TYPE_MASK: u16 = !(0x8000 | 0x4000);

pub(crate) const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A netlink attribute walk over a byte slice, yielding `(type without flag bits, payload)`.
#[derive(Debug, Clone)]
pub(crate) struct Attrs<'a> {
    buf: &'a [u8],
}

impl<'a> Attrs<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<(u16, &'a [u8])>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let buf = self.buf;
        if buf.len() < 4 {
            self.buf = &[];
            return Some(Err(Error::Malformed(format!(
                "{} trailing bytes after attributes",
                buf.len()
            ))));
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            self.buf = &[];
            return Some(Err(Error::Malformed(format!(
                "attribute type {kind} has length {len} with {} bytes left",
                buf.len()
            ))));
        }
        self.buf = &buf[align4(len).min(buf.len())..];
        Some(Ok((kind, &buf[4..len])))
    }
}

/// One netlink message inside a datagram.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Msg<'a> {
    pub(crate) ty: u16,
    pub(crate) flags: u16,
    pub(crate) seq: u32,
    pub(crate) payload: &'a [u8],
}

/// Walks the netlink messages of one datagram (or of a concatenation of datagrams).
pub(crate) fn messages(mut buf: &[u8]) -> impl Iterator<Item = Result<Msg<'_>>> + '_ {
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        if buf.len() < NLMSG_HDRLEN {
            let n = buf.len();
            buf = &[];
            return Some(Err(Error::Malformed(format!(
                "{n} trailing bytes, less than a netlink header"
            ))));
        }
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            let n = buf.len();
            buf = &[];
            return Some(Err(Error::Malformed(format!(
                "netlink message length {len} with {n} bytes left"
            ))));
        }
        let msg = Msg {
            ty: u16::from_ne_bytes([buf[4], buf[5]]),
            flags: u16::from_ne_bytes([buf[6], buf[7]]),
            seq: u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]),
            payload: &buf[NLMSG_HDRLEN..len],
        };
        buf = &buf[align4(len).min(buf.len())..];
        Some(Ok(msg))
    })
}

/// The errno (positive) carried by an `NLMSG_ERROR` or `NLMSG_DONE` payload; 0 = success.
pub(crate) fn payload_errno(payload: &[u8]) -> Result<i32> {
    match payload.get(..4) {
        Some(b) => Ok(i32::from_ne_bytes([b[0], b[1], b[2], b[3]]).saturating_neg()),
        None => Err(Error::Malformed(
            "error/done message shorter than 4 bytes".into(),
        )),
    }
}

pub(crate) fn serialize<I>(mut msg: NetlinkMessage<I>) -> Vec<u8>
where
    I: netlink_packet_core::NetlinkSerializable,
{
    msg.finalize();
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

fn header(flags: u16, seq: u32) -> NetlinkHeader {
    let mut h = NetlinkHeader::default();
    h.flags = flags;
    h.sequence_number = seq;
    h
}

/// `CTRL_CMD_GETFAMILY` for `"wireguard"` (request with ACK).
pub fn resolve_family_request(seq: u32) -> Vec<u8> {
    let genl = GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName("wireguard".to_owned())],
    });
    serialize(NetlinkMessage::new(
        header(NLM_F_REQUEST | NLM_F_ACK, seq),
        NetlinkPayload::InnerMessage(genl),
    ))
}

/// Extracts `CTRL_ATTR_FAMILY_ID` from a `CTRL_CMD_NEWFAMILY` reply payload (after the
/// netlink header). Returns `None` if absent.
pub(crate) fn parse_family_id(payload: &[u8]) -> Result<Option<u16>> {
    let attrs = payload
        .get(GENL_HDRLEN..)
        .ok_or_else(|| Error::Malformed("generic netlink header missing".into()))?;
    for a in Attrs::new(attrs) {
        let (kind, value) = a?;
        if kind == 1 {
            let b = value
                .get(..2)
                .ok_or_else(|| Error::Malformed("short CTRL_ATTR_FAMILY_ID".into()))?;
            return Ok(Some(u16::from_ne_bytes([b[0], b[1]])));
        }
    }
    Ok(None)
}

/// `WG_CMD_GET_DEVICE` dump request for one device (only IFINDEX or IFNAME, as the ≥ 6.18
/// GET policy requires).
pub fn get_device_request(family: u16, seq: u32, device: &DeviceRef) -> Result<Vec<u8>> {
    device.validate()?;
    let attr = match device {
        DeviceRef::Name(n) => WireguardAttribute::IfName(n.clone()),
        DeviceRef::Index(i) => WireguardAttribute::IfIndex(*i),
    };
    let mut genl = GenlMessage::from_payload(WireguardMessage {
        cmd: WireguardCmd::GetDevice,
        attributes: vec![attr],
    });
    genl.set_resolved_family_id(family);
    Ok(serialize(NetlinkMessage::new(
        header(NLM_F_REQUEST | NLM_F_DUMP, seq),
        NetlinkPayload::InnerMessage(genl),
    )))
}

/// Overwrites the sequence number of a serialized request.
pub(crate) fn set_seq(msg: &mut [u8], seq: u32) {
    msg[8..12].copy_from_slice(&seq.to_ne_bytes());
}

/// The body of the `wg_dump` fuzz target (also replayed over the committed corpus by a normal
/// `cargo test`): arbitrary bytes as dump replies must give a device or an error, never a
/// panic, and an accepted device must format without panicking.
#[doc(hidden)]
pub fn fuzz_dump(data: &[u8]) {
    if let Ok(device) = parse_dump(data) {
        let _ = crate::show::dump(&device, true, crate::show::Secrets::Show);
        let _ = crate::show::pretty(
            &device,
            std::time::SystemTime::now(),
            crate::show::Secrets::Hide,
        );
    }
    // The same bytes fed as separate datagrams, split at every message boundary.
    let mut parser = DumpParser::new();
    for m in messages(data) {
        let Ok(m) = m else { break };
        let start = m.payload.as_ptr() as usize - data.as_ptr() as usize - NLMSG_HDRLEN;
        let end = (start + align4(NLMSG_HDRLEN + m.payload.len())).min(data.len());
        if parser.feed(&data[start..end]).is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attrs_reject_bad_lengths() {
        let mut v = vec![3u8, 0, 1, 0]; // len 3 < 4
        assert!(Attrs::new(&v).next().unwrap().is_err());
        v = vec![12, 0, 1, 0, 1, 2, 3, 4]; // len 12 > 8
        assert!(Attrs::new(&v).next().unwrap().is_err());
        v = vec![8, 0, 0x01, 0x80, 1, 2, 3, 4, 5]; // nested flag masked, 1 trailing byte
        let mut it = Attrs::new(&v);
        assert_eq!(it.next().unwrap().unwrap(), (1, &[1u8, 2, 3, 4][..]));
        assert!(it.next().unwrap().is_err());
    }

    #[test]
    fn family_request_is_well_formed() {
        let req = resolve_family_request(7);
        let m: Vec<_> = messages(&req).collect::<Result<_>>().unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].ty, GENL_ID_CTRL);
        assert_eq!(m[0].seq, 7);
        assert_eq!(m[0].payload[0], 3); // CTRL_CMD_GETFAMILY
        let attrs: Vec<_> = Attrs::new(&m[0].payload[4..])
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(attrs, vec![(2u16, &b"wireguard\0"[..])]);
    }

    #[test]
    fn get_request_carries_exactly_one_selector() {
        let req = get_device_request(30, 1, &DeviceRef::Index(5)).unwrap();
        let m = messages(&req).next().unwrap().unwrap();
        assert_eq!(m.ty, 30);
        assert_eq!(m.flags, NLM_F_REQUEST | NLM_F_DUMP);
        let attrs: Vec<_> = Attrs::new(&m.payload[4..]).collect::<Result<_>>().unwrap();
        assert_eq!(attrs, vec![(1u16, &5u32.to_ne_bytes()[..])]);
        assert!(get_device_request(30, 1, &DeviceRef::from("a-very-long-ifname")).is_err());
    }
}
