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
//! | `sentra_agent_collector_runs_total{collector}` | counter | runs of the collector (successful or not) |
//! | `sentra_agent_collector_failures_total{collector,kind}` | counter | failed runs, `kind` = `error` (it returned an error), `timeout` (abandoned after its timeout) or `panic` |
//! | `sentra_agent_collector_consecutive_failures{collector}` | gauge | failures since the last successful run (0 = healthy) |
//! | `sentra_agent_collector_last_success_timestamp_seconds{collector}` | gauge | Unix time of the last successful run (absent before the first) |
//! | `sentra_agent_collector_duration_seconds{collector}` | gauge | duration of the last run |
//! | `sentra_agent_collector_duration_seconds_total{collector}` | gauge | time spent in all runs (a fractional total: `rate()` of it over `rate()` of the runs is the mean duration) |
//! | `sentra_agent_collector_samples_total{collector}` | counter | samples the collector emitted |
//!
//! The reason of a collector's last failure is in [`HealthSnapshot::collectors`] and in the
//! log (warn level when a streak of failures starts), not in a label.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use std::time::Duration;

use sentra_core::UnixMillis;

use crate::samples::SampleSet;

/// How a collector run failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// The collector returned an error.
    Error,
    /// The run did not finish within the schedule's timeout and was abandoned.
    Timeout,
    /// The collector panicked.
    Panic,
}

impl FailureKind {
    /// The `kind` label value: `error`, `timeout` or `panic`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Timeout => "timeout",
            Self::Panic => "panic",
        }
    }

    const ALL: [Self; 3] = [Self::Error, Self::Timeout, Self::Panic];
}

/// One collector's health, as of [`Health::snapshot`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CollectorHealth {
    /// Runs started and finished (successful or not).
    pub runs: u64,
    /// Failed runs that returned an error.
    pub errors: u64,
    /// Runs abandoned after the timeout.
    pub timeouts: u64,
    /// Runs that panicked.
    pub panics: u64,
    /// Failures since the last successful run (0 = healthy).
    pub consecutive_failures: u32,
    /// Collection time (Unix ms) of the last successful run.
    pub last_ok_ms: Option<i64>,
    /// The last failure: its kind and reason.
    pub last_error: Option<(FailureKind, String)>,
    /// Collection time (Unix ms) of the last failed run.
    pub last_error_ms: Option<i64>,
    /// How long the last run took.
    pub last_duration: Duration,
    /// Time spent in all runs.
    pub total_duration: Duration,
    /// Samples emitted by successful runs.
    pub samples: u64,
    /// Why the collector is quarantined (a plugin its host no longer runs after repeated
    /// failures), if it is; cleared by a successful run.
    pub quarantined: Option<String>,
}

impl CollectorHealth {
    /// Failed runs of every kind.
    #[must_use]
    pub fn failures(&self) -> u64 {
        self.errors + self.timeouts + self.panics
    }

