//! A sans-I/O pre-scan of an encoded `MetricBatch` that bounds what decoding it would
//! allocate, before anything is allocated.
//!
//! prost materialises every repeated entry before [`Batch::try_from`](crate::Batch) can look
//! at the counts: a 4 MiB payload of empty `samples` (2 bytes each on the wire, ~100 bytes
//! each once decoded) cost ~200 MiB per request only to be rejected afterwards. The
//! pre-scan walks the protobuf wire format without allocating, counts the repeated entries
//! at every level and estimates the decoded size, and rejects the payload when
//!
//! * a repeated field exceeds its limit: [`MAX_SAMPLES`] samples, [`MAX_WG_DEVICES`]
//!   devices, [`MAX_LABELS`] labels per sample, [`MAX_BUCKETS`] buckets per histogram,
//!   [`MAX_ALLOWED_IPS`] prefixes per peer ([`Error::Malformed`], with the same field path
//!   the post-decode validation would name), or
//! * the estimated decoded size exceeds [`MAX_DECODED_BYTES`] ([`Error::DecodedTooLarge`]).
//!
//! The estimate is the in-memory size of every message prost would put in a `Vec` plus the
//! length of every string and bytes field, counted over every occurrence (prost merges
//! repeated occurrences of a singular message field, so this can only over-count).
//!
//! The scan never fails on its own account for invalid protobuf: where the bytes stop being
//! valid protobuf it stops, checks what it counted so far and lets prost report the decode
//! error. It only stops at bytes that prost cannot decode either (a truncated varint or
//! length, a wire type above 5, a field number 0) and reads every byte before them exactly as
//! prost does, so prost fails no later than the scan stopped and allocates nothing the scan
//! did not count. It never panics, whatever the input (property-tested).

use std::mem::size_of;

use crate::batch::{MAX_ALLOWED_IPS, MAX_BUCKETS, MAX_LABELS, MAX_SAMPLES, MAX_WG_DEVICES};
use crate::{Error, Result, proto};

/// Largest estimated in-memory size of one decoded `MetricBatch`: 32 MiB, eight times the
/// default payload cap ([`DEFAULT_MAX_PAYLOAD`](crate::envelope::DEFAULT_MAX_PAYLOAD)).
///
/// Real batches decode to three to four times their wire size (a 4 MiB batch of typical
/// samples with three labels each is about 14 MiB); empty repeated messages decode to 25 to
/// 50 times theirs.
pub const MAX_DECODED_BYTES: usize = 32 * 1024 * 1024;

/// What the pre-scan counted in one encoded `MetricBatch`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WireCounts {
    /// `samples` entries.
    pub samples: usize,
    /// `labels` entries, over all samples.
    pub labels: usize,
    /// Histogram `buckets` entries, over all samples.
    pub buckets: usize,
    /// `wg_devices` entries.
    pub wg_devices: usize,
    /// `peers` entries, over all devices.
    pub peers: usize,
    /// `allowed_ips` entries, over all peers.
    pub allowed_ips: usize,
    /// Estimated bytes the decoded `proto::MetricBatch` would occupy.
    pub decoded_bytes: usize,
    /// Whether the scan stopped at bytes that are not valid protobuf (decoding will fail).
    pub invalid_wire: bool,
}

/// Scans an encoded `MetricBatch` and checks its counts and estimated decoded size against
/// the limits, without allocating.
///
/// # Errors
///
/// [`Error::Malformed`] naming the repeated field over its limit, or
/// [`Error::DecodedTooLarge`]. Bytes that are not valid protobuf are *not* an error here
/// (see the [module documentation](self)); [`WireCounts::invalid_wire`] says so.
pub fn scan_metric_batch(bytes: &[u8]) -> Result<WireCounts> {
    let mut c = WireCounts {
        decoded_bytes: size_of::<proto::MetricBatch>(),
        ..WireCounts::default()
    };
    let mut r = Reader::new(bytes);
    match batch(&mut r, &mut c) {
        Ok(()) => {}
        Err(Halt::Stop) => c.invalid_wire = true,
        Err(Halt::Limit(e)) => return Err(e),
    }
    if c.samples > MAX_SAMPLES {
        return Err(Error::malformed(
            "samples",
            format!("{} samples, at most {MAX_SAMPLES}", c.samples),
        ));
    }
    if c.wg_devices > MAX_WG_DEVICES {
        return Err(Error::malformed(
            "wg_devices",
            format!("{} devices, at most {MAX_WG_DEVICES}", c.wg_devices),
        ));
    }
    if c.decoded_bytes > MAX_DECODED_BYTES {
        return Err(Error::DecodedTooLarge {
            estimated: c.decoded_bytes,
            limit: MAX_DECODED_BYTES,
        });
    }
    Ok(c)
}

