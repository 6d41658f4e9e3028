//! The live log: open, append (group commit on a writer thread), acknowledge, rotate.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::completion::{AppendFuture, Bell, Completion};
use crate::error::{Error, Result};
use crate::format::{
    self, CURSOR_SLOT_LEN, CursorSlot, MAX_PAYLOAD_LEN, SEAL_FRAME_LEN, SEGMENT_HEADER_LEN,
    SegmentHeader,
};
use crate::options::{FullPolicy, Options, SyncPolicy};
use crate::reader::Reader;
use crate::recovery::{self, CURSOR_FILE, LOCK_FILE, RecoveryReport};
use crate::vfs::{LockGuard, OpenMode, RealFs, Vfs, VfsFile};

/// Log sequence number: every record gets the next one, starting at 1.
pub type Lsn = u64;

/// An inclusive range of LSNs assigned to a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(
    clippy::exhaustive_structs,
    reason = "a plain inclusive (first, last) pair of LSNs; complete as it is"
)]
pub struct LsnRange {
    /// First LSN of the batch.
    pub first: Lsn,
    /// Last LSN of the batch.
    pub last: Lsn,
}

impl LsnRange {
    /// Number of LSNs in the range.
    #[must_use]
    pub fn len(&self) -> u64 {
        (self.last + 1).saturating_sub(self.first)
    }
    /// `true` if the range holds no LSN.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A range of records that will never be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Loss {
    /// First lost LSN.
    pub first: Lsn,
    /// Last lost LSN (inclusive).
    pub last: Lsn,
    /// Why the records are gone.
    pub cause: LossCause,
}

impl Loss {
    /// Number of lost records.
    #[must_use]
    pub fn records(&self) -> u64 {
        (self.last + 1).saturating_sub(self.first)
    }
}

/// Why records were lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LossCause {
    /// A segment was damaged (checksum failure, bad header) after it had been sealed.
    Corrupt,
    /// The records are not in the log and not acknowledged (for example segments dropped in
    /// an earlier run).
    Missing,
    /// Dropped to stay under the disk cap ([`FullPolicy::DropOldest`]).
    DroppedOldest,
}

impl std::fmt::Display for LossCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Corrupt => "corrupt",
            Self::Missing => "missing",
            Self::DroppedOldest => "dropped-oldest",
        })
    }
}

/// Counters and positions of a live log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// LSN the next append gets.
    pub next_lsn: Lsn,
    /// Last LSN readers can see (written; durable under [`SyncPolicy::Always`]).
    pub committed_lsn: Lsn,
    /// Last LSN known to be durable.
    pub durable_lsn: Lsn,
    /// Last acknowledged LSN.
    pub acked_lsn: Lsn,
    /// Bytes used by segment files.
    pub disk_used: u64,
    /// Number of segment files.
    pub segments: usize,
    /// Records dropped by [`FullPolicy::DropOldest`] since open.
    pub dropped_records: u64,
    /// Group commits (write + sync rounds) since open.
    pub groups: u64,
    /// Segments created (or continued) since open that should have been preallocated
    /// ([`Options::preallocate`](crate::Options::preallocate)) but grow with their appends
    /// instead, because the file system had no room for a whole segment.
    pub growing_segments: u64,
    /// Whether the log is poisoned by an I/O error.
    pub poisoned: bool,
}

#[derive(Debug)]
struct Req {
    data: Vec<u8>,
    lens: Vec<u32>,
    frame_bytes: u64,
    done: Arc<Completion>,
}

#[derive(Debug, Default)]
struct Queue {
    reqs: VecDeque<Req>,
    rotate: Vec<Arc<Completion>>,
    closed: bool,
    poisoned: Option<Arc<str>>,
    /// The writer thread sleeps until the queue holds this many requests (0: it is not
    /// waiting; an append then does not wake it).
    wake_at: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct SegMeta {
    pub(crate) name: String,
    /// Bytes readers may read (committed end; the whole file once sealed).
    pub(crate) len: u64,
    /// Size of the file on disk (counted against the cap).
    size: u64,
    pub(crate) next_lsn: Lsn,
    pub(crate) sealed: bool,
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) segs: BTreeMap<Lsn, SegMeta>,
    pub(crate) committed: Lsn,
    durable: Lsn,
    pub(crate) acked: Lsn,
    used: u64,
    dropped: u64,
    groups: u64,
    growing_segments: u64,
    pub(crate) losses: Vec<Loss>,
}

#[derive(Debug)]
struct CursorState {
    file: Box<dyn VfsFile>,
    slot: usize,
    seq: u64,
    acked: Lsn,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) vfs: Arc<dyn Vfs>,
    pub(crate) dir: PathBuf,
    opts: Options,
    queue: Mutex<Queue>,
    queue_cv: Condvar,
    pub(crate) state: Mutex<State>,
    state_cv: Condvar,
    cursor: Mutex<CursorState>,
    /// Blocked appenders sleep here (see [`Bell`]).
    bell: Arc<Bell>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn poison(&self, why: &str) -> Arc<str> {
        let mut q = lock(&self.queue);
        let msg = q.poisoned.get_or_insert_with(|| Arc::from(why)).clone();
        let reqs: Vec<Req> = q.reqs.drain(..).collect();
        let rot: Vec<Arc<Completion>> = q.rotate.drain(..).collect();
        drop(q);
        for r in reqs {
            r.done.complete(Err(Error::Poisoned(msg.clone())));
        }
        for c in rot {
            c.complete(Err(Error::Poisoned(msg.clone())));
        }
        self.state_cv.notify_all();
        msg
    }
}

/// A write-ahead log in one directory.
///
/// `Wal` is `Send + Sync`: share it (for example in an `Arc`) between appenders and the
/// shipper. One dedicated writer thread owns the active segment; appends from all threads are
/// grouped into one write and one `fdatasync`.
///
/// See the [crate documentation](crate) for an example.
#[derive(Debug)]
pub struct Wal {
    inner: Arc<Inner>,
    writer: Option<JoinHandle<Result<()>>>,
    /// Held by the handle (not by readers): dropping or closing the `Wal` releases it.
    _lock: LockGuard,
}

