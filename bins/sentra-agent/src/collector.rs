//! The collector seam: everything the agent collects — host metrics, WireGuard status, a
//! custom native collector, later WASM plugins — is a [`Collector`] run by one scheduler.
//!
//! A collector has a [`name`](Collector::name) (its label in metrics and its key in
//! [`HealthSnapshot::collectors`](crate::health::HealthSnapshot::collectors)), a
//! [`Schedule`] (interval, jitter, timeout, failure backoff) and an async
//! [`collect`](Collector::collect) that returns a [`Collection`] (samples and/or WireGuard
//! devices) or a [`CollectError`]. Add one with
//! [`Agent::with_collector`](crate::Agent::with_collector); its collections go through the
//! same path as the built-in ones: one collection = one WAL record (fdatasync) = one signed
//! batch.
//!
//! # What the scheduler guarantees
//!
//! * **Isolation.** Each collector runs on its own task. A collector that returns an error,
//!   panics, or does not finish within [`Schedule::timeout`] is recorded as a failure of
//!   *that* collector (kind `error`, `panic` or `timeout`, with the reason) and never delays
//!   or stops another collector, the shipper or the WAL. After a panic the same value is
//!   called again at the next run (like a poisoned lock, its state is whatever the panic
//!   left).
//! * **One retry owner.** A failed run is not retried at once: the next run comes at the
//!   next interval, stretched by exponential backoff while failures are consecutive (up to
//!   [`Schedule::max_backoff`]). A collector must not loop on its own retries.
//! * **Health.** Per collector: runs, failures by kind, consecutive failures, last success,
//!   last error (reason and time), duration of the last run, samples emitted — in
//!   [`Health::snapshot`](crate::health::Health::snapshot) and as `sentra_agent_collector_*`
//!   samples shipped with every host collection (see [`health`](crate::health)). The first
//!   failure of a streak is logged at warn level with its reason, the recovery at info
//!   level; failures in between at debug level.
//! * **Runs do not overlap.** The next run of a collector starts after the previous one
//!   ended (or timed out); a late run is not caught up (no burst after a stall).
//!
//! A collector must not block its thread: do blocking reads inside
//! [`tokio::task::spawn_blocking`] (the timeout abandons a stuck blocking read, which goes
//! on occupying one blocking thread until it returns).
//!
//! # Example
//!
//! `examples/custom_collector.rs` is a complete program; the collector itself:
//!
//! ```
//! use sentra_agent::collector::{CollectContext, CollectError, Collection, Collector, Schedule};
//! use std::time::Duration;
//!
//! struct Uptime;
//!
//! impl Collector for Uptime {
//!     fn name(&self) -> &str {
//!         "uptime"
//!     }
//!     fn schedule(&self) -> Schedule {
//!         Schedule::every(Duration::from_secs(30))
//!     }
//!     async fn collect(&mut self, cx: &CollectContext) -> Result<Collection, CollectError> {
//!         let text = tokio::fs::read_to_string("/proc/uptime")
//!             .await
//!             .map_err(|e| CollectError::new(format!("/proc/uptime: {e}")))?;
//!         let secs: f64 = text
//!             .split_whitespace()
//!             .next()
//!             .and_then(|s| s.parse().ok())
//!             .ok_or_else(|| CollectError::new("/proc/uptime: no number"))?;
//!         let mut out = cx.sample_set();
//!         out.gauge("node_uptime_seconds", &[], secs);
//!         Ok(Collection::from_samples(out))
//!     }
//! }
//! ```

use std::future::Future;
use std::time::Duration;

use sentra_core::{Sample, UnixMillis, WgDevice};

use crate::samples::SampleSet;

