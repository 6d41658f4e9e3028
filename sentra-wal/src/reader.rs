//! Reading committed records from an LSN.

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::{
    self, FRAME_HEADER_LEN, KIND_DATA, KIND_SEAL, MAX_PAYLOAD_LEN, SEGMENT_HEADER_LEN,
    SegmentHeader,
};
use crate::vfs::{OpenMode, VfsFile};
use crate::wal::Inner;
use crate::{Loss, LossCause, Lsn};

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    lsn: Lsn,
    payload: Vec<u8>,
}

impl Record {
    /// The record's LSN.
    #[must_use]
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }
    /// The payload bytes.
    #[must_use]
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
    /// Takes the payload.
    #[must_use]
    pub fn into_payload(self) -> Vec<u8> {
        self.payload
    }
}

/// One item produced by a [`Reader`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Entry {
    /// A record.
    Record(Record),
    /// Records that will never be delivered (damage found while reading, or dropped).
    Loss(Loss),
}

struct OpenSeg {
    first_lsn: Lsn,
    path: PathBuf,
    file: Box<dyn VfsFile>,
    salt: u64,
    offset: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

const CHUNK: usize = 256 << 10;

impl OpenSeg {
    /// Ensures `[offset, offset + n)` is buffered if the file has it below `end`.
    fn window(&mut self, n: usize, end: u64) -> Result<&[u8]> {
        if self.offset >= end {
            return Ok(&[]);
        }
        let want_end = (self.offset + n as u64).min(end);
        let have_end = self.buf_start + self.buf.len() as u64;
        if self.offset < self.buf_start || want_end > have_end {
            let len = usize::try_from(end.saturating_sub(self.offset))
                .unwrap_or(usize::MAX)
                .min(n.max(CHUNK));
            self.buf.resize(len, 0);
            let got = self
                .file
                .read_full_at(&mut self.buf, self.offset)
                .map_err(Error::io("read", &self.path))?;
            self.buf.truncate(got);
            self.buf_start = self.offset;
        }
        let from = usize::try_from(self.offset - self.buf_start).expect("offset within buffer");
        let to = usize::try_from(want_end - self.buf_start)
            .expect("end within buffer")
            .min(self.buf.len());
        Ok(&self.buf[from.min(to)..to])
    }
}

/// Iterates committed records from a starting LSN, in order.
///
/// [`Iterator::next`] returns `None` once the reader has caught up with the committed end of
/// the log; call it again later (for example after [`Wal::wait_committed`](crate::Wal::wait_committed))
/// to continue. Damage in sealed segments, found lazily here, is reported as
/// [`Entry::Loss`] up to the end of the damaged segment, never as a panic. Records already
/// acknowledged and deleted are skipped silently.
pub struct Reader {
    inner: Arc<Inner>,
    next: Lsn,
    seg: Option<OpenSeg>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Reader {
    pub(crate) fn new(inner: Arc<Inner>, lsn: Lsn) -> Self {
        Self {
            inner,
            next: lsn.max(1),
            seg: None,
        }
    }

    /// The LSN the reader will return next.
    #[must_use]
    pub fn position(&self) -> Lsn {
        self.next
    }

    /// Reads up to `max` entries (stopping early when caught up).
    ///
    /// # Errors
    ///
    /// I/O errors reading segment files.
    pub fn next_batch(&mut self, max: usize) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        while out.len() < max {
            match self.next() {
                Some(e) => out.push(e?),
                None => break,
            }
        }
        Ok(out)
    }

    /// Closes the open segment and emits a loss from `self.next` to `last` (inclusive).
    /// `cause` `None` means: look it up among known losses, else [`LossCause::Missing`].
    fn lose(&mut self, last: Lsn, cause: Option<LossCause>) -> Option<Entry> {
        self.seg = None;
        let st = self.inner.state();
        let first = self.next.max(st.acked + 1);
        self.next = self.next.max(last.saturating_add(1));
        if first > last {
            return None;
        }
        let cause = cause.unwrap_or_else(|| {
            st.losses
                .iter()
                .find(|l| l.first <= last && first <= l.last)
                .map_or(LossCause::Missing, |l| l.cause)
        });
        Some(Entry::Loss(Loss { first, last, cause }))
    }