/// Loss ranges above `acked`, for the cursor's "already reported" list.
fn known_losses(losses: &[Loss], acked: Lsn) -> Vec<(Lsn, Lsn)> {
    losses
        .iter()
        .filter(|l| l.last > acked)
        .map(|l| (l.first, l.last))
        .collect()
}

/// A cursor slot's bytes: the record and the list of losses already reported.
fn cursor_bytes(seq: u64, acked: Lsn, known: &[(Lsn, Lsn)]) -> Vec<u8> {
    let mut b = CursorSlot {
        slot_seq: seq,
        acked_lsn: acked,
    }
    .encode()
    .to_vec();
    b.extend_from_slice(&format::encode_known_losses(known));
    b
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

struct Active {
    file: Box<dyn VfsFile>,
    path: PathBuf,
    first_lsn: Lsn,
    salt: u64,
    segment_id: u64,
    len: u64,
    /// Size of the file: `len`, or more if preallocated.
    file_size: u64,
    records: u64,
    /// Preallocation was asked for but did not fit: the segment grows instead.
    growing: bool,
}

/// Writes zeros over `[from, to)` (preallocation; see [`Options::preallocate`]).
fn zero_fill(file: &dyn VfsFile, path: &Path, from: u64, to: u64) -> Result<()> {
    const CHUNK: u64 = 1 << 20;
    let zeros = vec![0u8; CHUNK as usize];
    let mut at = from;
    while at < to {
        let n = (to - at).min(CHUNK);
        file.write_all_at(&zeros[..n as usize], at)
            .map_err(Error::io("preallocate", path))?;
        at += n;
    }
    Ok(())
}

/// `true` if a failed zero fill means "not enough room for a whole preallocated segment"
/// (`ENOSPC`, `EDQUOT`, `EFBIG`): the segment then grows instead.
fn prealloc_no_room(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. }
        if Error::is_no_space(source) || source.kind() == std::io::ErrorKind::FileTooLarge)
}

