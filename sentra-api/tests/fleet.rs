//! Read endpoints over a real `sentra-ingest` pipeline, the live stream, `/metrics`, and
//! the canary-secret check over logs and error bodies.

#[path = "support/schema.rs"]
mod schema;
mod support;

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::StreamExt as _;
use reqwest::{Method as HttpMethod, StatusCode};
use sentra_core::{
    Batch, IpPrefix, Labels, Method, Nonce, Sample, Seq, Signer, UnixMillis, Value, Verifier,
    WgDevice, WgPeer, WgPublicKey,
};
use serde_json::json;
use support::*;

async fn push(s: &Server, a: &AgentCreds, seq: u64, value: f64, rx: u64) {
    let now = UnixMillis::now();
    let mut batch = Batch::new(a.agent_id.clone(), Seq::new(seq).unwrap(), now);
    batch.samples.push(Sample::new(
        "cpu_usage_ratio".parse().unwrap(),
        Labels::from_pairs([("core", "0")]).unwrap(),
        now,
        Value::Gauge(value),
    ));
    batch.wg_devices.push(
        WgDevice::new("wg0", 3)
            .with_public_key(WgPublicKey::from_bytes([9; 32]))
            .with_listen_port(51820)
            .with_peers(vec![
                WgPeer::new(WgPublicKey::from_bytes([1; 32]))
                    .with_endpoint("192.0.2.1:51820".parse::<std::net::SocketAddr>().unwrap())
                    .with_allowed_ips(vec!["10.0.0.2/32".parse::<IpPrefix>().unwrap()])
                    .with_last_handshake(now)
                    .with_transfer(rx, rx / 2)
                    .with_persistent_keepalive_s(25),
            ]),
    );
    let env = Signer::new(a.agent_id.clone(), a.key_id, &a.secret).sign_batch(
        &batch,
        now,
        Nonce::random(),
    );
    let verified = Verifier::new()
        .verify(&env, Method::Push, now, &s.api.keyring())
        .unwrap();
    let ack = s
        .ingest
        .as_ref()
        .unwrap()
        .service()
        .push(verified)
        .await
        .unwrap();
    assert_eq!(ack.status(), sentra_core::proto::AckStatus::Accepted);
}

