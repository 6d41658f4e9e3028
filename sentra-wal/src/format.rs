//! On-disk format and design notes (sans-IO: pure functions over byte slices).
//!
//! Everything in this module is free of I/O so it can be property-tested and fuzzed; the
//! file-handling shell lives in the rest of the crate.
//!
//! # Directory layout
//!
//! ```text
//! <dir>/LOCK                         exclusive advisory lock (flock) held by the writer
//! <dir>/cursor                       2 × 4 KiB slots holding the acknowledged LSN
//! <dir>/00000000000000000001.wal     segment; the name is its first LSN, 20 digits
//! ```
//!
//! Segments sit directly in the directory (no `seg/` subdirectory as sketched in the design
//! reference): one directory means one directory fsync per create/unlink.
//!
//! # Segment header (64 bytes, little endian)
//!
//! ```text
//! magic 8 "SNTRWAL\0" | version u16 = 1 | flags u16 | header_len u32 = 64 | segment_id u64
//! first_lsn u64 | salt u64 | created_ms u64 | reserved 12 | header_crc u32 (CRC32C of 0..60)
//! ```
//!
//! The salt is random per segment incarnation and is mixed into every frame checksum, so bytes
//! left over from an earlier file with the same name can never validate.
//!
//! # Frame (24-byte header, every frame 8-byte aligned)
//!
//! ```text
//! len u32 | crc u32 | lsn u64 | kind u8 | flags u8 | count u16 | reserved u32 | payload | pad to 8
//! crc = CRC32C(salt u64 | len | lsn | kind | flags | count | reserved | payload)
//! ```
//!
//! * `len == 0` marks the end of the log (zero fill). The checksum covers the length, the LSN
//!   and the segment salt, so a torn or corrupted length is a checksum failure, not a misparse.
//! * Because frames start on 8-byte boundaries, the length field never straddles a 512-byte
//!   sector (etcd's argument for alignment).
//! * `kind` 1 is a data record; kind 3 is a *seal*: the last frame of a segment, whose 16-byte
//!   payload holds the next LSN and the number of data records in the segment. Kinds ≥ 0x80
//!   are reserved for future skippable frames.
//! * Every data record consumes exactly one LSN; LSNs are contiguous inside a segment and
//!   across segments. Gaps between segments are therefore visible as loss.
//!
//! # Recovery (why opening a large log is fast)
//!
//! Only the *tail* segment can contain a torn write: every earlier segment was sealed, i.e.
//! a seal frame was written and `fdatasync`ed before the next segment was created. On open,
//! sealed segments are checked by reading their header and the fixed-size seal at the end of
//! the file (two small reads per segment, independent of the log size); only the tail segment
//! is scanned frame by frame and truncated to its last valid frame. A sealed segment whose seal
//! does not validate is scanned in full and whatever follows its first bad frame is reported as
//! a loss range. Payload checksums in sealed segments are verified lazily by the reader: a
//! corrupt frame found while reading yields a [`Loss`](crate::Loss) up to the end of that segment
//! instead of an error, so the log never refuses to open or to be read because of data damage.
//!
//! # Cursor file
//!
//! Two 4 KiB slots `{magic u64, slot_seq u64, acked_lsn u64, reserved 8, crc u32}`; a new value
//! is written into the slot *not* holding the newest valid value (`pwrite` + `fdatasync`). A torn
//! write can only damage the slot being written, so the previous value survives.
//!
//! # Durability contract
//!
//! With [`SyncPolicy::Always`](crate::SyncPolicy::Always) (the default), an append returns its
//! LSN only after the frame bytes are written and `fdatasync`ed (and, for the first record of a
//! new segment, after the directory was fsynced). Concurrent appends are grouped: the writer
//! thread drains every pending request into one buffer, issues one `write` and one
//! `fdatasync`, then completes them all. Any write or sync error poisons the log (fail-stop, no
//! fsync retry on the same descriptor); reopening runs recovery. Recovery itself syncs the
//! cursor file, the tail segment and the directory before the log is used, so state that an
//! earlier, failed run left only in the page cache is made durable (or the open fails) before
//! anything is appended after it or deleted because of it. One limit remains, as for every
//! Linux application ("fsyncgate"): after a failed writeback the kernel may mark the pages
//! clean, so a later sync can succeed without writing them; an agent that hits a poisoned log
//! should prefer restarting the process over reopening in place.
//!
//! A single `fdatasync` is in flight per log at any time (okaywal and others overlap several):
//! a success is only ever reported for bytes written before a sync that itself succeeded.
//!
//! # Damage inside the tail
//!
//! A torn write — damage with nothing valid behind it up to the end of the written data (zero
//! fill, a frame running past the end of the file, garbage) — is truncated silently: it is
//! indistinguishable from a crash before the append and no acknowledged record can be in it.
//! Damage *with valid frames behind it* (found by scanning forward, 8-byte aligned, for the
//! next frame that passes its checksum, whatever field of the damaged frame was hit — its
//! length included) is corruption, not a torn write: the valid frames are copied into a new
//! segment named after their first LSN (made durable first), the damaged segment is cut after
//! its last valid frame and sealed, and only the damaged records are reported as a
//! [`Loss`](crate::Loss) with cause [`Corrupt`](crate::LossCause::Corrupt). Their LSNs are
//! never handed out again.
//!
//! A tail segment whose header does not validate is repaired when its records validate with
//! the salt the damaged header still holds (the first LSN comes from the file name); if no
//! byte after the header was ever written it is removed (a crash during creation); otherwise
//! its records are reported lost (their LSN range from the frame headers, or a bound from the
//! file size) and their LSNs are not reused.
//!
//! # Reported once
//!
//! After the 36-byte record, a cursor slot holds the loss ranges already reported
//! (`count u32 | (first u64, last u64) × count | crc u32`, see [`encode_known_losses`]), so
//! [`RecoveryReport::new_losses`](crate::RecoveryReport::new_losses) lists only what no earlier
//! open reported. When both cursor slots are damaged the acknowledged position is reset to the
//! record before the first one held, reported
//! ([`RecoveryReport::cursor_reset`](crate::RecoveryReport::cursor_reset)) and persisted at once.

