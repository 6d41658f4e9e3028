//! The agent's write-ahead log: one record per collection, and how records get their
//! sequence numbers.
//!
//! # Sequence numbers
//!
//! A record is the protobuf encoding of one `MetricBatch`. Its `seq` is
//! **`seq_base + LSN`**: the WAL's LSNs are dense, start at 1 and survive trimming and
//! restarts (the cursor and the newest segment are never both deleted), so a sequence
//! number always names the same record and grows in WAL order — what the server's
//! high-water-mark deduplication (`seq ≤ H → DUPLICATE`) needs.
//!
//! `seq_base` exists for the day the WAL is lost while the credentials survive (a wiped
//! or re-created state directory, credentials restored from a backup): restarting at
//! seq 1 would make the server answer `DUPLICATE` to every new batch until the old high
//! water was passed, silently discarding data. Whenever a brand-new WAL is created
//! (nothing ever appended or acknowledged) a new base is chosen as
//! `max(now_ms × 1000, previous_base + 2⁴⁰)` and persisted (fsync) in
//! `<state_dir>/wal.seq-base` before the first append. The time-derived part outgrows any
//! earlier incarnation as long as it appended fewer than 1000 collections per millisecond;
//! the `+ 2⁴⁰` part covers a clock that went backwards while the base file survived.
//!
//! The appender writes `seq_base + expected LSN` into the record (appends are serialised,
//! so the expected LSN is exact); the shipper checks it against the real LSN and, should
//! they ever differ, ships `seq_base + LSN` (re-encoding the same batch) — the LSN is the
//! authority.

use std::path::Path;
use std::sync::Arc;

use prost::Message as _;
use sentra_core::{AgentId, Seq, proto};
use sentra_wal::{Lsn, Options, RecoveryReport, Wal};

use crate::config::WalFullPolicy;
use crate::output::Snapshot;
use crate::{Error, Result};

/// File (in the state directory) holding the WAL's sequence base.
pub const SEQ_BASE_FILE: &str = "wal.seq-base";

/// The WAL plus the sequence base.
#[derive(Debug, Clone)]
pub struct Store {
    wal: Arc<Wal>,
    seq_base: u64,
    append_lock: Arc<tokio::sync::Mutex<()>>,
}

/// Outcome of [`Store::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Appended {
    /// Stored durably at this LSN.
    Stored(Lsn),
    /// The WAL was full and refused it (drop-newest policy).
    Full,
}

fn read_base(path: &Path) -> Result<Option<u64>> {
    match std::fs::read_to_string(path) {
        Ok(s) => s
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| Error::Config(format!("{} does not hold a number", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path)(e)),
    }
}

fn write_base(path: &Path, base: u64) -> Result<()> {
    crate::atomic_file::write_atomic(path, format!("{base}\n").as_bytes(), 0o644)
}

fn new_base(previous: Option<u64>) -> u64 {
    let now_ms = u64::try_from(sentra_core::UnixMillis::now().as_millis()).unwrap_or(0);
    let from_clock = now_ms.saturating_mul(1000);
    previous.map_or(from_clock, |p| from_clock.max(p.saturating_add(1 << 40)))
}

impl Store {
    /// Opens (creating if needed) the WAL in `<state_dir>/wal` and its sequence base.
    ///
    /// # Errors
    ///
    /// [`Error::Wal`] (for example another agent holds the directory) or [`Error::Io`].
    pub fn open(
        state_dir: &Path,
        max_bytes: u64,
        policy: WalFullPolicy,
    ) -> Result<(Self, RecoveryReport)> {
        std::fs::create_dir_all(state_dir).map_err(Error::io("create directory", state_dir))?;
        let segment = (max_bytes / 8).clamp(64 << 10, 16 << 20);
        let opts = Options::default()
            .disk_cap(max_bytes)
            .segment_size(segment)
            .full_policy(match policy {
                WalFullPolicy::DropOldest => sentra_wal::FullPolicy::DropOldest,
                _ => sentra_wal::FullPolicy::Refuse,
            });
        let (wal, report) = Wal::open(state_dir.join("wal"), opts)?;
        let base_path = state_dir.join(SEQ_BASE_FILE);
        let previous = read_base(&base_path)?;
        let fresh = report.next_lsn == 1 && report.acked_lsn == 0;
        let seq_base = match previous {
            Some(b) if !fresh => b,
            prev => {
                if prev.is_none() && !fresh {
                    tracing::warn!(
                        path = %base_path.display(),
                        "the WAL exists but its sequence base is missing; choosing a new one (unshipped batches get new sequence numbers)"
                    );
                }
                let b = new_base(prev);
                write_base(&base_path, b)?;
                b
            }
        };
        Ok((
            Self {
                wal: Arc::new(wal),
                seq_base,
                append_lock: Arc::new(tokio::sync::Mutex::new(())),
            },
            report,
        ))
    }

    /// The underlying log.
    #[must_use]
    pub fn wal(&self) -> &Arc<Wal> {
        &self.wal
    }

    pub(crate) fn into_wal(self) -> Arc<Wal> {
        self.wal
    }

    /// The sequence base.
    #[must_use]
    pub fn seq_base(&self) -> u64 {
        self.seq_base
    }

    /// The sequence number of the record at `lsn`.
    ///
    /// # Errors
    ///
    /// [`Error::Core`] only on overflow past `u64::MAX`.
    pub fn seq_for(&self, lsn: Lsn) -> Result<Seq> {
        let raw = self.seq_base.checked_add(lsn).ok_or_else(|| {
            Error::Config("sequence number overflow; remove the state directory".into())
        })?;
        Ok(Seq::new(raw)?)
    }