/// Zero-fills `[from, to)` of a segment (see [`Options::preallocate`]). If the file system
/// has no room for the whole fill, releases what was filled (cuts the file back to `from`)
/// and returns `Ok(false)`: the segment grows with its appends instead, and a full disk is
/// then met by an append as [`Error::DiskFull`]. Other errors are returned.
fn preallocate_or_grow(file: &dyn VfsFile, path: &Path, from: u64, to: u64) -> Result<bool> {
    match zero_fill(file, path, from, to) {
        Ok(()) => Ok(true),
        Err(e) if prealloc_no_room(&e) => {
            file.set_len(from)
                .map_err(Error::io("release preallocation", path))?;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Logs a segment that could not be preallocated, once per [`Wal`] (every case is counted in
/// [`Stats::growing_segments`]).
fn note_growing_segment(logged: &mut bool, path: &Path, want: u64) {
    if !*logged {
        *logged = true;
        tracing::warn!(
            segment = %path.display(),
            preallocate_bytes = want,
            "wal: not enough free space to preallocate a segment; it grows with its appends instead (logged once; see Stats::growing_segments)"
        );
    }
}

/// Creates a segment: header, optional zero fill up to `prealloc` bytes (falling back to a
/// growing segment when the disk has no room for it: `Active::growing`), `fdatasync`,
/// and a directory fsync so the new name is durable before any record in it is acknowledged.
fn create_segment(
    vfs: &dyn Vfs,
    dir: &Path,
    first_lsn: Lsn,
    segment_id: u64,
    prealloc: u64,
) -> Result<Active> {
    let name = format::segment_name(first_lsn);
    let path = dir.join(&name);
    let salt = random_u64();
    let header = SegmentHeader {
        segment_id,
        first_lsn,
        salt,
        created_ms: now_ms(),
    };
    let file = vfs
        .open(&path, OpenMode::Create)
        .map_err(Error::io("create", &path))?;
    file.write_all_at(&header.encode(), 0)
        .map_err(Error::io("write", &path))?;
    let header_len = SEGMENT_HEADER_LEN as u64;
    let mut file_size = prealloc.max(header_len);
    let mut growing = false;
    if file_size > header_len && !preallocate_or_grow(&*file, &path, header_len, file_size)? {
        file_size = header_len;
        growing = true;
    }
    file.sync_data().map_err(Error::io("sync", &path))?;
    vfs.sync_dir(dir).map_err(Error::io("sync dir", dir))?;
    Ok(Active {
        file,
        path,
        first_lsn,
        salt,
        segment_id,
        len: header_len,
        file_size,
        records: 0,
        growing,
    })
}

/// After `create_segment` failed with `e`: if the disk is full, removes the partly created
/// file (its header may be torn) and returns [`Error::DiskFull`]; other errors are returned
/// as they are. `Err` if the cleanup itself failed (the caller must poison).
fn undo_create(vfs: &dyn Vfs, dir: &Path, first_lsn: Lsn, e: Error) -> Result<Error> {
    let Error::Io { op, source, path } = e else {
        return Ok(e);
    };
    if !Error::is_no_space(&source) {
        return Ok(Error::Io { op, path, source });
    }
    let p = dir.join(format::segment_name(first_lsn));
    match vfs.remove_file(&p) {
        Ok(()) => vfs.sync_dir(dir).map_err(Error::io("sync dir", dir))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove", p)(e)),
    }
    Ok(Error::DiskFull { path, source })
}

impl Wal {
    /// Opens (creating if needed) the log in `dir` on the real file system, running recovery.
    ///
    /// Recovery always opens the log unless an I/O error prevents it: damage is repaired
    /// (torn tail truncated) or skipped and reported in the [`RecoveryReport`].
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] if another writer holds the directory, [`Error::InvalidConfig`],
    /// or [`Error::Io`].
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<(Self, RecoveryReport)> {
        Self::open_with(Arc::new(RealFs), dir, options)
    }

    /// Like [`Wal::open`], on a given storage layer (for example [`SimFs`](crate::sim::SimFs)).
    ///
    /// # Errors
    ///
    /// As [`Wal::open`].
    pub fn open_with(
        vfs: Arc<dyn Vfs>,
        dir: impl AsRef<Path>,
        opts: Options,
    ) -> Result<(Self, RecoveryReport)> {
        opts.validate()?;
        let dir = dir.as_ref().to_path_buf();
        vfs.create_dir_all(&dir)
            .map_err(Error::io("create dir", &dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let guard = vfs
            .try_lock(&lock_path)
            .map_err(Error::io("lock", &lock_path))?
            .ok_or_else(|| Error::Locked(dir.clone()))?;
        let rec = recovery::recover(&*vfs, &dir, MAX_PAYLOAD_LEN)?;
        let mut report = rec.report;

        // Cursor file.
        let cpath = dir.join(CURSOR_FILE);
        let cursor = match rec.cursor_slot {
            Some((slot, s)) => {
                let file = vfs
                    .open(&cpath, OpenMode::ReadWrite)
                    .map_err(Error::io("open", &cpath))?;
                CursorState {
                    file,
                    slot,
                    seq: s.slot_seq,
                    acked: s.acked_lsn,
                }
            }
            None => {
                let file = match vfs.open(&cpath, OpenMode::ReadWrite) {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        let f = vfs
                            .open(&cpath, OpenMode::Create)
                            .map_err(Error::io("create", &cpath))?;
                        // Real zeros, not a sparse `set_len`: a slot write must never need a
                        // new block (ENOSPC on a full disk would fail the acknowledgement).
                        f.write_all_at(&[0u8; 2 * CURSOR_SLOT_LEN], 0)
                            .map_err(Error::io("create", &cpath))?;
                        f.sync_data().map_err(Error::io("sync", &cpath))?;
                        vfs.sync_dir(&dir).map_err(Error::io("sync dir", &dir))?;
                        f
                    }
                    Err(e) => return Err(Error::io("open", &cpath)(e)),
                };
                CursorState {
                    file,
                    slot: 1,
                    seq: 0,
                    acked: rec.acked,
                }
            }
        };
        let mut cursor = cursor;
        if report.cursor_reset || !report.new_losses.is_empty() {
            // Persist the reset position and the losses now reported, so the next open
            // reports neither again.
            let slot = 1 - cursor.slot;
            let seq = cursor.seq + 1;
            let known = known_losses(&report.losses, rec.acked);
            cursor
                .file
                .write_all_at(
                    &cursor_bytes(seq, rec.acked, &known),
                    (slot * CURSOR_SLOT_LEN) as u64,
                )
                .and_then(|()| cursor.file.sync_data())
                .map_err(Error::io("write cursor", &cpath))?;
            cursor.slot = slot;
            cursor.seq = seq;
        }

        // Active segment: continue the tail if it is open, otherwise start a new one.
        let next_lsn = report.next_lsn;
        let mut segs = BTreeMap::new();
        let mut used = 0;
        for s in &rec.segments {
            used += s.file_len;
            segs.insert(
                s.first_lsn,
                SegMeta {
                    name: s.name.clone(),
                    len: s.len,
                    size: s.file_len,
                    next_lsn: s.next_lsn,
                    sealed: s.sealed,
                },
            );
        }
        let max_id = rec.segments.iter().map(|s| s.segment_id).max().unwrap_or(0);
        let mut need_segment = false;
        let active = match rec.segments.last() {
            Some(t) if !t.sealed && t.next_lsn == next_lsn => {
                let path = dir.join(&t.name);
                let file = vfs
                    .open(&path, OpenMode::ReadWrite)
                    .map_err(Error::io("open", &path))?;
                let mut file_size = t.file_len;
                let mut growing = false;
                if opts.preallocate && file_size < opts.segment_size {
                    // Bytes in [len, file_len) are zero (recovery keeps only a zero tail).
                    if preallocate_or_grow(&*file, &path, file_size, opts.segment_size)? {
                        used += opts.segment_size - file_size;
                        file_size = opts.segment_size;
                        if let Some(m) = segs.get_mut(&t.first_lsn) {
                            m.size = file_size;
                        }
                    } else {
                        growing = true;
                    }
                    file.sync_data().map_err(Error::io("sync", &path))?;
                }
                Active {
                    file,
                    path,
                    first_lsn: t.first_lsn,
                    salt: t.salt,
                    segment_id: t.segment_id,
                    len: t.len,
                    file_size,
                    records: t.next_lsn - t.first_lsn,
                    growing,
                }
            }
            _ => {
                let prealloc = if opts.preallocate {
                    opts.segment_size
                } else {
                    0
                };
                match create_segment(&*vfs, &dir, next_lsn, max_id + 1, prealloc) {
                    Ok(a) => {
                        used += a.file_size;
                        segs.insert(
                            next_lsn,
                            SegMeta {
                                name: format::segment_name(next_lsn),
                                len: a.len,
                                size: a.file_size,
                                next_lsn,
                                sealed: false,
                            },
                        );
                        report.segments += 1;
                        a
                    }
                    Err(e) => {
                        // Disk full: open anyway (the records held can still be shipped, which
                        // frees space); the writer creates the segment before the next append.
                        let Some(t) = rec.segments.last() else {
                            return Err(e);
                        };
                        let e = undo_create(&*vfs, &dir, next_lsn, e)?;
                        if !e.is_disk_full() {
                            return Err(e);
                        }
                        need_segment = true;
                        let path = dir.join(&t.name);
                        let file = vfs
                            .open(&path, OpenMode::ReadWrite)
                            .map_err(Error::io("open", &path))?;
                        Active {
                            file,
                            path,
                            first_lsn: t.first_lsn,
                            salt: t.salt,
                            segment_id: t.segment_id,
                            len: t.len,
                            file_size: t.file_len,
                            records: t.next_lsn - t.first_lsn,
                            growing: false,
                        }
                    }
                }
            }
        };
        let mut growing_logged = false;
        if active.growing {
            note_growing_segment(&mut growing_logged, &active.path, opts.segment_size);
        }
        let committed = next_lsn - 1;
        let state = State {
            growing_segments: u64::from(active.growing),
            segs,
            committed,
            durable: committed,
            acked: rec.acked,
            used,
            dropped: 0,
            groups: 0,
            losses: report.losses.clone(),
        };
        let inner = Arc::new(Inner {
            vfs,
            dir,
            opts,
            queue: Mutex::new(Queue::default()),
            queue_cv: Condvar::new(),
            state: Mutex::new(state),
            state_cv: Condvar::new(),
            cursor: Mutex::new(cursor),
            bell: Bell::new(),
        });
        let mut w = Writer {
            inner: inner.clone(),
            active,
            next_lsn,
            buf: Vec::with_capacity(inner.opts.max_group_bytes + 4096),
            buf_records: 0,
            pending: Vec::new(),
            dirty: false,
            last_sync: Instant::now(),
            last_group: 0,
            last_sync_took: Duration::ZERO,
            need_segment,
            growing_logged,
            space_limit: None,
            groups_under_limit: 0,
        };
        let writer = std::thread::Builder::new()
            .name("sentra-wal-writer".into())
            .spawn(move || {
                let inner = w.inner.clone();
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.run())) {
                    Ok(r) => r,
                    Err(_) => {
                        // Never leave an appender waiting: fail everything (fail-stop).
                        inner.poison("writer thread panicked");
                        for (c, _) in w.pending.drain(..) {
                            c.complete(Err(Error::Poisoned(Arc::from("writer thread panicked"))));
                        }
                        Err(Error::Poisoned(Arc::from("writer thread panicked")))
                    }
                }
            })
            .map_err(Error::io("spawn writer thread", &inner.dir))?;
        Ok((
            Self {
                inner,
                writer: Some(writer),
                _lock: guard,
            },
            report,
        ))
    }

    fn check_payload(&self, len: usize) -> Result<()> {
        if len == 0 {
            return Err(Error::EmptyRecord);
        }
        let limit = self.inner.opts.record_limit();
        if len > limit {
            return Err(Error::RecordTooLarge { len, limit });
        }
        Ok(())
    }

    fn submit(&self, data: Vec<u8>, lens: Vec<u32>) -> Arc<Completion> {
        let done = Completion::new(&self.inner.bell);
        let frame_bytes = lens
            .iter()
            .map(|&l| format::frame_len(l as usize) as u64)
            .sum();
        let mut q = lock(&self.inner.queue);
        if let Some(p) = &q.poisoned {
            done.complete(Err(Error::Poisoned(p.clone())));
        } else if q.closed {
            done.complete(Err(Error::Closed));
        } else {
            q.reqs.push_back(Req {
                data,
                lens,
                frame_bytes,
                done: done.clone(),
            });
            // Wake the writer only when it waits for what is now queued (not once per
            // append during its group wait).
            let wake = q.wake_at != 0 && q.reqs.len() >= q.wake_at;
            if wake {
                q.wake_at = 0;
            }
            drop(q);
            if wake {
                self.inner.queue_cv.notify_one();
            }
        }
        done
    }

    fn submit_batch<I, T>(&self, payloads: I) -> Result<Arc<Completion>>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        let mut data = Vec::new();
        let mut lens = Vec::new();
        for p in payloads {
            let p = p.as_ref();
            self.check_payload(p.len())?;
            data.extend_from_slice(p);
            lens.push(p.len() as u32);
        }
        if lens.is_empty() {
            return Err(Error::EmptyRecord);
        }
        Ok(self.submit(data, lens))
    }

    /// Appends one record and returns its LSN once it is durable (under the default
    /// [`SyncPolicy::Always`]; under the opt-out policies once it is written to the OS).
    ///
    /// Blocks the calling thread; concurrent appends share one `fdatasync`.
    ///
    /// # Errors
    ///
    /// [`Error::Full`] (nothing written), [`Error::RecordTooLarge`], [`Error::EmptyRecord`],
    /// [`Error::Io`] / [`Error::Poisoned`] after an I/O failure, [`Error::Closed`].
    pub fn append(&self, payload: &[u8]) -> Result<Lsn> {
        self.check_payload(payload.len())?;
        let c = self.submit(payload.to_vec(), vec![payload.len() as u32]);
        c.wait().map(|r| r.first)
    }

    /// Appends many records with one write and one sync; they get consecutive LSNs. All or
    /// none of them are appended.
    ///
    /// # Errors
    ///
    /// As [`Wal::append`]; an empty batch is [`Error::EmptyRecord`].
    pub fn append_batch<I, T>(&self, payloads: I) -> Result<LsnRange>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        self.submit_batch(payloads)?.wait()
    }

    /// Asynchronous [`Wal::append`]: the future resolves to the record's LSN range (one LSN)
    /// once durable. Runtime-agnostic: no I/O happens on the executor.
    pub fn append_async(&self, payload: &[u8]) -> AppendFuture {
        match self.check_payload(payload.len()) {
            Ok(()) => AppendFuture {
                inner: self.submit(payload.to_vec(), vec![payload.len() as u32]),
            },
            Err(e) => {
                let c = Completion::new(&self.inner.bell);
                c.complete(Err(e));
                AppendFuture { inner: c }
            }
        }
    }

    /// Asynchronous [`Wal::append_batch`].
    pub fn append_batch_async<I, T>(&self, payloads: I) -> AppendFuture
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        match self.submit_batch(payloads) {
            Ok(inner) => AppendFuture { inner },
            Err(e) => {
                let c = Completion::new(&self.inner.bell);
                c.complete(Err(e));
                AppendFuture { inner: c }
            }
        }
    }

    /// Seals the active segment (if it holds records) and starts a new one. Rotation also
    /// happens automatically when a segment reaches the configured size.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] / [`Error::Poisoned`], [`Error::Closed`].
    pub fn rotate(&self) -> Result<()> {
        let done = Completion::new(&self.inner.bell);
        {
            let mut q = lock(&self.inner.queue);
            if let Some(p) = &q.poisoned {
                return Err(Error::Poisoned(p.clone()));
            }
            if q.closed {
                return Err(Error::Closed);
            }
            q.rotate.push(done.clone());
        }
        self.inner.queue_cv.notify_one();
        done.wait().map(|_| ())
    }

    /// Records that every LSN up to and including `lsn` was shipped and acknowledged: the
    /// cursor is persisted (torn-write safe, `fdatasync`ed) and segments holding only
    /// acknowledged records are deleted. Acknowledging an LSN at or below the current cursor is
    /// a no-op.
    ///
    /// # Errors
    ///
    /// [`Error::AckBeyondEnd`] for an LSN never committed; [`Error::Io`] (which poisons the
    /// log) or [`Error::Poisoned`].
    pub fn ack(&self, lsn: Lsn) -> Result<()> {
        if let Some(p) = &lock(&self.inner.queue).poisoned {
            return Err(Error::Poisoned(p.clone()));
        }
        let committed = self.inner.state().committed;
        if lsn > committed {
            return Err(Error::AckBeyondEnd { lsn, committed });
        }
        let mut c = lock(&self.inner.cursor);
        if lsn <= c.acked {
            return Ok(());
        }
        let slot = 1 - c.slot;
        let seq = c.seq + 1;
        let known = known_losses(&self.inner.state().losses, lsn);
        let bytes = cursor_bytes(seq, lsn, &known);
        let cpath = self.inner.dir.join(CURSOR_FILE);
        let r = match c.file.write_all_at(&bytes, (slot * CURSOR_SLOT_LEN) as u64) {
            // Only the slot not holding the current cursor was touched: nothing to poison.
            // (Cursor files are created with real zeros; this needs a sparse older file.)
            Err(e) if Error::is_no_space(&e) => {
                return Err(Error::DiskFull {
                    path: cpath,
                    source: e,
                });
            }
            r => r.and_then(|()| c.file.sync_data()),
        }
        .map_err(Error::io("write cursor", &cpath));
        if let Err(e) = r {
            self.inner.poison(&e.to_string());
            return Err(e);
        }
        c.slot = slot;
        c.seq = seq;
        c.acked = lsn;
        let victims: Vec<String> = {
            let mut st = self.inner.state();
            st.acked = lsn;
            let last = st.segs.keys().next_back().copied();
            let keys: Vec<Lsn> = st
                .segs
                .iter()
                .filter(|(k, m)| Some(**k) != last && m.next_lsn <= lsn + 1)
                .map(|(k, _)| *k)
                .collect();
            let mut names = Vec::with_capacity(keys.len());
            for k in keys {
                if let Some(m) = st.segs.remove(&k) {
                    st.used -= m.size.min(st.used);
                    names.push(m.name);
                }
            }
            names
        };
        if !victims.is_empty() {
            for name in &victims {
                let p = self.inner.dir.join(name);
                if let Err(e) = self.inner.vfs.remove_file(&p) {
                    let e = Error::io("remove", p)(e);
                    self.inner.poison(&e.to_string());
                    return Err(e);
                }
            }
            if let Err(e) = self.inner.vfs.sync_dir(&self.inner.dir) {
                let e = Error::io("sync dir", &self.inner.dir)(e);
                self.inner.poison(&e.to_string());
                return Err(e);
            }
        }
        Ok(())
    }

    /// A reader positioned at `lsn` (typically `acked_lsn() + 1`). It yields committed records
    /// and loss ranges in LSN order; see [`Reader`].
    #[must_use]
    pub fn read_from(&self, lsn: Lsn) -> Reader {
        Reader::new(self.inner.clone(), lsn)
    }

    /// Blocks until `lsn` is committed (readable), the timeout passes or the log is poisoned
    /// or closed; returns whether `lsn` is committed.
    pub fn wait_committed(&self, lsn: Lsn, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.inner.state();
        loop {
            if st.committed >= lsn {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || lock(&self.inner.queue).poisoned.is_some() {
                return false;
            }
            st = self
                .inner
                .state_cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// The last acknowledged LSN (0 if none).
    #[must_use]
    pub fn acked_lsn(&self) -> Lsn {
        self.inner.state().acked
    }

    /// The last committed (readable) LSN.
    #[must_use]
    pub fn committed_lsn(&self) -> Lsn {
        self.inner.state().committed
    }

    /// Loss ranges known to this instance: those found by recovery plus drops since open.
    #[must_use]
    pub fn losses(&self) -> Vec<Loss> {
        self.inner.state().losses.clone()
    }

    /// Current counters.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let poisoned = lock(&self.inner.queue).poisoned.is_some();
        let st = self.inner.state();
        Stats {
            next_lsn: st.committed + 1,
            committed_lsn: st.committed,
            durable_lsn: st.durable,
            acked_lsn: st.acked,
            disk_used: st.used,
            segments: st.segs.len(),
            dropped_records: st.dropped,
            groups: st.groups,
            growing_segments: st.growing_segments,
            poisoned,
        }
    }

    /// The directory of the log.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    fn shutdown(&mut self) -> Result<()> {
        lock(&self.inner.queue).closed = true;
        self.inner.queue_cv.notify_all();
        match self.writer.take() {
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err(Error::Poisoned(Arc::from("writer thread panicked")))),
            None => Ok(()),
        }
    }

    /// Flushes and syncs pending appends, stops the writer thread and releases the lock.
    ///
    /// # Errors
    ///
    /// The I/O error of the final sync, or [`Error::Poisoned`] if the log was poisoned.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

