//! The agent's own health counters, reported as `sentra_agent_*` samples with every host
//! collection.
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `sentra_agent_wal_depth_records` | gauge | collections in the WAL not yet acknowledged by the server |
//! | `sentra_agent_wal_disk_bytes` | gauge | bytes used by WAL segments |
//! | `sentra_agent_ship_lag_seconds` | gauge | age of the oldest collection not yet acknowledged (0 when caught up) |
//! | `sentra_agent_batches_shipped_total{status}` | counter | batches acknowledged, `status` = `accepted` or `duplicate` |
//! | `sentra_agent_unexpected_duplicates_total` | counter | `duplicate` answers for a batch the server cannot have stored before (its first delivery, no earlier attempt that may have reached the server): a server whose sequence state is wrong is silently dropping this agent's data |
//! | `sentra_agent_batches_rejected_total{reason}` | counter | batches the server rejected and the agent skipped |
//! | `sentra_agent_push_failures_total` | counter | pushes that failed (network, timeout, retryable rejection) and were retried |
//! | `sentra_agent_collections_dropped_total` | counter | collections not stored because the WAL was full or failed |
//! | `sentra_agent_wal_lost_records_total` | counter | WAL records lost (corrupt, dropped for space) |
//! | `sentra_agent_collect_errors_total{collector}` | counter | malformed input lines / samples rejected |
//! | `sentra_agent_key_rotations_total` | counter | keys switched after a rotation |
//! | `sentra_agent_wireguard_up` | gauge | 1 if the last WireGuard read worked, 0 if WireGuard is unavailable (absent only while the collector is off or has not run) |

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use crate::samples::SampleSet;

/// Shared, lock-light counters.
#[derive(Debug, Default)]
pub struct Health {
    pub(crate) accepted: AtomicU64,
    pub(crate) duplicate: AtomicU64,
    pub(crate) unexpected_duplicate: AtomicU64,
    pub(crate) push_failures: AtomicU64,
    pub(crate) dropped_collections: AtomicU64,
    pub(crate) wal_lost: AtomicU64,
    pub(crate) key_rotations: AtomicU64,
    /// Collection time (Unix ms) of the oldest unacknowledged batch; 0 when caught up.
    pub(crate) oldest_unshipped_ms: AtomicI64,
    /// 1 WireGuard readable, 0 unavailable, 0 or absent before the first read (see
    /// `wireguard_known`).
    pub(crate) wireguard_up: AtomicI64,
    pub(crate) wireguard_known: std::sync::atomic::AtomicBool,
    pub(crate) rejected: Mutex<BTreeMap<String, u64>>,
    pub(crate) collect_errors: Mutex<BTreeMap<&'static str, u64>>,
}

/// A copy of the counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthSnapshot {
    /// Batches acknowledged as newly stored.
    pub accepted: u64,
    /// Batches acknowledged as already stored (retries).
    pub duplicate: u64,
    /// Of `duplicate`, the answers for a batch the server cannot have stored before.
    pub unexpected_duplicate: u64,
    /// Retried push failures.
    pub push_failures: u64,
    /// Collections dropped before reaching the WAL.
    pub dropped_collections: u64,
    /// WAL records lost.
    pub wal_lost: u64,
    /// Key switches.
    pub key_rotations: u64,
    /// Rejected-and-skipped batches by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Collection time (Unix ms) of the oldest batch not yet acknowledged by the server;
    /// 0 once the shipper has caught up with the WAL and persisted its cursor.
    pub oldest_unshipped_ms: i64,
}

impl Health {
    pub(crate) fn reject(&self, reason: &str) -> u64 {
        let mut m = self
            .rejected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = m.entry(reason.to_owned()).or_default();
        *n += 1;
        *n
    }

    pub(crate) fn set_wireguard_up(&self, up: bool) {
        self.wireguard_up.store(i64::from(up), Relaxed);
        self.wireguard_known.store(true, Relaxed);
    }

    pub(crate) fn collect_error(&self, collector: &'static str, n: usize) {
        if n == 0 {
            return;
        }
        let mut m = self
            .collect_errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *m.entry(collector).or_default() += n as u64;
    }

    /// The counters now.
    #[must_use]
    pub fn snapshot(&self) -> HealthSnapshot {
        HealthSnapshot {
            accepted: self.accepted.load(Relaxed),
            duplicate: self.duplicate.load(Relaxed),
            unexpected_duplicate: self.unexpected_duplicate.load(Relaxed),
            push_failures: self.push_failures.load(Relaxed),
            dropped_collections: self.dropped_collections.load(Relaxed),
            wal_lost: self.wal_lost.load(Relaxed),
            key_rotations: self.key_rotations.load(Relaxed),
            oldest_unshipped_ms: self.oldest_unshipped_ms.load(Relaxed),
            rejected: self
                .rejected
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        }
    }

