//! Validated domain types of a metric batch and their conversions to and from the wire.

use std::{fmt, net::IpAddr, net::SocketAddr, str::FromStr};

use prost::Message as _;

use crate::{AgentId, Error, Result, Seq, UnixMillis, proto};

/// Most samples accepted in one batch.
pub const MAX_SAMPLES: usize = 1_000_000;
/// Most labels on one sample.
pub const MAX_LABELS: usize = 64;
/// Longest metric or label name, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE_LEN: usize = 2048;
/// Most histogram buckets.
pub const MAX_BUCKETS: usize = 256;
/// Most WireGuard devices in one batch.
pub const MAX_WG_DEVICES: usize = 1024;
/// Most allowed-IP prefixes on one peer.
pub const MAX_ALLOWED_IPS: usize = 4096;

/// One collection from one agent, validated.
///
/// Fields are public for reading and editing; every instance obtained from the wire went
/// through [`Batch::try_from`], which enforces the invariants of each field type. The struct
/// is `#[non_exhaustive]` (a later version may add fields): build one with [`Batch::new`] and
/// the `with_*` setters.
///
/// ```
/// use sentra_core::{AgentId, Batch, Labels, MetricName, Sample, Seq, UnixMillis, Value};
///
/// let now = UnixMillis::from_millis(1_700_000_000_000);
/// let sample = Sample::new(
///     MetricName::new("up")?,
///     Labels::new(),
///     now,
///     Value::Gauge(1.0),
/// );
/// let batch = Batch::new(AgentId::new("edge-1")?, Seq::new(1)?, now).with_samples(vec![sample]);
/// assert_eq!(Batch::decode(&batch.encode_to_vec())?, batch);
/// # Ok::<(), sentra_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Batch {
    /// The agent that collected it.
    pub agent_id: AgentId,
    /// Its per-agent sequence number.
    pub seq: Seq,
    /// Agent wall-clock time of the collection (the envelope carries the signing time).
    pub created: UnixMillis,
    /// Metric samples.
    pub samples: Vec<Sample>,
    /// WireGuard interface status.
    pub wg_devices: Vec<WgDevice>,
}

impl Batch {
    /// An empty batch.
    #[must_use]
    pub fn new(agent_id: AgentId, seq: Seq, created: UnixMillis) -> Self {
        Self {
            agent_id,
            seq,
            created,
            samples: Vec::new(),
            wg_devices: Vec::new(),
        }
    }

    /// Sets the metric samples.
    #[must_use]
    pub fn with_samples(mut self, samples: Vec<Sample>) -> Self {
        self.samples = samples;
        self
    }

    /// Sets the WireGuard interface status.
    #[must_use]
    pub fn with_wg_devices(mut self, wg_devices: Vec<WgDevice>) -> Self {
        self.wg_devices = wg_devices;
        self
    }

    /// The wire form.
    #[must_use]
    pub fn to_proto(&self) -> proto::MetricBatch {
        proto::MetricBatch::from(self)
    }

    /// The protobuf encoding of the wire form.
    #[must_use]
    pub fn encode_to_vec(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    /// Decodes and validates protobuf bytes.
    ///
    /// The bytes are first pre-scanned ([`crate::prescan`]): a payload with more repeated
    /// entries than the limits allow, or one that would decode to more than
    /// [`MAX_DECODED_BYTES`](crate::prescan::MAX_DECODED_BYTES), is rejected before
    /// anything is allocated.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`], [`Error::DecodedTooLarge`] or [`Error::Malformed`] with the path of
    /// the offending field.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        crate::prescan::scan_metric_batch(bytes)?;
        Self::try_from(proto::MetricBatch::decode(bytes).map_err(Error::decode)?)
    }
}

/// A metric name in Prometheus syntax: `[a-zA-Z_:][a-zA-Z0-9_:]*`, at most 256 bytes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MetricName(String);

/// A label name: `[a-zA-Z_][a-zA-Z0-9_]*`, at most 256 bytes, not starting with `__`
/// (reserved, as in Prometheus).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelName(String);