/// The bytes are not valid protobuf from here on.
#[derive(Debug)]
struct Stop;

/// The scan stopped: at invalid protobuf, or at a nested limit (already an error).
enum Halt {
    Stop,
    Limit(Error),
}

impl From<Stop> for Halt {
    fn from(_: Stop) -> Self {
        Self::Stop
    }
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> Result<u64, Stop> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = *self.buf.get(self.pos).ok_or(Stop)?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(Stop)
    }

    /// A field key: (field number, wire type).
    fn key(&mut self) -> Result<(u32, u8), Stop> {
        let k = u32::try_from(self.varint()?).map_err(|_| Stop)?;
        let wire_type = (k & 7) as u8;
        let field = k >> 3;
        if wire_type > FIXED32 || field == 0 {
            return Err(Stop);
        }
        Ok((field, wire_type))
    }

    fn advance(&mut self, n: usize) -> Result<(), Stop> {
        if self.buf.len() - self.pos < n {
            return Err(Stop);
        }
        self.pos += n;
        Ok(())
    }

    fn len_delimited(&mut self) -> Result<&'a [u8], Stop> {
        let len = usize::try_from(self.varint()?).map_err(|_| Stop)?;
        let start = self.pos;
        self.advance(len)?;
        Ok(&self.buf[start..self.pos])
    }

    /// Skips one field's value. Groups (a deprecated encoding prost skips for unknown
    /// fields) are skipped iteratively, so hostile nesting cannot exhaust the stack; a
    /// mismatched or stray end-group is left to prost to reject.
    fn skip(&mut self, wire_type: u8) -> Result<(), Stop> {
        match wire_type {
            VARINT => self.varint().map(drop),
            FIXED64 => self.advance(8),
            LEN => self.len_delimited().map(drop),
            FIXED32 => self.advance(4),
            START_GROUP => {
                let mut depth = 1usize;
                while depth > 0 {
                    let (_, w) = self.key()?;
                    match w {
                        START_GROUP => depth += 1,
                        END_GROUP => depth -= 1,
                        other => self.skip(other)?,
                    }
                }
                Ok(())
            }
            // A stray end-group: prost rejects it.
            _ => Err(Stop),
        }
    }
}

fn add(c: &mut WireCounts, bytes: usize) {
    c.decoded_bytes = c.decoded_bytes.saturating_add(bytes);
}

fn batch(r: &mut Reader<'_>, c: &mut WireCounts) -> Result<(), Halt> {
    while !r.at_end() {
        let (field, wt) = r.key()?;
        match (field, wt) {
            (1, LEN) => add(c, r.len_delimited()?.len()), // agent_id
            (4, LEN) => {
                let body = r.len_delimited()?;
                add(c, size_of::<proto::Sample>());
                let index = c.samples;
                c.samples += 1;
                sample(&mut Reader::new(body), c).map_err(|h| h.within("samples", index))?;
            }
            (5, LEN) => {
                let body = r.len_delimited()?;
                add(c, size_of::<proto::WgDevice>());
                let index = c.wg_devices;
                c.wg_devices += 1;
                device(&mut Reader::new(body), c).map_err(|h| h.within("wg_devices", index))?;
            }
            (_, wt) => r.skip(wt)?,
        }
    }
    Ok(())
}

impl Halt {
    /// Prefixes a nested limit error's field path with `parent[index]`.
    fn within(self, parent: &str, index: usize) -> Self {
        match self {
            Self::Stop => Self::Stop,
            Self::Limit(e) => Self::Limit(e.within(&format!("{parent}[{index}]"))),
        }
    }
}

