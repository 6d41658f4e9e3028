use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::{self, MAX_PAYLOAD_LEN, SEAL_FRAME_LEN, SEGMENT_HEADER_LEN};

/// When appended bytes are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SyncPolicy {
    /// `fdatasync` before an append returns (group commit). The default: an LSN returned by
    /// `append` survives a crash or power cut.
    #[default]
    Always,
    /// Explicit opt-out: appends return once written to the OS; a sync happens at most every
    /// given interval (and on rotation and close). A power cut can lose up to one interval;
    /// LSNs of lost records may be handed out again after recovery.
    Interval(Duration),
    /// Explicit opt-out: appends return once written to the OS; syncs happen only on rotation
    /// and close. A power cut can lose everything since the last rotation.
    Never,
}

/// What an append does when the disk cap would be exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FullPolicy {
    /// Refuse the append with [`Error::Full`] (the default: acknowledged data is never
    /// dropped; the caller decides what to do with the new record).
    #[default]
    Refuse,
    /// Delete the oldest unacknowledged segments to make room, recording each as a
    /// [`Loss`](crate::Loss) with cause [`LossCause::DroppedOldest`](crate::LossCause::DroppedOldest).
    DropOldest,
}

/// Configuration of a [`Wal`](crate::Wal).
#[derive(Debug, Clone)]
pub struct Options {
    pub(crate) segment_size: u64,
    pub(crate) max_record_len: usize,
    pub(crate) disk_cap: u64,
    pub(crate) full_policy: FullPolicy,
    pub(crate) sync: SyncPolicy,
    pub(crate) max_group_bytes: usize,
    pub(crate) preallocate: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            segment_size: 16 << 20,
            max_record_len: 4 << 20,
            disk_cap: 1 << 30,
            full_policy: FullPolicy::Refuse,
            sync: SyncPolicy::Always,
            max_group_bytes: 4 << 20,
            preallocate: true,
        }
    }
}

impl Options {
    /// Default options: 16 MiB preallocated segments (growing ones when the disk has no room
    /// for a whole segment), 4 MiB records, 1 GiB cap, refuse when full, durable.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
    /// Target segment size in bytes (a segment holding one large record may exceed it).
    #[must_use]
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes;
        self
    }
    /// Largest accepted payload (default 4 MiB; lowered automatically to half the disk cap).
    #[must_use]
    pub fn max_record_len(mut self, bytes: usize) -> Self {
        self.max_record_len = bytes;
        self
    }
    /// Cap on the total size of all segment files (the cursor and lock files add 8 KiB).
    /// Must be at least twice the segment size.
    #[must_use]
    pub fn disk_cap(mut self, bytes: u64) -> Self {
        self.disk_cap = bytes;
        self
    }
    /// Behaviour when the cap is reached.
    #[must_use]
    pub fn full_policy(mut self, policy: FullPolicy) -> Self {
        self.full_policy = policy;
        self
    }
    /// Sync policy.
    #[must_use]
    pub fn sync_policy(mut self, policy: SyncPolicy) -> Self {
        self.sync = policy;
        self
    }
    /// Zero-fill each new segment to its full size before use (okaywal's approach; §7.3 of
    /// the design notes). On by default. Appends then overwrite allocated blocks, so
    /// `fdatasync` does not have to commit a file-size change through the file-system
    /// journal: lower and steadier sync latency (about half on the build machine's ext4),
    /// especially when other processes keep the journal busy.
    ///
    /// A small or nearly full disk does not prevent appends: when the zero fill of a segment
    /// fails for lack of room (`ENOSPC`, `EDQUOT`, `EFBIG`), what was filled is released and
    /// that segment grows with its appends instead (logged once per `Wal`, counted in
    /// [`Stats::growing_segments`](crate::Stats::growing_segments)); appends then take what
    /// fits, and a full disk refuses an append with [`Error::DiskFull`] as with growing
    /// segments. The next segment tries to preallocate again.
    ///
    /// The cost is that every segment is written twice, which matters on flash with limited
    /// write endurance: turn it off there. The disk cap counts preallocated bytes. Recovery
    /// treats the zero fill after the last frame as the end of the log and cuts a torn record
    /// in it.
    #[must_use]
    pub fn preallocate(mut self, on: bool) -> Self {
        self.preallocate = on;
        self
    }
    /// Most bytes the writer thread gathers into one write + sync (default 4 MiB).
    #[must_use]
    pub fn max_group_bytes(mut self, bytes: usize) -> Self {
        self.max_group_bytes = bytes;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::InvalidConfig(m.to_owned()));
        if self.max_record_len == 0 || self.max_record_len > MAX_PAYLOAD_LEN {
            return bad("max_record_len must be in 1..=64 MiB");
        }
        let min_seg = (SEGMENT_HEADER_LEN + SEAL_FRAME_LEN + format::frame_len(1)) as u64;
        if self.segment_size < min_seg {
            return bad("segment_size is too small");
        }
        if self.disk_cap < 2 * self.segment_size {
            return bad("disk_cap must be at least twice the segment size");
        }
        if self.max_group_bytes == 0 {
            return bad("max_group_bytes must be positive");
        }
        Ok(())
    }

    /// The effective record limit: the configured one, reduced so that a segment holding one
    /// maximal record fits in half the disk cap.
    pub(crate) fn record_limit(&self) -> usize {
        let overhead = (SEGMENT_HEADER_LEN + SEAL_FRAME_LEN + format::FRAME_HEADER_LEN + 8) as u64;
        let by_cap =
            usize::try_from((self.disk_cap / 2).saturating_sub(overhead)).unwrap_or(usize::MAX);
        self.max_record_len.min(by_cap)
    }
}