fn check_name(field: &str, s: &str, allow_colon: bool) -> Result<()> {
    if s.is_empty() {
        return Err(Error::malformed(field, "empty"));
    }
    if s.len() > MAX_NAME_LEN {
        return Err(Error::malformed(
            field,
            format!("{} bytes, at most {MAX_NAME_LEN}", s.len()),
        ));
    }
    let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || (allow_colon && c == ':');
    let ok_rest = |c: char| ok_first(c) || c.is_ascii_digit();
    let mut chars = s.chars();
    let first = chars.next().unwrap_or('_');
    if !ok_first(first) {
        return Err(Error::malformed(
            field,
            format!("cannot start with {first:?}"),
        ));
    }
    if let Some(c) = chars.find(|c| !ok_rest(*c)) {
        return Err(Error::malformed(
            field,
            format!("character {c:?} not allowed"),
        ));
    }
    Ok(())
}

macro_rules! name_type {
    ($ty:ident, $field:literal, $colon:literal) => {
        impl $ty {
            /// Validates and wraps a name.
            ///
            /// # Errors
            ///
            /// [`Error::Malformed`] naming the rule that was broken.
            pub fn new(name: impl Into<String>) -> Result<Self> {
                let name = name.into();
                check_name($field, &name, $colon)?;
                Self::extra_check(&name)?;
                Ok(Self(name))
            }

            /// The name as a string slice.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $ty {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(MetricName, "name", true);
name_type!(LabelName, "name", false);

impl MetricName {
    #[allow(
        clippy::unnecessary_wraps,
        reason = "same signature as LabelName::extra_check, called from one macro"
    )]
    fn extra_check(_: &str) -> Result<()> {
        Ok(())
    }
}

impl LabelName {
    fn extra_check(name: &str) -> Result<()> {
        if name.starts_with("__") {
            return Err(Error::malformed(
                "name",
                "names starting with __ are reserved",
            ));
        }
        Ok(())
    }
}

/// A sample's labels: unique names, kept sorted by name so equal label sets compare equal.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Labels(Vec<(LabelName, String)>);

impl Labels {
    /// No labels.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a label set from pairs, validating names and values.
    ///
    /// # Errors
    ///
    /// [`Error::Malformed`] for an invalid name, an over-long value, a duplicate name or
    /// more than [`MAX_LABELS`] labels.
    pub fn from_pairs<N: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Result<Self> {
        let mut out = Vec::new();
        for (i, (n, v)) in pairs.into_iter().enumerate() {
            if i >= MAX_LABELS {
                return Err(Error::malformed(
                    "labels",
                    format!("more than {MAX_LABELS}"),
                ));
            }
            let field = format!("labels[{i}]");
            let name = LabelName::new(n).map_err(|e| e.within(&field))?;
            let value = v.into();
            if value.len() > MAX_LABEL_VALUE_LEN {
                return Err(Error::malformed(
                    format!("{field}.value"),
                    format!("{} bytes, at most {MAX_LABEL_VALUE_LEN}", value.len()),
                ));
            }
            out.push((name, value));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = out.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(Error::malformed(
                "labels",
                format!("duplicate label name {:?}", w[0].0.as_str()),
            ));
        }
        Ok(Self(out))
    }

    /// The value of label `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    /// Iterates `(name, value)` in name order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Number of labels.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no labels.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One observation.
///
/// `#[non_exhaustive]` (a later version may add fields, e.g. exemplars): build one with
/// [`Sample::new`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Sample {
    /// Metric name.
    pub name: MetricName,
    /// Labels.
    pub labels: Labels,
    /// Observation time.
    pub timestamp: UnixMillis,
    /// The value.
    pub value: Value,
}

impl Sample {
    /// A sample of `name` with `labels`, observed at `timestamp`.
    #[must_use]
    pub const fn new(
        name: MetricName,
        labels: Labels,
        timestamp: UnixMillis,
        value: Value,
    ) -> Self {
        Self {
            name,
            labels,
            timestamp,
            value,
        }
    }
}

/// A sample's value.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// A value that can go up and down. NaN and infinities are allowed (Prometheus uses
    /// NaN, for example, as a staleness marker).
    Gauge(f64),
    /// A monotonically increasing counter; a decrease means a reset.
    Counter(u64),
    /// A cumulative histogram.
    Histogram(Histogram),
}

/// A cumulative histogram with strictly increasing finite bounds and non-decreasing counts,
/// none above `count`.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    buckets: Vec<Bucket>,
    count: u64,
    sum: f64,
}