fn sample(r: &mut Reader<'_>, c: &mut WireCounts) -> Result<(), Halt> {
    let mut labels = 0usize;
    let mut buckets = 0usize;
    while !r.at_end() {
        let (field, wt) = r.key()?;
        match (field, wt) {
            (1, LEN) => add(c, r.len_delimited()?.len()), // name
            (2, LEN) => {
                // A label's two strings are at most as long as its encoding.
                let body = r.len_delimited()?;
                add(c, size_of::<proto::Label>() + body.len());
                labels += 1;
                c.labels += 1;
            }
            (6, LEN) => {
                let mut h = Reader::new(r.len_delimited()?);
                while !h.at_end() {
                    let (field, wt) = h.key()?;
                    if (field, wt) == (1, LEN) {
                        h.len_delimited()?;
                        add(c, size_of::<proto::Bucket>());
                        buckets += 1;
                        c.buckets += 1;
                    } else {
                        h.skip(wt)?;
                    }
                }
            }
            (_, wt) => r.skip(wt)?,
        }
    }
    if labels > MAX_LABELS {
        return Err(Halt::Limit(Error::malformed(
            "labels",
            format!("{labels} labels, at most {MAX_LABELS}"),
        )));
    }
    if buckets > MAX_BUCKETS {
        return Err(Halt::Limit(Error::malformed(
            "histogram.buckets",
            format!("{buckets} buckets, at most {MAX_BUCKETS}"),
        )));
    }
    Ok(())
}

fn device(r: &mut Reader<'_>, c: &mut WireCounts) -> Result<(), Halt> {
    let mut peers = 0usize;
    while !r.at_end() {
        let (field, wt) = r.key()?;
        match (field, wt) {
            (1 | 3, LEN) => add(c, r.len_delimited()?.len()), // name, public_key
            (6, LEN) => {
                let body = r.len_delimited()?;
                add(c, size_of::<proto::WgPeer>());
                let index = peers;
                peers += 1;
                c.peers += 1;
                peer(&mut Reader::new(body), c).map_err(|h| h.within("peers", index))?;
            }
            (_, wt) => r.skip(wt)?,
        }
    }
    Ok(())
}

