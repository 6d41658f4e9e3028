//! The engine as a server runs it: batches in through the feed, ticks on a timer,
//! notifications to a real local HTTP receiver, state saved to a file and restored by a new
//! engine (a restart): no duplicate firing notification, pending alerts kept.
#![allow(missing_docs)]

mod common;

use std::{sync::Arc, time::Duration};

use common::{Receiver, feed, statuses, wait_for};
use sentra_alerts::{
    Status,
    engine::{Engine, EngineConfig, Feed},
    notify::{Notifier, Webhook, WebhookConfig},
    parse_rules,
    route::{Route, RouterConfig},
};
use tokio::sync::mpsc;

const RULES: &str = "[[rule]]\nname = \"WgHandshakeStale\"\nkind = \"wg_handshake_stale\"\n\
    max_age = \"3m\"\nseverity = \"critical\"\n\n\
    [[rule]]\nname = \"StaleForAnHour\"\nkind = \"wg_handshake_stale\"\nmax_age = \"3m\"\n\
    for = \"1h\"\n";

fn config(state: &std::path::Path) -> EngineConfig {
    let (rules, _) = parse_rules(RULES, None).unwrap();
    let mut route = Route::new("ops");
    route.group_wait = Duration::ZERO;
    route.group_interval = Duration::from_millis(200);
    route.repeat_interval = Duration::from_secs(3600);
    let mut c = EngineConfig::new(rules);
    c.routing = RouterConfig::new(vec![route]);
    c.tick = Duration::from_millis(50);
    c.save_every = Duration::from_secs(3600);
    c.state_file = Some(state.to_owned());
    c.shutdown_grace = Duration::from_secs(2);
    c
}

fn hook(rx: &Receiver) -> Vec<Arc<dyn Notifier>> {
    let mut c = WebhookConfig::new("ops", rx.url());
    c.backoff = Duration::from_millis(20);
    vec![Arc::new(Webhook::new(c).unwrap())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_while_firing_neither_renotifies_nor_loses_pending_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("alerts-state.json");
    let rx = Receiver::start(&[]).await;

    // first run: the peer goes stale -> one firing notification, the 1 h rule pending
    let (tx, feed_rx) = mpsc::channel(64);
    let engine = Engine::start(config(&state), hook(&rx), feed_rx).unwrap();
    feed(&tx, 1..=5, 200).await;
    wait_for("the firing notification", || rx.count() == 1).await;
    let before = engine.alerts();
    assert_eq!(before.len(), 2, "{before:?}");
    let pending = before
        .iter()
        .find(|t| t.status == Status::Pending)
        .expect("the 1 h rule is pending")
        .clone();
    assert_eq!(engine.stats().firing, 1);
    assert_eq!(engine.stats().pending, 1);
    engine.shutdown().await.unwrap();
    assert!(state.exists());

    // second run from the saved state: still stale -> no second firing notification
    let (tx, feed_rx) = mpsc::channel(64);
    let engine = Engine::start(config(&state), hook(&rx), feed_rx).unwrap();
    let after = engine.alerts();
    assert_eq!(after.len(), 2, "restored at start: {after:?}");
    let still = after
        .iter()
        .find(|t| t.status == Status::Pending)
        .expect("pending survives the restart");
    assert_eq!(still.fingerprint, pending.fingerprint);
    assert_eq!(still.active_since, pending.active_since);
    feed(&tx, 6..=10, 200).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(statuses(&rx), ["firing"], "no duplicate after the restart");

    // handshakes again -> exactly one resolved notification
    feed(&tx, 11..=15, 10).await;
    wait_for("the resolved notification", || rx.count() == 2).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(statuses(&rx), ["firing", "resolved"]);
    assert!(engine.alerts().is_empty());
    assert_eq!(engine.stats().batches, 10);
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_state_file_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("alerts-state.json");
    std::fs::write(&state, b"{not json").unwrap();
    let (_tx, feed_rx) = mpsc::channel(1);
    let err = Engine::start(config(&state), hook(&Receiver::start(&[]).await), feed_rx)
        .unwrap_err()
        .to_string();
    assert!(err.contains("alerts-state.json"), "{err}");
    assert_eq!(
        std::fs::read(&state).unwrap(),
        b"{not json",
        "left as it was"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagged_feed_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, feed_rx) = mpsc::channel(4);
    let rx = Receiver::start(&[]).await;
    let engine = Engine::start(config(&dir.path().join("s.json")), hook(&rx), feed_rx).unwrap();
    tx.send(Feed::Lagged(7)).await.unwrap();
    wait_for("the lag count", || engine.stats().lagged == 7).await;
    engine.shutdown().await.unwrap();
}