/// One histogram bucket: observations `<= upper_bound`, cumulative.
#[derive(Clone, Copy, Debug, PartialEq)]
#[allow(
    clippy::exhaustive_structs,
    reason = "a plain (bound, count) pair, complete as it is, matching the Prometheus bucket"
)]
pub struct Bucket {
    /// Inclusive upper bound; finite.
    pub upper_bound: f64,
    /// Observations at or below the bound.
    pub cumulative_count: u64,
}

impl Histogram {
    /// Validates a histogram.
    ///
    /// # Errors
    ///
    /// [`Error::Malformed`] for non-finite or non-increasing bounds, decreasing counts, a
    /// count above the total, or more than [`MAX_BUCKETS`] buckets.
    pub fn new(buckets: Vec<Bucket>, count: u64, sum: f64) -> Result<Self> {
        if buckets.len() > MAX_BUCKETS {
            return Err(Error::malformed(
                "histogram.buckets",
                format!("{} buckets, at most {MAX_BUCKETS}", buckets.len()),
            ));
        }
        for (i, b) in buckets.iter().enumerate() {
            if !b.upper_bound.is_finite() {
                return Err(Error::malformed(
                    format!("histogram.buckets[{i}].upper_bound"),
                    "must be finite (+Inf is implied by count)",
                ));
            }
            if b.cumulative_count > count {
                return Err(Error::malformed(
                    format!("histogram.buckets[{i}].cumulative_count"),
                    "exceeds the total count",
                ));
            }
            if i > 0 {
                let prev = buckets[i - 1];
                if b.upper_bound <= prev.upper_bound {
                    return Err(Error::malformed(
                        format!("histogram.buckets[{i}].upper_bound"),
                        "bounds must strictly increase",
                    ));
                }
                if b.cumulative_count < prev.cumulative_count {
                    return Err(Error::malformed(
                        format!("histogram.buckets[{i}].cumulative_count"),
                        "cumulative counts must not decrease",
                    ));
                }
            }
        }
        Ok(Self {
            buckets,
            count,
            sum,
        })
    }

    /// The buckets, by increasing bound.
    #[must_use]
    pub fn buckets(&self) -> &[Bucket] {
        &self.buckets
    }

    /// Total number of observations.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of all observations.
    #[must_use]
    pub fn sum(&self) -> f64 {
        self.sum
    }
}

/// A 32-byte WireGuard (Curve25519) public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WgPublicKey([u8; 32]);

impl WgPublicKey {
    /// Wraps key bytes.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Copies a key from a slice.
    ///
    /// # Errors
    ///
    /// [`Error::Malformed`] unless the slice is exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| {
            Error::malformed("public_key", format!("{} bytes, expected 32", bytes.len()))
        })?;
        Ok(Self(arr))
    }

    /// The raw bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for WgPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WgPublicKey({self})")
    }
}

impl fmt::Display for WgPublicKey {
    /// Standard base64 with padding, as `wg` prints keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = [b'='; 44];
        for (chunk, dst) in self.0.chunks(3).zip(out.chunks_mut(4)) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
            for (i, d) in dst.iter_mut().enumerate().take(chunk.len() + 1) {
                *d = ALPHABET[((n >> (18 - 6 * i)) & 63) as usize];
            }
        }
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

/// A normalised IP prefix (`addr/len` with no host bits set).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

impl IpPrefix {
    /// Validates a prefix; host bits must be zero (`10.0.0.1/24` is rejected, not silently
    /// masked, because a status report should say exactly what the kernel holds).
    ///
    /// # Errors
    ///
    /// [`Error::Malformed`] for a length beyond the family's width or host bits set.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self> {
        let width = if addr.is_ipv4() { 32 } else { 128 };
        if len > width {
            return Err(Error::malformed(
                "allowed_ip",
                format!("prefix length {len} exceeds {width}"),
            ));
        }
        let masked = mask(addr, len);
        if masked != addr {
            return Err(Error::malformed(
                "allowed_ip",
                format!("{addr}/{len} has host bits set (network is {masked}/{len})"),
            ));
        }
        Ok(Self { addr, len })
    }

    /// The network address.
    #[must_use]
    pub const fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    #[must_use]
    pub const fn prefix_len(&self) -> u8 {
        self.len
    }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for IpPrefix {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| Error::malformed("allowed_ip", format!("{s:?} is not addr/len")))?;
        let addr: IpAddr = addr.parse().map_err(|_| {
            Error::malformed("allowed_ip", format!("{addr:?} is not an IP address"))
        })?;
        let len: u8 = len.parse().map_err(|_| {
            Error::malformed("allowed_ip", format!("{len:?} is not a prefix length"))
        })?;
        Self::new(addr, len)
    }
}