/// Size of a segment header.
pub const SEGMENT_HEADER_LEN: usize = 64;
/// Size of a frame header.
pub const FRAME_HEADER_LEN: usize = 24;
/// Size of a complete seal frame (header plus 16-byte payload).
pub const SEAL_FRAME_LEN: usize = FRAME_HEADER_LEN + 16;
/// Magic bytes at the start of every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"SNTRWAL\0";
/// Format version written into segment headers.
pub const FORMAT_VERSION: u16 = 1;
/// Magic bytes at the start of a cursor slot.
pub const CURSOR_MAGIC: [u8; 8] = *b"SNTRCUR\0";
/// Size of one cursor slot; the cursor file holds two.
pub const CURSOR_SLOT_LEN: usize = 4096;
/// Bytes of a cursor slot that carry data (the rest is zero).
pub const CURSOR_RECORD_LEN: usize = 36;
/// Largest payload the format can describe (the length field also bounds it at `u32::MAX`).
pub const MAX_PAYLOAD_LEN: usize = 64 << 20;

/// Kind byte of a data record.
pub const KIND_DATA: u8 = 1;
/// Kind byte of a seal frame.
pub const KIND_SEAL: u8 = 3;

/// Rounds `n` up to a multiple of 8.
#[must_use]
pub const fn align8(n: usize) -> usize {
    (n + 7) & !7
}

/// Encoded size of a data frame carrying `payload_len` bytes (header, payload and padding).
#[must_use]
pub const fn frame_len(payload_len: usize) -> usize {
    FRAME_HEADER_LEN + align8(payload_len)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("slice of 4"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("slice of 8"))
}

/// A decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(
    clippy::exhaustive_structs,
    reason = "mirrors a fixed on-disk record of format version 1; a new field means a new format version, not a minor release"
)]
pub struct SegmentHeader {
    /// Monotonic segment number within the log.
    pub segment_id: u64,
    /// LSN of the first record the segment may contain.
    pub first_lsn: u64,
    /// Random per-segment value mixed into every frame checksum.
    pub salt: u64,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
}