struct Writer {
    inner: Arc<Inner>,
    active: Active,
    next_lsn: Lsn,
    buf: Vec<u8>,
    buf_records: u64,
    pending: Vec<(Arc<Completion>, LsnRange)>,
    dirty: bool,
    last_sync: Instant,
    /// Requests in the previous group and how long its sync took: the adaptive group wait.
    last_group: usize,
    last_sync_took: Duration,
    /// The active segment is sealed but its successor could not be created (disk full):
    /// the next append creates it first.
    need_segment: bool,
    /// A segment that could not be preallocated has been logged (once per `Wal`).
    growing_logged: bool,
    /// Under [`FullPolicy::DropOldest`], after ENOSPC: the bytes the file system held when it
    /// was full, used as a lower cap so the oldest segments make room (like the cap). Lifted
    /// after [`SPACE_LIMIT_GROUPS`] successful groups to find out whether space came back.
    space_limit: Option<u64>,
    groups_under_limit: u32,
}

/// Successful group commits after which a space limit learnt from ENOSPC is lifted again.
const SPACE_LIMIT_GROUPS: u32 = 64;

/// Upper bound of the adaptive group wait.
const MAX_GROUP_WAIT: Duration = Duration::from_millis(2);

impl Writer {
    fn run(&mut self) -> Result<()> {
        loop {
            let (reqs, rotate) = {
                let mut q = lock(&self.inner.queue);
                loop {
                    if let Some(p) = &q.poisoned {
                        return Err(Error::Poisoned(p.clone()));
                    }
                    if !q.reqs.is_empty() || !q.rotate.is_empty() {
                        break;
                    }
                    if q.closed {
                        drop(q);
                        return self.finish();
                    }
                    match self.inner.opts.sync {
                        SyncPolicy::Interval(d) if self.dirty => {
                            let wait = d.saturating_sub(self.last_sync.elapsed());
                            if wait.is_zero() {
                                drop(q);
                                if let Err(e) = self.sync() {
                                    return Err(self.fail(e));
                                }
                                q = lock(&self.inner.queue);
                                continue;
                            }
                            q.wake_at = 1;
                            q = self
                                .inner
                                .queue_cv
                                .wait_timeout(q, wait)
                                .unwrap_or_else(PoisonError::into_inner)
                                .0;
                            q.wake_at = 0;
                        }
                        _ => {
                            q.wake_at = 1;
                            q = self
                                .inner
                                .queue_cv
                                .wait(q)
                                .unwrap_or_else(PoisonError::into_inner);
                            q.wake_at = 0;
                        }
                    }
                }
                // Adaptive group wait: when the previous group had several appenders, they are
                // all about to resubmit; on a busy machine they may need a moment to be
                // scheduled. Wait for them, but at most a fraction of a sync (never for a lone
                // appender, so single-appender latency is untouched). The target follows the
                // previous group's size, so it adapts when appenders go away.
                if self.inner.opts.sync == SyncPolicy::Always
                    && self.last_group > 1
                    && q.reqs.len() < self.last_group
                {
                    let deadline = Instant::now() + (self.last_sync_took / 2).min(MAX_GROUP_WAIT);
                    while q.reqs.len() < self.last_group && q.poisoned.is_none() && !q.closed {
                        let now = Instant::now();
                        if now >= deadline {
                            break;
                        }
                        q.wake_at = self.last_group;
                        q = self
                            .inner
                            .queue_cv
                            .wait_timeout(q, deadline - now)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                        q.wake_at = 0;
                    }
                }
                let mut reqs = Vec::new();
                let mut bytes = 0u64;
                while let Some(r) = q.reqs.front() {
                    if !reqs.is_empty()
                        && bytes + r.frame_bytes > self.inner.opts.max_group_bytes as u64
                    {
                        break;
                    }
                    bytes += r.frame_bytes;
                    reqs.push(q.reqs.pop_front().expect("front exists"));
                }
                self.last_group = reqs.len();
                (reqs, std::mem::take(&mut q.rotate))
            };
            let rotated = match self.process(reqs, &rotate) {
                Ok(r) => r,
                Err(e) => {
                    let err = self.fail(e);
                    for c in rotate {
                        c.complete(Err(Error::Poisoned(Arc::from(err.to_string()))));
                    }
                    return Err(err);
                }
            };
            for c in rotate {
                c.complete(match &rotated {
                    Ok(()) => Ok(LsnRange {
                        first: self.next_lsn,
                        last: self.next_lsn - 1,
                    }),
                    Err(e) => Err(Error::DiskFull {
                        path: self.active.path.clone(),
                        source: std::io::Error::new(std::io::ErrorKind::StorageFull, e.to_string()),
                    }),
                });
            }
        }
    }

