//! The periodic one-line status a person watching the terminal sees.

use std::{sync::Arc, time::Duration};

use sentra_ingest::{Ingest, Presence, StorageHealth};
use tokio::sync::watch;

/// Prints a status line to stderr every `every` until `stop`.
pub(crate) async fn run(ingest: Arc<Ingest>, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {},
            _ = stop.wait_for(|s| *s) => return,
        }
        eprintln!("{}", line(&ingest));
    }
}

fn line(ingest: &Ingest) -> String {
    let snap = ingest.status().snapshot();
    let stats = ingest.stats();
    let online = snap
        .agents
        .iter()
        .filter(|a| a.presence == Presence::Online)
        .count();
    let interfaces: usize = snap.agents.iter().map(|a| a.interfaces.len()).sum();
    let (peers, peers_online) = snap
        .agents
        .iter()
        .flat_map(|a| &a.interfaces)
        .flat_map(|i| &i.peers)
        .fold((0, 0), |(n, on), p| (n + 1, on + usize::from(p.online)));
    let last = snap
        .agents
        .iter()
        .map(|a| a.last_seen_ms)
        .max()
        .map_or_else(
            || "never".to_owned(),
            |ms| format!("{:.0}s ago", (snap.at_ms - ms).max(0) as f64 / 1000.0),
        );
    // While commits fail nothing is acknowledged: say so on every line of the episode.
    let storage = match ingest.health().storage {
        StorageHealth::Failing {
            error,
            since,
            failed_commits,
        } => format!(
            " | STORAGE FAILING for {:.0}s ({failed_commits} failed commits): {error}",
            (snap.at_ms - since.as_millis()).max(0) as f64 / 1000.0
        ),
        _ => String::new(),
    };
    format!(
        "status: agents {}/{} online | wireguard interfaces {interfaces}, peers {peers_online}/{peers} online | stored {} batches, {} samples ({} duplicates, {} rejected) | last batch {last}{storage}",
        online,
        snap.agents.len(),
        stats.accepted,
        stats.samples,
        stats.duplicates,
        stats.rejected,
    )
}
