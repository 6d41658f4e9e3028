//! Recovery on open and read-only inspection.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::{
    self, CursorSlot, FrameError, HeaderError, SEAL_FRAME_LEN, SEGMENT_HEADER_LEN, Scan, Seal,
    SegmentHeader, StopReason,
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
    /// Valid data frames found *after* a damaged frame (payload corruption rather than a torn
    /// write): the LSN range `first..=last` that is cut off with the damage.
    pub(crate) lost_after: Option<(Lsn, Lsn)>,
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
        lost_after: None,
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
    out.lost_after = probe_after_damage(body, valid_end, h.salt, next_lsn, max_len, lsn_limit);
    out.zero_tail = body
        .get(valid_end..)
        .is_none_or(|rest| rest.iter().all(|&b| b == 0));
    Ok(out)
}

/// After a scan stopped at a frame that is damaged but not torn (checksum, padding, LSN or
/// kind), skips it by its claimed length and follows the valid frames behind it: if there are
/// any, the records from `next_lsn` to the last one found are lost to the damage, and recovery
/// can say which. Linear in the bytes after the damage; never trusts an unverified frame.
fn probe_after_damage(
    body: &[u8],
    at: usize,
    salt: u64,
    next_lsn: Lsn,
    max_len: usize,
    lsn_limit: Lsn,
) -> Option<(Lsn, Lsn)> {
    let len = body.get(at..at + 4)?;
    let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
    if len == 0 || len > max_len.min(format::MAX_PAYLOAD_LEN) {
        return None;
    }
    let mut off = at.checked_add(format::frame_len(len))?;
    let mut last: Option<Lsn> = None;
    while let Some(rest) = body.get(off..) {
        match format::decode_frame(rest, salt, max_len) {
            Ok(f)
                if f.kind == format::KIND_DATA
                    && f.lsn >= next_lsn
                    && f.lsn < lsn_limit
                    && last.is_none_or(|l| f.lsn == l + 1) =>
            {
                last = Some(f.lsn);
                off += f.encoded_len;
            }
            _ => break,
        }
    }
    last.map(|l| (next_lsn, l))
}

/// Reads the cursor file; returns (acked LSN, slot index of the newest valid slot, its seq).
pub(crate) fn read_cursor(vfs: &dyn Vfs, dir: &Path) -> Result<Option<(usize, CursorSlot)>> {
    let path = dir.join(CURSOR_FILE);
    match vfs.open(&path, OpenMode::Read) {
        Ok(f) => Ok(CursorSlot::best(&read_all(&*f, &path)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("open", path)(e)),
    }
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
    let cursor_slot = read_cursor(vfs, dir)?;
    if cursor_slot.is_some() {
        // An earlier run may have written this slot and failed before its sync: make the
        // cursor durable before deleting segments on its word.
        let path = dir.join(CURSOR_FILE);
        let f = vfs
            .open(&path, OpenMode::ReadWrite)
            .map_err(Error::io("open", &path))?;
        f.sync_data().map_err(Error::io("sync", &path))?;
    }
    let acked = cursor_slot.map_or(0, |(_, s)| s.acked_lsn);
    let names = list_segments(vfs, dir)?;
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
    };
    let mut scans = Vec::with_capacity(names.len());
    for (i, (lsn, name)) in names.iter().enumerate() {
        let limit = names.get(i + 1).map_or(Lsn::MAX, |n| n.0);
        let is_tail = i + 1 == names.len();
        scans.push(scan_segment(
            vfs, dir, name, *lsn, limit, max_len, !is_tail,
        )?);
    }
    // Remove a tail segment whose header never became durable (repeatedly: the one before it
    // becomes the tail).
    while let Some(last) = scans.last() {
        if last.header.is_ok() {
            break;
        }
        let s = scans.pop().expect("checked non-empty");
        let reason = format!("unusable header: {}", s.header.expect_err("checked"));
        report.damage.push(format!("{}: {reason}; removed", s.name));
        vfs.remove_file(&dir.join(&s.name))
            .map_err(Error::io("remove", dir.join(&s.name)))?;
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
    // Truncate the torn tail.
    if let Some(t) = scans.last_mut() {
        if let Some(d) = damage_text(t, true) {
            report.damage.push(d);
        }
        if let Some((first, last)) = t.lost_after {
            // Damage inside the tail with valid records behind it: those records are cut
            // off with it. Say which, and never hand their LSNs out again.
            report.losses.push(Loss {
                first,
                last,
                cause: LossCause::Corrupt,
            });
            report.damage.push(format!(
                "{}: records {first}..={last} after the damaged frame are lost",
                t.name
            ));
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
            && let Some((first, last)) = s.lost_after
        {
            losses.push(Loss {
                first,
                last,
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