    /// Appends one collection as one record, returning once it is durable.
    ///
    /// # Errors
    ///
    /// [`Error::Wal`] when the log failed (it is then poisoned: the agent must restart).
    pub async fn append(&self, agent_id: &AgentId, snap: &Snapshot) -> Result<Appended> {
        let _serial = self.append_lock.lock().await;
        let expected = self.wal.stats().next_lsn;
        let batch = proto::MetricBatch {
            agent_id: agent_id.as_str().to_owned(),
            seq: self.seq_for(expected)?.get(),
            created_ms: snap.created.as_millis(),
            samples: snap.samples.iter().map(proto::Sample::from).collect(),
            wg_devices: snap.wg_devices.iter().map(proto::WgDevice::from).collect(),
        };
        let bytes = batch.encode_to_vec();
        match self.wal.append_async(&bytes).await {
            Ok(range) => {
                if range.first != expected {
                    tracing::warn!(
                        expected,
                        got = range.first,
                        "WAL assigned an unexpected LSN; the shipper will use the real one"
                    );
                }
                Ok(Appended::Stored(range.first))
            }
            Err(e) if e.is_full() => Ok(Appended::Full),
            Err(e) => Err(e.into()),
        }
    }

    /// The batch to ship for the record at `lsn`: its payload with `seq = seq_base + lsn`
    /// (re-encoded only if the stored seq differs), and the collection time.
    ///
    /// # Errors
    ///
    /// [`Error::Core`] if the record is not a `MetricBatch` (corruption that passed the
    /// WAL's checksums, or a record from a foreign writer).
    pub fn prepare(&self, lsn: Lsn, payload: Vec<u8>) -> Result<Prepared> {
        let seq = self.seq_for(lsn)?;
        let mut batch = proto::MetricBatch::decode(payload.as_slice())
            .map_err(|e| sentra_core::Error::Decode(Box::new(e)))?;
        let created_ms = batch.created_ms;
        let payload = if batch.seq == seq.get() {
            bytes::Bytes::from(payload)
        } else {
            batch.seq = seq.get();
            bytes::Bytes::from(batch.encode_to_vec())
        };
        Ok(Prepared {
            lsn,
            seq,
            created_ms,
            payload,
        })
    }
}

/// A record ready to be signed and pushed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Prepared {
    /// WAL position.
    pub lsn: Lsn,
    /// Sequence number.
    pub seq: Seq,
    /// Collection time, Unix ms.
    pub created_ms: i64,
    /// Encoded `MetricBatch`.
    pub payload: bytes::Bytes,
}

#[cfg(test)]
mod tests {
    use super::*;
    use sentra_core::UnixMillis;

    fn snap() -> Snapshot {
        Snapshot {
            created: UnixMillis::from_millis(1_700_000_000_000),
            samples: Vec::new(),
            wg_devices: Vec::new(),
            wg_unavailable: None,
            problems: Vec::new(),
        }
    }

    #[tokio::test]
    async fn seq_is_base_plus_lsn_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        let agent = AgentId::new("edge-01").expect("id");
        let (store, _) = Store::open(dir.path(), 1 << 24, WalFullPolicy::DropNewest).expect("open");
        let base = store.seq_base();
        assert!(base >= 1_700_000_000_000_000, "time-derived base {base}");
        for i in 1..=3 {
            assert_eq!(
                store.append(&agent, &snap()).await.expect("append"),
                Appended::Stored(i)
            );
        }
        let rec = store
            .wal()
            .read_from(2)
            .next()
            .expect("entry")
            .expect("read");
        let sentra_wal::Entry::Record(r) = rec else {
            panic!("record expected")
        };
        let p = store.prepare(r.lsn(), r.into_payload()).expect("prepare");
        assert_eq!(p.seq.get(), base + 2);
        let b = sentra_core::Batch::decode(&p.payload).expect("valid batch");
        assert_eq!(b.seq.get(), base + 2);
        assert_eq!(b.created, UnixMillis::from_millis(1_700_000_000_000));
        store.wal().ack(3).expect("ack");
        drop(store);
        let (store, _) =
            Store::open(dir.path(), 1 << 24, WalFullPolicy::DropNewest).expect("reopen");
        assert_eq!(store.seq_base(), base, "same WAL, same base");
        assert_eq!(
            store.append(&agent, &snap()).await.expect("append"),
            Appended::Stored(4)
        );
    }

    #[tokio::test]
    async fn a_new_wal_gets_a_higher_base() {
        let dir = tempfile::tempdir().expect("tmp");
        let (store, _) = Store::open(dir.path(), 1 << 24, WalFullPolicy::DropNewest).expect("open");
        let old = store.seq_base();
        drop(store);
        std::fs::remove_dir_all(dir.path().join("wal")).expect("wipe wal");
        let (store, _) = Store::open(dir.path(), 1 << 24, WalFullPolicy::DropNewest).expect("open");
        assert!(store.seq_base() >= old + (1 << 40));
    }

    #[tokio::test]
    async fn a_foreign_seq_is_corrected_to_the_lsn() {
        let dir = tempfile::tempdir().expect("tmp");
        let (store, _) = Store::open(dir.path(), 1 << 24, WalFullPolicy::DropNewest).expect("open");
        let bogus = proto::MetricBatch {
            agent_id: "edge-01".into(),
            seq: 5,
            created_ms: 1,
            ..Default::default()
        };
        let lsn = store.wal().append(&bogus.encode_to_vec()).expect("append");
        let p = store.prepare(lsn, bogus.encode_to_vec()).expect("prepare");
        assert_eq!(p.seq.get(), store.seq_base() + lsn);
        assert_eq!(
            proto::MetricBatch::decode(p.payload).expect("decode").seq,
            p.seq.get()
        );
        assert!(store.prepare(lsn, b"\xff\xff\xff".to_vec()).is_err());
    }
}