    /// Poisons the log: the first pending request gets `e`, every other one `Poisoned`.
    fn fail(&mut self, e: Error) -> Error {
        // ENOSPC or a failed write: cut the file back to the last good offset (best effort).
        let _ = self.active.file.set_len(self.active.len);
        let msg = self.inner.poison(&e.to_string());
        let mut pending = std::mem::take(&mut self.pending).into_iter();
        let mut first_err = Some(e);
        if let Some((c, _)) = pending.next() {
            c.complete(Err(first_err.take().expect("set above")));
        }
        for (c, _) in pending {
            c.complete(Err(Error::Poisoned(msg.clone())));
        }
        first_err.unwrap_or(Error::Poisoned(msg))
    }

    fn finish(&mut self) -> Result<()> {
        if self.dirty
            && let Err(e) = self.sync()
        {
            return Err(self.fail(e));
        }
        Ok(())
    }

    /// A fatal error while processing a group: hands `req` and every remaining request (no
    /// LSNs assigned) to `fail` via `pending`.
    fn hand_to_fail(&mut self, req: Req, rest: impl Iterator<Item = Req>) {
        let none = LsnRange { first: 0, last: 0 };
        self.pending.push((req.done, none));
        self.pending.extend(rest.map(|r| (r.done, none)));
    }