/// Public status of one WireGuard interface.
///
/// `#[non_exhaustive]` (a later version may add fields the kernel reports): build one with
/// [`WgDevice::new`] and the `with_*` setters.
///
/// ```
/// use sentra_core::{WgDevice, WgPeer, WgPublicKey};
///
/// let peer = WgPeer::new(WgPublicKey::from_bytes([7; 32]))
///     .with_endpoint("192.0.2.1:51820".parse::<std::net::SocketAddr>()?)
///     .with_allowed_ips(vec!["10.0.0.2/32".parse()?]);
/// let dev = WgDevice::new("wg0", 3)
///     .with_listen_port(51820)
///     .with_peers(vec![peer]);
/// assert_eq!(dev.peers.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WgDevice {
    /// Interface name (1 to 15 bytes, no `/` or whitespace).
    pub name: String,
    /// Kernel interface index.
    pub ifindex: u32,
    /// The interface's public key, if a private key is configured.
    pub public_key: Option<WgPublicKey>,
    /// UDP listen port (0: not listening).
    pub listen_port: u16,
    /// Firewall mark (0: none).
    pub fwmark: u32,
    /// Peers.
    pub peers: Vec<WgPeer>,
}

/// Public status of one WireGuard peer. Never holds a preshared key, only whether one is set.
///
/// `#[non_exhaustive]` (a later version may add fields the kernel reports): build one with
/// [`WgPeer::new`] and the `with_*` setters.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WgPeer {
    /// The peer's public key.
    pub public_key: WgPublicKey,
    /// Current endpoint.
    pub endpoint: Option<SocketAddr>,
    /// Allowed IPs.
    pub allowed_ips: Vec<IpPrefix>,
    /// Last handshake; `None` if never.
    pub last_handshake: Option<UnixMillis>,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Persistent keepalive interval in seconds, if enabled.
    pub persistent_keepalive_s: Option<u16>,
    /// Whether a preshared key is configured.
    pub has_preshared_key: bool,
}

impl WgDevice {
    /// An interface named `name` with kernel index `ifindex`: no key, not listening, no
    /// firewall mark, no peers. The name is checked when the batch is decoded
    /// ([`Batch::try_from`]), not here.
    #[must_use]
    pub fn new(name: impl Into<String>, ifindex: u32) -> Self {
        Self {
            name: name.into(),
            ifindex,
            public_key: None,
            listen_port: 0,
            fwmark: 0,
            peers: Vec::new(),
        }
    }

    /// Sets the interface's public key (`None`: no private key configured).
    #[must_use]
    pub fn with_public_key(mut self, public_key: impl Into<Option<WgPublicKey>>) -> Self {
        self.public_key = public_key.into();
        self
    }

    /// Sets the UDP listen port (0: not listening).
    #[must_use]
    pub const fn with_listen_port(mut self, listen_port: u16) -> Self {
        self.listen_port = listen_port;
        self
    }

    /// Sets the firewall mark (0: none).
    #[must_use]
    pub const fn with_fwmark(mut self, fwmark: u32) -> Self {
        self.fwmark = fwmark;
        self
    }

    /// Sets the peers.
    #[must_use]
    pub fn with_peers(mut self, peers: Vec<WgPeer>) -> Self {
        self.peers = peers;
        self
    }
}

impl WgPeer {
    /// A peer with `public_key`: no endpoint, no allowed IPs, never a handshake, no traffic,
    /// no keepalive, no preshared key.
    #[must_use]
    pub const fn new(public_key: WgPublicKey) -> Self {
        Self {
            public_key,
            endpoint: None,
            allowed_ips: Vec::new(),
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
            persistent_keepalive_s: None,
            has_preshared_key: false,
        }
    }

    /// Sets the current endpoint.
    #[must_use]
    pub fn with_endpoint(mut self, endpoint: impl Into<Option<SocketAddr>>) -> Self {
        self.endpoint = endpoint.into();
        self
    }

    /// Sets the allowed IPs.
    #[must_use]
    pub fn with_allowed_ips(mut self, allowed_ips: Vec<IpPrefix>) -> Self {
        self.allowed_ips = allowed_ips;
        self
    }

