//! The built-in collectors on the [`Collector`] seam (host metrics with the agent's own
//! health, WireGuard status), and one round of both for `--once`.

use std::sync::Arc;
use std::time::Duration;

use sentra_core::UnixMillis;

use crate::collector::{CollectContext, CollectError, Collection, Collector, Schedule};
use crate::health::Health;
use crate::host::HostCollector;
use crate::output::Snapshot;
use crate::samples::SampleSet;
use crate::store::Store;
use crate::wireguard::{WgCollection, WgCollector};

/// Reads host metrics on a blocking thread; with `health`, the agent's own `sentra_agent_*`
/// samples are added (and the host collector's rejected inputs counted first, so the
/// counter shipped includes this collection's).
async fn host_samples(
    host: &HostCollector,
    health: Option<&Health>,
    wal: Option<&sentra_wal::Stats>,
    now: UnixMillis,
) -> Result<Collection, CollectError> {
    let host = host.clone();
    let (mut set, report) = tokio::task::spawn_blocking(move || {
        let mut set = SampleSet::new(now);
        let report = host.collect(&mut set);
        (set, report)
    })
    .await
    .map_err(|e| CollectError::new(format!("host collector task failed: {e}")))?;
    if let Some(h) = health {
        h.collect_error(HOST, set.invalid());
        h.push_samples(&mut set, wal);
    }
    let mut c = Collection::from_samples(set);
    if health.is_some() {
        c.invalid = 0; // counted above
    }
    c.problems = report
        .unreadable
        .into_iter()
        .map(|(path, err)| format!("{path}: {err}"))
        .collect();
    Ok(c)
}

/// Name of the host collector.
pub(crate) const HOST: &str = "host";
/// Name of the WireGuard collector.
pub(crate) const WIREGUARD: &str = "wireguard";

/// Host metrics plus the agent's own health samples (which include every collector's), as
/// the runtime schedules them.
pub(crate) struct HostSource {
    pub(crate) host: HostCollector,
    pub(crate) every: Duration,
    pub(crate) health: Arc<Health>,
    pub(crate) store: Store,
}

impl Collector for HostSource {
    fn name(&self) -> &str {
        HOST
    }

    fn schedule(&self) -> Schedule {
        Schedule::every(self.every)
    }

    async fn collect(&mut self, cx: &CollectContext) -> Result<Collection, CollectError> {
        let stats = self.store.wal().stats();
        host_samples(&self.host, Some(&self.health), Some(&stats), cx.now()).await
    }
}

/// WireGuard status. The netlink client is shared with the peer applier. An unavailable
/// WireGuard is a failure of this collector (reason in its health; said once in the log by
/// [`WgCollector`]) that does not back off: it is re-read every interval, as before.
pub(crate) struct WireGuardSource {
    pub(crate) wg: Arc<tokio::sync::Mutex<WgCollector>>,
    pub(crate) every: Duration,
    pub(crate) health: Arc<Health>,
    /// The peer applier's latest reports (empty without declared interfaces).
    pub(crate) apply_reports: crate::apply::Reports,
}

impl Collector for WireGuardSource {
    fn name(&self) -> &str {
        WIREGUARD
    }

    fn schedule(&self) -> Schedule {
        Schedule::every(self.every).max_backoff(self.every)
    }

    async fn collect(&mut self, cx: &CollectContext) -> Result<Collection, CollectError> {
        let collected = self.wg.lock().await.collect().await;
        self.health
            .set_wireguard_up(matches!(collected, WgCollection::Devices { .. }));
        match collected {
            WgCollection::Devices { devices, skipped } => {
                let mut c = Collection::new().with_wg_devices(devices);
                let mut set = SampleSet::new(cx.now());
                for r in self
                    .apply_reports
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .values()
                {
                    r.samples(&mut set);
                }
                c.samples = set.into_samples();
                c.invalid = skipped.len();
                c.problems = skipped;
                Ok(c)
            }
            WgCollection::Unavailable(e) => Err(CollectError::new(format!(
                "WireGuard unavailable ({}): {}",
                e.kind(),
                e.reason()
            ))
            .already_reported()),
        }
    }
}

/// Runs every collector once (WireGuard and host) and returns the combined snapshot.
pub async fn collect_once(host: &HostCollector, wg: &mut WgCollector) -> Snapshot {
    let created = UnixMillis::now();
    let (samples, mut problems) = match host_samples(host, None, None, created).await {
        Ok(c) => (c.samples, c.problems),
        Err(e) => (Vec::new(), vec![e.reason().to_owned()]),
    };
    let (wg_devices, wg_unavailable) = match wg.collect().await {
        WgCollection::Devices { devices, skipped } => {
            problems.extend(skipped);
            (devices, None)
        }
        WgCollection::Unavailable(e) => (Vec::new(), Some(e)),
    };
    Snapshot {
        created,
        samples,
        wg_devices,
        wg_unavailable,
        problems,
    }
}
