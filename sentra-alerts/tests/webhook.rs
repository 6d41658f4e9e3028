//! The webhook notifier against a real local HTTP receiver: payload shape, HMAC signature
//! (checked with an independent HMAC implementation), retries, timeouts, rejections.
#![allow(missing_docs)]

mod common;

use std::time::{Duration, Instant};

use common::{Receiver, dead_url};
use hmac::{Hmac, Mac};
use sentra_alerts::{
    Error, Status, Transition,
    notify::{Notifier, Secret, Webhook, WebhookConfig},
    route::{Notification, Route, Router, RouterConfig},
};
use sentra_core::UnixMillis;
use sha2::Sha256;

const T0: i64 = 1_800_000_000_000;

fn notification() -> Notification {
    let mut route = Route::new("ops");
    route.group_wait = Duration::ZERO;
    route.group_by = vec!["alertname".into(), "agent".into()];
    let mut r = Router::new(RouterConfig::new(vec![route])).unwrap();
    for (peer, status) in [("a", Status::Firing), ("b", Status::Firing)] {
        let mut t = Transition::new(
            "WgHandshakeStale",
            status,
            vec![
                ("agent".into(), "gw-1".into()),
                ("peer".into(), peer.into()),
            ],
            UnixMillis::from_millis(T0),
            UnixMillis::from_millis(T0),
        );
        t.severity = "critical".into();
        t.summary = format!("peer {peer} stale");
        t.description = "no handshake".into();
        r.push(&t);
    }
    let mut n = r.tick(UnixMillis::from_millis(T0));
    assert_eq!(n.len(), 1);
    n.remove(0)
}

fn config(url: String) -> WebhookConfig {
    let mut c = WebhookConfig::new("ops", url);
    c.timeout = Duration::from_secs(5);
    c.backoff = Duration::from_millis(50);
    c.max_backoff = Duration::from_millis(200);
    c.external_url = "https://sentra.example.net".into();
    c
}