    /// Appends the `sentra_agent_*` samples (WAL figures come from the caller).
    pub(crate) fn push_samples(&self, out: &mut SampleSet, wal: Option<&sentra_wal::Stats>) {
        let now = out.timestamp().as_millis();
        if let Some(s) = wal {
            out.gauge(
                "sentra_agent_wal_depth_records",
                &[],
                s.committed_lsn.saturating_sub(s.acked_lsn) as f64,
            );
            out.gauge("sentra_agent_wal_disk_bytes", &[], s.disk_used as f64);
        }
        let oldest = self.oldest_unshipped_ms.load(Relaxed);
        let lag = if oldest > 0 {
            (now - oldest).max(0) as f64 / 1000.0
        } else {
            0.0
        };
        out.gauge("sentra_agent_ship_lag_seconds", &[], lag);
        out.counter(
            "sentra_agent_batches_shipped_total",
            &[("status", "accepted")],
            self.accepted.load(Relaxed),
        );
        out.counter(
            "sentra_agent_batches_shipped_total",
            &[("status", "duplicate")],
            self.duplicate.load(Relaxed),
        );
        out.counter(
            "sentra_agent_unexpected_duplicates_total",
            &[],
            self.unexpected_duplicate.load(Relaxed),
        );
        for (reason, n) in self
            .rejected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            out.counter(
                "sentra_agent_batches_rejected_total",
                &[("reason", reason)],
                *n,
            );
        }
        out.counter(
            "sentra_agent_push_failures_total",
            &[],
            self.push_failures.load(Relaxed),
        );
        out.counter(
            "sentra_agent_collections_dropped_total",
            &[],
            self.dropped_collections.load(Relaxed),
        );
        out.counter(
            "sentra_agent_wal_lost_records_total",
            &[],
            self.wal_lost.load(Relaxed),
        );
        out.counter(
            "sentra_agent_key_rotations_total",
            &[],
            self.key_rotations.load(Relaxed),
        );
        if self.wireguard_known.load(Relaxed) {
            out.gauge(
                "sentra_agent_wireguard_up",
                &[],
                self.wireguard_up.load(Relaxed) as f64,
            );
        }
        let errs: Vec<(&'static str, u64)> = self
            .collect_errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        for (collector, n) in errs {
            out.counter(
                "sentra_agent_collect_errors_total",
                &[("collector", collector)],
                n,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sentra_core::{UnixMillis, Value};

    #[test]
    fn samples_reflect_counters() {
        let h = Health::default();
        h.accepted.fetch_add(3, Relaxed);
        h.unexpected_duplicate.fetch_add(4, Relaxed);
        h.reject("invalid_batch");
        h.reject("invalid_batch");
        h.collect_error("host", 2);
        h.oldest_unshipped_ms.store(1_000, Relaxed);
        let mut out = SampleSet::new(UnixMillis::from_millis(11_000));
        h.push_samples(&mut out, None);
        let get = |name: &str, label: Option<(&str, &str)>| {
            out.samples()
                .iter()
                .find(|s| {
                    s.name.as_str() == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v))
                })
                .map(|s| s.value.clone())
        };
        assert_eq!(
            get(
                "sentra_agent_batches_shipped_total",
                Some(("status", "accepted"))
            ),
            Some(Value::Counter(3))
        );
        assert_eq!(
            get("sentra_agent_unexpected_duplicates_total", None),
            Some(Value::Counter(4))
        );
        assert_eq!(
            get(
                "sentra_agent_batches_rejected_total",
                Some(("reason", "invalid_batch"))
            ),
            Some(Value::Counter(2))
        );
        assert_eq!(
            get("sentra_agent_ship_lag_seconds", None),
            Some(Value::Gauge(10.0))
        );
        assert_eq!(
            get(
                "sentra_agent_collect_errors_total",
                Some(("collector", "host"))
            ),
            Some(Value::Counter(2))
        );
        assert_eq!(get("sentra_agent_wireguard_up", None), None, "unknown yet");
        h.set_wireguard_up(false);
        let mut out = SampleSet::new(UnixMillis::from_millis(11_000));
        h.push_samples(&mut out, None);
        assert!(out.samples().iter().any(
            |s| s.name.as_str() == "sentra_agent_wireguard_up" && s.value == Value::Gauge(0.0)
        ));
        assert_eq!(
            out.invalid(),
            0,
            "every agent metric name and label is valid"
        );
    }
}
