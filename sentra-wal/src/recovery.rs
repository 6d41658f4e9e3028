//! Recovery on open and read-only inspection.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::{
    self, CURSOR_SLOT_LEN, CursorSlot, FrameError, HeaderError, SEAL_FRAME_LEN, SEGMENT_HEADER_LEN,
    Scan, Seal, SegmentHeader, StopReason,
};
use crate::vfs::{OpenMode, Vfs, VfsFile};
use crate::{Loss, LossCause, Lsn};

pub(crate) const CURSOR_FILE: &str = "cursor";
pub(crate) const LOCK_FILE: &str = "LOCK";

/// What recovery found and did when a log was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Segments in the log after recovery (including a newly created active segment).
    pub segments: usize,
    /// Data records present in the log after recovery.
    pub records: u64,
    /// Unacknowledged records present (what the shipper still has to send).
    pub unacked_records: u64,
    /// First LSN present in the log, or `next_lsn` if empty.
    pub first_lsn: Lsn,
    /// LSN the next append gets.
    pub next_lsn: Lsn,
    /// Acknowledged LSN read from the cursor (0: nothing acknowledged).
    pub acked_lsn: Lsn,
    /// Bytes cut off the tail segment (a torn or unfinished write).
    pub truncated_bytes: u64,
    /// Unacknowledged LSN ranges that are not in the log (damage, dropped segments).
    pub losses: Vec<Loss>,
    /// Segment files deleted during recovery (fully acknowledged or unusable), with the reason.
    pub removed_segments: Vec<(String, String)>,
    /// Human-readable descriptions of damage found.
    pub damage: Vec<String>,
    /// Of `losses`, those no earlier open (or acknowledgement) of this log reported: what to
    /// log as news. Losses stay in `losses` until the cursor passes them.
    pub new_losses: Vec<Loss>,
    /// Both cursor slots were damaged: the acknowledged position was reset to the record
    /// before the first one held (acknowledged records may be shipped again). Reported by the
    /// open that found it; the reset position is persisted at once.
    pub cursor_reset: bool,
}

/// Analysis of one segment file.
#[derive(Debug, Clone)]
pub(crate) struct SegScan {
    pub(crate) name: String,
    pub(crate) name_lsn: Lsn,
    pub(crate) file_len: u64,
    pub(crate) header: std::result::Result<SegmentHeader, HeaderError>,
    /// Records, next LSN, end and stop reason (relative offsets are absolute here).
    pub(crate) records: u64,
    pub(crate) next_lsn: Lsn,
    pub(crate) valid_end: u64,
    pub(crate) stop: Option<StopReason>,
    pub(crate) sealed: bool,
    /// `true` if the segment was validated by its seal only (payloads not read).
    pub(crate) quick: bool,
    /// `true` if every byte after `valid_end` is zero (preallocated, never written).
    pub(crate) zero_tail: bool,
    /// The first valid data frame found *after* a damaged one (corruption in the middle of
    /// the written data rather than a torn write): its absolute offset and LSN. The records
    /// `next_lsn..lsn` are lost to the damage; the frames from the offset on are intact.
    pub(crate) resume: Option<(u64, Lsn)>,
}

fn read_all(f: &dyn VfsFile, path: &Path) -> Result<Vec<u8>> {
    let len = f.len().map_err(Error::io("stat", path))?;
    let len = usize::try_from(len)
        .map_err(|_| Error::io("read", path)(std::io::Error::other("file too large")))?;
    let mut buf = vec![0u8; len];
    let n = f
        .read_full_at(&mut buf, 0)
        .map_err(Error::io("read", path))?;
    buf.truncate(n);
    Ok(buf)
}

/// Opens `path` for reading and returns its whole content.
fn read_file(vfs: &dyn Vfs, path: &Path) -> Result<Vec<u8>> {
    let f = vfs
        .open(path, OpenMode::Read)
        .map_err(Error::io("open", path))?;
    read_all(&*f, path)
}