/// Something the agent collects on a schedule. See the [module docs](self).
///
/// Implement `collect` as an `async fn`; the future must be `Send` (it runs on the
/// multi-threaded runtime).
pub trait Collector: Send + 'static {
    /// Stable name: the `collector` label of the agent's metrics and the key of its health.
    /// Names are unique within an agent.
    fn name(&self) -> &str;

    /// When to run. Read once, when the agent starts.
    fn schedule(&self) -> Schedule;

    /// One collection. An `Ok` collection is stored (one WAL record), even when empty — a
    /// WireGuard collector that finds no device reports exactly that. An `Err` stores
    /// nothing and counts as a failure.
    fn collect(
        &mut self,
        cx: &CollectContext,
    ) -> impl Future<Output = Result<Collection, CollectError>> + Send;
}

/// When a collector runs.
///
/// Runs start `interval` apart (the first at once, or after a random delay below `jitter`);
/// after `n ≥ 2` consecutive failures the gap is `interval × 2ⁿ⁻¹`, at most `max_backoff`;
/// every gap gets a random extra below `jitter`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Schedule {
    /// Time between the starts of two runs.
    pub interval: Duration,
    /// Random extra delay, uniform in `[0, jitter)`, added to the first and every later
    /// start (spreads a fleet's collections); zero by default.
    pub jitter: Duration,
    /// A run that has not finished after this long is abandoned and counted as a timeout.
    pub timeout: Duration,
    /// The longest gap failure backoff may stretch the interval to (`interval` = no
    /// backoff).
    pub max_backoff: Duration,
}

impl Schedule {
    /// Every `interval`, no jitter; timeout `max(interval, 10 s)` (a slow machine does not
    /// turn a tight interval into a stream of timeouts); backoff up to `interval × 8`, capped
    /// at 5 minutes (but never below `interval`).
    #[must_use]
    pub fn every(interval: Duration) -> Self {
        Self {
            interval,
            jitter: Duration::ZERO,
            timeout: interval.max(Duration::from_secs(10)),
            max_backoff: interval
                .saturating_mul(8)
                .min(Duration::from_secs(300))
                .max(interval),
        }
    }

    /// Sets [`jitter`](Self::jitter).
    #[must_use]
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets [`timeout`](Self::timeout).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`max_backoff`](Self::max_backoff).
    #[must_use]
    pub fn max_backoff(mut self, max_backoff: Duration) -> Self {
        self.max_backoff = max_backoff;
        self
    }

    /// The gap before the next run after `consecutive_failures` failures in a row (0 after
    /// a success), without jitter.
    #[must_use]
    pub fn gap(&self, consecutive_failures: u32) -> Duration {
        if consecutive_failures <= 1 {
            return self.interval;
        }
        let factor = 1u32 << (consecutive_failures - 1).min(20);
        self.interval
            .saturating_mul(factor)
            .min(self.max_backoff)
            .max(self.interval)
    }

    pub(crate) fn validate(&self, name: &str) -> crate::Result<()> {
        if self.interval.is_zero() {
            return Err(crate::Error::Config(format!(
                "collector {name:?}: the interval must be greater than zero"
            )));
        }
        if self.timeout.is_zero() {
            return Err(crate::Error::Config(format!(
                "collector {name:?}: the timeout must be greater than zero"
            )));
        }
        Ok(())
    }
}

/// What a run of a collector is given.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CollectContext {
    now: UnixMillis,
    consecutive_failures: u32,
}

impl CollectContext {
    /// A context for a run starting at `now` (for driving a collector by hand: tests,
    /// `--once`-style tools).
    #[must_use]
    pub fn new(now: UnixMillis) -> Self {
        Self {
            now,
            consecutive_failures: 0,
        }
    }

    pub(crate) fn with_failures(mut self, n: u32) -> Self {
        self.consecutive_failures = n;
        self
    }

    /// The collection time: the timestamp the batch (and, by convention, its samples) get.
    #[must_use]
    pub fn now(&self) -> UnixMillis {
        self.now
    }

    /// How many runs before this one failed in a row.
    #[must_use]
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// An empty [`SampleSet`] stamped with [`now`](Self::now).
    #[must_use]
    pub fn sample_set(&self) -> SampleSet {
        SampleSet::new(self.now)
    }
}