    fn step(&mut self) -> Result<Option<Entry>> {
        loop {
            // Snapshot what is readable.
            let (committed, seg_info) = {
                let st = self.inner.state();
                let cur = self.seg.as_ref().map(|s| s.first_lsn);
                let info = cur.map(|c| {
                    let meta = st.segs.get(&c).cloned();
                    let following = st.segs.range(c + 1..).next().map(|(k, _)| *k);
                    (meta, following)
                });
                let locate = if self.seg.is_none() {
                    let containing = st
                        .segs
                        .range(..=self.next)
                        .next_back()
                        .map(|(k, m)| (*k, m.clone()));
                    let first = st.segs.keys().next().copied();
                    Some((containing, first))
                } else {
                    None
                };
                (st.committed, (info, locate))
            };
            if self.next > committed {
                return Ok(None);
            }
            let (info, locate) = seg_info;
            if let Some((containing, first)) = locate {
                let Some((first_lsn, meta)) = containing else {
                    // `next` lies before the first segment: those records are gone (acked ones
                    // silently, others as a loss).
                    let Some(f) = first else { return Ok(None) };
                    let l = self.lose(f - 1, None);
                    self.next = self.next.max(f);
                    if let Some(l) = l {
                        return Ok(Some(l));
                    }
                    continue;
                };
                let following = {
                    let st = self.inner.state();
                    st.segs.range(first_lsn + 1..).next().map(|(k, _)| *k)
                };
                if let Some(f) = following
                    && self.next >= meta.next_lsn
                    && meta.sealed
                {
                    // `next` is past the end of this segment but before the next one.
                    let l = self.lose(f - 1, None);
                    self.next = self.next.max(f);
                    if let Some(l) = l {
                        return Ok(Some(l));
                    }
                    continue;
                }
                let path = self.inner.dir.join(&meta.name);
                let file = match self.inner.vfs.open(&path, OpenMode::Read) {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // deleted meanwhile
                    Err(e) => return Err(Error::io("open", path)(e)),
                };
                let mut hb = [0u8; SEGMENT_HEADER_LEN];
                let n = file
                    .read_full_at(&mut hb, 0)
                    .map_err(Error::io("read", &path))?;
                let header = SegmentHeader::decode(&hb[..n])
                    .ok()
                    .filter(|h| h.first_lsn == first_lsn);
                let Some(h) = header else {
                    let last = following.map_or(committed, |f| f - 1);
                    if let Some(l) = self.lose(last, Some(LossCause::Corrupt)) {
                        return Ok(Some(l));
                    }
                    continue;
                };
                if first_lsn > self.next {
                    // `next` lies before this segment: only possible if acked/deleted.
                    self.next = first_lsn;
                }
                self.seg = Some(OpenSeg {
                    first_lsn,
                    path,
                    file,
                    salt: h.salt,
                    offset: SEGMENT_HEADER_LEN as u64,
                    buf: Vec::new(),
                    buf_start: 0,
                });
                continue;
            }
            let (meta, following) = info.expect("segment open");
            let Some(meta) = meta else {
                // Deleted (acknowledged or dropped) while open.
                self.seg = None;
                continue;
            };
            let end = meta.len;
            let seg = self.seg.as_mut().expect("segment open");
            let window = seg.window(FRAME_HEADER_LEN, end)?;
            if window.is_empty() {
                // End of the readable part of this segment.
                match following {
                    Some(f) => {
                        if self.next < f
                            && let Some(l) = self.lose(f - 1, None)
                        {
                            return Ok(Some(l));
                        }
                        self.seg = None;
                        self.next = self.next.max(f);
                        continue;
                    }
                    None => return Ok(None),
                }
            }
            let len = if window.len() >= 4 {
                u32::from_le_bytes(window[..4].try_into().expect("4 bytes")) as usize
            } else {
                0
            };
            let total = format::frame_len(len.min(MAX_PAYLOAD_LEN));
            let salt = seg.salt;
            let window = seg.window(total, end)?;
            let decoded = format::decode_frame(window, salt, MAX_PAYLOAD_LEN)
                .map(|f| (f.lsn, f.kind, f.payload.to_vec(), f.encoded_len));
            match decoded {
                Ok((lsn, KIND_DATA, payload, enc)) if lsn <= self.next => {
                    seg.offset += enc as u64;
                    if lsn == self.next {
                        self.next += 1;
                        return Ok(Some(Entry::Record(Record { lsn, payload })));
                    }
                    // lsn < next: skipping records before the start position.
                }
                Ok((_, KIND_SEAL, _, _)) => {
                    self.seg = None;
                    if let Some(f) = following {
                        if self.next < f
                            && let Some(l) = self.lose(f - 1, None)
                        {
                            return Ok(Some(l));
                        }
                        self.next = self.next.max(f);
                    }
                    continue;
                }
                Ok((_, k, _, enc)) if k >= 0x80 => {
                    seg.offset += enc as u64;
                }
                _ => {
                    // Damage (checksum, LSN discontinuity, unknown kind): skip the rest of the
                    // segment.
                    let last =
                        following.map_or(meta.next_lsn.max(self.next).saturating_sub(1), |f| f - 1);
                    let last = last.min(committed).max(self.next);
                    if let Some(l) = self.lose(last, Some(LossCause::Corrupt)) {
                        return Ok(Some(l));
                    }
                }
            }
        }
    }
}

impl Iterator for Reader {
    type Item = Result<Entry>;
    fn next(&mut self) -> Option<Self::Item> {
        self.step().transpose()
    }
}