    /// Sets the last handshake (`None`: never).
    #[must_use]
    pub fn with_last_handshake(mut self, last_handshake: impl Into<Option<UnixMillis>>) -> Self {
        self.last_handshake = last_handshake.into();
        self
    }

    /// Sets the byte counters: received and sent.
    #[must_use]
    pub const fn with_transfer(mut self, rx_bytes: u64, tx_bytes: u64) -> Self {
        self.rx_bytes = rx_bytes;
        self.tx_bytes = tx_bytes;
        self
    }

    /// Sets the persistent keepalive interval in seconds (`None`: disabled).
    #[must_use]
    pub fn with_persistent_keepalive_s(mut self, seconds: impl Into<Option<u16>>) -> Self {
        self.persistent_keepalive_s = seconds.into();
        self
    }

    /// Sets whether a preshared key is configured.
    #[must_use]
    pub const fn with_preshared_key(mut self, has_preshared_key: bool) -> Self {
        self.has_preshared_key = has_preshared_key;
        self
    }
}

fn check_ifname(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 15 {
        return Err(Error::malformed(
            "name",
            format!("interface name of {} bytes, expected 1 to 15", name.len()),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(Error::malformed(
            "name",
            format!("character {c:?} not allowed in an interface name"),
        ));
    }
    Ok(())
}

fn timestamp(field: &str, ms: i64) -> Result<UnixMillis> {
    if ms <= 0 {
        return Err(Error::malformed(
            field,
            format!("{ms} is not a positive Unix time"),
        ));
    }
    Ok(UnixMillis::from_millis(ms))
}

impl TryFrom<proto::MetricBatch> for Batch {
    type Error = Error;

    fn try_from(wire: proto::MetricBatch) -> Result<Self> {
        let agent_id = AgentId::new(wire.agent_id)?;
        let seq = Seq::new(wire.seq)?;
        let created = timestamp("created_ms", wire.created_ms)?;
        if wire.samples.len() > MAX_SAMPLES {
            return Err(Error::malformed(
                "samples",
                format!("{} samples, at most {MAX_SAMPLES}", wire.samples.len()),
            ));
        }
        if wire.wg_devices.len() > MAX_WG_DEVICES {
            return Err(Error::malformed(
                "wg_devices",
                format!(
                    "{} devices, at most {MAX_WG_DEVICES}",
                    wire.wg_devices.len()
                ),
            ));
        }
        let samples = wire
            .samples
            .into_iter()
            .enumerate()
            .map(|(i, s)| Sample::try_from(s).map_err(|e| e.within(&format!("samples[{i}]"))))
            .collect::<Result<_>>()?;
        let wg_devices = wire
            .wg_devices
            .into_iter()
            .enumerate()
            .map(|(i, d)| WgDevice::try_from(d).map_err(|e| e.within(&format!("wg_devices[{i}]"))))
            .collect::<Result<_>>()?;
        Ok(Self {
            agent_id,
            seq,
            created,
            samples,
            wg_devices,
        })
    }
}

impl TryFrom<proto::Sample> for Sample {
    type Error = Error;

    fn try_from(wire: proto::Sample) -> Result<Self> {
        let name = MetricName::new(wire.name)?;
        let labels = Labels::from_pairs(wire.labels.into_iter().map(|l| (l.name, l.value)))?;
        let timestamp = timestamp("timestamp_ms", wire.timestamp_ms)?;
        let value = match wire.value {
            None => return Err(Error::malformed("value", "missing")),
            Some(proto::sample::Value::Gauge(g)) => Value::Gauge(g),
            Some(proto::sample::Value::Counter(c)) => Value::Counter(c),
            Some(proto::sample::Value::Histogram(h)) => Value::Histogram(Histogram::new(
                h.buckets
                    .into_iter()
                    .map(|b| Bucket {
                        upper_bound: b.upper_bound,
                        cumulative_count: b.cumulative_count,
                    })
                    .collect(),
                h.count,
                h.sum,
            )?),
        };
        Ok(Self {
            name,
            labels,
            timestamp,
            value,
        })
    }
}

impl TryFrom<proto::WgDevice> for WgDevice {
    type Error = Error;

    fn try_from(wire: proto::WgDevice) -> Result<Self> {
        check_ifname(&wire.name)?;
        let public_key = if wire.public_key.is_empty() {
            None
        } else {
            Some(WgPublicKey::from_slice(&wire.public_key)?)
        };
        let listen_port = u16::try_from(wire.listen_port).map_err(|_| {
            Error::malformed("listen_port", format!("{} is not a port", wire.listen_port))
        })?;
        let peers = wire
            .peers
            .into_iter()
            .enumerate()
            .map(|(i, p)| WgPeer::try_from(p).map_err(|e| e.within(&format!("peers[{i}]"))))
            .collect::<Result<_>>()?;
        Ok(Self {
            name: wire.name,
            ifindex: wire.ifindex,
            public_key,
            listen_port,
            fwmark: wire.fwmark,
            peers,
        })
    }
}

impl TryFrom<proto::WgPeer> for WgPeer {
    type Error = Error;

    fn try_from(wire: proto::WgPeer) -> Result<Self> {
        let public_key = WgPublicKey::from_slice(&wire.public_key)?;
        let endpoint = if wire.endpoint.is_empty() {
            None
        } else {
            Some(wire.endpoint.parse::<SocketAddr>().map_err(|_| {
                Error::malformed("endpoint", format!("{:?} is not ip:port", wire.endpoint))
            })?)
        };
        if wire.allowed_ips.len() > MAX_ALLOWED_IPS {
            return Err(Error::malformed(
                "allowed_ips",
                format!(
                    "{} prefixes, at most {MAX_ALLOWED_IPS}",
                    wire.allowed_ips.len()
                ),
            ));
        }
        let allowed_ips = wire
            .allowed_ips
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.parse()
                    .map_err(|e: Error| e.within(&format!("allowed_ips[{i}]")))
            })
            .collect::<Result<_>>()?;
        let last_handshake = match wire.last_handshake_ms {
            0 => None,
            ms => Some(timestamp("last_handshake_ms", ms)?),
        };
        let persistent_keepalive_s = match wire.persistent_keepalive_s {
            0 => None,
            s => Some(u16::try_from(s).map_err(|_| {
                Error::malformed("persistent_keepalive_s", format!("{s} exceeds 65535"))
            })?),
        };
        Ok(Self {
            public_key,
            endpoint,
            allowed_ips,
            last_handshake,
            rx_bytes: wire.rx_bytes,
            tx_bytes: wire.tx_bytes,
            persistent_keepalive_s,
            has_preshared_key: wire.has_preshared_key,
        })
    }
}