fn peer(r: &mut Reader<'_>, c: &mut WireCounts) -> Result<(), Halt> {
    let mut ips = 0usize;
    while !r.at_end() {
        let (field, wt) = r.key()?;
        match (field, wt) {
            (1 | 2, LEN) => add(c, r.len_delimited()?.len()), // public_key, endpoint
            (3, LEN) => {
                let body = r.len_delimited()?;
                add(c, size_of::<String>() + body.len());
                ips += 1;
                c.allowed_ips += 1;
            }
            (_, wt) => r.skip(wt)?,
        }
    }
    if ips > MAX_ALLOWED_IPS {
        return Err(Halt::Limit(Error::malformed(
            "allowed_ips",
            format!("{ips} prefixes, at most {MAX_ALLOWED_IPS}"),
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AgentId, Batch, Labels, MetricName, Sample, Seq, UnixMillis, Value};
    use prost::Message as _;

    /// A realistic batch of `n` node-exporter-like samples.
    fn realistic(n: usize) -> Batch {
        let now = UnixMillis::from_millis(1_760_000_000_000);
        let mut b = Batch::new(AgentId::new("edge-01").unwrap(), Seq::new(7).unwrap(), now);
        for i in 0..n {
            b.samples.push(Sample {
                name: MetricName::new("node_cpu_seconds_total").unwrap(),
                labels: Labels::from_pairs([
                    ("cpu", (i % 64).to_string()),
                    ("mode", "idle".to_owned()),
                    ("instance", format!("edge-{i}")),
                ])
                .unwrap(),
                timestamp: now,
                value: Value::Counter(i as u64),
            });
        }
        b
    }

    #[test]
    fn a_full_realistic_payload_fits_the_budget() {
        // ~4 MiB on the wire, the default payload cap.
        let mut n = 1000;
        let bytes = loop {
            let bytes = realistic(n).encode_to_vec();
            if bytes.len() >= 4 << 20 {
                break bytes;
            }
            n *= 2;
        };
        let c = scan_metric_batch(&bytes).unwrap();
        assert_eq!(c.samples, n);
        assert_eq!(c.labels, 3 * n);
        assert!(!c.invalid_wire);
        assert!(
            c.decoded_bytes < MAX_DECODED_BYTES,
            "{} bytes decoded from {} on the wire",
            c.decoded_bytes,
            bytes.len()
        );
        assert!(Batch::decode(&bytes).is_ok());
    }

    #[test]
    fn counts_every_level_and_stops_at_invalid_wire() {
        let mut b = realistic(3);
        b.wg_devices.push(crate::WgDevice {
            name: "wg0".into(),
            ifindex: 1,
            public_key: None,
            listen_port: 51820,
            fwmark: 0,
            peers: vec![crate::WgPeer {
                public_key: crate::WgPublicKey::from_bytes([1; 32]),
                endpoint: None,
                allowed_ips: vec!["10.0.0.0/24".parse().unwrap(), "fd00::/64".parse().unwrap()],
                last_handshake: None,
                rx_bytes: 0,
                tx_bytes: 0,
                persistent_keepalive_s: None,
                has_preshared_key: false,
            }],
        });
        let bytes = b.encode_to_vec();
        let c = scan_metric_batch(&bytes).unwrap();
        assert_eq!(
            (c.samples, c.labels, c.wg_devices, c.peers, c.allowed_ips),
            (3, 9, 1, 1, 2)
        );
        assert!(!c.invalid_wire);
        // Truncated: the scan stops, reports it, and prost gives the decode error.
        let cut = &bytes[..bytes.len() - 1];
        assert!(scan_metric_batch(cut).unwrap().invalid_wire);
        assert!(matches!(Batch::decode(cut), Err(Error::Decode(_))));
        // The estimate covers what prost allocates for the wire form.
        let wire = proto::MetricBatch::decode(bytes.as_slice()).unwrap();
        assert_eq!(wire.samples.len(), c.samples);
    }

    #[test]
    fn nested_limits_name_the_path() {
        let mut w = realistic(2).to_proto();
        w.samples[1].labels = (0..=MAX_LABELS)
            .map(|i| proto::Label {
                name: format!("l{i}"),
                value: String::new(),
            })
            .collect();
        let e = scan_metric_batch(&w.encode_to_vec()).unwrap_err();
        assert!(
            matches!(&e, Error::Malformed { field, .. } if field == "samples[1].labels"),
            "{e:?}"
        );
        let mut w = realistic(1).to_proto();
        w.samples[0].value = Some(proto::sample::Value::Histogram(proto::Histogram {
            buckets: vec![proto::Bucket::default(); MAX_BUCKETS + 1],
            count: 0,
            sum: 0.0,
        }));
        let e = scan_metric_batch(&w.encode_to_vec()).unwrap_err();
        assert!(
            matches!(&e, Error::Malformed { field, .. } if field == "samples[0].histogram.buckets"),
            "{e:?}"
        );
        let mut w = realistic(0).to_proto();
        w.wg_devices = vec![proto::WgDevice::default(); MAX_WG_DEVICES + 1];
        let e = scan_metric_batch(&w.encode_to_vec()).unwrap_err();
        assert!(
            matches!(&e, Error::Malformed { field, .. } if field == "wg_devices"),
            "{e:?}"
        );
    }

    #[test]
    fn unknown_fields_and_groups_are_skipped_like_prost() {
        let mut bytes = realistic(1).encode_to_vec();
        // field 9, varint; field 10, fixed64; field 11, group with a nested group; field 12,
        // fixed32; field 13, bytes.
        bytes.extend_from_slice(&[9 << 3, 1]);
        bytes.extend_from_slice(&[10 << 3 | 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        bytes.extend_from_slice(&[11 << 3 | 3, 12 << 3 | 3, 12 << 3 | 4, 11 << 3 | 4]);
        bytes.extend_from_slice(&[12 << 3 | 5, 0, 0, 0, 0]);
        bytes.extend_from_slice(&[13 << 3 | 2, 2, 0, 0]);
        let c = scan_metric_batch(&bytes).unwrap();
        assert!(!c.invalid_wire);
        assert_eq!(c.samples, 1);
        assert!(Batch::decode(&bytes).is_ok());
    }
}