    /// Encodes, writes and syncs a group. `Err`: fatal (poison). `Ok(Err(DiskFull))`: an
    /// explicit rotation could not complete because the disk is full (not fatal).
    fn process(&mut self, reqs: Vec<Req>, rotate: &[Arc<Completion>]) -> Result<Result<()>> {
        let seg_size = self.inner.opts.segment_size;
        let mut reqs = reqs.into_iter();
        while let Some(req) = reqs.next() {
            if self.need_segment {
                // Make room first if a full disk taught us a lower limit (drop-oldest).
                if self.space_limit.is_some() {
                    match self.reserve(req.frame_bytes + SEGMENT_HEADER_LEN as u64, false) {
                        Ok(Ok(())) => {}
                        Ok(Err(full)) => {
                            req.done.complete(Err(full));
                            continue;
                        }
                        Err(e) => {
                            self.hand_to_fail(req, reqs);
                            return Err(e);
                        }
                    }
                }
                match self.open_next_segment() {
                    Ok(()) => {}
                    Err(e) if e.is_disk_full() => {
                        req.done.complete(Err(e));
                        continue;
                    }
                    Err(e) => {
                        self.hand_to_fail(req, reqs);
                        return Err(e);
                    }
                }
            }
            let has_records = self.active.records + self.buf_records > 0;
            let will_rotate = has_records
                && self.active.len
                    + self.buf.len() as u64
                    + req.frame_bytes
                    + SEAL_FRAME_LEN as u64
                    > seg_size;
            // Check the cap first (a rotation allocates a new segment), then rotate.
            let step = self.reserve(req.frame_bytes, will_rotate).and_then(|r| {
                if r.is_ok() && will_rotate {
                    self.rotate()?;
                }
                Ok(r)
            });
            let reserved = match step {
                Ok(r) => r,
                // The rotation found the disk full: what it was flushing is already answered
                // (see `flush`), this request is refused, the next one tries again.
                Err(e) if e.is_disk_full() => {
                    req.done.complete(Err(e));
                    continue;
                }
                Err(e) => {
                    self.hand_to_fail(req, reqs);
                    return Err(e);
                }
            };
            if let Err(full) = reserved {
                req.done.complete(Err(full));
                continue;
            }
            let first = self.next_lsn;
            let mut off = 0usize;
            for &l in &req.lens {
                let l = l as usize;
                format::encode_data(
                    &mut self.buf,
                    self.active.salt,
                    self.next_lsn,
                    &req.data[off..off + l],
                );
                off += l;
                self.next_lsn += 1;
            }
            self.buf_records += req.lens.len() as u64;
            self.pending.push((
                req.done,
                LsnRange {
                    first,
                    last: self.next_lsn - 1,
                },
            ));
        }
        let mut result = Ok(());
        if !rotate.is_empty() && !self.need_segment && self.active.records + self.buf_records > 0 {
            match self.rotate() {
                Err(e) if e.is_disk_full() => result = Err(e),
                r => r?,
            }
        }
        match self.flush(false) {
            Err(e) if e.is_disk_full() => Ok(result),
            Err(e) => Err(e),
            Ok(()) => Ok(result),
        }
    }

