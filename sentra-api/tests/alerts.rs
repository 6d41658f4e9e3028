//! `/api/v1/alerts` on a real API socket with a real alerting engine notifying a real local
//! HTTP receiver: roles, hostile input, silences, receiver test, audit.
#![allow(missing_docs)]

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use reqwest::{Method, StatusCode};
use sentra_alerts::{
    engine::{Engine, EngineConfig, Feed},
    notify::{Notifier, Webhook, WebhookConfig},
    route::{Route, RouterConfig},
};
use sentra_core::UnixMillis;
use serde_json::json;

/// A receiver answering 200 and counting requests.
async fn receiver() -> (String, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&count);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let c = Arc::clone(&c);
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                "thanks"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), count)
}

fn stale_batch(seq: u64, now: UnixMillis) -> sentra_core::Batch {
    use sentra_core::{AgentId, Batch, Seq, WgDevice, WgPeer, WgPublicKey};
    let mut batch = Batch::new(AgentId::new("gw-1").unwrap(), Seq::new(seq).unwrap(), now);
    batch.wg_devices.push(
        WgDevice::new("wg0", 4)
            .with_listen_port(51820)
            .with_peers(vec![
                WgPeer::new(WgPublicKey::from_bytes([7; 32]))
                    .with_last_handshake(UnixMillis::from_millis(now.as_millis() - 600_000))
                    .with_persistent_keepalive_s(25),
            ]),
    );
    batch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_endpoints_roles_hostile_input_and_audit() {
    let s = support::start().await;
    let admin = s.admin().await;
    let viewer = s.viewer().await;

    // no engine attached: 503, never a panic
    let r = s.get("/api/v1/alerts", Some(&viewer)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.error_code(), "unavailable");
    assert!(r.text.contains("not enabled on this server"), "{}", r.text);
    // a standby of the alert lease says so, and where alerts are served
    s.api.alerts_standby();
    for path in [
        "/api/v1/alerts",
        "/api/v1/alerts/rules",
        "/api/v1/alerts/silences",
    ] {
        let r = s.get(path, Some(&viewer)).await;
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{path}: {}",
            r.text
        );
        assert_eq!(r.error_code(), "unavailable");
        for part in [
            "standby for the alert lease",
            "sentra_alerts_leader 1",
            "takes over",
        ] {
            assert!(
                r.text.contains(part),
                "{path}: {part:?} missing: {}",
                r.text
            );
        }
    }
    assert_eq!(
        s.get("/api/v1/alerts", None).await.status,
        StatusCode::UNAUTHORIZED
    );

    let (url, hits) = receiver().await;
    let mut route = Route::new("ops");
    route.group_wait = Duration::ZERO;
    let mut config = EngineConfig::new(sentra_alerts::builtin_wireguard_rules());
    config.routing = RouterConfig::new(vec![route]);
    config.tick = Duration::from_millis(50);
    let hook: Arc<dyn Notifier> = Arc::new(Webhook::new(WebhookConfig::new("ops", url)).unwrap());
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let engine = Arc::new(Engine::start(config, vec![hook], rx).unwrap());
    assert!(s.api.attach_alerts(Arc::clone(&engine)));

    // rules
    let r = s.get("/api/v1/alerts/rules", Some(&viewer)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let rules = r.json()["rules"].as_array().unwrap().clone();
    assert!(
        rules.iter().any(|r| r["kind"] == "wg_handshake_stale"),
        "{rules:?}"
    );

    // a stale peer fires
    let now = UnixMillis::now();
    tx.send(Feed::Batch(Arc::new(stale_batch(1, now)), now))
        .await
        .unwrap();
    let mut firing = Vec::new();
    for _ in 0..200 {
        let r = s.get("/api/v1/alerts", Some(&viewer)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        firing = r.json()["alerts"].as_array().unwrap().clone();
        if firing.iter().any(|a| a["status"] == "firing") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let stale = firing
        .iter()
        .find(|a| a["status"] == "firing")
        .unwrap_or_else(|| panic!("no firing alert: {firing:?}"));
    assert_eq!(stale["labels"]["agent"], "gw-1");
    assert_eq!(stale["labels"]["interface"], "wg0");

    // silences: roles and hostile input
    let good =
        json!({"matchers": ["agent=\"gw-1\""], "duration_s": 3600, "comment": "maintenance"});
    let r = s
        .post("/api/v1/alerts/silences", Some(&viewer), good.clone())
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    for (body, field) in [
        (json!({"matchers": [], "duration_s": 60}), "matchers"),
        (
            json!({"matchers": ["agent~~\"x\""], "duration_s": 60}),
            "matchers[0]",
        ),
        (
            json!({"matchers": ["agent=\"x\""], "duration_s": 0}),
            "duration_s",
        ),
        (
            json!({"matchers": ["agent=\"x\""], "duration_s": 999_999_999u64}),
            "duration_s",
        ),
        (
            json!({"matchers": vec!["a=\"b\""; 33], "duration_s": 60}),
            "matchers",
        ),
        (
            json!({"matchers": ["a=\"b\""], "duration_s": 60, "comment": "x".repeat(2000)}),
            "comment",
        ),
    ] {
        let r = s
            .post("/api/v1/alerts/silences", Some(&admin), body.clone())
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
        assert!(r.text.contains(field), "{body}: {}", r.text);
    }
    for raw in [
        &b"{not json"[..],
        br#"{"matchers": ["a=\"b\""], "duration_s": 60, "extra": 1}"#,
        br#"{"matchers": "a", "duration_s": -1}"#,
    ] {
        let r = s
            .raw(
                Method::POST,
                "/api/v1/alerts/silences",
                Some(&admin),
                Some("application/json"),
                raw.to_vec(),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    }
    let r = s
        .post("/api/v1/alerts/silences", Some(&admin), good.clone())
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.json()["id"].as_u64().unwrap();
    // a fractional duration is what the schema (number) allows
    let r = s
        .post(
            "/api/v1/alerts/silences",
            Some(&admin),
            json!({"matchers": ["agent=\"gw-9\""], "duration_s": 90.5}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let short = r.json()["id"].as_u64().unwrap();
    let r = s
        .send(
            Method::DELETE,
            &format!("/api/v1/alerts/silences/{short}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = s.get("/api/v1/alerts/silences", Some(&viewer)).await;
    let list = r.json()["silences"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2, "{list:?}");
    let mine = list.iter().find(|x| x["id"] == id).unwrap();
    assert_eq!(mine["state"], "active");
    assert_eq!(mine["created_by"], support::ADMIN);
    let expired = list.iter().find(|x| x["id"] == short).unwrap();
    assert_eq!(expired["state"], "expired");
    let path = format!("/api/v1/alerts/silences/{id}");
    assert_eq!(
        s.send(Method::DELETE, &path, Some(&viewer), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let r = s.send(Method::DELETE, &path, Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = s.send(Method::DELETE, &path, Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    for (p, want) in [
        ("/api/v1/alerts/silences/999", StatusCode::NOT_FOUND),
        ("/api/v1/alerts/silences/abc", StatusCode::BAD_REQUEST),
        (
            "/api/v1/alerts/silences/99999999999999999999999",
            StatusCode::BAD_REQUEST,
        ),
        // beyond the documented int64 range, zero, negative: 400, not 500
        (
            "/api/v1/alerts/silences/9223372036854775808",
            StatusCode::BAD_REQUEST,
        ),
        ("/api/v1/alerts/silences/0", StatusCode::BAD_REQUEST),
        ("/api/v1/alerts/silences/-1", StatusCode::BAD_REQUEST),
    ] {
        assert_eq!(
            s.send(Method::DELETE, p, Some(&admin), None).await.status,
            want,
            "{p}"
        );
    }

    // receiver test: a real request, the receiver's answer shown
    let before = hits.load(Ordering::SeqCst);
    let r = s
        .post("/api/v1/alerts/receivers/ops/test", Some(&admin), json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["status"], 200);
    assert_eq!(r.json()["body"], "thanks");
    assert_eq!(hits.load(Ordering::SeqCst), before + 1);
    let r = s
        .post(
            "/api/v1/alerts/receivers/nope/test",
            Some(&admin),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = s
        .post(
            "/api/v1/alerts/receivers/ops/test",
            Some(&viewer),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    // a non-ASCII name is malformed (400), never a server error
    let r = s
        .post(
            "/api/v1/alerts/receivers/%C3%A9%E2%82%AC/test",
            Some(&admin),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);

    // dead letters: none
    let r = s.get("/api/v1/alerts/dead-letters", Some(&viewer)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["dead_letters"], json!([]));
    let r = s
        .post(
            "/api/v1/alerts/dead-letters/7/resend",
            Some(&admin),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);

    // audited writes
    let actions: Vec<String> = s
        .audit(&admin)
        .await
        .iter()
        .filter_map(|e| e["action"].as_str().map(str::to_owned))
        .collect();
    for a in [
        "alerts.silence.create",
        "alerts.silence.expire",
        "alerts.receiver.test",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a} in {actions:?}");
    }
    // failures are audited too, with their target and outcome (one helper does it all)
    let entries = s.audit(&admin).await;
    let id_text = id.to_string();
    assert!(
        entries.iter().any(|e| e["action"] == "alerts.receiver.test"
            && e["target"] == "nope"
            && e["outcome"] == "failed"),
        "{entries:?}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "alerts.dead_letter.resend"
                && e["target"] == "7"
                && e["outcome"] == "failed"),
        "{entries:?}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "alerts.silence.create"
                && e["target"] == id_text.as_str()
                && e["outcome"] == "success"),
        "{entries:?}"
    );
    engine.shutdown().await.unwrap();
}
