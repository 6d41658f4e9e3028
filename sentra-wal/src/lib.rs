#![doc = include_str!("../README.md")]
//!
//! ## Guarantees
//!
//! * **Ack = durable.** [`Wal::append`] returns an LSN only after the record was written and
//!   `fdatasync`ed (default [`SyncPolicy::Always`]). Appends from many threads are grouped by
//!   a dedicated writer thread into one write and one sync; [`Wal::append_batch`] puts many
//!   records under one sync explicitly. [`Wal::append_async`] is the runtime-agnostic async
//!   form (no `tokio::fs`, no `spawn_blocking`).
//! * **Recovery always opens.** A torn tail is truncated; valid records behind corruption in
//!   the tail are kept and only the damaged ones reported; a damaged tail header is repaired
//!   or its records reported lost; a damaged sealed segment is skipped and reported as a
//!   [`Loss`]. LSNs are never handed out twice. The [`RecoveryReport`] says what was
//!   recovered, truncated and lost, and which losses are new. Only I/O errors can make
//!   [`Wal::open`] fail.
//! * **Shipping.** [`Wal::read_from`] iterates committed records; [`Wal::ack`] persists the
//!   cursor (two checksummed slots, torn-write safe) and deletes fully acknowledged segments.
//! * **Bounded disk.** [`Options::disk_cap`]; when full, appends fail with [`Error::Full`]
//!   (default) or, with [`FullPolicy::DropOldest`], the oldest segments are dropped and the
//!   loss is recorded.
//! * **Full disk.** ENOSPC below the cap refuses the append with [`Error::DiskFull`]; the
//!   partial write is cut off and the log stays usable (see [`Error::is_disk_full`]).
//! * **Fail-stop.** Any other write error and any sync error poisons the log: no fsync retry,
//!   no success reported for data written after the last good sync. Reopening runs recovery.
//! * An exclusive lock on the directory; [`inspect`] reads a live log without it.
//!
//! The on-disk format and the reasoning behind it are in [`format`](mod@format). The storage layer is a
//! trait ([`vfs::Vfs`]) with the real file system and a crash-simulating one ([`sim::SimFs`]).
//!
//! This crate depends on no other sentra crate.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod completion;
mod error;
pub mod format;
mod options;
mod reader;
mod recovery;
pub mod sim;
pub mod vfs;
mod wal;

pub use completion::AppendFuture;
pub use error::{Error, Result};
pub use options::{FullPolicy, Options, SyncPolicy};
pub use reader::{Entry, Reader, Record};
pub use recovery::{Inspection, RecoveryReport, SegmentInfo, inspect};
pub use wal::{Loss, LossCause, Lsn, LsnRange, Stats, Wal};

/// Inspects the WAL in `dir` on the real file system without taking the lock (see
/// [`inspect`]).
///
/// # Errors
///
/// I/O errors reading the directory.
pub fn inspect_dir(dir: impl AsRef<std::path::Path>) -> Result<Inspection> {
    inspect(&vfs::RealFs, dir.as_ref())
}

/// Encodes a directory image (cursor first, then segments) for [`fuzz_recovery`].
#[doc(hidden)]
#[must_use]
pub fn fuzz_image(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let cursor = files
        .iter()
        .find(|(n, _)| n == "cursor")
        .map_or(&[][..], |(_, b)| &b[..]);
    let segs = files
        .iter()
        .filter(|(n, _)| n.ends_with(".wal"))
        .map(|(_, b)| &b[..]);
    for b in std::iter::once(cursor).chain(segs) {
        let b = &b[..b.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&(b.len() as u16).to_le_bytes());
        out.extend_from_slice(b);
    }
    out
}

/// Most files [`fuzz_recovery`] builds from one input (cursor included).
const FUZZ_MAX_FILES: u64 = 64;

/// Opens a log from an arbitrary byte image and reads it completely; used by the fuzz target
/// and its corpus replay. The bytes are split into files, each a 2-byte little-endian length
/// followed by its bytes ([`fuzz_image`] produces this encoding): the first file is the cursor,
/// the others (at most 63) are segments, named after the first LSN in their header (or their position).
/// Returns the number of records read. Panics only if recovery misbehaves: that is the bug the
/// fuzzer looks for.
#[doc(hidden)]
pub fn fuzz_recovery(data: &[u8]) -> u64 {
    use std::path::Path;
    let fs = sim::SimFs::new();
    let dir = Path::new("/wal");
    let _ = vfs::Vfs::create_dir_all(&fs, dir);
    let mut rest = data;
    let mut i = 0u64;
    // At most 64 files: more segments add no new recovery paths, and thousands of tiny files
    // (an input of zeros is 2 048 empty files) made executions cost milliseconds each.
    while rest.len() >= 2 && i < FUZZ_MAX_FILES {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let bytes = &rest[2..2 + len];
        rest = &rest[2 + len..];
        let name = if i == 0 {
            "cursor".to_owned()
        } else {
            let lsn = bytes
                .get(24..32)
                .map_or(i, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
            format::segment_name(lsn % 1_000_000_000)
        };
        fs.put_file(&dir.join(name), bytes);
        i += 1;
    }
    let inspection = inspect(&fs, dir).expect("inspection of an in-memory image has no I/O errors");
    let opts = Options::default()
        .segment_size(4096)
        .disk_cap(1 << 20)
        .max_record_len(1024);
    let (wal, report) = match Wal::open_with(std::sync::Arc::new(fs), dir, opts) {
        Ok(w) => w,
        Err(e) => panic!("recovery must always open a log from any bytes: {e}"),
    };
    let mut n = 0;
    for e in wal.read_from(report.acked_lsn + 1).take(100_000) {
        match e {
            Ok(Entry::Record(_)) => n += 1,
            Ok(_) => {}
            Err(e) => panic!("reading a recovered log failed: {e}"),
        }
    }
    assert!(
        n <= inspection.records().max(report.records),
        "read more records than exist"
    );
    if let Err(e) = wal.append(b"after recovery") {
        panic!("append after recovery failed: {e}");
    }
    n
}