    /// After ENOSPC under [`FullPolicy::DropOldest`]: treat what fits as the cap from now on,
    /// so the next appends drop the oldest segments to make room, as at the configured cap.
    fn learn_space_limit(&mut self) {
        if self.inner.opts.full_policy == FullPolicy::DropOldest {
            self.space_limit = Some(self.inner.state().used);
            self.groups_under_limit = 0;
        }
    }

    /// A write failed with ENOSPC: cuts the file back to the last complete frame and makes
    /// that durable, forgets the buffered frames (their LSNs were never handed out), and
    /// answers every pending append with [`Error::DiskFull`]. The log stays usable. `Err` only
    /// if the cleanup failed (the caller poisons).
    fn undo_full_write(&mut self, source: std::io::Error) -> Result<Error> {
        let path = self.active.path.clone();
        self.active
            .file
            .set_len(self.active.len)
            .map_err(Error::io("truncate after disk full", &path))?;
        self.active
            .file
            .sync_data()
            .map_err(Error::io("sync", &path))?;
        self.dirty = false;
        if self.active.file_size > self.active.len {
            let freed = self.active.file_size - self.active.len;
            self.active.file_size = self.active.len;
            let mut st = self.inner.state();
            st.used -= freed.min(st.used);
            if let Some(m) = st.segs.get_mut(&self.active.first_lsn) {
                m.size = self.active.file_size;
            }
        }
        self.buf.clear();
        self.buf_records = 0;
        self.next_lsn = self.active.first_lsn + self.active.records;
        self.learn_space_limit();
        let kind = source.kind();
        let msg = source.to_string();
        for (c, _) in self.pending.drain(..) {
            c.complete(Err(Error::DiskFull {
                path: path.clone(),
                source: std::io::Error::new(kind, msg.clone()),
            }));
        }
        Ok(Error::DiskFull { path, source })
    }

    /// Bytes the cap must additionally accommodate to append `need` bytes of frames.
    fn extra_bytes(&self, need: u64, will_rotate: bool) -> u64 {
        let seal_and_header = (SEAL_FRAME_LEN + SEGMENT_HEADER_LEN) as u64;
        let seg_size = self.inner.opts.segment_size;
        if will_rotate {
            // The seal goes into the old segment; a new segment is created.
            let new_seg = if self.inner.opts.preallocate {
                seg_size.max(seal_and_header + need)
            } else {
                seal_and_header + need
            };
            let end = self.active.len + self.buf.len() as u64 + SEAL_FRAME_LEN as u64;
            end.saturating_sub(self.active.file_size) + new_seg
        } else {
            let end = self.active.len + self.buf.len() as u64 + need + SEAL_FRAME_LEN as u64;
            end.saturating_sub(self.active.file_size)
        }
    }