impl SegmentHeader {
    /// Encodes the header into its 64-byte form.
    #[must_use]
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[10..12].copy_from_slice(&0u16.to_le_bytes());
        b[12..16].copy_from_slice(&(SEGMENT_HEADER_LEN as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.segment_id.to_le_bytes());
        b[24..32].copy_from_slice(&self.first_lsn.to_le_bytes());
        b[32..40].copy_from_slice(&self.salt.to_le_bytes());
        b[40..48].copy_from_slice(&self.created_ms.to_le_bytes());
        let crc = crc32c::crc32c(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a header from the start of `b`.
    ///
    /// # Errors
    ///
    /// Returns why the bytes are not a valid header.
    pub fn decode(b: &[u8]) -> Result<Self, HeaderError> {
        if b.len() < SEGMENT_HEADER_LEN {
            return Err(HeaderError::Short);
        }
        if b[0..8] != SEGMENT_MAGIC {
            return Err(HeaderError::BadMagic);
        }
        if crc32c::crc32c(&b[..60]) != u32_at(b, 60) {
            return Err(HeaderError::BadChecksum);
        }
        let version = u16_at(b, 8);
        if version != FORMAT_VERSION {
            return Err(HeaderError::UnsupportedVersion(version));
        }
        if u32_at(b, 12) as usize != SEGMENT_HEADER_LEN {
            return Err(HeaderError::BadChecksum);
        }
        Ok(Self {
            segment_id: u64_at(b, 16),
            first_lsn: u64_at(b, 24),
            salt: u64_at(b, 32),
            created_ms: u64_at(b, 40),
        })
    }
}

/// Why a segment header did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderError {
    /// Fewer than 64 bytes.
    Short,
    /// The magic bytes are wrong.
    BadMagic,
    /// The header checksum does not match.
    BadChecksum,
    /// A format version this build does not understand.
    UnsupportedVersion(u16),
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Short => f.write_str("segment header is shorter than 64 bytes"),
            Self::BadMagic => f.write_str("segment header has a wrong magic"),
            Self::BadChecksum => f.write_str("segment header checksum mismatch"),
            Self::UnsupportedVersion(v) => write!(f, "unsupported segment format version {v}"),
        }
    }
}

fn frame_crc(salt: u64, header: &[u8], payload: &[u8]) -> u32 {
    let c = crc32c::crc32c(&salt.to_le_bytes());
    let c = crc32c::crc32c_append(c, &header[0..4]);
    let c = crc32c::crc32c_append(c, &header[8..FRAME_HEADER_LEN]);
    crc32c::crc32c_append(c, payload)
}

/// Appends one frame to `out`. `payload` must be non-empty and at most [`MAX_PAYLOAD_LEN`].
pub fn encode_frame(out: &mut Vec<u8>, salt: u64, lsn: u64, kind: u8, count: u16, payload: &[u8]) {
    debug_assert!(!payload.is_empty() && payload.len() <= MAX_PAYLOAD_LEN);
    let mut h = [0u8; FRAME_HEADER_LEN];
    h[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    h[8..16].copy_from_slice(&lsn.to_le_bytes());
    h[16] = kind;
    h[17] = 0;
    h[18..20].copy_from_slice(&count.to_le_bytes());
    let crc = frame_crc(salt, &h, payload);
    h[4..8].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let pad = align8(payload.len()) - payload.len();
    out.extend_from_slice(&[0u8; 8][..pad]);
}

/// Appends a data frame for `payload` with LSN `lsn`.
pub fn encode_data(out: &mut Vec<u8>, salt: u64, lsn: u64, payload: &[u8]) {
    encode_frame(out, salt, lsn, KIND_DATA, 1, payload);
}

/// Appends a seal frame: `next_lsn` is the LSN the next segment starts at, `records` the
/// number of data records in the sealed segment.
pub fn encode_seal(out: &mut Vec<u8>, salt: u64, next_lsn: u64, records: u64) {
    let mut p = [0u8; 16];
    p[0..8].copy_from_slice(&next_lsn.to_le_bytes());
    p[8..16].copy_from_slice(&records.to_le_bytes());
    encode_frame(out, salt, next_lsn, KIND_SEAL, 0, &p);
}

/// A frame decoded from bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(
    clippy::exhaustive_structs,
    reason = "mirrors a fixed on-disk record of format version 1; a new field means a new format version, not a minor release"
)]
pub struct Frame<'a> {
    /// LSN field of the frame (for a seal: the next LSN).
    pub lsn: u64,
    /// Kind byte.
    pub kind: u8,
    /// Record count field.
    pub count: u16,
    /// Payload bytes.
    pub payload: &'a [u8],
    /// Total encoded length including padding.
    pub encoded_len: usize,
}