/// What one run produced.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Collection {
    /// Samples.
    pub samples: Vec<Sample>,
    /// WireGuard devices.
    pub wg_devices: Vec<WgDevice>,
    /// Sources that could not be read (logged at debug level, not shipped).
    pub problems: Vec<String>,
    /// Inputs rejected while collecting (malformed lines, invalid names), counted in
    /// `sentra_agent_collect_errors_total{collector}`.
    pub invalid: usize,
}

impl Collection {
    /// An empty collection.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The samples of `set`, and its count of rejected inputs.
    #[must_use]
    pub fn from_samples(set: SampleSet) -> Self {
        Self {
            invalid: set.invalid(),
            samples: set.into_samples(),
            ..Self::default()
        }
    }

    /// Adds WireGuard devices.
    #[must_use]
    pub fn with_wg_devices(mut self, devices: Vec<WgDevice>) -> Self {
        self.wg_devices.extend(devices);
        self
    }

    /// Adds a problem (a source that could not be read).
    #[must_use]
    pub fn with_problem(mut self, problem: impl Into<String>) -> Self {
        self.problems.push(problem.into());
        self
    }
}

/// Why a run failed. The reason is shown to operators (health, logs): it must not contain
/// secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CollectError {
    reason: String,
    reported: bool,
    quarantined: bool,
}

impl CollectError {
    /// A failure with this reason.
    #[must_use]
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            reported: false,
            quarantined: false,
        }
    }

    /// Marks the collector as quarantined (a plugin its host stopped running after
    /// repeated failures): the health shows
    /// [`CollectorHealth::quarantined`](crate::health::CollectorHealth::quarantined) with
    /// this reason until a run succeeds again.
    #[must_use]
    pub fn quarantined(mut self) -> Self {
        self.quarantined = true;
        self
    }

    /// Whether the failure says the collector is quarantined.
    #[must_use]
    pub fn is_quarantined(&self) -> bool {
        self.quarantined
    }

    /// Marks the failure as already logged by the collector (a condition it reports once
    /// per change, such as "WireGuard is not available"): the scheduler still counts it
    /// but logs it at debug level only.
    #[must_use]
    pub fn already_reported(mut self) -> Self {
        self.reported = true;
        self
    }

    /// The reason.
    #[must_use]
    pub fn reason(&self) -> &str {
        &self.reason
    }

    pub(crate) fn is_reported(&self) -> bool {
        self.reported
    }
}

impl std::fmt::Display for CollectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for CollectError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_second_failure_and_is_capped() {
        let s = Schedule::every(Duration::from_secs(10));
        assert_eq!(s.timeout, Duration::from_secs(10));
        assert_eq!(s.max_backoff, Duration::from_secs(80));
        let gaps: Vec<u64> = (0..7).map(|n| s.gap(n).as_secs()).collect();
        assert_eq!(gaps, [10, 10, 20, 40, 80, 80, 80]);
        assert_eq!(s.gap(u32::MAX), Duration::from_secs(80), "no overflow");
        let flat = s.max_backoff(s.interval);
        assert!((0..10).all(|n| flat.gap(n) == flat.interval));
        let tight = Schedule::every(Duration::from_millis(100));
        assert_eq!(tight.timeout, Duration::from_secs(10));
        assert_eq!(tight.max_backoff, Duration::from_millis(800));
        let slow = Schedule::every(Duration::from_secs(3600));
        assert_eq!(
            slow.max_backoff,
            Duration::from_secs(3600),
            "never below interval"
        );
    }

    #[test]
    fn zero_interval_or_timeout_is_refused_with_the_name() {
        let e = Schedule::every(Duration::ZERO)
            .validate("x")
            .expect_err("zero");
        assert!(e.to_string().contains("\"x\""), "{e}");
        assert!(
            Schedule::every(Duration::from_secs(1))
                .timeout(Duration::ZERO)
                .validate("y")
                .is_err()
        );
    }
}
