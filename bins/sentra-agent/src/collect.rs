//! One round of every collector, as used by `--once` and by the runtime's schedules.

use sentra_core::UnixMillis;

use crate::health::Health;
use crate::host::HostCollector;
use crate::output::Snapshot;
use crate::samples::SampleSet;
use crate::wireguard::{WgCollection, WgCollector};

/// Reads host metrics on a blocking thread. Returns the samples and problems.
pub(crate) async fn host_samples(
    host: &HostCollector,
    health: Option<&Health>,
    wal: Option<&sentra_wal::Stats>,
    now: UnixMillis,
) -> (Vec<sentra_core::Sample>, Vec<String>) {
    let host = host.clone();
    let res = tokio::task::spawn_blocking(move || {
        let mut set = SampleSet::new(now);
        let report = host.collect(&mut set);
        (set, report)
    })
    .await;
    let (mut set, report) = match res {
        Ok(v) => v,
        Err(e) => {
            return (Vec::new(), vec![format!("host collector task failed: {e}")]);
        }
    };
    if let Some(h) = health {
        h.collect_error("host", set.invalid());
        h.push_samples(&mut set, wal);
    }
    let problems = report
        .unreadable
        .into_iter()
        .map(|(path, err)| format!("{path}: {err}"))
        .collect();
    (set.into_samples(), problems)
}

/// Runs every collector once (WireGuard and host) and returns the combined snapshot.
pub async fn collect_once(host: &HostCollector, wg: &mut WgCollector) -> Snapshot {
    let created = UnixMillis::now();
    let (samples, mut problems) = host_samples(host, None, None, created).await;
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