/// Why decoding a frame stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// No bytes left at all: a clean end.
    End,
    /// A zero length field: end of written data (zero fill).
    Zero,
    /// Fewer bytes than the frame claims (torn write or truncation).
    Truncated,
    /// The length field exceeds the configured maximum.
    TooLong(u32),
    /// The checksum does not match.
    BadChecksum,
    /// The padding after the payload is not zero.
    BadPadding,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::End => f.write_str("end of data"),
            Self::Zero => f.write_str("zero fill"),
            Self::Truncated => f.write_str("truncated frame"),
            Self::TooLong(n) => write!(f, "frame length {n} exceeds the limit"),
            Self::BadChecksum => f.write_str("frame checksum mismatch"),
            Self::BadPadding => f.write_str("non-zero frame padding"),
        }
    }
}

/// Decodes the frame at the start of `b`; `max_len` bounds the payload length.
///
/// # Errors
///
/// Returns why `b` does not start with a valid frame. Never panics, whatever the bytes.
pub fn decode_frame(b: &[u8], salt: u64, max_len: usize) -> Result<Frame<'_>, FrameError> {
    if b.is_empty() {
        return Err(FrameError::End);
    }
    if b.len() < 4 {
        return if b.iter().all(|&x| x == 0) {
            Err(FrameError::Zero)
        } else {
            Err(FrameError::Truncated)
        };
    }
    let len = u32_at(b, 0);
    if len == 0 {
        return Err(FrameError::Zero);
    }
    if len as usize > max_len.min(MAX_PAYLOAD_LEN) {
        return Err(FrameError::TooLong(len));
    }
    let total = frame_len(len as usize);
    if b.len() < total {
        return Err(FrameError::Truncated);
    }
    let header = &b[..FRAME_HEADER_LEN];
    let payload = &b[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len as usize];
    if frame_crc(salt, header, payload) != u32_at(b, 4) {
        return Err(FrameError::BadChecksum);
    }
    if b[FRAME_HEADER_LEN + len as usize..total]
        .iter()
        .any(|&x| x != 0)
    {
        return Err(FrameError::BadPadding);
    }
    Ok(Frame {
        lsn: u64_at(b, 8),
        kind: b[16],
        count: u16_at(b, 18),
        payload,
        encoded_len: total,
    })
}

/// Content of a seal frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(
    clippy::exhaustive_structs,
    reason = "mirrors a fixed on-disk record of format version 1; a new field means a new format version, not a minor release"
)]
pub struct Seal {
    /// First LSN of the following segment.
    pub next_lsn: u64,
    /// Number of data records in the sealed segment.
    pub records: u64,
}

impl Seal {
    /// Interprets a decoded frame as a seal.
    #[must_use]
    pub fn from_frame(f: &Frame<'_>) -> Option<Self> {
        if f.kind != KIND_SEAL || f.payload.len() != 16 {
            return None;
        }
        let next_lsn = u64_at(f.payload, 0);
        (next_lsn == f.lsn).then(|| Self {
            next_lsn,
            records: u64_at(f.payload, 8),
        })
    }
}

/// Why a frame scan stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// The bytes ended exactly on a frame boundary.
    End,
    /// A seal frame closed the segment.
    Sealed(Seal),
    /// A frame failed to decode.
    Bad(FrameError),
    /// A data frame carried an unexpected LSN.
    LsnMismatch {
        /// LSN that was expected.
        expected: u64,
        /// LSN found in the frame.
        found: u64,
    },
    /// A frame of an unknown kind that cannot be skipped.
    UnknownKind(u8),
}

impl StopReason {
    /// `true` when the scan stopped at a clean end or a seal (no damage).
    #[must_use]
    pub fn is_clean(&self) -> bool {
        matches!(
            self,
            Self::End | Self::Sealed(_) | Self::Bad(FrameError::End)
        )
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::End => f.write_str("clean end"),
            Self::Sealed(s) => write!(f, "sealed (next lsn {})", s.next_lsn),
            Self::Bad(e) => e.fmt(f),
            Self::LsnMismatch { expected, found } => {
                write!(f, "lsn discontinuity: expected {expected}, found {found}")
            }
            Self::UnknownKind(k) => write!(f, "unknown frame kind {k:#x}"),
        }
    }
}

