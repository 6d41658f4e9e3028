use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed. For writes and syncs this also poisons the log.
    #[error("wal I/O error: {op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Another process (or another handle in this one) holds the directory lock.
    #[error("wal directory {0} is locked by another writer")]
    Locked(PathBuf),
    /// The disk cap would be exceeded; nothing was written. Acknowledge (ship) records to free
    /// space, or configure [`FullPolicy::DropOldest`](crate::FullPolicy::DropOldest).
    #[error("wal is full: {used} bytes used, {needed} more needed, cap {cap}")]
    Full {
        /// Bytes currently used by segments.
        used: u64,
        /// Bytes the refused append needed.
        needed: u64,
        /// The configured cap.
        cap: u64,
    },
    /// The file system is out of space (`ENOSPC`, or a quota: `EDQUOT`) before the disk cap
    /// was reached. Nothing of the refused append(s) was stored and their LSNs are not used;
    /// unlike other write errors this does **not** poison the log: the partial write is cut
    /// off and made durable, and appends work again once space is freed (for example by
    /// acknowledging shipped records, which deletes segments).
    #[error(
        "no space left on the device holding {path} ({source}): the record was not stored; free disk space or ship (acknowledge) records"
    )]
    DiskFull {
        /// The file that could not grow.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A record is larger than the configured maximum.
    #[error("record of {len} bytes exceeds the limit of {limit}")]
    RecordTooLarge {
        /// Length of the record.
        len: usize,
        /// The configured limit.
        limit: usize,
    },
    /// Records must not be empty.
    #[error("empty records cannot be appended")]
    EmptyRecord,
    /// An earlier write or sync failed; the log accepts nothing more (fail-stop). Reopen it to
    /// run recovery.
    #[error("wal is poisoned by an earlier I/O error: {0}")]
    Poisoned(Arc<str>),
    /// The log was closed.
    #[error("wal is closed")]
    Closed,
    /// The options are inconsistent.
    #[error("invalid wal configuration: {0}")]
    InvalidConfig(String),
    /// An acknowledgement named an LSN that was never committed.
    #[error("cannot acknowledge lsn {lsn}: the last committed lsn is {committed}")]
    AckBeyondEnd {
        /// The LSN passed to `ack`.
        lsn: u64,
        /// The last committed LSN.
        committed: u64,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { op, path, source }
    }

    /// `true` if this is [`Error::DiskFull`]: the file system (not the cap) is full; the log
    /// is still usable and the append can be retried after space was freed.
    #[must_use]
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Self::DiskFull { .. })
    }

    /// `true` if `e` means "out of space" (`ENOSPC`, `EDQUOT`).
    pub(crate) fn is_no_space(e: &io::Error) -> bool {
        matches!(
            e.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
        )
    }

    /// `true` if this is [`Error::Full`].
    #[must_use]
    pub fn is_full(&self) -> bool {
        matches!(self, Self::Full { .. })
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