    fn failures_of(&self, kind: FailureKind) -> u64 {
        match kind {
            FailureKind::Error => self.errors,
            FailureKind::Timeout => self.timeouts,
            FailureKind::Panic => self.panics,
        }
    }
}

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
    pub(crate) collect_errors: Mutex<BTreeMap<String, u64>>,
    pub(crate) collectors: Mutex<BTreeMap<String, CollectorHealth>>,
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
    /// Every collector's health, by name.
    pub collectors: BTreeMap<String, CollectorHealth>,
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

    pub(crate) fn collect_error(&self, collector: &str, n: usize) {
        if n == 0 {
            return;
        }
        let mut m = self
            .collect_errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *m.entry(collector.to_owned()).or_default() += n as u64;
    }

    fn with_collector<R>(&self, name: &str, f: impl FnOnce(&mut CollectorHealth) -> R) -> R {
        let mut m = self
            .collectors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match m.get_mut(name) {
            Some(c) => f(c),
            None => f(m.entry(name.to_owned()).or_default()),
        }
    }

    /// Makes a collector known (its health shows before its first run ends).
    pub(crate) fn collector_registered(&self, name: &str) {
        self.with_collector(name, |_| ());
    }

    /// Whether the collector is quarantined now.
    pub(crate) fn is_quarantined(&self, name: &str) -> bool {
        self.with_collector(name, |c| c.quarantined.is_some())
    }

    /// Records a successful run started at `at`.
    pub(crate) fn collector_ok(&self, name: &str, at: UnixMillis, took: Duration, samples: usize) {
        self.with_collector(name, |c| {
            c.runs += 1;
            c.consecutive_failures = 0;
            c.quarantined = None;
            c.last_ok_ms = Some(at.as_millis());
            c.last_duration = took;
            c.total_duration = c.total_duration.saturating_add(took);
            c.samples += samples as u64;
        });
    }

    /// Records a failed run started at `at`; returns the consecutive failures now.
    pub(crate) fn collector_failed(
        &self,
        name: &str,
        at: UnixMillis,
        took: Duration,
        kind: FailureKind,
        reason: &str,
        quarantined: bool,
    ) -> u32 {
        self.with_collector(name, |c| {
            if quarantined {
                c.quarantined = Some(reason.to_owned());
            }
            c.runs += 1;
            match kind {
                FailureKind::Error => c.errors += 1,
                FailureKind::Timeout => c.timeouts += 1,
                FailureKind::Panic => c.panics += 1,
            }
            c.consecutive_failures = c.consecutive_failures.saturating_add(1);
            c.last_error = Some((kind, reason.to_owned()));
            c.last_error_ms = Some(at.as_millis());
            c.last_duration = took;
            c.total_duration = c.total_duration.saturating_add(took);
            c.consecutive_failures
        })
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
            collectors: self
                .collectors
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
        let errs: Vec<(String, u64)> = self
            .collect_errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        for (collector, n) in errs {
            out.counter(
                "sentra_agent_collect_errors_total",
                &[("collector", &collector)],
                n,
            );
        }
        let collectors = self
            .collectors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for (name, c) in &collectors {
            let l = [("collector", name.as_str())];
            out.counter("sentra_agent_collector_runs_total", &l, c.runs);
            for kind in FailureKind::ALL {
                out.counter(
                    "sentra_agent_collector_failures_total",
                    &[("collector", name.as_str()), ("kind", kind.as_str())],
                    c.failures_of(kind),
                );
            }
            out.gauge(
                "sentra_agent_collector_consecutive_failures",
                &l,
                f64::from(c.consecutive_failures),
            );
            if let Some(ms) = c.last_ok_ms {
                out.gauge(
                    "sentra_agent_collector_last_success_timestamp_seconds",
                    &l,
                    ms as f64 / 1000.0,
                );
            }
            out.gauge(
                "sentra_agent_collector_duration_seconds",
                &l,
                c.last_duration.as_secs_f64(),
            );
            out.gauge(
                "sentra_agent_collector_duration_seconds_total",
                &l,
                c.total_duration.as_secs_f64(),
            );
            out.counter("sentra_agent_collector_samples_total", &l, c.samples);
            out.gauge(
                "sentra_agent_collector_quarantined",
                &l,
                f64::from(u8::from(c.quarantined.is_some())),
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

    #[test]
    fn collector_health_counts_runs_failures_and_recovery() {
        let h = Health::default();
        h.collector_registered("demo");
        assert_eq!(h.snapshot().collectors["demo"], CollectorHealth::default());
        let t = |ms| UnixMillis::from_millis(ms);
        h.collector_ok("demo", t(1_000), Duration::from_millis(5), 3);
        assert_eq!(
            h.collector_failed(
                "demo",
                t(2_000),
                Duration::from_millis(7),
                FailureKind::Panic,
                "panicked: boom",
                false
            ),
            1
        );
        assert_eq!(
            h.collector_failed(
                "demo",
                t(3_000),
                Duration::from_secs(1),
                FailureKind::Timeout,
                "did not finish within 1s",
                false
            ),
            2
        );
        let c = &h.snapshot().collectors["demo"];
        assert_eq!((c.runs, c.panics, c.timeouts, c.errors), (3, 1, 1, 0));
        assert_eq!(c.failures(), 2);
        assert_eq!(c.consecutive_failures, 2);
        assert_eq!(c.last_ok_ms, Some(1_000));
        assert_eq!(c.last_error_ms, Some(3_000));
        assert_eq!(
            c.last_error,
            Some((FailureKind::Timeout, "did not finish within 1s".to_owned()))
        );
        assert_eq!(c.samples, 3);
        assert_eq!(c.total_duration, Duration::from_millis(1_012));

        let mut out = SampleSet::new(t(4_000));
        h.push_samples(&mut out, None);
        let get = |name: &str, kind: Option<&str>| {
            out.samples()
                .iter()
                .find(|s| {
                    s.name.as_str() == name
                        && s.labels.get("collector") == Some("demo")
                        && kind.is_none_or(|k| s.labels.get("kind") == Some(k))
                })
                .map(|s| s.value.clone())
        };
        assert_eq!(
            get("sentra_agent_collector_runs_total", None),
            Some(Value::Counter(3))
        );
        assert_eq!(
            get("sentra_agent_collector_failures_total", Some("panic")),
            Some(Value::Counter(1))
        );
        assert_eq!(
            get("sentra_agent_collector_failures_total", Some("error")),
            Some(Value::Counter(0))
        );
        assert_eq!(
            get("sentra_agent_collector_consecutive_failures", None),
            Some(Value::Gauge(2.0))
        );
        assert_eq!(
            get(
                "sentra_agent_collector_last_success_timestamp_seconds",
                None
            ),
            Some(Value::Gauge(1.0))
        );
        assert_eq!(
            get("sentra_agent_collector_duration_seconds", None),
            Some(Value::Gauge(1.0))
        );
        assert_eq!(
            get("sentra_agent_collector_duration_seconds_total", None),
            Some(Value::Gauge(1.012))
        );
        assert_eq!(
            get("sentra_agent_collector_samples_total", None),
            Some(Value::Counter(3))
        );
        assert_eq!(out.invalid(), 0);

        h.collector_ok("demo", t(5_000), Duration::ZERO, 0);
        let c = &h.snapshot().collectors["demo"];
        assert_eq!(c.consecutive_failures, 0, "a success ends the streak");
        assert!(c.last_error.is_some(), "the last error stays visible");
    }
}