/// Result of scanning the frames of one segment body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Scan {
    /// Number of valid data records.
    pub records: u64,
    /// Offset (relative to the scanned slice) just past the last valid frame; for a sealed
    /// segment, just past the seal.
    pub valid_end: usize,
    /// LSN the next record would get.
    pub next_lsn: u64,
    /// Why the scan stopped.
    pub stop: StopReason,
}

/// Scans frames from the start of `body` (the bytes after the segment header), expecting the
/// first data record to carry `first_lsn`. Stops at the first frame that does not validate.
/// Data frames with an LSN at or beyond `lsn_limit` also stop the scan.
#[must_use]
pub fn scan(body: &[u8], salt: u64, first_lsn: u64, max_len: usize, lsn_limit: u64) -> Scan {
    let mut off = 0usize;
    let mut next = first_lsn;
    let mut records = 0u64;
    let stop = loop {
        match decode_frame(&body[off..], salt, max_len) {
            Err(FrameError::End) => break StopReason::End,
            Err(e) => break StopReason::Bad(e),
            Ok(f) => match f.kind {
                KIND_DATA => {
                    if f.lsn != next || f.lsn >= lsn_limit {
                        break StopReason::LsnMismatch {
                            expected: next,
                            found: f.lsn,
                        };
                    }
                    next += 1;
                    records += 1;
                    off += f.encoded_len;
                }
                KIND_SEAL => match Seal::from_frame(&f) {
                    Some(s) if s.next_lsn == next => {
                        off += f.encoded_len;
                        break StopReason::Sealed(s);
                    }
                    _ => {
                        break StopReason::LsnMismatch {
                            expected: next,
                            found: f.lsn,
                        };
                    }
                },
                k if k >= 0x80 => off += f.encoded_len,
                k => break StopReason::UnknownKind(k),
            },
        }
    };
    Scan {
        records,
        valid_end: off,
        next_lsn: next,
        stop,
    }
}

/// A decoded cursor slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(
    clippy::exhaustive_structs,
    reason = "mirrors a fixed on-disk record of format version 1; a new field means a new format version, not a minor release"
)]
pub struct CursorSlot {
    /// Monotonic write sequence; the valid slot with the highest wins.
    pub slot_seq: u64,
    /// Every LSN up to and including this one was acknowledged.
    pub acked_lsn: u64,
}

impl CursorSlot {
    /// Encodes the data part of a slot.
    #[must_use]
    pub fn encode(&self) -> [u8; CURSOR_RECORD_LEN] {
        let mut b = [0u8; CURSOR_RECORD_LEN];
        b[0..8].copy_from_slice(&CURSOR_MAGIC);
        b[8..16].copy_from_slice(&self.slot_seq.to_le_bytes());
        b[16..24].copy_from_slice(&self.acked_lsn.to_le_bytes());
        let crc = crc32c::crc32c(&b[..32]);
        b[32..36].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a slot; `None` if it is absent, torn or corrupt.
    #[must_use]
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < CURSOR_RECORD_LEN || b[0..8] != CURSOR_MAGIC {
            return None;
        }
        (crc32c::crc32c(&b[..32]) == u32_at(b, 32)).then(|| Self {
            slot_seq: u64_at(b, 8),
            acked_lsn: u64_at(b, 16),
        })
    }

    /// Picks the newest valid slot out of a cursor file's bytes; returns it with its index.
    #[must_use]
    pub fn best(file: &[u8]) -> Option<(usize, Self)> {
        let a = Self::decode(file.get(..CURSOR_SLOT_LEN).unwrap_or(file));
        let b = file.get(CURSOR_SLOT_LEN..).and_then(Self::decode);
        match (a, b) {
            (Some(a), Some(b)) if b.slot_seq > a.slot_seq => Some((1, b)),
            (Some(a), _) => Some((0, a)),
            (None, Some(b)) => Some((1, b)),
            (None, None) => None,
        }
    }
}

/// Most loss ranges a cursor slot remembers as already reported ([`encode_known_losses`]).
pub const MAX_KNOWN_LOSSES: usize = 128;

