//! Notifications per second through the router and the dispatcher to a local webhook
//! receiver, against a same-run baseline: a bare reqwest POST loop sending the same bodies
//! (same signing) to the same receiver.
//!
//! Both sides send one request at a time to one receiver (the dispatcher has one worker per
//! receiver), signed with HMAC-SHA256, to an axum receiver on 127.0.0.1 that counts and
//! answers 200. The dispatcher side pushes `N` firing transitions (one group each:
//! `group_by = ["..."]`, `group_wait = 0`) and is timed until the receiver has counted `N`
//! requests. Run: `cargo bench -p sentra-alerts --bench notify`.
#![allow(missing_docs)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sentra_alerts::{
    Status, Transition,
    dispatch::{Dispatcher, DispatcherConfig},
    notify::{Notifier, Secret, Webhook, WebhookConfig, signature},
    route::{Route, Router, RouterConfig},
};
use sentra_core::UnixMillis;

const N: usize = 2_000;
const ROUNDS: usize = 5;

fn transitions(round: usize) -> Vec<Transition> {
    let now = UnixMillis::now();
    (0..N)
        .map(|i| {
            let mut t = Transition::new(
                "WgHandshakeStale",
                Status::Firing,
                vec![
                    ("agent".into(), format!("gw-{}", i % 50)),
                    ("interface".into(), "wg0".into()),
                    ("peer".into(), format!("peer-{round}-{i}")),
                ],
                now,
                now,
            );
            t.severity = "critical".into();
            t.summary = format!("peer peer-{i} on gw-{}: no handshake for 200 s", i % 50);
            t
        })
        .collect()
}

fn route() -> Route {
    let mut r = Route::new("bench");
    r.group_by_all = true;
    r.group_wait = Duration::ZERO;
    r
}

fn config(url: &str) -> WebhookConfig {
    let mut c = WebhookConfig::new("bench", url);
    c.secret = Some(Secret::new("bench-secret"));
    c
}

/// Requests received; wakes the waiter when `target` is reached (no polling: a polling
/// waiter would compete with the measured tasks for the two worker threads).
#[derive(Default)]
struct Counter {
    count: AtomicU64,
    target: AtomicU64,
    done: tokio::sync::Notify,
}

impl Counter {
    fn hit(&self) {
        let c = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        if c == self.target.load(Ordering::SeqCst) {
            self.done.notify_one();
        }
    }
}

impl Counter {
    /// Arms the target; call before the first request of a round. Returns the target.
    fn arm(&self) -> u64 {
        let target = self.count.load(Ordering::SeqCst) + N as u64;
        self.target.store(target, Ordering::SeqCst);
        target
    }

    /// Waits for the armed target (exactly one notification per armed round).
    async fn wait(&self) {
        self.done.notified().await;
    }
}

async fn baseline(url: &str, count: &Counter, round: usize) -> Duration {
    // the same bodies the dispatcher sends
    let hook = Webhook::new(config(url)).unwrap();
    let mut router = Router::new(RouterConfig::new(vec![route()])).unwrap();
    let ts = transitions(round);
    for t in &ts {
        router.push(t);
    }
    let bodies: Vec<Vec<u8>> = router
        .tick(UnixMillis::now())
        .iter()
        .map(|n| hook.payload(n))
        .collect();
    assert_eq!(bodies.len(), N);
    let client = reqwest::Client::new();
    let secret = Secret::new("bench-secret");
    count.arm();
    let started = Instant::now();
    for body in bodies {
        let t = UnixMillis::now().as_millis() / 1000;
        let resp = client
            .post(url)
            .header("content-type", "application/json")
            .header("Sentra-Signature", signature(&secret, t, &body))
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
        resp.bytes().await.unwrap();
    }
    count.wait().await;
    started.elapsed()
}

async fn webhook_only(url: &str, count: &Counter, round: usize) -> Duration {
    // the webhook notifier alone (payload, signature, POST), no router or dispatcher
    let hook = Webhook::new(config(url)).unwrap();
    let mut router = Router::new(RouterConfig::new(vec![route()])).unwrap();
    for t in &transitions(round) {
        router.push(t);
    }
    let ns = router.tick(UnixMillis::now());
    count.arm();
    let started = Instant::now();
    for n in &ns {
        hook.notify(n).await.unwrap();
    }
    count.wait().await;
    started.elapsed()
}

async fn dispatched(url: &str, count: &Counter, round: usize) -> Duration {
    let hook: Arc<dyn Notifier> = Arc::new(Webhook::new(config(url)).unwrap());
    let router = Router::new(RouterConfig::new(vec![route()])).unwrap();
    let mut dc = DispatcherConfig::default();
    dc.queue = N;
    dc.receiver_queue = N;
    let d = Dispatcher::spawn(router, vec![hook], dc).unwrap();
    let ts = transitions(round);
    count.arm();
    let started = Instant::now();
    for chunk in ts.chunks(100) {
        assert!(d.push(chunk.to_vec()));
    }
    count.wait().await;
    let elapsed = started.elapsed();
    // the worker counts a delivery after reading the answer: let the last one land
    while d.stats().delivered < N as u64 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let stats = d.stats();
    assert_eq!(stats.delivered, N as u64);
    assert_eq!(stats.notifications_dropped + stats.transitions_dropped, 0);
    d.shutdown(Duration::from_secs(1)).await.unwrap();
    elapsed
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let count = Arc::new(Counter::default());
        let c = Arc::clone(&count);
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: axum::body::Bytes| {
                let c = Arc::clone(&c);
                async move {
                    assert!(!body.is_empty());
                    c.hit();
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let mut base = Vec::new();
        let mut disp = Vec::new();
        let mut hook = Vec::new();
        for round in 0..ROUNDS {
            // both on a runtime worker (as the dispatcher's tasks are), not on block_on's
            let (u, c) = (url.clone(), Arc::clone(&count));
            base.push(
                tokio::spawn(async move { baseline(&u, &c, round).await })
                    .await
                    .unwrap(),
            );
            let (u, c) = (url.clone(), Arc::clone(&count));
            hook.push(
                tokio::spawn(async move { webhook_only(&u, &c, round).await })
                    .await
                    .unwrap(),
            );
            let (u, c) = (url.clone(), Arc::clone(&count));
            disp.push(
                tokio::spawn(async move { dispatched(&u, &c, round).await })
                    .await
                    .unwrap(),
            );
        }
        base.sort();
        disp.sort();
        hook.sort();
        let rate = |d: Duration| N as f64 / d.as_secs_f64();
        let (b, d, h) = (base[ROUNDS / 2], disp[ROUNDS / 2], hook[ROUNDS / 2]);
        println!(
            "notify/baseline_reqwest_post_loop   {N} requests  median {b:?}  {:.0} notifications/s",
            rate(b)
        );
        println!(
            "notify/webhook_notify_loop        {N} requests  median {h:?}  {:.0} notifications/s",
            rate(h)
        );
        println!(
            "notify/router_dispatcher_webhook    {N} requests  median {d:?}  {:.0} notifications/s",
            rate(d)
        );
        println!(
            "notify/ratio  dispatcher/baseline throughput {:.2}x (1.00 = no overhead)",
            rate(d) / rate(b)
        );
    });
}