impl From<&Batch> for proto::MetricBatch {
    fn from(b: &Batch) -> Self {
        Self {
            agent_id: b.agent_id.as_str().to_owned(),
            seq: b.seq.get(),
            created_ms: b.created.as_millis(),
            samples: b.samples.iter().map(proto::Sample::from).collect(),
            wg_devices: b.wg_devices.iter().map(proto::WgDevice::from).collect(),
        }
    }
}

impl From<&Sample> for proto::Sample {
    fn from(s: &Sample) -> Self {
        Self {
            name: s.name.as_str().to_owned(),
            labels: s
                .labels
                .iter()
                .map(|(n, v)| proto::Label {
                    name: n.to_owned(),
                    value: v.to_owned(),
                })
                .collect(),
            timestamp_ms: s.timestamp.as_millis(),
            value: Some(match &s.value {
                Value::Gauge(g) => proto::sample::Value::Gauge(*g),
                Value::Counter(c) => proto::sample::Value::Counter(*c),
                Value::Histogram(h) => proto::sample::Value::Histogram(proto::Histogram {
                    buckets: h
                        .buckets
                        .iter()
                        .map(|b| proto::Bucket {
                            upper_bound: b.upper_bound,
                            cumulative_count: b.cumulative_count,
                        })
                        .collect(),
                    count: h.count,
                    sum: h.sum,
                }),
            }),
        }
    }
}

impl From<&WgDevice> for proto::WgDevice {
    fn from(d: &WgDevice) -> Self {
        Self {
            name: d.name.clone(),
            ifindex: d.ifindex,
            public_key: d.public_key.map(|k| k.0.to_vec()).unwrap_or_default(),
            listen_port: u32::from(d.listen_port),
            fwmark: d.fwmark,
            peers: d.peers.iter().map(proto::WgPeer::from).collect(),
        }
    }
}