/// Encodes the loss ranges already reported, stored in a cursor slot after its 36-byte
/// record: `count u32 | (first u64, last u64) × count | crc u32` (CRC32C of count and
/// ranges). Slots written before this existed hold zeros there: no known losses. At most
/// [`MAX_KNOWN_LOSSES`] ranges (the newest) are kept.
#[must_use]
pub fn encode_known_losses(ranges: &[(u64, u64)]) -> Vec<u8> {
    let ranges = &ranges[ranges.len().saturating_sub(MAX_KNOWN_LOSSES)..];
    let mut b = Vec::with_capacity(8 + 16 * ranges.len());
    b.extend_from_slice(&(ranges.len() as u32).to_le_bytes());
    for (f, l) in ranges {
        b.extend_from_slice(&f.to_le_bytes());
        b.extend_from_slice(&l.to_le_bytes());
    }
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes what [`encode_known_losses`] wrote after a slot's record (`ext` starts at byte
/// [`CURSOR_RECORD_LEN`] of the slot). Damaged or absent: no known losses.
#[must_use]
pub fn decode_known_losses(ext: &[u8]) -> Vec<(u64, u64)> {
    let Some(n) = ext.get(..4).map(|b| u32_at(b, 0) as usize) else {
        return Vec::new();
    };
    if n > MAX_KNOWN_LOSSES || ext.len() < 8 + 16 * n {
        return Vec::new();
    }
    let body = &ext[..4 + 16 * n];
    if crc32c::crc32c(body) != u32_at(ext, 4 + 16 * n) {
        return Vec::new();
    }
    (0..n)
        .map(|i| (u64_at(body, 4 + 16 * i), u64_at(body, 12 + 16 * i)))
        .collect()
}

/// After a frame that does not validate at `at` (relative to `body`, 8-aligned), finds the
/// next valid data frame: the first 8-aligned offset behind `at` holding a frame that passes
/// its checksum with an LSN in `min_lsn..lsn_limit`. Used to tell corruption in the middle of
/// the written data (valid frames follow) from a torn tail (nothing valid follows), whatever
/// field of the damaged frame was hit — its length included. Returns (offset, LSN).
#[must_use]
pub fn find_next_frame(
    body: &[u8],
    at: usize,
    salt: u64,
    min_lsn: u64,
    max_len: usize,
    lsn_limit: u64,
) -> Option<(usize, u64)> {
    // No record can start beyond this LSN: every frame takes at least 32 bytes.
    let max_lsn = min_lsn
        .saturating_add((body.len() / (FRAME_HEADER_LEN + 8)) as u64)
        .min(lsn_limit);
    let mut off = align8(at + 1);
    while off + FRAME_HEADER_LEN + 8 <= body.len() {
        let lsn = u64_at(body, off + 8);
        if body[off + 16] == KIND_DATA
            && (min_lsn..max_lsn).contains(&lsn)
            && let Ok(f) = decode_frame(&body[off..], salt, max_len)
            && f.kind == KIND_DATA
        {
            return Some((off, f.lsn));
        }
        off += 8;
    }
    None
}

/// Parses a segment file name (`<20 digits>.wal`) into its first LSN.
#[must_use]
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".wal")?;
    if digits.len() != 20 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// File name of the segment starting at `first_lsn`.