#[tokio::test]
async fn status_queries_stream_and_metrics() {
    let s = start_full(test_config(), true).await;
    let admin = s.admin().await;
    let viewer = s.viewer().await;
    let a = s.enroll(&admin, "edge-fleet").await;
    let idle = s.enroll(&admin, "edge-idle").await;

    // Live stream first, so it sees the pushes.
    let resp = s
        .client
        .get(format!("{}/api/v1/status/stream", s.base))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = resp.bytes_stream();

    push(&s, &a, 1, 0.25, 1000).await;
    push(&s, &a, 2, 0.75, 3000).await;

    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(seen.contains("event: snapshot") && seen.matches("event: agent").count() >= 2) {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("stream events in time")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains(&format!("id: {}:2", a.agent_id)), "{seen}");
    drop(body);

    let st = s.get("/api/v1/status", Some(&viewer)).await.json();
    let agent = &st["agents"][0];
    assert_eq!(agent["agent_id"], a.agent_id.as_str());
    assert_eq!(agent["presence"], "online");
    assert_eq!(agent["interfaces"][0]["peers"][0]["rx_bytes"], 3000);
    let one = s
        .get(
            &format!("/api/v1/status/agents/{}", a.agent_id),
            Some(&viewer),
        )
        .await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.text);
    let r = s
        .get(
            &format!("/api/v1/status/agents/{}", idle.agent_id),
            Some(&viewer),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let pres = s.get("/api/v1/presence", Some(&viewer)).await.json();
    let find = |id: &str| {
        pres["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["agent_id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(find(a.agent_id.as_str())["presence"], "online");
    assert_eq!(find(idle.agent_id.as_str())["presence"], "never");

    // Queries see a batch once the pipeline has applied it (within its apply delay; allow
    // 30 s for a loaded CI machine).
    let mut names = json!(null);
    for _ in 0..300 {
        let latest = s
            .get("/api/v1/metrics/latest?name=cpu_usage_ratio", Some(&viewer))
            .await
            .json();
        // names after latest: read before, it could miss a batch applied in between
        names = s.get("/api/v1/metrics/names", Some(&viewer)).await.json();
        if latest["values"][0]["value"] == 0.75 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        names["names"]
            .as_array()
            .unwrap()
            .contains(&json!("cpu_usage_ratio")),
        "{names}"
    );
    let latest = s
        .get(
            "/api/v1/metrics/latest?name=cpu_usage_ratio&label=core%3D0",
            Some(&viewer),
        )
        .await;
    assert_eq!(latest.status, StatusCode::OK, "{}", latest.text);
    assert_eq!(latest.json()["values"][0]["value"], 0.75);
    let none = s
        .get(
            "/api/v1/metrics/latest?name=cpu_usage_ratio&label=core!%3D0",
            Some(&viewer),
        )
        .await
        .json();
    assert!(none["values"].as_array().unwrap().is_empty());
    let now = UnixMillis::now().as_millis();
    let from = now - 600_000;
    let to = now + 1000;
    let q = format!(
        "name=cpu_usage_ratio&agent={}&from={from}&to={to}",
        a.agent_id
    );
    let h = s
        .get(
            &format!("/api/v1/metrics/history?{q}&step_ms=700000&agg=max&resolution=raw"),
            Some(&viewer),
        )
        .await;
    assert_eq!(h.status, StatusCode::OK, "{}", h.text);
    assert_eq!(h.json()["series"][0]["points"][0][1], 0.75);
    let agg = s
        .get(
            &format!("/api/v1/metrics/aggregate?{q}&agg=avg"),
            Some(&viewer),
        )
        .await
        .json();
    assert_eq!(agg["values"][0]["value"], 0.5);
    let top = s
        .get(
            &format!("/api/v1/metrics/top?{q}&agg=min&n=1"),
            Some(&viewer),
        )
        .await
        .json();
    assert_eq!(top["values"][0]["value"], 0.25);
    let pct = s
        .get(
            &format!("/api/v1/metrics/percentiles?{q}&q=0&q=1"),
            Some(&viewer),
        )
        .await;
    assert_eq!(pct.status, StatusCode::OK, "{}", pct.text);
    assert_eq!(
        pct.json()["series"][0]["values"],
        json!([[0.0, 0.25], [1.0, 0.75]])
    );
    let csv = s
        .get(
            &format!("/api/v1/metrics/export?{q}&format=csv"),
            Some(&viewer),
        )
        .await;
    assert!(
        csv.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert_eq!(csv.text.lines().count(), 3, "{}", csv.text);
    let js = s
        .get(
            &format!("/api/v1/metrics/export?{q}&format=json"),
            Some(&viewer),
        )
        .await;
    assert_eq!(js.json().as_array().unwrap().len(), 2);
    // Every answer above, with data in it, is what the OpenAPI document says it is.
    let doc = s.get("/api/v1/openapi.json", None).await.json();
    let agent_path = |p: &str| p.replace("{id}", a.agent_id.as_str());
    for (path, query) in [
        ("/api/v1/status", String::new()),
        ("/api/v1/status/agents/{id}", String::new()),
        ("/api/v1/agents/{id}/ingest", String::new()),
        ("/api/v1/presence", String::new()),
        ("/api/v1/metrics/names", String::new()),
        ("/api/v1/metrics/series", "name=cpu_usage_ratio".to_owned()),
        ("/api/v1/metrics/latest", "name=cpu_usage_ratio".to_owned()),
        ("/api/v1/metrics/history", format!("{q}&step_ms=700000")),
        ("/api/v1/metrics/aggregate", q.clone()),
        ("/api/v1/metrics/top", q.clone()),
        ("/api/v1/metrics/percentiles", q.clone()),
    ] {
        let r = s
            .get(&format!("{}?{query}", agent_path(path)), Some(&viewer))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
        schema::assert_response(&doc, "get", path, &r.json());
    }
    for path in [
        "/api/v1/users",
        "/api/v1/tokens",
        "/api/v1/agents",
        "/api/v1/audit",
        "/api/v1/auth/me",
        "/healthz",
        "/readyz",
    ] {
        let r = s.get(path, Some(&admin)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
        schema::assert_response(&doc, "get", path, &r.json());
    }
    let export = &doc["paths"]["/api/v1/metrics/export"]["get"]["responses"]["200"]["content"]["application/json"]
        ["schema"];
    let errs = schema::validate(&doc, export, &js.json(), "export");
    assert!(errs.is_empty(), "{errs:?}");
    // Bad queries: 400 JSON.
    for bad in [
        "/api/v1/metrics/history?from=10&to=5",
        "/api/v1/metrics/latest?label=nope",
        "/api/v1/metrics/latest?bogus=1",
        "/api/v1/metrics/aggregate?agg=median",
        "/api/v1/metrics/export?format=xml",
        "/api/v1/metrics/latest?name=%ZZ",
    ] {
        let r = s.get(bad, Some(&viewer)).await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{bad}"
        );
    }
    assert_eq!(
        s.get("/api/v1/status", None).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Prometheus: own metrics plus fleet metrics under the exporter's names.
    let m = s.get("/metrics", None).await.text;
    assert!(m.contains("wireguard_received_bytes_total{"), "{m}");
    assert!(m.contains("wireguard_latest_handshake_seconds{"), "{m}");
    assert!(m.contains("sentra_api_http_requests_total{"), "{m}");
    assert!(m.contains("sentra_api_agents_with_keys 2"), "{m}");

    // Deleting the agent deletes its data.
    let r = s
        .send(
            HttpMethod::DELETE,
            &format!("/api/v1/agents/{}", a.agent_id),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let st = s.get("/api/v1/status", Some(&viewer)).await.json();
    assert!(st["agents"].as_array().unwrap().is_empty(), "{st}");
    let audit = s.audit(&admin).await;
    assert!(
        audit
            .iter()
            .any(|e| e["action"] == "agent.delete_data" && e["outcome"] == "success")
    );
}

/// The served document types every JSON response (no `{}` or property-less object inside,
/// except the document's own) and every component example is valid against its schema;
/// the checker refuses what it should, so both can fail.
#[tokio::test]
async fn openapi_responses_are_typed_and_examples_valid() {
    let s = start().await;
    let doc = s.get("/api/v1/openapi.json", None).await.json();
    let loose = schema::free_form_responses(&doc);
    assert!(
        loose.is_empty(),
        "free-form response schemas:\n{}",
        loose.join("\n")
    );
    let (checked, bad) = schema::invalid_examples(&doc);
    assert!(checked >= 10, "only {checked} examples");
    assert!(bad.is_empty(), "invalid examples:\n{}", bad.join("\n"));

    let ledger = &doc["components"]["schemas"]["AgentLedger"];
    let mut ex = ledger["example"].clone();
    assert!(schema::validate(&doc, ledger, &ex, "l").is_empty());
    ex["accepted"] = "many".into();
    ex.as_object_mut().unwrap().remove("gaps");
    ex["extra"] = 1.into();
    let errs = schema::validate(&doc, ledger, &ex, "l");
    assert_eq!(errs.len(), 3, "{errs:?}");
    let agent = &doc["components"]["schemas"]["AgentStatus"];
    let mut ex = agent["example"].clone();
    ex["presence"] = "asleep".into();
    ex["interfaces"][0]["peers"][0]["allowed_ips"] = json!([1]);
    assert_eq!(schema::validate(&doc, agent, &ex, "a").len(), 2);
    assert!(schema::free_form(&doc, &json!({})));
    assert!(schema::free_form(&doc, &json!({"type": "object"})));
    assert!(!schema::free_form(&doc, ledger));
}

#[tokio::test]
async fn without_ingest_read_endpoints_answer_503() {
    let s = start().await;
    let viewer = s.viewer().await;
    for path in [
        "/api/v1/status",
        "/api/v1/metrics/names",
        "/api/v1/status/stream",
        "/api/v1/presence",
    ] {
        let r = s.get(path, Some(&viewer)).await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            "{path}"
        );
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs the full flow with known secrets and asserts none of them (nor their base64 or
/// hex forms) appears in any log line at TRACE level or in any error body.
#[tokio::test]
async fn canary_secrets_never_leak() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // Global, not thread-scoped: server tasks may run on other threads (and callsite interest
    // caching across tests made a scoped subscriber miss lines). Only this test installs one.
    tracing::subscriber::set_global_default(subscriber)
        .expect("no other subscriber in this binary");

    let s = start_full(test_config(), true).await;
    let admin = s.admin().await;
    let canary_pw = "CANARY-password-7f3a9b";
    let r = s
        .post(
            "/api/v1/users",
            Some(&admin),
            json!({"username": "canary", "password": canary_pw, "role": "viewer"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let mut errors = Vec::new();
    // Wrong password, password typed into the user name, a too-short password.
    for body in [
        json!({"username": "canary", "password": "CANARY-wrong-pw"}),
        json!({"username": canary_pw, "password": canary_pw}),
    ] {
        errors.push(s.post("/api/v1/auth/login", None, body).await.text);
    }
    errors.push(
        s.post(
            "/api/v1/users",
            Some(&admin),
            json!({"username": "c2", "password": "CANARY", "role": "viewer"}),
        )
        .await
        .text,
    );
    let jwt = s.login("canary", canary_pw).await;
    let token = s.issue_token(&admin, 600).await;
    let r = s
        .post(
            "/api/v1/agents/enroll",
            None,
            json!({"token": token, "name": "canary-agent"}),
        )
        .await;
    let creds = AgentCreds::from_json(&r.json());
    let again = s
        .post(
            "/api/v1/agents/enroll",
            None,
            json!({"token": token, "name": "x"}),
        )
        .await;
    errors.push(again.text);
    assert_eq!(s.fetch_key(&creds).await.status, StatusCode::OK);
    let mut wrong = creds.clone();
    wrong.secret = sentra_core::SecretKey::from_bytes([0xEE; 32]);
    errors.push(s.fetch_key(&wrong).await.text);
    // Viewer JWT on an admin route, and a tampered one.
    errors.push(s.get("/api/v1/users", Some(&jwt)).await.text);
    errors.push(s.get("/api/v1/users", Some(&format!("{jwt}x"))).await.text);
    errors.push(
        s.raw(
            HttpMethod::POST,
            "/api/v1/auth/login",
            None,
            Some("application/json"),
            format!(r#"{{"username":"canary","password":"{canary_pw}""#).into_bytes(),
        )
        .await
        .text,
    );
    push(&s, &creds, 1, 1.0, 10).await;
    let _ = s.get("/metrics", None).await;
    let audit = serde_json::to_string(&s.audit(&admin).await).unwrap();

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("audit"),
        "the capture works: {}",
        &logs[..logs.len().min(2000)]
    );
    let secret = creds.secret.expose_secret();
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let canaries = [
        canary_pw.to_owned(),
        "CANARY-wrong-pw".to_owned(),
        token.clone(),
        token.trim_start_matches("sntb_").to_owned(),
        creds.secret_b64.clone(),
        hex,
        jwt.clone(),
        jwt.split('.').nth(2).unwrap().to_owned(),
        admin.split('.').nth(2).unwrap().to_owned(),
    ];
    for c in &canaries {
        assert!(!logs.contains(c.as_str()), "secret {c:?} in logs");
        assert!(!audit.contains(c.as_str()), "secret {c:?} in the audit log");
        for e in &errors {
            assert!(!e.contains(c.as_str()), "secret {c:?} in error body {e}");
        }
    }
    for e in &errors {
        assert!(
            serde_json::from_str::<serde_json::Value>(e).unwrap()["error"]["code"].is_string(),
            "{e}"
        );
    }
}

/// Issue 10 item 10 for the one long-lived request: a live stream opened with a token ends
/// soon after its user is deleted (or logs out), instead of running on for as long as the
/// connection lives.
#[tokio::test]
async fn live_stream_ends_when_its_session_ends() {
    let s = start_full(test_config(), true).await;
    let admin = s.admin().await;
    let a = s.enroll(&admin, "edge-stream").await;
    for (name, end) in [("streamer", "delete"), ("leaver", "logout")] {
        let r = s
            .post(
                "/api/v1/users",
                Some(&admin),
                json!({"username": name, "password": "a long password", "role": "viewer"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let token = s.login(name, "a long password").await;
        let resp = s
            .client
            .get(format!("{}/api/v1/status/stream", s.base))
            .bearer_auth(&token)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.bytes_stream();
        let first = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("snapshot in time")
            .unwrap()
            .unwrap();
        assert!(String::from_utf8_lossy(&first).contains("event: snapshot"));
        let r = match end {
            "delete" => {
                s.send(
                    HttpMethod::DELETE,
                    &format!("/api/v1/users/{name}"),
                    Some(&admin),
                    None,
                )
                .await
            }
            _ => {
                s.send(HttpMethod::POST, "/api/v1/auth/logout", Some(&token), None)
                    .await
            }
        };
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
        // Traffic on the stream, then silence: either way it must end.
        push(&s, &a, if end == "delete" { 1 } else { 2 }, 0.5, 100).await;
        let mut seen = String::new();
        let ended = tokio::time::timeout(Duration::from_secs(15), async {
            while let Some(chunk) = body.next().await {
                match chunk {
                    Ok(c) => seen.push_str(&String::from_utf8_lossy(&c)),
                    Err(_) => break,
                }
            }
        })
        .await;
        assert!(
            ended.is_ok(),
            "{end}: the stream outlived its session: {seen}"
        );
        assert!(seen.contains("event: session_ended"), "{end}: {seen}");
        assert!(
            !seen.contains("event: agent"),
            "{end}: data sent after the session ended: {seen}"
        );
    }
}