    /// Makes room for `need` bytes under the cap. `Ok(Err(Full))` refuses the request.
    fn reserve(&mut self, need: u64, will_rotate: bool) -> Result<Result<(), Error>> {
        let cap = self
            .inner
            .opts
            .disk_cap
            .min(self.space_limit.unwrap_or(u64::MAX));
        loop {
            let extra = self.extra_bytes(need, will_rotate);
            let mut st = self.inner.state();
            let used = st.used;
            if used + extra <= cap {
                return Ok(Ok(()));
            }
            let victim = match self.inner.opts.full_policy {
                FullPolicy::Refuse => None,
                FullPolicy::DropOldest => st
                    .segs
                    .keys()
                    .next()
                    .copied()
                    .filter(|k| *k != self.active.first_lsn),
            };
            let Some(victim) = victim else {
                return Ok(Err(Error::Full {
                    used,
                    needed: extra,
                    cap,
                }));
            };
            let meta = st.segs.remove(&victim).expect("key from map");
            st.used -= meta.size.min(st.used);
            let end = st.segs.keys().next().copied().unwrap_or(self.next_lsn);
            let first = victim.max(st.acked + 1);
            if first < end {
                let loss = Loss {
                    first,
                    last: end - 1,
                    cause: LossCause::DroppedOldest,
                };
                st.dropped += loss.records();
                st.losses.push(loss);
            }
            drop(st);
            let p = self.inner.dir.join(&meta.name);
            self.inner
                .vfs
                .remove_file(&p)
                .map_err(Error::io("remove", p))?;
            self.inner
                .vfs
                .sync_dir(&self.inner.dir)
                .map_err(Error::io("sync dir", &self.inner.dir))?;
        }
    }

    fn sync(&mut self) -> Result<()> {
        self.active
            .file
            .sync_data()
            .map_err(Error::io("sync", &self.active.path))?;
        self.dirty = false;
        self.last_sync = Instant::now();
        let mut st = self.inner.state();
        st.durable = st.committed;
        Ok(())
    }

    /// Writes the buffer; syncs if the policy (or `force`) says so; completes pending appends.
    fn flush(&mut self, force_sync: bool) -> Result<()> {
        if !self.buf.is_empty() {
            if let Err(e) = self.active.file.write_all_at(&self.buf, self.active.len) {
                if Error::is_no_space(&e) {
                    return Err(self.undo_full_write(e)?);
                }
                return Err(Error::io("write", &self.active.path)(e));
            }
            self.dirty = true;
        }
        let must_sync = force_sync
            || match self.inner.opts.sync {
                SyncPolicy::Always => true,
                SyncPolicy::Interval(d) => self.last_sync.elapsed() >= d,
                SyncPolicy::Never => false,
            };
        if must_sync && self.dirty {
            let started = Instant::now();
            self.active
                .file
                .sync_data()
                .map_err(Error::io("sync", &self.active.path))?;
            self.dirty = false;
            self.last_sync = Instant::now();
            self.last_sync_took = self.last_sync - started;
        }
        let written = self.buf.len() as u64;
        if written > 0 && self.space_limit.is_some() {
            self.groups_under_limit += 1;
            if self.groups_under_limit >= SPACE_LIMIT_GROUPS {
                self.space_limit = None;
            }
        }
        self.active.len += written;
        let grown = self.active.len.saturating_sub(self.active.file_size);
        self.active.file_size += grown;
        self.active.records += self.buf_records;
        self.buf.clear();
        self.buf_records = 0;
        {
            let mut st = self.inner.state();
            st.used += grown;
            st.committed = self.next_lsn - 1;
            if !self.dirty {
                st.durable = st.committed;
            }
            if written > 0 {
                st.groups += 1;
            }
            if let Some(m) = st.segs.get_mut(&self.active.first_lsn) {
                m.len = self.active.len;
                m.size = self.active.file_size;
                m.next_lsn = self.next_lsn;
            }
        }
        self.inner.state_cv.notify_all();
        let woke = !self.pending.is_empty();
        for (c, r) in self.pending.drain(..) {
            c.complete_quiet(Ok(r));
        }
        if woke {
            self.inner.bell.ring();
        }
        Ok(())
    }

    fn rotate(&mut self) -> Result<()> {
        let records = self.active.records + self.buf_records;
        format::encode_seal(&mut self.buf, self.active.salt, self.next_lsn, records);
        self.flush(true)?;
        if self.active.file_size > self.active.len {
            // Preallocated: cut the zero fill so the seal is the last frame of the file (the
            // quick validation on open reads it from the end).
            let path = &self.active.path;
            self.active
                .file
                .set_len(self.active.len)
                .map_err(Error::io("truncate", path))?;
            self.active
                .file
                .sync_data()
                .map_err(Error::io("sync", path))?;
            let freed = self.active.file_size - self.active.len;
            self.active.file_size = self.active.len;
            let mut st = self.inner.state();
            st.used -= freed.min(st.used);
        }
        {
            let mut st = self.inner.state();
            if let Some(m) = st.segs.get_mut(&self.active.first_lsn) {
                m.sealed = true;
                m.size = self.active.file_size;
            }
        }
        self.need_segment = true;
        self.open_next_segment()
    }

    /// Creates the segment after the sealed active one. On a full disk: [`Error::DiskFull`],
    /// nothing left behind, and `need_segment` stays set so the next append tries again.
    fn open_next_segment(&mut self) -> Result<()> {
        let prealloc = if self.inner.opts.preallocate {
            self.inner.opts.segment_size
        } else {
            0
        };
        let next = match create_segment(
            &*self.inner.vfs,
            &self.inner.dir,
            self.next_lsn,
            self.active.segment_id + 1,
            prealloc,
        ) {
            Ok(n) => n,
            Err(e) => {
                let e = undo_create(&*self.inner.vfs, &self.inner.dir, self.next_lsn, e)?;
                if e.is_disk_full() {
                    self.learn_space_limit();
                }
                return Err(e);
            }
        };
        if next.growing {
            note_growing_segment(&mut self.growing_logged, &next.path, prealloc);
        }
        {
            let mut st = self.inner.state();
            st.used += next.file_size;
            st.growing_segments += u64::from(next.growing);
            st.segs.insert(
                next.first_lsn,
                SegMeta {
                    name: format::segment_name(next.first_lsn),
                    len: next.len,
                    size: next.file_size,
                    next_lsn: next.first_lsn,
                    sealed: false,
                },
            );
        }
        self.active = next;
        self.need_segment = false;
        Ok(())
    }
}