#[must_use]
pub fn segment_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}.wal")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn header_round_trip_and_rejects() {
        let h = SegmentHeader {
            segment_id: 7,
            first_lsn: 42,
            salt: 0xdead_beef,
            created_ms: 1,
        };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        assert_eq!(SegmentHeader::decode(&b[..63]), Err(HeaderError::Short));
        let mut bad = b;
        bad[0] ^= 1;
        assert_eq!(SegmentHeader::decode(&bad), Err(HeaderError::BadMagic));
        let mut bad = b;
        bad[30] ^= 1;
        assert_eq!(SegmentHeader::decode(&bad), Err(HeaderError::BadChecksum));
    }

    #[test]
    fn names() {
        assert_eq!(segment_name(1), "00000000000000000001.wal");
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_segment_name("1.wal"), None);
        assert_eq!(parse_segment_name("0000000000000000000a.wal"), None);
        assert_eq!(parse_segment_name("99999999999999999999.wal"), None);
    }

    #[test]
    fn cursor_slots() {
        let mut file = vec![0u8; 2 * CURSOR_SLOT_LEN];
        assert_eq!(CursorSlot::best(&file), None);
        file[..CURSOR_RECORD_LEN].copy_from_slice(
            &CursorSlot {
                slot_seq: 1,
                acked_lsn: 10,
            }
            .encode(),
        );
        assert_eq!(CursorSlot::best(&file).map(|s| s.1.acked_lsn), Some(10));
        file[CURSOR_SLOT_LEN..CURSOR_SLOT_LEN + CURSOR_RECORD_LEN].copy_from_slice(
            &CursorSlot {
                slot_seq: 2,
                acked_lsn: 20,
            }
            .encode(),
        );
        assert_eq!(
            CursorSlot::best(&file),
            Some((
                1,
                CursorSlot {
                    slot_seq: 2,
                    acked_lsn: 20
                }
            ))
        );
        // A torn write of the newer slot falls back to the older one.
        file[CURSOR_SLOT_LEN + 20] ^= 0xff;
        assert_eq!(CursorSlot::best(&file).map(|s| s.1.acked_lsn), Some(10));
    }

    proptest! {
        #[test]
        fn frame_round_trip(payload in proptest::collection::vec(any::<u8>(), 1..300), lsn: u64, salt: u64) {
            let mut buf = Vec::new();
            encode_data(&mut buf, salt, lsn, &payload);
            prop_assert_eq!(buf.len() % 8, 0);
            prop_assert_eq!(buf.len(), frame_len(payload.len()));
            let f = decode_frame(&buf, salt, MAX_PAYLOAD_LEN).unwrap();
            prop_assert_eq!(f.lsn, lsn);
            prop_assert_eq!(f.kind, KIND_DATA);
            prop_assert_eq!(f.payload, &payload[..]);
            prop_assert_eq!(f.encoded_len, buf.len());
            // Another salt never validates.
            prop_assert!(decode_frame(&buf, salt ^ 1, MAX_PAYLOAD_LEN).is_err());
        }

        #[test]
        fn torn_frame_is_never_a_record(payload in proptest::collection::vec(any::<u8>(), 1..200), cut in 1usize..64) {
            let mut buf = Vec::new();
            encode_data(&mut buf, 9, 1, &payload);
            let cut = cut.min(buf.len());
            buf.truncate(buf.len() - cut);
            prop_assert!(decode_frame(&buf, 9, MAX_PAYLOAD_LEN).is_err());
        }

        #[test]
        fn any_single_bit_flip_is_detected(payload in proptest::collection::vec(any::<u8>(), 1..64), bit in 0usize..(88 * 8)) {
            let mut buf = Vec::new();
            encode_data(&mut buf, 3, 5, &payload);
            let bit = bit % (buf.len() * 8);
            buf[bit / 8] ^= 1 << (bit % 8);
            // A flip inside the payload, header or padding must never decode as the same record.
            let r = decode_frame(&buf, 3, MAX_PAYLOAD_LEN);
            prop_assert!(r.is_err(), "flipped frame decoded: {:?}", r);
        }

        #[test]
        fn length_limit_respected(len in 1usize..5000, limit in 1usize..5000) {
            let payload = vec![0xab; len];
            let mut buf = Vec::new();
            encode_data(&mut buf, 0, 1, &payload);
            let r = decode_frame(&buf, 0, limit);
            if len > limit { prop_assert_eq!(r, Err(FrameError::TooLong(len as u32))); } else { prop_assert!(r.is_ok()); }
        }

        #[test]
        fn scan_never_panics_and_stays_in_bounds(body in proptest::collection::vec(any::<u8>(), 0..512), salt: u64) {
            let s = scan(&body, salt, 1, 1 << 20, u64::MAX);
            prop_assert!(s.valid_end <= body.len());
            prop_assert_eq!(s.valid_end % 8, 0);
        }

        #[test]
        fn scan_counts_records_and_seal(n in 0usize..20, salt: u64) {
            let mut body = Vec::new();
            for i in 0..n { encode_data(&mut body, salt, 10 + i as u64, &[i as u8; 13]); }
            let data_end = body.len();
            let s = scan(&body, salt, 10, 1024, u64::MAX);
            prop_assert_eq!(s, Scan { records: n as u64, valid_end: data_end, next_lsn: 10 + n as u64, stop: StopReason::End });
            encode_seal(&mut body, salt, 10 + n as u64, n as u64);
            body.extend_from_slice(&[0xff; 7]);
            let s = scan(&body, salt, 10, 1024, u64::MAX);
            prop_assert_eq!(s.valid_end, data_end + SEAL_FRAME_LEN);
            prop_assert_eq!(s.stop, StopReason::Sealed(Seal { next_lsn: 10 + n as u64, records: n as u64 }));
        }
    }
}
