//! Peer onboarding over real HTTP on loopback with a real SQLite control store: pools,
//! adding a client (its files returned once), list/show/config/remove, conflicts naming
//! the other side, roles, audit, hostile input changing nothing, no private key in the
//! database files, and the preshared key held by the control plane for the agent
//! (`FetchDesiredState`) but in no audit entry and no later response.

mod support;

use base64::Engine as _;
use reqwest::{Method as HttpMethod, StatusCode};
use serde_json::{Value, json};
use support::*;

/// Every file under the data directory, concatenated (SQLite main file, WAL, SHM).
fn all_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(all_bytes(&p));
        } else {
            out.extend(std::fs::read(&p).unwrap());
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The value of `Key = value` in a wg-quick file.
fn line<'a>(config: &'a str, key: &str) -> Option<&'a str> {
    config
        .lines()
        .find_map(|l| l.strip_prefix(key)?.trim_start().strip_prefix('='))
        .map(str::trim)
}

fn url_safe(key: &str) -> String {
    key.replace('+', "-").replace('/', "_").replace('=', "")
}

#[derive(Clone, Default)]
struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn onboarding_over_rest() {
    // Every log line of the server at TRACE level (global: server tasks run on other
    // threads). Only this test in this binary installs a subscriber.
    let capture = Capture::default();
    let writer = capture.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish(),
    )
    .expect("no other subscriber in this binary");
    let s = start().await;
    let admin = s.admin().await;
    let viewer = s.viewer().await;
    let a = s.enroll(&admin, "edge").await;
    let b = s.enroll(&admin, "edge-b").await;
    let base = format!("/api/v1/agents/{}/interfaces/wg0", a.agent_id);
    let server_key = wg_key(200);

    // Pools: viewers read, admins write; overlapping pools name the other interface.
    let pool = json!({ "prefixes": ["10.8.0.0/24", "fd00:8::/64"] });
    let r = s
        .send(
            HttpMethod::PUT,
            &format!("{base}/pool"),
            Some(&viewer),
            Some(pool.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = s.get(&format!("{base}/pool"), Some(&viewer)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = s
        .send(
            HttpMethod::PUT,
            &format!("{base}/pool"),
            Some(&admin),
            Some(pool),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = s.get(&format!("{base}/pool"), Some(&viewer)).await;
    assert_eq!(r.json()["prefixes"], json!(["10.8.0.0/24", "fd00:8::/64"]));
    let other = format!("/api/v1/agents/{}/interfaces/wg1/pool", b.agent_id);
    let r = s
        .send(
            HttpMethod::PUT,
            &other,
            Some(&admin),
            Some(json!({ "prefixes": ["10.8.0.128/25"] })),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains(&format!("{}/wg0", a.agent_id)), "{msg}");

    // Without a reported interface the server key must be given: 409, nothing changed.
    let rev0 = s.get(&format!("{base}/peers"), Some(&viewer)).await.json()["revision"]
        .as_u64()
        .unwrap();
    let r = s
        .post(
            &format!("{base}/peers"),
            Some(&admin),
            json!({ "endpoint": "vpn.example.com:51820" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("server_public_key"), "{}", r.text);

    // A generated key pair with PSK, DNS, split tunnel: the files come back once.
    let r = s
        .post(
            &format!("{base}/peers"),
            Some(&admin),
            json!({
                "endpoint": "vpn.example.com:51820", "server_public_key": server_key,
                "dns": ["10.8.0.1"], "split_tunnel": [], "preshared_key": true,
                "persistent_keepalive_s": 25,
            }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.headers["cache-control"], "no-store");
    let added = r.json();
    let config = added["client"]["config"].as_str().unwrap().to_owned();
    let private = line(&config, "PrivateKey").unwrap().to_owned();
    let psk = line(&config, "PresharedKey").unwrap().to_owned();
    let public = added["peer"]["public_key"].as_str().unwrap().to_owned();
    assert_eq!(
        sentra_control::onboard::public_key_of(&sentra_api::SecretString::new(&private)).unwrap(),
        public
    );
    assert_eq!(line(&config, "Address"), Some("10.8.0.2/32, fd00:8::2/128"));
    assert_eq!(line(&config, "DNS"), Some("10.8.0.1"));
    assert_eq!(
        line(&config, "AllowedIPs"),
        Some("10.8.0.0/24, fd00:8::/64")
    );
    assert_eq!(line(&config, "Endpoint"), Some("vpn.example.com:51820"));
    assert_eq!(line(&config, "PublicKey"), Some(server_key.as_str()));
    assert_eq!(line(&config, "PersistentKeepalive"), Some("25"));
    assert_eq!(added["client"]["contains_private_key"], true);
    assert_eq!(added["client"]["contains_preshared_key"], true);
    assert!(
        added["client"]["qr_terminal"]
            .as_str()
            .unwrap()
            .contains('█')
    );
    let png = base64::engine::general_purpose::STANDARD
        .decode(added["client"]["qr_png_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(added["revision"].as_u64().unwrap(), rev0 + 1);
    assert_eq!(added["addresses"], json!(["10.8.0.2/32", "fd00:8::2/128"]));

    // A static address inside that peer's allowed IPs: 409 naming it.
    let r = s
        .post(
            &format!("{base}/peers"),
            Some(&admin),
            json!({ "endpoint": "vpn.example.com:51820", "server_public_key": server_key, "address": "10.8.0.2" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains(&public), "{}", r.text);

    // The client's own key: no private key in the file, the next address.
    let own = wg_key(7);
    let r = s
        .post(
            &format!("{base}/peers"),
            Some(&admin),
            json!({ "endpoint": "[2001:db8::1]:51820", "server_public_key": server_key, "public_key": own }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let v = r.json();
    assert_eq!(v["client"]["contains_private_key"], false);
    let c = v["client"]["config"].as_str().unwrap();
    assert_eq!(line(c, "PrivateKey"), Some("<client private key>"));
    assert_eq!(line(c, "Address"), Some("10.8.0.3/32, fd00:8::3/128"));
    assert_eq!(line(c, "AllowedIPs"), Some("0.0.0.0/0, ::/0"));
    // The same key twice is a conflict.
    let r = s
        .post(
            &format!("{base}/peers"),
            Some(&admin),
            json!({ "endpoint": "vpn.example.com:1", "server_public_key": server_key, "public_key": own }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);

    // The preshared key reaches the agent (the answer the FetchDesiredState handler
    // sends): for that peer only, as the 32 bytes the client's file holds.
    let b64 = |k: &str| base64::engine::general_purpose::STANDARD.decode(k).unwrap();
    let state = s.api.store().desired_state(&a.agent_id, 0).await.unwrap();
    let wg0 = state.interfaces.iter().find(|i| i.name == "wg0").unwrap();
    assert_eq!(wg0.peers.len(), 2);
    let with = wg0
        .peers
        .iter()
        .find(|p| p.public_key == b64(&public))
        .unwrap();
    assert_eq!(with.preshared_key, b64(&psk));
    let without = wg0
        .peers
        .iter()
        .find(|p| p.public_key == b64(&own))
        .unwrap();
    assert!(without.preshared_key.is_empty());

    // List, show (URL-safe key), config of an existing peer without secrets.
    let list = s.get(&format!("{base}/peers"), Some(&viewer)).await.json();
    assert_eq!(list["peers"].as_array().unwrap().len(), 2, "{list}");
    assert!(!list.to_string().contains(&psk));
    for path in [
        format!("/api/v1/agents/{}/desired", a.agent_id),
        format!("{base}/peers/{}", url_safe(&public)),
        format!("/api/v1/agents/{}", a.agent_id),
    ] {
        let r = s.get(&path, Some(&admin)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
        assert!(!r.text.contains(&psk), "{path} shows the preshared key");
    }
    assert_eq!(list["pool"], json!(["10.8.0.0/24", "fd00:8::/64"]));
    let r = s
        .get(
            &format!("{base}/peers/{}", url_safe(&public)),
            Some(&viewer),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.json()["peer"]["allowed_ips"],
        json!(["10.8.0.2/32", "fd00:8::2/128"])
    );
    let r = s
        .get(
            &format!(
                "{base}/peers/{}/config?endpoint=vpn.example.com:51820&server_public_key={}&dns=10.8.0.1,fd00:8::1",
                url_safe(&public),
                server_key.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D"),
            ),
            Some(&viewer),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let v = r.json();
    let c = v["client"]["config"].as_str().unwrap();
    assert_eq!(line(c, "PrivateKey"), Some("<client private key>"));
    assert_eq!(line(c, "PresharedKey"), None);
    assert_eq!(line(c, "DNS"), Some("10.8.0.1, fd00:8::1"));
    assert!(!r.text.contains(&private) && !r.text.contains(&psk));
    // The viewer cannot add or remove.
    let r = s
        .post(
            &format!("{base}/peers"),
            Some(&viewer),
            json!({ "endpoint": "vpn.example.com:1", "server_public_key": server_key }),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Hostile input: a clear 4xx each, nothing changed.
    let before = s.get(&format!("{base}/peers"), Some(&viewer)).await.json();
    let audit_before = s.audit(&admin).await.len();
    let ok = json!({ "endpoint": "vpn.example.com:51820", "server_public_key": server_key });
    let with = |k: &str, v: Value| {
        let mut o = ok.clone();
        o[k] = v;
        o
    };
    let bad_bodies = [
        with("public_key", json!("not a key")),
        with(
            "public_key",
            json!(base64::engine::general_purpose::STANDARD.encode([1u8; 31])),
        ),
        with("server_public_key", json!("AAAA")),
        with("address", json!("10.8.0.300")),
        with("address", json!("ünïcode")),
        with("address", json!("10.8.0.0/24")),
        with("endpoint", json!("vpn.exämple.com:51820")),
        with("endpoint", json!("vpn.example.com:99999")),
        with("endpoint", json!("")),
        with("dns", json!(["not-an-ip"])),
        with("dns", json!(vec!["10.0.0.1"; 17])),
        with("persistent_keepalive_s", json!(70000)),
        with("persistent_keepalive_s", json!(1e300)),
        with("persistent_keepalive_s", json!(-1)),
        with("tunnel", json!("sideways")),
        with("split_tunnel", json!(["nope"])),
        with("split_tunnel", json!(["10.0.0.0/33"])),
        with("split_tunnel", json!("10.0.0.0/8")),
        with("surprise", json!(1)),
        json!([1, 2, 3]),
    ];
    for body in bad_bodies {
        let r = s
            .post(&format!("{base}/peers"), Some(&admin), body.clone())
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
        assert_eq!(r.error_code(), "invalid_request");
    }
    for prefixes in [
        json!(["10.9.0.0/33"]),
        json!(["nope"]),
        json!([]),
        json!(vec!["10.9.0.0/24"; 17]),
    ] {
        let r = s
            .send(
                HttpMethod::PUT,
                &format!("{base}/pool"),
                Some(&admin),
                Some(json!({ "prefixes": prefixes })),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{prefixes}: {}", r.text);
    }
    // Overlapping prefixes within one pool: 409.
    let r = s
        .send(
            HttpMethod::PUT,
            &format!("{base}/pool"),
            Some(&admin),
            Some(json!({ "prefixes": ["10.9.0.0/16", "10.9.1.0/24"] })),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    // Oversized body.
    let huge = json!({ "endpoint": "a:1", "dns": vec!["1.1.1.1"; 200_000] });
    let r = s.post(&format!("{base}/peers"), Some(&admin), huge).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text);
    // Non-ASCII and over-long interface names, malformed keys in the path.
    for path in [
        format!("/api/v1/agents/{}/interfaces/w%C3%A4g0/peers", a.agent_id),
        format!(
            "/api/v1/agents/{}/interfaces/{}/peers",
            a.agent_id,
            "w".repeat(16)
        ),
    ] {
        let r = s.post(&path, Some(&admin), ok.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.text);
    }
    for key in ["short", "%00%00", &"A".repeat(4000)] {
        let r = s
            .send(
                HttpMethod::DELETE,
                &format!("{base}/peers/{key}"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{key}: {}", r.text);
    }
    let r = s
        .get(
            &format!(
                "{base}/peers/{}/config?endpoint=a:1&dns=x",
                url_safe(&public)
            ),
            Some(&viewer),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = s
        .get(
            &format!(
                "{base}/peers/{}/config?endpoint=a:1&persistent_keepalive_s=99999999999999999999",
                url_safe(&public)
            ),
            Some(&viewer),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let after = s.get(&format!("{base}/peers"), Some(&viewer)).await.json();
    assert_eq!(before, after, "hostile input changed the declaration");
    let new_entries: Vec<Value> = s.audit(&admin).await;
    assert!(
        new_entries[..new_entries.len() - audit_before]
            .iter()
            .all(|e| e["outcome"] != "success"),
        "{new_entries:?}"
    );

    // Remove: revision moves, the address is free again, a second remove is a 404.
    let r = s
        .send(
            HttpMethod::DELETE,
            &format!("{base}/peers/{}", url_safe(&public)),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let rev_removed = r.json()["revision"].as_u64().unwrap();
    // Removed with its peer: no preshared key is sent any more.
    let state = s.api.store().desired_state(&a.agent_id, 0).await.unwrap();
    assert!(
        state
            .interfaces
            .iter()
            .flat_map(|i| &i.peers)
            .all(|p| p.preshared_key.is_empty() && p.public_key != b64(&public))
    );
    let r = s
        .send(
            HttpMethod::DELETE,
            &format!("{base}/peers/{}", url_safe(&public)),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = s
        .post(&format!("{base}/peers"), Some(&admin), ok.clone())
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json()["addresses"][0], "10.8.0.2/32");
    assert_eq!(r.json()["revision"].as_u64().unwrap(), rev_removed + 1);

    // Audited with who and what; no secret in the audit log or the database files.
    let audit = s.audit(&admin).await;
    let adds: Vec<&Value> = audit
        .iter()
        .filter(|e| e["action"] == "peer.add" && e["outcome"] == "success")
        .collect();
    assert_eq!(adds.len(), 3, "{audit:?}");
    assert!(
        adds.iter()
            .all(|e| e["actor"].as_str().unwrap().contains(ADMIN))
    );
    assert!(
        audit.iter().any(
            |e| e["action"] == "peer.remove" && e["detail"].as_str().unwrap().contains(&public)
        )
    );
    assert!(
        audit
            .iter()
            .any(|e| e["action"] == "pool.set" && e["outcome"] == "success")
    );
    let audit_text = serde_json::to_string(&audit).unwrap();
    assert!(!audit_text.contains(&private) && !audit_text.contains(&psk));
    let log = capture.0.lock().unwrap().clone();
    assert!(!log.is_empty(), "sanity: the server logs at TRACE level");
    for (what, secret) in [("private key", &private), ("preshared key", &psk)] {
        assert!(!contains(&log, secret), "the {what} is in the server log");
        let hex: String = base64::engine::general_purpose::STANDARD
            .decode(secret)
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(
            !contains(&log, &hex),
            "the {what} is in the server log (hex)"
        );
    }
    let db = all_bytes(&s.data_dir());
    assert!(
        contains(&db, &public),
        "the public key should be stored (sanity check)"
    );
    assert!(
        !contains(&db, &private),
        "the private key is in the database files"
    );
    // The preshared key is in control.db by design (the server interface needs it),
    // like the agents' HMAC keys; the private key is nowhere.
}

/// Without `server_public_key`, the file names the key the agent last reported for the
/// interface (a real batch through a real `sentra-ingest` pipeline).
#[tokio::test]
async fn server_key_comes_from_the_agents_report() {
    use sentra_core::{Batch, Method, Nonce, Seq, Signer, UnixMillis, Verifier, WgDevice};
    let s = start_full(test_config(), true).await;
    let admin = s.admin().await;
    let a = s.enroll(&admin, "edge-report").await;
    let base = format!("/api/v1/agents/{}/interfaces/wg0", a.agent_id);
    let r = s
        .send(
            HttpMethod::PUT,
            &format!("{base}/pool"),
            Some(&admin),
            Some(json!({ "prefixes": ["10.77.0.0/24"] })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let now = UnixMillis::now();
    let mut batch = Batch::new(a.agent_id.clone(), Seq::new(1).unwrap(), now);
    batch.wg_devices.push(
        WgDevice::new("wg0", 3)
            .with_public_key(sentra_core::WgPublicKey::from_bytes([42; 32]))
            .with_listen_port(51820)
            .with_peers(vec![
                sentra_core::WgPeer::new(sentra_core::WgPublicKey::from_bytes([5; 32]))
                    .with_last_handshake(now)
                    .with_transfer(1234, 99),
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
    s.ingest
        .as_ref()
        .unwrap()
        .service()
        .push(verified)
        .await
        .unwrap();
    let reported = wg_key(42);
    // The status cache is fed by the pipeline's worker: wait for the interface to show.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let body = json!({ "endpoint": "vpn.example.com:51820" });
    let r = loop {
        let r = s
            .post(&format!("{base}/peers"), Some(&admin), body.clone())
            .await;
        if r.status != StatusCode::CONFLICT {
            break r;
        }
        assert!(r.text.contains("server_public_key"), "{}", r.text);
        assert!(
            std::time::Instant::now() < deadline,
            "the reported interface never reached the status cache"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let config = r.json()["client"]["config"].as_str().unwrap().to_owned();
    assert_eq!(line(&config, "PublicKey"), Some(reported.as_str()));
    assert_eq!(line(&config, "Address"), Some("10.77.0.2/32"));
    // `show` carries no status for a peer the agent has not reported.
    let key = r.json()["peer"]["public_key"].as_str().unwrap().to_owned();
    let r = s
        .get(&format!("{base}/peers/{}", url_safe(&key)), Some(&admin))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.json()["status"].is_null(), "{}", r.text);
    // A peer the agent reported shows its live state.
    let r = s
        .post(
            &format!("{base}/peers"),
            Some(&admin),
            json!({ "endpoint": "vpn.example.com:51820", "public_key": wg_key(5) }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = s
        .get(
            &format!("{base}/peers/{}", url_safe(&wg_key(5))),
            Some(&admin),
        )
        .await;
    assert_eq!(r.json()["status"]["rx_bytes"], 1234, "{}", r.text);
}
