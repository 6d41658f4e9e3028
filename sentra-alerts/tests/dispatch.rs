//! The dispatcher end to end: router + webhook notifiers + real local HTTP receivers.
#![allow(missing_docs)]

mod common;

use std::{sync::Arc, time::Duration};

use common::{Receiver, peer_batch, statuses, wait_for};
use sentra_alerts::{
    Error, Matcher, Status, Transition,
    dispatch::{Dispatcher, DispatcherConfig},
    notify::{Notifier, Webhook, WebhookConfig},
    route::{Route, Router, RouterConfig, Silence},
};
use sentra_core::UnixMillis;

fn route(receiver: &str) -> Route {
    let mut r = Route::new(receiver);
    r.group_wait = Duration::ZERO;
    r.group_interval = Duration::from_millis(200);
    r.repeat_interval = Duration::from_secs(3600);
    r
}

fn hook(name: &str, rx: &Receiver) -> Arc<dyn Notifier> {
    let mut c = WebhookConfig::new(name, rx.url());
    c.timeout = Duration::from_secs(20);
    c.max_attempts = 3;
    c.backoff = Duration::from_millis(20);
    Arc::new(Webhook::new(c).unwrap())
}

fn transition(peer: &str, status: Status, since: UnixMillis) -> Transition {
    Transition::new(
        "WgHandshakeStale",
        status,
        vec![
            ("agent".into(), "gw-1".into()),
            ("peer".into(), peer.into()),
        ],
        since,
        UnixMillis::now(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_firing_and_one_resolved_notification() {
    let rx = Receiver::start(&[]).await;
    let router = Router::new(RouterConfig::new(vec![route("ops")])).unwrap();
    let d = Dispatcher::spawn(router, vec![hook("ops", &rx)], DispatcherConfig::default()).unwrap();
    let since = UnixMillis::now();
    assert!(d.push(vec![transition("a", Status::Pending, since)]));
    assert!(d.push(vec![transition("a", Status::Firing, since)]));
    wait_for("the firing notification", || rx.count() == 1).await;
    // the evaluator repeats itself (e.g. after a restart): no second firing notification
    assert!(d.push(vec![transition("a", Status::Firing, since)]));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(rx.count(), 1);
    assert!(d.push(vec![transition("a", Status::Resolved, since)]));
    wait_for("the resolved notification", || rx.count() == 2).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(statuses(&rx), ["firing", "resolved"]);
    let stats = d.stats();
    assert_eq!((stats.delivered, stats.failed), (2, 0));
    let state = d.shutdown(Duration::from_secs(1)).await.unwrap();
    assert_eq!(state.version, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_receiver_blocks_neither_evaluation_nor_other_receivers() {
    let slow = Receiver::start(&[(200, Duration::from_secs(60)); 4]).await;
    let fast = Receiver::start(&[]).await;
    let mut to_slow = route("slow");
    to_slow.group_by_all = true;
    to_slow.continue_ = true;
    let mut to_fast = route("fast");
    to_fast.group_by_all = true;
    let router = Router::new(RouterConfig::new(vec![to_slow, to_fast])).unwrap();
    let mut config = DispatcherConfig::default();
    config.receiver_queue = 8;
    let d = Dispatcher::spawn(
        router,
        vec![hook("slow", &slow), hook("fast", &fast)],
        config,
    )
    .unwrap();
    let since = UnixMillis::now();
    // rounds of 8 (a tick may hand a whole round to a receiver at once)
    for round in 0..5 {
        for i in 0..8 {
            let peer = format!("p{round}-{i}");
            assert!(d.push(vec![transition(&peer, Status::Firing, since)]));
        }
        wait_for("the round at the fast receiver", || {
            fast.count() == 8 * (round + 1)
        })
        .await;
    }
    // the stuck receiver holds one request in flight and 8 queued; the rest was dropped
    wait_for("the slow receiver's drops", || {
        d.stats().notifications_dropped == 40 - 9
    })
    .await;
    wait_for("the request in flight at the stuck receiver", || {
        slow.count() == 1
    })
    .await;
    let stats = d.stats();
    assert_eq!(stats.delivered, 40);
    let dead = d.dead_letters();
    assert_eq!(dead.len() as u64, stats.notifications_dropped);
    assert!(
        dead.iter()
            .all(|l| l.notification.receiver == "slow" && l.error.contains("queue full"))
    );
    // shutdown does not wait for the stuck receiver beyond the grace period
    d.shutdown(Duration::from_millis(200)).await.unwrap();
}

#[tokio::test]
async fn a_full_input_queue_drops_and_counts() {
    let rx = Receiver::start(&[]).await;
    let router = Router::new(RouterConfig::new(vec![route("ops")])).unwrap();
    let mut config = DispatcherConfig::default();
    config.queue = 1;
    let d = Dispatcher::spawn(router, vec![hook("ops", &rx)], config).unwrap();
    let since = UnixMillis::now();
    // current-thread runtime: the router task cannot run before we yield
    assert!(d.push(vec![transition("a", Status::Firing, since)]));
    assert!(!d.push(vec![transition("b", Status::Firing, since)]));
    assert!(!d.push(vec![transition("c", Status::Firing, since)]));
    assert_eq!(d.stats().transitions_dropped, 2);
    wait_for("the notification", || rx.count() == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_notifications_become_dead_letters_that_can_be_resent() {
    let rx = Receiver::start(&[(500, Duration::ZERO); 3]).await;
    let router = Router::new(RouterConfig::new(vec![route("ops")])).unwrap();
    let d = Dispatcher::spawn(router, vec![hook("ops", &rx)], DispatcherConfig::default()).unwrap();
    d.push(vec![transition("a", Status::Firing, UnixMillis::now())]);
    wait_for("the failure", || d.stats().failed == 1).await;
    let dead = d.dead_letters();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].error.contains("answered 500 after 3 attempt(s)"),
        "{}",
        dead[0].error
    );
    let delivery = d.resend(dead[0].id).await.unwrap();
    assert_eq!(delivery.status, 200);
    assert!(d.dead_letters().is_empty());
    assert_eq!(rx.count(), 4);
    assert!(matches!(
        d.resend(dead[0].id).await,
        Err(Error::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silences_through_the_dispatcher_and_the_test_action() {
    let rx = Receiver::start(&[]).await;
    let router = Router::new(RouterConfig::new(vec![route("ops")])).unwrap();
    let d = Dispatcher::spawn(router, vec![hook("ops", &rx)], DispatcherConfig::default()).unwrap();
    let m = Matcher::parse(r#"peer="a""#).unwrap();
    let id = d
        .add_silence(Silence::new(
            vec![m],
            UnixMillis::now(),
            Duration::from_secs(3600),
        ))
        .await
        .unwrap();
    let since = UnixMillis::now();
    d.push(vec![transition("a", Status::Firing, since)]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.count(), 0, "silenced");
    assert_eq!(d.router_stats().await.unwrap().alerts, 1);
    d.expire_silence(id).await.unwrap();
    wait_for("the unsilenced alert", || rx.count() == 1).await;

    let delivery = d.test("ops").await.unwrap();
    assert_eq!(delivery.status, 200);
    assert!(String::from_utf8_lossy(&rx.requests()[1].body).contains("SentraTest"));
    assert!(matches!(d.test("nobody").await, Err(Error::NotFound(_))));
}

#[tokio::test]
async fn every_route_needs_a_notifier() {
    let rx = Receiver::start(&[]).await;
    let router = Router::new(RouterConfig::new(vec![route("ops"), route("pager")])).unwrap();
    let err =
        Dispatcher::spawn(router, vec![hook("ops", &rx)], DispatcherConfig::default()).unwrap_err();
    assert!(
        err.to_string().contains("\"pager\", which has no notifier"),
        "{err}"
    );
}

/// The whole crate end to end: the real evaluator sees a peer stop handshaking and start
/// again; the router and dispatcher deliver exactly one firing and one resolved
/// notification to a real HTTP receiver, even though the evaluator ticks many times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluator_to_receiver_one_firing_one_resolved() {
    use sentra_alerts::{Config, Evaluator, parse_rules};
    let (rules, _) = parse_rules(
        "[[rule]]\nname = \"WgHandshakeStale\"\nkind = \"wg_handshake_stale\"\nmax_age = \"3m\"\n\
         severity = \"critical\"\nsummary = \"peer {{ $labels.peer }}: no handshake for {{ $value }} s\"\n",
        None,
    )
    .unwrap();
    let mut evaluator = Evaluator::new(rules, Config::default()).unwrap();
    let rx = Receiver::start(&[]).await;
    let router = Router::new(RouterConfig::new(vec![route("ops")])).unwrap();
    let d = Dispatcher::spawn(router, vec![hook("ops", &rx)], DispatcherConfig::default()).unwrap();

    // stale for several evaluation ticks
    for seq in 1..=5 {
        let now = UnixMillis::now();
        evaluator.observe(&peer_batch(seq, now, 200), now);
        d.push(evaluator.tick(now));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for("the firing notification", || rx.count() == 1).await;
    // handshakes again, for several ticks
    for seq in 6..=10 {
        let now = UnixMillis::now();
        evaluator.observe(&peer_batch(seq, now, 10), now);
        d.push(evaluator.tick(now));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for("the resolved notification", || rx.count() == 2).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(statuses(&rx), ["firing", "resolved"]);
    let first: serde_json::Value = serde_json::from_slice(&rx.requests()[0].body).unwrap();
    let alert = &first["alerts"][0];
    assert_eq!(alert["labels"]["alertname"], "WgHandshakeStale");
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(
        alert["labels"]["peer"],
        "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="
    );
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .unwrap()
            .starts_with("peer BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=: no handshake for 200"),
        "{alert}"
    );
    d.shutdown(Duration::from_secs(1)).await.unwrap();
}