impl From<&WgPeer> for proto::WgPeer {
    fn from(p: &WgPeer) -> Self {
        Self {
            public_key: p.public_key.0.to_vec(),
            endpoint: p.endpoint.map(|e| e.to_string()).unwrap_or_default(),
            allowed_ips: p.allowed_ips.iter().map(ToString::to_string).collect(),
            last_handshake_ms: p.last_handshake.map_or(0, UnixMillis::as_millis),
            rx_bytes: p.rx_bytes,
            tx_bytes: p.tx_bytes,
            persistent_keepalive_s: p.persistent_keepalive_s.map_or(0, u32::from),
            has_preshared_key: p.has_preshared_key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(MetricName::new("wireguard_sent_bytes_total").is_ok());
        assert!(MetricName::new("ns:metric").is_ok());
        assert!(MetricName::new("1abc").is_err());
        assert!(MetricName::new("a-b").is_err());
        assert!(MetricName::new("").is_err());
        assert!(MetricName::new("a".repeat(257)).is_err());
        assert!(LabelName::new("interface").is_ok());
        assert!(LabelName::new("a:b").is_err());
        assert!(LabelName::new("__name__").is_err());
    }

    #[test]
    fn labels_sorted_unique() {
        let l = Labels::from_pairs([("b", "2"), ("a", "1")]).unwrap();
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![("a", "1"), ("b", "2")]);
        assert_eq!(l.get("b"), Some("2"));
        assert_eq!(l.get("c"), None);
        let e = Labels::from_pairs([("a", "1"), ("a", "2")]).unwrap_err();
        assert!(e.to_string().contains("duplicate"), "{e}");
        let e = Labels::from_pairs([("ok", "x".repeat(MAX_LABEL_VALUE_LEN + 1))]).unwrap_err();
        assert!(e.to_string().contains("labels[0].value"), "{e}");
    }

    #[test]
    fn histogram_rules() {
        let b = |u, c| Bucket {
            upper_bound: u,
            cumulative_count: c,
        };
        assert!(Histogram::new(vec![b(1.0, 1), b(2.0, 3)], 4, 5.0).is_ok());
        assert!(Histogram::new(vec![b(2.0, 1), b(1.0, 3)], 4, 5.0).is_err());
        assert!(Histogram::new(vec![b(1.0, 3), b(2.0, 1)], 4, 5.0).is_err());
        assert!(Histogram::new(vec![b(1.0, 5)], 4, 5.0).is_err());
        assert!(Histogram::new(vec![b(f64::INFINITY, 1)], 4, 5.0).is_err());
        assert!(Histogram::new(vec![b(f64::NAN, 1)], 4, 5.0).is_err());
    }

    #[test]
    fn prefixes() {
        assert_eq!(
            "10.0.0.0/24".parse::<IpPrefix>().unwrap().to_string(),
            "10.0.0.0/24"
        );
        assert_eq!("::/0".parse::<IpPrefix>().unwrap().to_string(), "::/0");
        assert_eq!("0.0.0.0/0".parse::<IpPrefix>().unwrap().prefix_len(), 0);
        assert!("10.0.0.1/24".parse::<IpPrefix>().is_err());
        assert!("10.0.0.0/33".parse::<IpPrefix>().is_err());
        assert!("fd00::1/129".parse::<IpPrefix>().is_err());
        assert!("10.0.0.0".parse::<IpPrefix>().is_err());
        assert!("x/1".parse::<IpPrefix>().is_err());
        assert!("10.0.0.0/-1".parse::<IpPrefix>().is_err());
    }

    #[test]
    fn public_key_base64_matches_wg() {
        // `wg pubkey` of an all-zero private key is a well-known value; here just check
        // the encoding of known bytes.
        let k = WgPublicKey::from_bytes([0xff; 32]);
        assert_eq!(
            k.to_string(),
            "//////////////////////////////////////////8="
        );
        let k = WgPublicKey::from_bytes([0; 32]);
        assert_eq!(
            k.to_string(),
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
        );
    }

    #[test]
    fn error_paths_name_the_field() {
        let wire = proto::MetricBatch {
            agent_id: "a".into(),
            seq: 1,
            created_ms: 1,
            samples: vec![proto::Sample {
                name: "ok".into(),
                labels: vec![proto::Label {
                    name: "bad-name".into(),
                    value: String::new(),
                }],
                timestamp_ms: 1,
                value: Some(proto::sample::Value::Counter(1)),
            }],
            wg_devices: vec![],
        };
        let e = Batch::try_from(wire).unwrap_err().to_string();
        assert!(e.contains("samples[0].labels[0].name"), "{e}");
    }
}
