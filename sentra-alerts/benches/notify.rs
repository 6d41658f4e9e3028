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
const ROUNDS: usize = 3;

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

async fn wait_count(count: &AtomicU64, target: u64) {
    while count.load(Ordering::Relaxed) < target {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

async fn baseline(url: &str, count: &AtomicU64, round: usize) -> Duration {
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
    let start_count = count.load(Ordering::Relaxed);
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
    wait_count(count, start_count + N as u64).await;
    started.elapsed()
}

async fn dispatched(url: &str, count: &AtomicU64, round: usize) -> Duration {
    let hook: Arc<dyn Notifier> = Arc::new(Webhook::new(config(url)).unwrap());
    let router = Router::new(RouterConfig::new(vec![route()])).unwrap();
    let mut dc = DispatcherConfig::default();
    dc.queue = N;
    dc.receiver_queue = N;
    let d = Dispatcher::spawn(router, vec![hook], dc).unwrap();
    let ts = transitions(round);
    let start_count = count.load(Ordering::Relaxed);
    let started = Instant::now();
    for chunk in ts.chunks(100) {
        assert!(d.push(chunk.to_vec()));
    }
    wait_count(count, start_count + N as u64).await;
    let elapsed = started.elapsed();
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
        let count = Arc::new(AtomicU64::new(0));
        let c = Arc::clone(&count);
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: axum::body::Bytes| {
                let c = Arc::clone(&c);
                async move {
                    assert!(!body.is_empty());
                    c.fetch_add(1, Ordering::Relaxed);
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let mut base = Vec::new();
        let mut disp = Vec::new();
        for round in 0..ROUNDS {
            // both on a runtime worker (as the dispatcher's tasks are), not on block_on's
            let (u, c) = (url.clone(), Arc::clone(&count));
            base.push(
                tokio::spawn(async move { baseline(&u, &c, round).await })
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
        let rate = |d: Duration| N as f64 / d.as_secs_f64();
        let (b, d) = (base[ROUNDS / 2], disp[ROUNDS / 2]);
        println!(
            "notify/baseline_reqwest_post_loop   {N} requests  median {b:?}  {:.0} notifications/s",
            rate(b)
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