/// Analyses a segment. With `quick`, a valid seal at the end of the file is trusted without
/// reading the frames; otherwise (or if there is no valid seal) all frames are scanned.
pub(crate) fn scan_segment(
    vfs: &dyn Vfs,
    dir: &Path,
    name: &str,
    name_lsn: Lsn,
    lsn_limit: Lsn,
    max_len: usize,
    quick: bool,
) -> Result<SegScan> {
    let path = dir.join(name);
    let f = vfs
        .open(&path, OpenMode::Read)
        .map_err(Error::io("open", &path))?;
    let file_len = f.len().map_err(Error::io("stat", &path))?;
    let mut hb = [0u8; SEGMENT_HEADER_LEN];
    let n = f
        .read_full_at(&mut hb, 0)
        .map_err(Error::io("read", &path))?;
    let header = SegmentHeader::decode(&hb[..n]).and_then(|h| {
        if h.first_lsn == name_lsn {
            Ok(h)
        } else {
            Err(HeaderError::BadChecksum)
        }
    });
    let mut out = SegScan {
        name: name.to_owned(),
        name_lsn,
        file_len,
        header,
        records: 0,
        next_lsn: name_lsn,
        valid_end: 0,
        stop: None,
        sealed: false,
        quick: false,
        zero_tail: false,
        resume: None,
    };
    let Ok(h) = header else { return Ok(out) };
    let body_len = file_len.saturating_sub(SEGMENT_HEADER_LEN as u64);
    if quick && body_len >= SEAL_FRAME_LEN as u64 && body_len % 8 == 0 {
        let mut sb = [0u8; SEAL_FRAME_LEN];
        let n = f
            .read_full_at(&mut sb, file_len - SEAL_FRAME_LEN as u64)
            .map_err(Error::io("read", &path))?;
        if let Ok(fr) = format::decode_frame(&sb[..n], h.salt, 16)
            && let Some(seal) = Seal::from_frame(&fr)
            && seal.next_lsn.checked_sub(seal.records) == Some(h.first_lsn)
            && seal.next_lsn <= lsn_limit
        {
            out.records = seal.records;
            out.next_lsn = seal.next_lsn;
            out.valid_end = file_len;
            out.stop = Some(StopReason::Sealed(seal));
            out.sealed = true;
            out.quick = true;
            return Ok(out);
        }
    }
    let bytes = read_all(&*f, &path)?;
    let body = bytes.get(SEGMENT_HEADER_LEN..).unwrap_or(&[]);
    let Scan {
        records,
        valid_end,
        next_lsn,
        stop,
    } = format::scan(body, h.salt, h.first_lsn, max_len, lsn_limit);
    out.records = records;
    out.next_lsn = next_lsn;
    out.valid_end = (SEGMENT_HEADER_LEN + valid_end) as u64;
    out.sealed = matches!(stop, StopReason::Sealed(_));
    out.stop = Some(stop);
    if !stop.is_clean() {
        out.resume = format::find_next_frame(body, valid_end, h.salt, next_lsn, max_len, lsn_limit)
            .map(|(off, lsn)| ((SEGMENT_HEADER_LEN + off) as u64, lsn));
    }
    out.zero_tail = body
        .get(valid_end..)
        .is_none_or(|rest| rest.iter().all(|&b| b == 0));
    Ok(out)
}

/// What can be saved of a tail segment whose header does not validate.
enum Salvage {
    /// No byte after the header was ever written: the segment never held a record.
    Empty,
    /// The records validate with a salt recovered from the damaged header: rewrite it.
    Repaired(SegmentHeader),
    /// The records cannot be verified; `last` is the highest LSN the segment may hold (from
    /// an unverified walk over the frame headers, or a bound from the file size).
    Lost(Lsn),
}