#[tokio::test]
async fn delivers_alertmanager_payload_with_a_valid_signature() {
    let rx = Receiver::start(&[]).await;
    let mut c = config(rx.url());
    c.secret = Some(Secret::new("whsec-test"));
    let hook = Webhook::new(c).unwrap();
    let d = hook.notify(&notification()).await.unwrap();
    assert_eq!((d.attempts, d.status), (1, 200));
    assert_eq!(d.body, "answer 200");

    let reqs = rx.requests();
    assert_eq!(reqs.len(), 1);
    let req = &reqs[0];
    assert_eq!(req.headers["content-type"], "application/json");

    // Stripe-style: t=<secs>,v1=<hex hmac(secret, "t.body")>
    let sig = req.headers["sentra-signature"].to_str().unwrap();
    let (t, v1) = sig
        .strip_prefix("t=")
        .and_then(|s| s.split_once(",v1="))
        .expect("t=..,v1=.. header");
    let t: i64 = t.parse().unwrap();
    assert!(
        (UnixMillis::now().as_millis() / 1000 - t).abs() < 60,
        "fresh timestamp"
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec-test").unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&req.body);
    mac.verify_slice(&hex::decode(v1).unwrap())
        .expect("signature verifies with an independent HMAC-SHA256");
    // a different body does not verify
    let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec-test").unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(b"{}");
    assert!(mac.verify_slice(&hex::decode(v1).unwrap()).is_err());

    let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(v["version"], "4");
    assert_eq!(v["status"], "firing");
    assert_eq!(v["receiver"], "ops");
    assert_eq!(v["truncatedAlerts"], 0);
    assert_eq!(v["externalURL"], "https://sentra.example.net");
    assert_eq!(
        v["groupLabels"],
        serde_json::json!({"agent": "gw-1", "alertname": "WgHandshakeStale"})
    );
    assert_eq!(
        v["commonLabels"],
        serde_json::json!({"agent": "gw-1", "alertname": "WgHandshakeStale", "severity": "critical"})
    );
    assert_eq!(
        v["commonAnnotations"],
        serde_json::json!({"description": "no handshake"})
    );
    assert!(v["groupKey"].as_str().unwrap().starts_with("ops/0:{"));
    let alerts = v["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 2);
    let a = &alerts[0];
    assert_eq!(a["status"], "firing");
    assert_eq!(a["labels"]["peer"], "a");
    assert_eq!(a["annotations"]["summary"], "peer a stale");
    assert_eq!(a["startsAt"], "2027-01-15T08:00:00.000Z");
    assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(a["generatorURL"], "");
    assert_eq!(a["fingerprint"].as_str().unwrap().len(), 16);
}

#[tokio::test]
async fn no_secret_no_signature_and_secret_is_redacted() {
    let rx = Receiver::start(&[]).await;
    let hook = Webhook::new(config(rx.url())).unwrap();
    hook.notify(&notification()).await.unwrap();
    assert!(!rx.requests()[0].headers.contains_key("sentra-signature"));

    let mut c = config(rx.url());
    c.secret = Some(Secret::new("do-not-print-me"));
    let shown = format!("{c:?} {:?}", Webhook::new(c.clone()).unwrap());
    assert!(!shown.contains("do-not-print-me"), "{shown}");
    assert!(shown.contains("<redacted>"));
}

#[tokio::test]
async fn receiver_down_is_retried_then_reported() {
    let mut c = config(dead_url());
    c.max_attempts = 3;
    let hook = Webhook::new(c).unwrap();
    let started = Instant::now();
    let err = hook.notify(&notification()).await.unwrap_err();
    let elapsed = started.elapsed();
    let Error::Unreachable {
        receiver,
        attempts,
        message,
        endpoint,
    } = &err
    else {
        panic!("expected Unreachable, got {err}")
    };
    assert_eq!(receiver, "ops");
    assert_eq!(*attempts, 3);
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
    assert!(message.contains("connect"), "{message}");
    // backoff 50 ms then 100 ms
    assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
    let text = err.to_string();
    assert!(
        !text.contains("s3cr3t-path-token"),
        "URL path leaked: {text}"
    );
    assert!(text.contains("after 3 attempt(s)"), "{text}");
}

#[tokio::test]
async fn slow_receiver_times_out() {
    let rx = Receiver::start(&[(200, Duration::from_secs(3)), (200, Duration::from_secs(3))]).await;
    let mut c = config(rx.url());
    c.timeout = Duration::from_millis(300);
    c.max_attempts = 2;
    let hook = Webhook::new(c).unwrap();
    let started = Instant::now();
    let err = hook.notify(&notification()).await.unwrap_err();
    assert!(
        matches!(err, Error::Timeout { attempts: 2, timeout, .. } if timeout == Duration::from_millis(300)),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "did not wait for the receiver"
    );
    assert_eq!(rx.count(), 2);
    assert!(!err.to_string().contains("s3cr3t-path-token"));
}

#[tokio::test]
async fn server_errors_then_success_is_delivered_once() {
    let rx = Receiver::start(&[(503, Duration::ZERO), (500, Duration::ZERO)]).await;
    let hook = Webhook::new(config(rx.url())).unwrap();
    let d = hook.notify(&notification()).await.unwrap();
    assert_eq!((d.attempts, d.status), (3, 200));
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 3, "two failures, one success, nothing after");
    assert!(
        reqs.windows(2).all(|w| w[0].body == w[1].body),
        "same body each attempt"
    );
    assert!(
        reqs[2].at - reqs[1].at >= Duration::from_millis(100),
        "backoff doubled"
    );
}

#[tokio::test]
async fn rate_limited_is_retried_client_errors_are_not() {
    let rx = Receiver::start(&[(429, Duration::ZERO)]).await;
    let hook = Webhook::new(config(rx.url())).unwrap();
    assert_eq!(hook.notify(&notification()).await.unwrap().attempts, 2);

    let rx = Receiver::start(&[(400, Duration::ZERO)]).await;
    let hook = Webhook::new(config(rx.url())).unwrap();
    let err = hook.notify(&notification()).await.unwrap_err();
    assert!(
        matches!(&err, Error::Rejected { status: 400, attempts: 1, body, .. } if body == "answer 400"),
        "{err}"
    );
    assert_eq!(rx.count(), 1, "a 400 is not retried");

    let rx = Receiver::start(&[(502, Duration::ZERO); 5]).await;
    let hook = Webhook::new(config(rx.url())).unwrap();
    let err = hook.notify(&notification()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Rejected {
                status: 502,
                attempts: 3,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(rx.count(), 3);
}

#[test]
fn bad_webhook_settings_are_refused() {
    let e = Webhook::new(WebhookConfig::new("ops", "ftp://example.net/x")).unwrap_err();
    assert!(e.to_string().contains("http or https"), "{e}");
    let e = Webhook::new(WebhookConfig::new("ops", "not a url")).unwrap_err();
    assert!(e.to_string().contains("does not parse"), "{e}");
    let mut c = WebhookConfig::new("ops", "http://127.0.0.1:9/x");
    c.max_attempts = 0;
    assert!(matches!(Webhook::new(c), Err(Error::Config(_))));
}

#[tokio::test]
async fn max_alerts_truncates_and_counts() {
    let rx = Receiver::start(&[]).await;
    let mut c = config(rx.url());
    c.max_alerts = 1;
    Webhook::new(c)
        .unwrap()
        .notify(&notification())
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&rx.requests()[0].body).unwrap();
    assert_eq!(v["alerts"].as_array().unwrap().len(), 1);
    assert_eq!(v["truncatedAlerts"], 1);
}

#[test]
fn secrets_from_env_and_file_never_show_their_value() {
    let dir = std::env::temp_dir().join(format!("sentra-alerts-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("hook.secret");
    std::fs::write(&file, "file-secret-value\r\n").unwrap();
    assert_eq!(
        Secret::from_file(&file).unwrap().expose(),
        b"file-secret-value"
    );
    std::fs::write(&file, "\n").unwrap();
    let e = Secret::from_file(&file).unwrap_err().to_string();
    assert!(e.contains("is empty") && e.contains("hook.secret"), "{e}");
    let e = Secret::from_file(&dir.join("missing"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();

    // PATH is always set; a name nobody sets is not
    assert!(Secret::from_env("PATH").is_ok());
    let e = Secret::from_env("SENTRA_ALERTS_TEST_UNSET_SECRET")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("SENTRA_ALERTS_TEST_UNSET_SECRET is not set"),
        "{e}"
    );
}
