//! The engine's state in a shared store (`StateStore`, `EngineConfig::restore`) instead of
//! a file: saved on shutdown, a second engine started from those bytes (another server
//! taking over) has the firing and pending alerts and does not notify again.
#![allow(missing_docs)]

mod common;

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{Receiver, feed, wait_for};
use sentra_alerts::{
    Error,
    engine::{Engine, EngineConfig, StateStore},
    notify::{Notifier, Webhook, WebhookConfig},
    parse_rules,
    route::{Route, RouterConfig},
};
use tokio::sync::mpsc;

/// The last saved state, in memory (a database row in a server).
#[derive(Debug, Default)]
struct Memory(Mutex<Option<Vec<u8>>>);

impl StateStore for Memory {
    fn save(
        &self,
        state: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        *self.0.lock().unwrap() = Some(state);
        Box::pin(async { Ok(()) })
    }
}

const RULES: &str = "[[rule]]\nname = \"WgHandshakeStale\"\nkind = \"wg_handshake_stale\"\n\
    max_age = \"3m\"\n\n\
    [[rule]]\nname = \"StaleForAnHour\"\nkind = \"wg_handshake_stale\"\nmax_age = \"3m\"\n\
    for = \"1h\"\n";

fn config(store: &Arc<Memory>, restore: Option<Vec<u8>>) -> EngineConfig {
    let (rules, _) = parse_rules(RULES, None).unwrap();
    let mut route = Route::new("ops");
    route.group_wait = Duration::ZERO;
    route.group_interval = Duration::from_millis(200);
    route.repeat_interval = Duration::from_secs(3600);
    let mut c = EngineConfig::new(rules);
    c.routing = RouterConfig::new(vec![route]);
    c.tick = Duration::from_millis(50);
    c.save_every = Duration::from_secs(3600);
    c.shutdown_grace = Duration::from_secs(2);
    c.state_store = Some(Arc::clone(store) as Arc<dyn StateStore>);
    c.restore = restore;
    c
}

fn hook(rx: &Receiver) -> Vec<Arc<dyn Notifier>> {
    let mut c = WebhookConfig::new("ops", rx.url());
    c.backoff = Duration::from_millis(20);
    vec![Arc::new(Webhook::new(c).unwrap())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_engine_from_the_stored_state_neither_renotifies_nor_loses_alerts() {
    let rx = Receiver::start(&[]).await;
    let store = Arc::new(Memory::default());

    let (tx, feed_rx) = mpsc::channel(64);
    let engine = Engine::start(config(&store, None), hook(&rx), feed_rx).unwrap();
    feed(&tx, 1..=5, 200).await;
    wait_for("the firing notification", || rx.count() == 1).await;
    assert_eq!(engine.alerts().len(), 2, "one firing, one pending");
    engine.shutdown().await.unwrap();
    assert_eq!(engine.stats().saves, 1);
    let saved = store.0.lock().unwrap().clone().expect("saved on shutdown");

    // another engine from the stored bytes: same alerts, no second firing
    let (tx, feed_rx) = mpsc::channel(64);
    let engine = Engine::start(config(&store, Some(saved)), hook(&rx), feed_rx).unwrap();
    assert_eq!(engine.alerts().len(), 2, "restored at start");
    feed(&tx, 6..=10, 200).await;
    let ticks = engine.stats().ticks;
    wait_for("more ticks", || engine.stats().ticks >= ticks + 6).await;
    assert_eq!(rx.count(), 1, "no duplicate after the takeover");
    feed(&tx, 11..=15, 10).await;
    wait_for("the resolved notification", || rx.count() == 2).await;
    engine.shutdown().await.unwrap();

    // bytes that do not decode: refused, named
    let (_tx, feed_rx) = mpsc::channel(1);
    let err = Engine::start(config(&store, Some(b"{".to_vec())), hook(&rx), feed_rx)
        .expect_err("a broken state is refused");
    assert!(matches!(err, Error::State(_)), "{err}");
    assert!(err.to_string().contains("restored alert state"), "{err}");
}