/// Looks at a tail segment with a damaged header. The file name gives the first LSN; the salt
/// is taken from the header bytes as they are, or with one bit flipped, and accepted only if
/// the first frame passes its checksum with it and carries the first LSN.
fn salvage(bytes: &[u8], name_lsn: Lsn, max_len: usize, segment_id: u64) -> Salvage {
    let body = bytes.get(SEGMENT_HEADER_LEN..).unwrap_or(&[]);
    if body.iter().all(|&b| b == 0) {
        return Salvage::Empty;
    }
    let u64_at = |at: usize| {
        bytes
            .get(at..at + 8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    let raw_salt = u64_at(32);
    let created_ms = u64_at(40);
    let salt = std::iter::once(raw_salt)
        .chain((0..64).map(|bit| raw_salt ^ (1 << bit)))
        .find(|&salt| {
            format::decode_frame(body, salt, max_len)
                .is_ok_and(|f| f.kind == format::KIND_DATA && f.lsn == name_lsn)
        });
    if let Some(salt) = salt {
        return Salvage::Repaired(SegmentHeader {
            segment_id,
            first_lsn: name_lsn,
            salt,
            created_ms,
        });
    }
    // Unverified walk: follow the length fields while the LSNs are consecutive.
    let mut off = 0usize;
    let mut next = name_lsn;
    while let Some(h) = body.get(off..off + format::FRAME_HEADER_LEN) {
        let len = u32::from_le_bytes(h[0..4].try_into().expect("4 bytes")) as usize;
        let lsn = u64::from_le_bytes(h[8..16].try_into().expect("8 bytes"));
        if len == 0 || len > max_len.min(format::MAX_PAYLOAD_LEN) || lsn != next {
            break;
        }
        next += 1;
        off += format::frame_len(len);
    }
    // The walk is believed if it ended at the end of the written data (zeros, end of file, or
    // a frame cut short); otherwise every LSN the file could hold counts (never reused).
    let rest = body.get(off..).unwrap_or(&[]);
    let walked_to_end = rest.len() < format::FRAME_HEADER_LEN || rest.iter().all(|&b| b == 0);
    let bound = name_lsn + (body.len() / (format::FRAME_HEADER_LEN + 8)) as u64;
    let last = if walked_to_end && next > name_lsn {
        next - 1
    } else {
        bound.max(next).max(name_lsn + 1) - 1
    };
    Salvage::Lost(last)
}

/// Copies the valid frames found behind damage in the tail `t` (from `off`, first LSN `lsn`,
/// and every further run of valid frames behind later damage) into new segments, one per
/// run, each named after its first LSN; then cuts `t` off at its last valid frame before the
/// damage and seals it. The new segments are durable (file and directory synced) before the
/// damaged one is touched, so a crash in between leaves both readable. Returns the first LSN
/// and record count of each new segment.
fn relocate_after_damage(
    vfs: &dyn Vfs,
    dir: &Path,
    t: &SegScan,
    h: SegmentHeader,
    off: u64,
    lsn: Lsn,
    max_len: usize,
) -> Result<Vec<(Lsn, u64)>> {
    let path = dir.join(&t.name);
    let bytes = read_file(vfs, &path)?;
    let body = bytes.get(SEGMENT_HEADER_LEN..).unwrap_or(&[]);
    let mut runs: Vec<(Lsn, Vec<&[u8]>)> = Vec::new();
    let mut rel = usize::try_from(off).unwrap_or(usize::MAX) - SEGMENT_HEADER_LEN;
    let mut first = lsn;
    loop {
        let mut payloads = Vec::new();
        let mut o = rel;
        let mut next = first;
        let clean = loop {
            match format::decode_frame(&body[o..], h.salt, max_len) {
                Ok(f) if f.kind == format::KIND_DATA && f.lsn == next => {
                    payloads.push(f.payload);
                    next += 1;
                    o += f.encoded_len;
                }
                Ok(f) if f.kind >= 0x80 => o += f.encoded_len,
                Ok(f) if f.kind == format::KIND_SEAL => break true,
                Err(format::FrameError::End) => break true,
                _ => break false,
            }
        };
        runs.push((first, payloads));
        if clean {
            break;
        }
        match format::find_next_frame(body, o, h.salt, next, max_len, Lsn::MAX) {
            Some((o2, l2)) => {
                rel = o2;
                first = l2;
            }
            None => break,
        }
    }
    let mut out = Vec::new();
    for (id, (first, payloads)) in (h.segment_id + 1..).zip(&runs) {
        let salt = crate::wal::random_u64();
        let header = SegmentHeader {
            segment_id: id,
            first_lsn: *first,
            salt,
            created_ms: crate::wal::now_ms(),
        };
        let mut buf = header.encode().to_vec();
        for (i, p) in payloads.iter().enumerate() {
            format::encode_data(&mut buf, salt, first + i as u64, p);
        }
        let np = dir.join(format::segment_name(*first));
        let f = vfs
            .open(&np, OpenMode::Create)
            .map_err(Error::io("create", &np))?;
        f.write_all_at(&buf, 0)
            .and_then(|()| f.sync_data())
            .map_err(Error::io("write", &np))?;
        out.push((*first, payloads.len() as u64));
    }
    vfs.sync_dir(dir).map_err(Error::io("sync dir", dir))?;
    // Cut the damaged segment after its last valid frame and seal it.
    let mut seal = Vec::new();
    format::encode_seal(&mut seal, h.salt, t.next_lsn, t.records);
    let f = vfs
        .open(&path, OpenMode::ReadWrite)
        .map_err(Error::io("open", &path))?;
    f.set_len(t.valid_end)
        .and_then(|()| f.write_all_at(&seal, t.valid_end))
        .and_then(|()| f.sync_data())
        .map_err(Error::io("seal damaged segment", &path))?;
    Ok(out)
}

/// Reads the cursor file; returns (acked LSN, slot index of the newest valid slot, its seq).
pub(crate) fn read_cursor(vfs: &dyn Vfs, dir: &Path) -> Result<Option<(usize, CursorSlot)>> {
    Ok(read_cursor_file(vfs, dir)?.and_then(|b| CursorSlot::best(&b)))
}

/// The bytes of the cursor file, `None` if there is none.
fn read_cursor_file(vfs: &dyn Vfs, dir: &Path) -> Result<Option<Vec<u8>>> {
    let path = dir.join(CURSOR_FILE);
    match vfs.open(&path, OpenMode::Read) {
        Ok(f) => Ok(Some(read_all(&*f, &path)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("open", path)(e)),
    }
}

/// The loss ranges recorded as reported in slot `slot` of a cursor file.
fn known_losses(file: &[u8], slot: usize) -> Vec<(Lsn, Lsn)> {
    let from = slot * CURSOR_SLOT_LEN + format::CURSOR_RECORD_LEN;
    let to = ((slot + 1) * CURSOR_SLOT_LEN).min(file.len());
    file.get(from..to)
        .map_or_else(Vec::new, format::decode_known_losses)
}

/// Lists segment files sorted by first LSN (ignores other files).
pub(crate) fn list_segments(vfs: &dyn Vfs, dir: &Path) -> Result<Vec<(Lsn, String)>> {
    let mut segs: Vec<(Lsn, String)> = vfs
        .list(dir)
        .map_err(Error::io("list", dir))?
        .into_iter()
        .filter_map(|n| format::parse_segment_name(&n).map(|l| (l, n)))
        .collect();
    segs.sort();
    Ok(segs)
}

/// State handed from recovery to the live log.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) report: RecoveryReport,
    /// Retained segments: (first LSN, name, sealed, valid end, next LSN, segment id).
    pub(crate) segments: Vec<RecSeg>,
    pub(crate) acked: Lsn,
    pub(crate) cursor_slot: Option<(usize, CursorSlot)>,
}

#[derive(Debug, Clone)]
pub(crate) struct RecSeg {
    pub(crate) first_lsn: Lsn,
    pub(crate) name: String,
    pub(crate) sealed: bool,
    /// End of the valid frames.
    pub(crate) len: u64,
    /// Size of the file (larger than `len` if preallocated).
    pub(crate) file_len: u64,
    pub(crate) next_lsn: Lsn,
    pub(crate) segment_id: u64,
    pub(crate) salt: u64,
}

/// Damage description; `is_tail`: zero fill after the last frame is the normal end of a
/// (preallocated) tail segment, not damage.
fn damage_text(s: &SegScan, is_tail: bool) -> Option<String> {
    if let Err(e) = s.header {
        return Some(format!("{}: {e}", s.name));
    }
    if is_tail && s.zero_tail {
        return None;
    }
    match s.stop {
        Some(stop) if !stop.is_clean() => Some(format!(
            "{}: {stop} at offset {} ({} bytes after it)",
            s.name,
            s.valid_end,
            s.file_len.saturating_sub(s.valid_end)
        )),
        _ => None,
    }
}

/// Runs recovery in write mode: truncates the torn tail, deletes unusable and fully
/// acknowledged segments. The caller holds the directory lock.
pub(crate) fn recover(vfs: &dyn Vfs, dir: &Path, max_len: usize) -> Result<Recovered> {
    let cursor_file = read_cursor_file(vfs, dir)?;
    let cursor_slot = cursor_file.as_deref().and_then(CursorSlot::best);
    let known = match (&cursor_file, cursor_slot) {
        (Some(b), Some((slot, _))) => known_losses(b, slot),
        _ => Vec::new(),
    };
    // Both slots damaged (something was written, nothing validates): the cursor is reset.
    let cursor_reset = cursor_slot.is_none()
        && cursor_file.as_deref().is_some_and(|b| {
            [0, CURSOR_SLOT_LEN].iter().any(|&at| {
                b.get(at..at + format::CURSOR_RECORD_LEN)
                    .is_some_and(|r| r.iter().any(|&x| x != 0))
            })
        });
    if cursor_slot.is_some() {
        // An earlier run may have written this slot and failed before its sync: make the
        // cursor durable before deleting segments on its word.
        let path = dir.join(CURSOR_FILE);
        let f = vfs
            .open(&path, OpenMode::ReadWrite)
            .map_err(Error::io("open", &path))?;
        f.sync_data().map_err(Error::io("sync", &path))?;
    }
    let names = list_segments(vfs, dir)?;
    let acked = match cursor_slot {
        Some((_, s)) => s.acked_lsn,
        // Reset: everything before the first segment held was acknowledged (segments are
        // deleted only once acknowledged, or dropped with a loss reported then); records
        // after it may be shipped again (the server deduplicates), none is called lost.
        None if cursor_reset => names.first().map_or(0, |(l, _)| l.saturating_sub(1)),
        None => 0,
    };
    let mut report = RecoveryReport {
        segments: 0,
        records: 0,
        unacked_records: 0,
        first_lsn: 0,
        next_lsn: 0,
        acked_lsn: acked,
        truncated_bytes: 0,
        losses: Vec::new(),
        removed_segments: Vec::new(),
        damage: Vec::new(),
        new_losses: Vec::new(),
        cursor_reset,
    };
    if cursor_reset {
        report.damage.push(format!(
            "{CURSOR_FILE}: both slots damaged; acknowledged position reset to {acked} (records after it may be shipped again)"
        ));
    }
    let mut scans = Vec::with_capacity(names.len());
    for (i, (lsn, name)) in names.iter().enumerate() {
        let limit = names.get(i + 1).map_or(Lsn::MAX, |n| n.0);
        let is_tail = i + 1 == names.len();
        scans.push(scan_segment(
            vfs, dir, name, *lsn, limit, max_len, !is_tail,
        )?);
    }
    // A tail segment whose header does not validate: rewrite the header if the records
    // validate with the salt it still holds; remove it if it never held a record; otherwise
    // its records are lost — reported, and their LSNs never handed out again. Repeatedly:
    // the segment before it becomes the tail.
    while let Some(last) = scans.last() {
        let Err(herr) = last.header else { break };
        let s = scans.pop().expect("checked non-empty");
        let path = dir.join(&s.name);
        let bytes = read_file(vfs, &path)?;
        let next_id = scans
            .iter()
            .filter_map(|p| p.header.ok())
            .map(|h| h.segment_id + 1)
            .max()
            .unwrap_or(1);
        let (reason, lost) = match salvage(&bytes, s.name_lsn, max_len, next_id) {
            Salvage::Repaired(h) => {
                let f = vfs
                    .open(&path, OpenMode::ReadWrite)
                    .map_err(Error::io("open", &path))?;
                f.write_all_at(&h.encode(), 0)
                    .and_then(|()| f.sync_data())
                    .map_err(Error::io("rewrite header", &path))?;
                report.damage.push(format!(
                    "{}: {herr}; header rewritten (first LSN from the file name, salt verified by the records), no record lost",
                    s.name
                ));
                scans.push(scan_segment(
                    vfs,
                    dir,
                    &s.name,
                    s.name_lsn,
                    Lsn::MAX,
                    max_len,
                    false,
                )?);
                break;
            }
            Salvage::Empty => (
                format!("unusable header: {herr}; no record was ever written to it"),
                None,
            ),
            Salvage::Lost(last) => (
                format!(
                    "unusable header: {herr}; records {}..={last} cannot be verified and are lost",
                    s.name_lsn
                ),
                Some(last),
            ),
        };
        if let Some(last) = lost {
            report.losses.push(Loss {
                first: s.name_lsn.max(acked + 1),
                last,
                cause: LossCause::Corrupt,
            });
        }
        report.damage.push(format!("{}: {reason}; removed", s.name));
        vfs.remove_file(&path).map_err(Error::io("remove", &path))?;
        report.removed_segments.push((s.name, reason));
        // The new tail was analysed in quick mode; rescan it fully so a torn tail is found.
        if let Some(t) = scans.pop() {
            scans.push(scan_segment(
                vfs,
                dir,
                &t.name,
                t.name_lsn,
                Lsn::MAX,
                max_len,
                false,
            )?);
        }
    }
    // Damage inside the tail with valid frames behind it: corruption, not a torn write. The
    // valid frames are moved to new segments, the damaged one is cut off and sealed; the gap
    // (only the damaged records) is reported as a loss below.
    if let Some(t) = scans.last()
        && let (Ok(h), Some((off, lsn))) = (t.header, t.resume)
        // The new segment is named after `lsn`: never the damaged segment's own name.
        && lsn > t.name_lsn
    {
        let what = damage_text(t, true).unwrap_or_else(|| format!("{}: damage", t.name));
        let moved = relocate_after_damage(vfs, dir, t, h, off, lsn, max_len)?;
        let t = scans.pop().expect("tail exists");
        report.damage.push(format!(
            "{what}: records {}..={} lost; {} valid records after the damage moved to {}",
            t.next_lsn,
            lsn - 1,
            moved.iter().map(|(_, n)| n).sum::<u64>(),
            moved
                .iter()
                .map(|(l, _)| format::segment_name(*l))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let mut firsts: Vec<Lsn> = moved.iter().map(|(l, _)| *l).collect();
        firsts.push(Lsn::MAX);
        scans.push(scan_segment(
            vfs, dir, &t.name, t.name_lsn, firsts[0], max_len, false,
        )?);
        for w in firsts.windows(2) {
            let name = format::segment_name(w[0]);
            scans.push(scan_segment(vfs, dir, &name, w[0], w[1], max_len, false)?);
        }
    }
    // Truncate the torn tail.
    if let Some(t) = scans.last_mut() {
        if let Some(d) = damage_text(t, true) {
            report.damage.push(d);
        }
        // Zero fill after the last frame (preallocation) is kept; anything else is cut off.
        let path = dir.join(&t.name);
        let f = vfs
            .open(&path, OpenMode::ReadWrite)
            .map_err(Error::io("open", &path))?;
        if t.file_len != t.valid_end && !t.zero_tail {
            f.set_len(t.valid_end)
                .map_err(Error::io("truncate", &path))?;
            report.truncated_bytes = t.file_len - t.valid_end;
            t.file_len = t.valid_end;
        }
        // The tail may hold bytes an earlier (failed) run wrote but never synced: make what
        // recovery validated durable before anything is appended after it.
        f.sync_data().map_err(Error::io("sync", &path))?;
    }
    let mut segments = Vec::new();
    let n = scans.len();
    let mut prev_next: Option<Lsn> = None;
    for (i, s) in scans.into_iter().enumerate() {
        let is_tail = i + 1 == n;
        let Ok(h) = s.header else {
            // A non-tail segment with an unusable header: its records are lost.
            let reason = format!("unusable header: {}", s.header.expect_err("checked"));
            report.damage.push(format!("{}: {reason}; removed", s.name));
            vfs.remove_file(&dir.join(&s.name))
                .map_err(Error::io("remove", dir.join(&s.name)))?;
            report.removed_segments.push((s.name, reason));
            continue;
        };
        if !is_tail && let Some(d) = damage_text(&s, false) {
            report.damage.push(d);
        }
        // Gap before this segment.
        let expected = prev_next.unwrap_or(acked + 1).max(acked + 1);
        if h.first_lsn > expected {
            let cause = if prev_next.is_some() && !report.damage.is_empty() {
                LossCause::Corrupt
            } else {
                LossCause::Missing
            };
            report.losses.push(Loss {
                first: expected,
                last: h.first_lsn - 1,
                cause,
            });
        }
        prev_next = Some(s.next_lsn.max(prev_next.unwrap_or(0)));
        // Fully acknowledged, not the tail: delete.
        if !is_tail && s.next_lsn <= acked + 1 {
            let path = dir.join(&s.name);
            vfs.remove_file(&path).map_err(Error::io("remove", &path))?;
            report
                .removed_segments
                .push((s.name, "fully acknowledged".to_owned()));
            continue;
        }
        segments.push(RecSeg {
            first_lsn: h.first_lsn,
            name: s.name,
            sealed: s.sealed,
            len: s.valid_end,
            file_len: s.file_len,
            next_lsn: s.next_lsn,
            segment_id: h.segment_id,
            salt: h.salt,
        });
    }
    // Always: removals, and entries created by an earlier run that failed before its
    // directory fsync, become durable before the log is used.
    vfs.sync_dir(dir).map_err(Error::io("sync dir", dir))?;
    let lost_end = report.losses.iter().map(|l| l.last + 1).max().unwrap_or(0);
    let next_lsn = segments
        .last()
        .map_or(acked + 1, |s| s.next_lsn)
        .max(acked + 1)
        .max(lost_end);
    let mut records = 0;
    let mut unacked = 0;
    for (i, s) in segments.iter().enumerate() {
        let end = segments
            .get(i + 1)
            .map_or(s.next_lsn, |n| s.next_lsn.min(n.first_lsn));
        records += end.saturating_sub(s.first_lsn);
        unacked += end.saturating_sub(s.first_lsn.max(acked + 1));
    }
    report.segments = segments.len();
    report.records = records;
    report.unacked_records = unacked;
    report.first_lsn = segments.first().map_or(next_lsn, |s| s.first_lsn);
    report.next_lsn = next_lsn;
    report.new_losses = report
        .losses
        .iter()
        .filter(|l| !known.iter().any(|&(f, t)| f <= l.first && l.last <= t))
        .copied()
        .collect();
    Ok(Recovered {
        report,
        segments,
        acked,
        cursor_slot,
    })
}

/// One segment in an [`Inspection`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SegmentInfo {
    /// File name.
    pub name: String,
    /// File size in bytes.
    pub size: u64,
    /// Segment number from the header (`None` if the header is unusable).
    pub segment_id: Option<u64>,
    /// First LSN (from the file name).
    pub first_lsn: Lsn,
    /// Number of valid data records.
    pub records: u64,
    /// LSN after the last valid record.
    pub next_lsn: Lsn,
    /// Whether the segment ends with a valid seal.
    pub sealed: bool,
    /// Offset just past the last valid frame.
    pub valid_end: u64,
    /// Damage found, if any (`None` = clean).
    pub damage: Option<String>,
}

/// Read-only view of a WAL directory, produced by [`inspect`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Inspection {
    /// The directory inspected.
    pub dir: PathBuf,
    /// Acknowledged LSN from the cursor (`None` if there is no valid cursor slot).
    pub acked_lsn: Option<Lsn>,
    /// Segments in LSN order.
    pub segments: Vec<SegmentInfo>,
    /// Unacknowledged LSN ranges missing between segments.
    pub losses: Vec<Loss>,
}

impl Inspection {
    /// Total records over all segments.
    #[must_use]
    pub fn records(&self) -> u64 {
        self.segments.iter().map(|s| s.records).sum()
    }
    /// `true` if no segment has damage and nothing is missing.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.losses.is_empty() && self.segments.iter().all(|s| s.damage.is_none())
    }
}

/// Inspects a WAL directory without modifying it and without taking the writer lock, so it
/// can look at the log of a running agent. Every frame of every segment is verified. The tail
/// segment of a live log may show an unfinished write at its end; recovery would truncate it.
///
/// # Errors
///
/// I/O errors reading the directory or files; never an error for damaged data.
pub fn inspect(vfs: &dyn Vfs, dir: &Path) -> Result<Inspection> {
    let names = list_segments(vfs, dir)?;
    let cursor = read_cursor(vfs, dir)?;
    let acked = cursor.map(|(_, s)| s.acked_lsn);
    let mut segments = Vec::new();
    let mut losses = Vec::new();
    let mut prev_next: Option<Lsn> = None;
    for (i, (lsn, name)) in names.iter().enumerate() {
        let limit = names.get(i + 1).map_or(Lsn::MAX, |n| n.0);
        let s = scan_segment(vfs, dir, name, *lsn, limit, format::MAX_PAYLOAD_LEN, false)?;
        let expected = prev_next.unwrap_or(0).max(acked.unwrap_or(0) + 1);
        if prev_next.is_some() && *lsn > expected {
            losses.push(Loss {
                first: expected,
                last: lsn - 1,
                cause: LossCause::Corrupt,
            });
        } else if prev_next.is_none() && acked.is_some() && *lsn > expected {
            losses.push(Loss {
                first: expected,
                last: lsn - 1,
                cause: LossCause::Missing,
            });
        }
        prev_next = Some(s.next_lsn);
        if i + 1 == names.len()
            && let Some((_, resume)) = s.resume
            && resume > s.next_lsn
        {
            losses.push(Loss {
                first: s.next_lsn,
                last: resume - 1,
                cause: LossCause::Corrupt,
            });
        }
        let damage = damage_text(&s, i + 1 == names.len())
            .map(|d| d.trim_start_matches(&format!("{name}: ")).to_owned());
        let damage = match (damage, i + 1 == names.len(), s.stop) {
            (Some(d), true, Some(StopReason::Bad(FrameError::Truncated | FrameError::Zero))) => {
                Some(format!("torn or in-progress tail: {d}"))
            }
            (d, _, _) => d,
        };
        segments.push(SegmentInfo {
            name: s.name.clone(),
            size: s.file_len,
            segment_id: s.header.ok().map(|h| h.segment_id),
            first_lsn: s.name_lsn,
            records: s.records,
            next_lsn: s.next_lsn,
            sealed: s.sealed,
            valid_end: s.valid_end,
            damage,
        });
    }
    Ok(Inspection {
        dir: dir.to_path_buf(),
        acked_lsn: acked,
        segments,
        losses,
    })
}
