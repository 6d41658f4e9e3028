//! Control-plane tests over real HTTP on loopback with a real SQLite control store.

mod support;

use std::{os::unix::fs::PermissionsExt as _, time::Duration};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method as HttpMethod, StatusCode};
use sentra_api::Actor;
use sentra_core::{Keyring as _, Method, UnixMillis, Verifier};
use serde_json::{Value, json};
use support::*;
use tower::ServiceExt as _;

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn now_s() -> i64 {
    UnixMillis::now().as_millis() / 1000
}

fn good_claims() -> serde_json::Map<String, Value> {
    let now = now_s();
    json!({
        "iss": "sentra", "aud": "sentra-api", "sub": ADMIN, "exp": now + 300,
        "nbf": now - 5, "iat": now, "jti": "x", "role": "admin", "typ": "access"
    })
    .as_object()
    .unwrap()
    .clone()
}

/// The claims of a token (no verification).
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn jwt_matrix() {
    let s = start().await;
    // The admin's current token version, as a login puts it into its tokens.
    let ver = claims_of(&s.admin().await)["ver"].clone();
    assert!(ver.is_u64(), "{ver}");
    let good_claims = || {
        let mut c = good_claims();
        c.insert("ver".into(), ver.clone());
        c
    };
    let key = std::fs::read(s.data_dir().join("jwt-hs256.key")).unwrap();
    assert_eq!(key.len(), 32);
    let sign = |claims: &serde_json::Map<String, Value>| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(&key),
        )
        .unwrap()
    };
    // A correctly forged token is accepted: the matrix below differs in one thing each.
    let ok = sign(&good_claims());
    assert_eq!(
        s.get("/api/v1/users", Some(&ok)).await.status,
        StatusCode::OK
    );

    let mut bad: Vec<(&str, String)> = Vec::new();
    let enc_claims = b64url(serde_json::to_string(&good_claims()).unwrap().as_bytes());
    bad.push((
        "alg none",
        format!("{}.{enc_claims}.", b64url(br#"{"alg":"none","typ":"JWT"}"#)),
    ));
    // EdDSA header (HS/EdDSA confusion): an HMAC over the same input labelled EdDSA.
    let eddsa_input = format!("{}.{enc_claims}", b64url(br#"{"alg":"EdDSA","typ":"JWT"}"#));
    let mac = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
        eddsa_input.as_bytes(),
    );
    bad.push((
        "EdDSA header",
        format!("{eddsa_input}.{}", b64url(mac.as_ref())),
    ));
    bad.push((
        "HS384",
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS384),
            &good_claims(),
            &EncodingKey::from_secret(&key),
        )
        .unwrap(),
    ));
    bad.push((
        "wrong secret",
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &good_claims(),
            &EncodingKey::from_secret(&[9u8; 32]),
        )
        .unwrap(),
    ));
    for (what, field, value) in [
        ("wrong aud", "aud", json!("other-api")),
        ("wrong iss", "iss", json!("evil")),
        ("expired", "exp", json!(now_s() - 120)),
        ("not yet valid", "nbf", json!(now_s() + 120)),
        ("refresh typ", "typ", json!("refresh")),
    ] {
        let mut c = good_claims();
        c.insert(field.into(), value);
        bad.push((what, sign(&c)));
    }
    // Correctly signed, but not the user's current token version (ended by a logout or a
    // password change, or issued to an earlier user of the same name).
    let mut c = good_claims();
    c.insert("ver".into(), json!(ver.as_u64().unwrap() + 1));
    bad.push(("stale token version", sign(&c)));
    let mut c = good_claims();
    c.insert("sub".into(), json!("no-such-user"));
    bad.push(("unknown user", sign(&c)));
    for missing in ["exp", "nbf", "aud", "iss", "sub", "ver"] {
        let mut c = good_claims();
        c.remove(missing);
        bad.push(("missing claim", sign(&c)));
    }
    bad.push(("garbage", "not.a.jwt".into()));
    bad.push(("empty", String::new()));
    let mut tampered = ok.clone();
    tampered.pop();
    tampered.push(if ok.ends_with('A') { 'B' } else { 'A' });
    bad.push(("tampered signature", tampered));

    for (what, token) in &bad {
        let r = s.get("/api/v1/users", Some(token)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", r.text);
        assert_eq!(r.error_code(), "unauthenticated", "{what}");
        assert_eq!(r.headers["www-authenticate"], "Bearer");
    }
    // No header, wrong scheme.
    let r = s.get("/api/v1/users", None).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (StatusCode::UNAUTHORIZED, "unauthenticated")
    );
    let r = s
        .client
        .get(format!("{}/api/v1/users", s.base))
        .basic_auth(ADMIN, Some(ADMIN_PW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Viewer: may read, may not mutate.
    let viewer = s.viewer().await;
    assert_eq!(
        s.get("/api/v1/agents", Some(&viewer)).await.status,
        StatusCode::OK
    );
    for (method, path, body) in [
        (HttpMethod::GET, "/api/v1/users", None),
        (HttpMethod::GET, "/api/v1/audit", None),
        (HttpMethod::POST, "/api/v1/tokens", Some(json!({}))),
        (
            HttpMethod::POST,
            "/api/v1/users",
            Some(json!({"username": "x", "password": "yyyyyyyyyy", "role": "admin"})),
        ),
        (HttpMethod::POST, "/api/v1/agents/a-1/rotate-key", None),
        (HttpMethod::POST, "/api/v1/agents/a-1/revoke", None),
        (HttpMethod::DELETE, "/api/v1/agents/a-1", None),
        (
            HttpMethod::PUT,
            "/api/v1/agents/a-1/desired/wg0",
            Some(json!({"peers": []})),
        ),
    ] {
        let r = s.send(method.clone(), path, Some(&viewer), body).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{method} {path}: {}",
            r.text
        );
        assert_eq!(r.error_code(), "forbidden");
    }
    // The viewer's own token says role viewer; changing the claim breaks the signature.
    let me = s.get("/api/v1/auth/me", Some(&viewer)).await.json();
    assert_eq!(me["role"], "viewer");
}

/// Tokens are checked against the current user on every request: a deleted, disabled or
/// logged-out user's token, and tokens from before a password change, stop at once; a role
/// change applies at once.
#[tokio::test]
async fn jwt_matrix_current_user() {
    let s = start().await;
    let admin = s.admin().await;
    let create = |name: &'static str, role: &'static str| {
        let s = &s;
        let admin = admin.clone();
        async move {
            let r = s
                .post(
                    "/api/v1/users",
                    Some(&admin),
                    json!({"username": name, "password": format!("{name}-long-password"), "role": role}),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
            s.login(name, &format!("{name}-long-password")).await
        }
    };
    let new_admin =
        |name: &'static str| json!({"username": name, "password": "xxxxxxxxxxxx", "role": "admin"});

    // Deleted user: its token must not create an admin (it did: 201).
    let gone = create("gone", "admin").await;
    assert_eq!(
        s.get("/api/v1/users", Some(&gone)).await.status,
        StatusCode::OK
    );
    let r = s
        .send(HttpMethod::DELETE, "/api/v1/users/gone", Some(&admin), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = s
        .post("/api/v1/users", Some(&gone), new_admin("backdoor"))
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "deleted user: {}",
        r.text
    );
    assert_eq!(r.error_code(), "unauthenticated");
    assert_eq!(
        s.get("/api/v1/auth/me", Some(&gone)).await.status,
        StatusCode::UNAUTHORIZED
    );
    // A new user of the same name does not revive the old token.
    create("gone", "viewer").await;
    assert_eq!(
        s.get("/api/v1/auth/me", Some(&gone)).await.status,
        StatusCode::UNAUTHORIZED,
        "recreated user"
    );

    // Disabled user: tokens stop, login is refused; enabling again needs a new login.
    let dis = create("dis", "admin").await;
    let r = s
        .send(
            HttpMethod::PATCH,
            "/api/v1/users/dis",
            Some(&admin),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["disabled"], true);
    let r = s
        .post("/api/v1/users", Some(&dis), new_admin("backdoor"))
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "disabled user: {}",
        r.text
    );
    let r = s
        .post(
            "/api/v1/auth/login",
            None,
            json!({"username": "dis", "password": "dis-long-password"}),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "disabled login: {}",
        r.text
    );
    let r = s
        .send(
            HttpMethod::PATCH,
            "/api/v1/users/dis",
            Some(&admin),
            Some(json!({"disabled": false})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        s.get("/api/v1/auth/me", Some(&dis)).await.status,
        StatusCode::UNAUTHORIZED,
        "a token from before the disable stays dead"
    );
    s.login("dis", "dis-long-password").await;

    // Demoted admin: admin calls are refused at once (403), reads still work as viewer.
    let demoted = create("demoted", "admin").await;
    let r = s
        .send(
            HttpMethod::PATCH,
            "/api/v1/users/demoted",
            Some(&admin),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = s
        .post("/api/v1/users", Some(&demoted), new_admin("backdoor"))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "demoted: {}", r.text);
    assert_eq!(
        s.get("/api/v1/auth/me", Some(&demoted)).await.json()["role"],
        "viewer"
    );
    // Promoted viewer: admin at once.
    let promoted = create("promoted", "viewer").await;
    s.send(
        HttpMethod::PATCH,
        "/api/v1/users/promoted",
        Some(&admin),
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_eq!(
        s.get("/api/v1/users", Some(&promoted)).await.status,
        StatusCode::OK
    );

    // Logout ends the user's tokens.
    let out = create("out", "admin").await;
    let out2 = s.login("out", "out-long-password").await;
    let r = s
        .send(HttpMethod::POST, "/api/v1/auth/logout", Some(&out), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    for t in [&out, &out2] {
        let r = s
            .post("/api/v1/users", Some(t), new_admin("backdoor"))
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "logged out: {}", r.text);
    }
    s.login("out", "out-long-password").await;

    // Own password change: old tokens die, the old password is refused, the new one works.
    let pw = create("pw", "viewer").await;
    let r = s
        .post(
            "/api/v1/auth/password",
            Some(&pw),
            json!({"current_password": "wrong password", "new_password": "pw-new-long-password"}),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "wrong current: {}",
        r.text
    );
    assert_eq!(
        s.get("/api/v1/auth/me", Some(&pw)).await.status,
        StatusCode::OK
    );
    let r = s
        .post(
            "/api/v1/auth/password",
            Some(&pw),
            json!({"current_password": "pw-long-password", "new_password": "pw-new-long-password"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(
        s.get("/api/v1/auth/me", Some(&pw)).await.status,
        StatusCode::UNAUTHORIZED,
        "token from before the password change"
    );
    let r = s
        .post(
            "/api/v1/auth/login",
            None,
            json!({"username": "pw", "password": "pw-long-password"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let pw = s.login("pw", "pw-new-long-password").await;
    // An admin resets the password: that user's tokens die too.
    let r = s
        .send(
            HttpMethod::PATCH,
            "/api/v1/users/pw",
            Some(&admin),
            Some(json!({"password": "reset-by-admin-pw"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        s.get("/api/v1/auth/me", Some(&pw)).await.status,
        StatusCode::UNAUTHORIZED
    );
    s.login("pw", "reset-by-admin-pw").await;

    // The last enabled admin can be neither demoted nor disabled.
    for name in ["gone", "dis", "promoted", "out"] {
        let r = s
            .send(
                HttpMethod::DELETE,
                &format!("/api/v1/users/{name}"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{name}: {}", r.text);
    }
    for body in [json!({"role": "viewer"}), json!({"disabled": true})] {
        let r = s
            .send(
                HttpMethod::PATCH,
                &format!("/api/v1/users/{ADMIN}"),
                Some(&admin),
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{body}: {}", r.text);
    }
    let r = s
        .send(
            HttpMethod::PATCH,
            "/api/v1/users/nobody",
            Some(&admin),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    assert_eq!(
        s.get("/api/v1/users", Some(&admin)).await.status,
        StatusCode::OK
    );
    let users = s.get("/api/v1/users", Some(&admin)).await.json();
    assert!(
        !users.to_string().contains("backdoor"),
        "no stale token created a user: {users}"
    );
    let audit = s.audit(&admin).await;
    for action in ["user.update", "auth.logout", "auth.password"] {
        assert!(
            audit
                .iter()
                .any(|e| e["action"] == action && e["outcome"] == "success"),
            "{action} audited"
        );
    }
}

#[tokio::test]
async fn malformed_bodies_change_nothing() {
    let s = start().await;
    let admin = s.admin().await;
    let users_before = s.get("/api/v1/users", Some(&admin)).await.json();
    let audit_before = s.audit(&admin).await.len();
    let cases: Vec<(Option<&str>, Vec<u8>)> = vec![
        (Some("application/json"), b"{not json".to_vec()),
        (
            Some("application/json"),
            br#"{"username":"mallory","password":"long enough pw","ro"#.to_vec(),
        ),
        (
            Some("application/json"),
            br#"{"username":"mallory","password":"long enough pw"}"#.to_vec(),
        ),
        (
            Some("application/json"),
            br#"{"username":"mallory","password":42,"role":"admin"}"#.to_vec(),
        ),
        (
            Some("application/json"),
            br#"{"username":"mallory","password":"long enough pw","role":"root"}"#.to_vec(),
        ),
        (
            Some("application/json"),
            br#"{"username":"mallory","password":"long enough pw","role":"admin","extra":1}"#
                .to_vec(),
        ),
        (Some("application/json"), br#"["username"]"#.to_vec()),
        (Some("application/json"), Vec::new()),
        (
            Some("text/plain"),
            br#"{"username":"mallory","password":"long enough pw","role":"admin"}"#.to_vec(),
        ),
        (
            None,
            br#"{"username":"mallory","password":"long enough pw","role":"admin"}"#.to_vec(),
        ),
        (
            Some("application/json"),
            br#"{"username":"bad name!","password":"long enough pw","role":"admin"}"#.to_vec(),
        ),
        (
            Some("application/json"),
            br#"{"username":"mallory","password":"short","role":"admin"}"#.to_vec(),
        ),
    ];
    for (ct, body) in cases {
        let shown = String::from_utf8_lossy(&body).into_owned();
        let r = s
            .raw(HttpMethod::POST, "/api/v1/users", Some(&admin), ct, body)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{shown}: {}", r.text);
        assert_eq!(r.error_code(), "invalid_request", "{shown}");
        assert!(
            !r.text.contains("long enough pw"),
            "body echoed: {}",
            r.text
        );
    }
    // Oversized: 413 with a JSON error, also with a lying/chunked length.
    let mut big = br#"{"username":"mallory","role":"admin","password":""#.to_vec();
    big.extend(std::iter::repeat_n(b'a', 2 * 1024 * 1024));
    big.extend(br#""}"#);
    let r = s
        .raw(
            HttpMethod::POST,
            "/api/v1/users",
            Some(&admin),
            Some("application/json"),
            big.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text);
    assert_eq!(r.error_code(), "payload_too_large");
    let stream = futures_util::stream::iter(
        big.chunks(64 * 1024)
            .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let r = s
        .client
        .post(format!("{}/api/v1/users", s.base))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(
        status == StatusCode::PAYLOAD_TOO_LARGE || status == StatusCode::BAD_REQUEST,
        "{status} {text}"
    );
    assert!(serde_json::from_str::<Value>(&text).unwrap()["error"]["code"].is_string());
    // Malformed desired peers and bootstrap-token requests too.
    for (path, body) in [
        ("/api/v1/tokens", json!({"ttl_s": "soon"})),
        ("/api/v1/tokens", json!({"ttl_s": 0})),
        ("/api/v1/tokens", json!({"ttl_s": 99_999_999})),
    ] {
        let r = s.post(path, Some(&admin), body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.text);
    }
    let r = s
        .raw(
            HttpMethod::POST,
            "/api/v1/agent/key",
            None,
            Some("application/x-protobuf"),
            b"\xff\xff\xff".to_vec(),
        )
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );

    assert_eq!(
        s.get("/api/v1/users", Some(&admin)).await.json(),
        users_before
    );
    let tokens = s.get("/api/v1/tokens", Some(&admin)).await.json();
    assert_eq!(tokens["tokens"].as_array().unwrap().len(), 0);
    // Only reads happened: the audit log did not grow.
    assert_eq!(s.audit(&admin).await.len(), audit_before);
    // Unknown routes and methods are JSON errors too.
    let r = s.get("/api/v1/nope", Some(&admin)).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (StatusCode::NOT_FOUND, "no_route")
    );
    let r = s
        .send(HttpMethod::PATCH, "/api/v1/users", Some(&admin), None)
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.error_code(), "method_not_allowed");
}

#[tokio::test]
async fn enrolment_is_single_use_under_concurrency() {
    let s = start().await;
    let admin = s.admin().await;
    let token = s.issue_token(&admin, 600).await;
    assert!(token.starts_with("sntb_"));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let client = s.client.clone();
        let url = format!("{}/api/v1/agents/enroll", s.base);
        let body = json!({ "token": token, "name": format!("edge {i}") });
        tasks.push(tokio::spawn(async move {
            let r = client.post(url).json(&body).send().await.unwrap();
            (r.status(), r.text().await.unwrap())
        }));
    }
    let mut created = 0;
    for t in tasks {
        let (status, text) = t.await.unwrap();
        match status {
            StatusCode::CREATED => created += 1,
            StatusCode::UNAUTHORIZED => assert!(text.contains("invalid_bootstrap_token"), "{text}"),
            other => panic!("{other}: {text}"),
        }
    }
    assert_eq!(created, 1);
    let agents = s.get("/api/v1/agents", Some(&admin)).await.json();
    assert_eq!(agents["agents"].as_array().unwrap().len(), 1);
    let tokens = s.get("/api/v1/tokens", Some(&admin)).await.json();
    let t = &tokens["tokens"][0];
    assert!(
        t["used_ms"].is_i64() && t["used_by_agent"].is_string(),
        "{t}"
    );
    assert!(!tokens.to_string().contains(&token), "token listed back");
    let enrols = s
        .audit(&admin)
        .await
        .into_iter()
        .filter(|e| e["action"] == "agent.enroll")
        .count();
    assert_eq!(enrols, 1);
}

#[tokio::test]
async fn expired_and_unknown_bootstrap_tokens_are_refused() {
    let s = start().await;
    let admin = s.admin().await;
    let token = s.issue_token(&admin, 1).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for t in [token.as_str(), "sntb_unknown", ""] {
        let r = s
            .post(
                "/api/v1/agents/enroll",
                None,
                json!({ "token": t, "name": "late" }),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
        assert_eq!(r.error_code(), "invalid_bootstrap_token");
    }
    let agents = s.get("/api/v1/agents", Some(&admin)).await.json();
    assert!(agents["agents"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn key_rotation_with_overlap() {
    let s = start().await;
    let admin = s.admin().await;
    let old = s.enroll(&admin, "edge-rot").await;
    assert_eq!(old.key_id.get(), 1);

    // Nothing new yet: the newest key is the one in use.
    let r = s.fetch_key(&old).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["key_id"], 1);
    assert_eq!(r.json()["secret"], old.secret_b64);

    let path = format!("/api/v1/agents/{}/rotate-key?overlap_s=3600", old.agent_id);
    let r = s.send(HttpMethod::POST, &path, Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let rot = r.json();
    assert_eq!(rot["new_key_id"], 2);
    assert!(
        !r.text.contains("secret"),
        "admin must not see the new secret: {}",
        r.text
    );
    let not_after = rot["previous_keys_not_after_ms"].as_i64().unwrap();

    // The agent collects key 2 with a request signed by key 1.
    let r = s.fetch_key(&old).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let body = r.json();
    assert_eq!(body["key_id"], 2);
    assert_eq!(body["signed_with_key_id"], 1);
    assert_eq!(body["signed_with_not_after_ms"], not_after);
    assert_eq!(r.headers["cache-control"], "no-store");
    let mut new = AgentCreds::from_json(&body);
    new.agent_id = old.agent_id.clone();
    assert_ne!(new.secret_b64, old.secret_b64);

    // Both keys verify during the overlap; only the new one after it.
    let keyring = s.api.keyring();
    let v = Verifier::new();
    let now = UnixMillis::now();
    assert!(
        v.verify(
            &old.sign_at(Method::Push, 0, now),
            Method::Push,
            now,
            &keyring
        )
        .is_ok()
    );
    assert!(
        v.verify(
            &new.sign_at(Method::Push, 0, now),
            Method::Push,
            now,
            &keyring
        )
        .is_ok()
    );
    let later = UnixMillis::from_millis(not_after + 1);
    assert!(matches!(
        v.verify(
            &old.sign_at(Method::Push, 0, later),
            Method::Push,
            later,
            &keyring
        ),
        Err(sentra_core::Error::KeyNotValid { .. })
    ));
    assert!(
        v.verify(
            &new.sign_at(Method::Push, 0, later),
            Method::Push,
            later,
            &keyring
        )
        .is_ok()
    );

    // A captured request cannot be replayed; a request signed for another method is refused.
    let env = new.sign(Method::FetchKey, 0);
    assert_eq!(s.post_envelope(&env).await.status, StatusCode::OK);
    let r = s.post_envelope(&env).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (StatusCode::UNAUTHORIZED, "unauthenticated")
    );
    let r = s.post_envelope(&new.sign(Method::Push, 0)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // A clock far off gets the server time back.
    let skewed = new.sign_at(
        Method::FetchKey,
        0,
        UnixMillis::from_millis(UnixMillis::now().as_millis() - 3_600_000),
    );
    let r = s.post_envelope(&skewed).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (StatusCode::UNAUTHORIZED, "clock_skew")
    );

    // Over REST: once the overlap has passed, the old key is refused. (Store call with a
    // 1 s overlap; the endpoint enforces at least 60 s.)
    s.api
        .store()
        .rotate_key(&Actor::local(), &old.agent_id, Duration::from_secs(1))
        .await
        .unwrap();
    let r = s.fetch_key(&new).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["key_id"], 3);
    let mut third = AgentCreds::from_json(&r.json());
    third.agent_id = old.agent_id.clone();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for expired in [&old, &new] {
        let r = s.fetch_key(expired).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    }
    let r = s.fetch_key(&third).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (
            r.json()["key_id"].as_u64(),
            r.json()["signed_with_not_after_ms"].is_null()
        ),
        (Some(3), true)
    );

    let r = s
        .send(
            HttpMethod::POST,
            &format!("/api/v1/agents/{}/rotate-key?overlap_s=5", old.agent_id),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let actions: Vec<String> = s
        .audit(&admin)
        .await
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        actions.iter().filter(|a| *a == "agent.rotate_key").count(),
        2
    );
    assert!(actions.iter().filter(|a| *a == "agent.fetch_key").count() >= 4);
}

#[tokio::test]
async fn revoke_takes_effect_at_once_and_delete_removes() {
    let s = start().await;
    let admin = s.admin().await;
    let a = s.enroll(&admin, "edge-rev").await;
    let keyring = s.api.keyring();
    assert!(keyring.lookup(&a.agent_id, a.key_id).is_some());
    let r = s
        .send(
            HttpMethod::POST,
            &format!("/api/v1/agents/{}/revoke", a.agent_id),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.json()["revoked_ms"].is_i64());
    assert!(keyring.lookup(&a.agent_id, a.key_id).is_none());
    assert_eq!(s.fetch_key(&a).await.status, StatusCode::UNAUTHORIZED);
    let r = s
        .send(
            HttpMethod::POST,
            &format!("/api/v1/agents/{}/rotate-key", a.agent_id),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = s
        .send(
            HttpMethod::POST,
            &format!("/api/v1/agents/{}/revoke", a.agent_id),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    // A restart reloads the keyring from the database: still revoked. (Without the
    // control-version poller, this second store only sees what it loaded at open.)
    let mut no_poll = sentra_api::StoreOptions::default();
    no_poll.reload_interval = None;
    let reopened = sentra_api::ControlStore::open(&s.data_dir(), no_poll)
        .await
        .unwrap();
    assert!(reopened.keyring().lookup(&a.agent_id, a.key_id).is_none());

    let b = s.enroll(&admin, "edge-del").await;
    assert!(reopened.keyring().agents() == 0);
    let r = s
        .send(
            HttpMethod::DELETE,
            &format!("/api/v1/agents/{}", b.agent_id),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert!(keyring.lookup(&b.agent_id, b.key_id).is_none());
    let r = s
        .get(&format!("/api/v1/agents/{}", b.agent_id), Some(&admin))
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let r = s
        .send(
            HttpMethod::DELETE,
            &format!("/api/v1/agents/{}", b.agent_id),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let audit = s.audit(&admin).await;
    for action in ["agent.revoke", "agent.delete"] {
        assert!(
            audit
                .iter()
                .any(|e| e["action"] == action && e["outcome"] == "success"),
            "{action}"
        );
    }
    assert!(
        audit
            .iter()
            .any(|e| e["action"] == "agent.revoke" && e["outcome"] == "conflict")
    );
}

#[tokio::test]
async fn desired_peers_and_fetch_desired_state() {
    let s = start().await;
    let admin = s.admin().await;
    let a = s.enroll(&admin, "edge-peers").await;
    let base = format!("/api/v1/agents/{}/desired", a.agent_id);
    let put = |iface: &str, body: Value| {
        let path = format!("{base}/{iface}");
        let s = &s;
        let admin = admin.clone();
        async move {
            s.send(HttpMethod::PUT, &path, Some(&admin), Some(body))
                .await
        }
    };
    // Validation: 400 for bad keys/prefixes, 409 for an IP claimed twice.
    for bad in [
        json!({"peers": [{"public_key": "short"}]}),
        json!({"peers": [{"public_key": wg_key(1), "allowed_ips": ["10.0.0.0/40"]}]}),
        json!({"peers": [{"public_key": wg_key(1), "endpoint": "host:1"}]}),
        json!({"peers": [{"public_key": wg_key(1), "bogus": 1}]}),
    ] {
        let r = put("wg0", bad.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
    }
    // Names that reach the handler and fail validation (a '/' would never be routed).
    for bad_name in ["0123456789abcdef", "wg%200", "wg0:1"] {
        let r = put(bad_name, json!({"peers": []})).await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{bad_name}: {}",
            r.text
        );
    }
    let r = put(
        "wg0",
        json!({"peers": [
            {"public_key": wg_key(1), "allowed_ips": ["10.0.0.1/24"]},
            {"public_key": wg_key(2), "allowed_ips": ["10.0.0.0/24"]}
        ]}),
    )
    .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (StatusCode::CONFLICT, "conflict")
    );
    let info = s.get(&base, Some(&admin)).await.json();
    assert_eq!(info["revision"], 0);

    let r = put(
        "wg0",
        json!({"peers": [
            {"public_key": wg_key(1), "allowed_ips": ["10.0.0.7/24", "fd00::2"], "endpoint": "192.0.2.1:51820", "persistent_keepalive_s": 25},
            {"public_key": wg_key(2), "allowed_ips": ["10.0.1.2/32"]}
        ]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["revision"], 1);
    // Same declaration again: no new revision.
    let again = put(
        "wg0",
        json!({"peers": [
            {"public_key": wg_key(1), "allowed_ips": ["10.0.0.0/24", "fd00::2/128"], "endpoint": "192.0.2.1:51820", "persistent_keepalive_s": 25},
            {"public_key": wg_key(2), "allowed_ips": ["10.0.1.2"]}
        ]}),
    )
    .await;
    assert_eq!(again.json()["revision"], 1, "{}", again.text);
    let viewer = s.viewer().await;
    let info = s.get(&base, Some(&viewer)).await.json();
    assert_eq!(
        info["interfaces"][0]["peers"][0]["allowed_ips"],
        json!(["10.0.0.0/24", "fd00::2/128"])
    );

    // The gRPC side: a verified FetchDesiredState envelope into the tower service.
    let keyring = s.api.keyring();
    let now = UnixMillis::now();
    let verified = Verifier::new()
        .verify(
            &a.sign(Method::FetchDesiredState, 0),
            Method::FetchDesiredState,
            now,
            &keyring,
        )
        .unwrap();
    let state = s
        .api
        .desired_state_service()
        .oneshot(verified)
        .await
        .unwrap();
    assert_eq!(state.revision, 1);
    assert!(!state.unchanged);
    assert_eq!(state.interfaces.len(), 1);
    assert_eq!(state.interfaces[0].name, "wg0");
    assert_eq!(state.interfaces[0].peers[0].public_key, vec![1u8; 32]);
    assert_eq!(state.interfaces[0].peers[0].persistent_keepalive_s, 25);
    let verified = Verifier::new()
        .verify(
            &a.sign(Method::FetchDesiredState, 1),
            Method::FetchDesiredState,
            now,
            &keyring,
        )
        .unwrap();
    let state = s
        .api
        .desired_state_service()
        .oneshot(verified)
        .await
        .unwrap();
    assert!(state.unchanged && state.interfaces.is_empty() && state.revision == 1);

    let r = s
        .send(
            HttpMethod::DELETE,
            &format!("{base}/wg0"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.json()["revision"], 2);
    let r = s
        .send(
            HttpMethod::DELETE,
            &format!("{base}/wg0"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let audit = s.audit(&admin).await;
    assert!(
        audit
            .iter()
            .any(|e| e["action"] == "desired.set" && e["outcome"] == "conflict")
    );
    assert_eq!(
        audit
            .iter()
            .filter(|e| e["action"] == "desired.set" && e["outcome"] == "success")
            .count(),
        2
    );
}

#[tokio::test]
async fn every_mutation_is_audited() {
    let s = start().await;
    let admin = s.admin().await;
    let r = s
        .post(
            "/api/v1/users",
            Some(&admin),
            json!({"username": "bob", "password": "bob's long password", "role": "viewer"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = s
        .post(
            "/api/v1/users",
            Some(&admin),
            json!({"username": "bob", "password": "bob's long password", "role": "viewer"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let a = s.enroll(&admin, "edge-audit").await;
    s.send(
        HttpMethod::PUT,
        &format!("/api/v1/agents/{}/desired/wg0", a.agent_id),
        Some(&admin),
        Some(json!({"peers": []})),
    )
    .await;
    s.send(
        HttpMethod::POST,
        &format!("/api/v1/agents/{}/rotate-key", a.agent_id),
        Some(&admin),
        None,
    )
    .await;
    s.send(
        HttpMethod::POST,
        &format!("/api/v1/agents/{}/revoke", a.agent_id),
        Some(&admin),
        None,
    )
    .await;
    s.send(
        HttpMethod::DELETE,
        &format!("/api/v1/agents/{}", a.agent_id),
        Some(&admin),
        None,
    )
    .await;
    let r = s
        .send(HttpMethod::DELETE, "/api/v1/users/bob", Some(&admin), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = s
        .send(
            HttpMethod::DELETE,
            &format!("/api/v1/users/{ADMIN}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "last admin: {}", r.text);

    let audit = s.audit(&admin).await;
    let has = |action: &str, outcome: &str, actor: &str| {
        audit.iter().any(|e| {
            e["action"] == action
                && e["outcome"] == outcome
                && e["actor"].as_str().unwrap().starts_with(actor)
        })
    };
    let me = format!("user:{ADMIN}");
    assert!(has("user.create", "success", "local"), "init-created users");
    assert!(has("user.create", "success", &me));
    assert!(has("user.create", "conflict", &me));
    assert!(has("token.issue", "success", &me));
    assert!(has("agent.enroll", "success", "bootstrap-token:"));
    assert!(has("desired.set", "success", &me));
    assert!(has("agent.rotate_key", "success", &me));
    assert!(has("agent.revoke", "success", &me));
    assert!(has("agent.delete", "success", &me));
    assert!(has("user.delete", "success", &me));
    assert!(has("user.delete", "conflict", &me));
    assert!(has("auth.login", "success", &me));
    for e in &audit {
        assert!(e["at_ms"].as_i64().unwrap() > 0 && e["id"].as_i64().unwrap() > 0);
        assert!(!e["target"].as_str().unwrap().is_empty(), "{e}");
    }
    // Newest first, paging by id.
    let first = audit[0]["id"].as_i64().unwrap();
    let page = s
        .get(
            &format!("/api/v1/audit?before_id={first}&limit=2"),
            Some(&admin),
        )
        .await
        .json();
    assert_eq!(page["entries"].as_array().unwrap().len(), 2);
    assert!(page["entries"][0]["id"].as_i64().unwrap() < first);
}

#[tokio::test]
async fn login_is_rate_limited_and_uniform() {
    let mut config = test_config();
    config.login_failures_per_user = 3;
    let s = start_with(config).await;
    for _ in 0..3 {
        let r = s
            .post(
                "/api/v1/auth/login",
                None,
                json!({"username": ADMIN, "password": "wrong password"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    // Now even the right password is refused for a while.
    let r = s
        .post(
            "/api/v1/auth/login",
            None,
            json!({"username": ADMIN, "password": ADMIN_PW}),
        )
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert!(r.headers.contains_key("retry-after"));
    // Unknown user and wrong password look the same.
    let unknown = s
        .post(
            "/api/v1/auth/login",
            None,
            json!({"username": "nobody", "password": "wrong password"}),
        )
        .await;
    let wrong = s
        .post(
            "/api/v1/auth/login",
            None,
            json!({"username": VIEWER, "password": "wrong password"}),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.text, wrong.text);
    // Other accounts are unaffected.
    let t = s.viewer().await;
    assert!(!t.is_empty());
}

#[tokio::test]
async fn files_are_private_and_health_endpoints_answer() {
    let s = start().await;
    for f in ["control.db", "jwt-hs256.key"] {
        let mode = std::fs::metadata(s.data_dir().join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}: {mode:o}");
    }
    let fresh = s.data_dir().join("fresh");
    sentra_api::ControlStore::open(&fresh, sentra_api::StoreOptions::default())
        .await
        .unwrap();
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "data dir {mode:o}");
    assert_eq!(s.get("/healthz", None).await.status, StatusCode::OK);
    assert_eq!(s.get("/readyz", None).await.json()["status"], "ready");
    let m = s.get("/metrics", None).await;
    assert_eq!(m.status, StatusCode::OK);
    assert!(
        m.text.contains(
            "sentra_api_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1"
        ),
        "{}",
        m.text
    );
    // The JWT key survives a restart: tokens stay valid.
    let admin = s.admin().await;
    let again = sentra_api::Api::open(&s.data_dir(), test_config())
        .await
        .unwrap();
    drop(again);
    assert_eq!(
        s.get("/api/v1/users", Some(&admin)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn every_documented_route_is_served() {
    let s = start().await;
    let doc = s.get("/api/v1/openapi.json", None).await.json();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 15);
    for (path, ops) in paths {
        // A fresh token per path: `POST /api/v1/auth/logout` ends the ones before it.
        let admin = s.admin().await;
        let concrete = path
            .replace("{id}", "no-such-agent")
            .replace("{interface}", "wg9")
            .replace("{username}", "nobody");
        for (method, op) in ops.as_object().unwrap() {
            let m = HttpMethod::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
            let r = s.send(m, &concrete, Some(&admin), None).await;
            assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            if r.status == StatusCode::NOT_FOUND {
                assert_ne!(r.error_code(), "no_route", "{method} {path}");
            }
            // What the server answered is a response the document promises.
            assert!(
                op["responses"].get(r.status.as_str()).is_some(),
                "{method} {path}: {} is not documented",
                r.status
            );
        }
    }
}

#[tokio::test]
async fn login_is_limited_per_client_address() {
    let mut config = test_config();
    config.login_failures_per_user = 100;
    config.login_failures_per_ip = 3;
    let s = start_with(config).await;
    // Spraying different accounts from one address.
    for user in ["alice", "bob", "carol"] {
        let r = s
            .post(
                "/api/v1/auth/login",
                None,
                json!({"username": user, "password": "guess guess"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = s
        .post(
            "/api/v1/auth/login",
            None,
            json!({"username": ADMIN, "password": ADMIN_PW}),
        )
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    let m = s.get("/metrics", None).await.text;
    assert!(
        m.contains("sentra_api_logins_total{outcome=\"rate_limited\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("sentra_api_logins_total{outcome=\"failure\"} 3"),
        "{m}"
    );
}

/// The `method` and `route` labels of `sentra_api_http_requests_total` from its lines.
fn request_series(metrics: &str) -> std::collections::BTreeSet<String> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("sentra_api_http_requests_total{"))
        .map(|l| l.rsplit_once("} ").unwrap().0.to_owned())
        .collect()
}

fn label<'a>(series: &'a str, name: &str) -> &'a str {
    let start = series.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
    let rest = &series[start..];
    &rest[..rest.find('"').unwrap()]
}

/// Label values that come from requests are a closed set: made-up methods and paths do not
/// add series to `/metrics`.
#[tokio::test]
async fn metrics_labels_come_from_a_closed_set() {
    let s = start().await;
    let admin = s.admin().await;
    let doc = s.get("/api/v1/openapi.json", None).await.json();
    let mut templates: std::collections::BTreeSet<String> =
        doc["paths"].as_object().unwrap().keys().cloned().collect();
    templates.insert("unmatched".into());
    let send_junk = |round: u32| {
        let s = &s;
        let admin = admin.clone();
        async move {
            for i in 0..5 {
                let method = HttpMethod::from_bytes(format!("FOO{round}{i}").as_bytes()).unwrap();
                for path in [
                    "/healthz".to_owned(),
                    format!("/random-{round}-{i}"),
                    format!("/api/v1/nope/{round}/{i}"),
                ] {
                    s.send(method.clone(), &path, Some(&admin), None).await;
                }
                s.get(&format!("/x{round}{i}/y"), None).await;
                s.get(&format!("/api/v1/agents/agent-{round}-{i}"), Some(&admin))
                    .await;
            }
        }
    };
    send_junk(1).await;
    s.get("/metrics", None).await;
    let first = request_series(&s.get("/metrics", None).await.text);
    for series in &first {
        let method = label(series, "method");
        assert!(
            [
                "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
                "other"
            ]
            .contains(&method),
            "method label outside the closed set: {series}"
        );
        let route = label(series, "route");
        assert!(
            templates.contains(route),
            "route label is not a template: {series}"
        );
    }
    assert!(
        first
            .iter()
            .any(|l| l.contains("method=\"other\"") && l.contains("route=\"/healthz\"")),
        "{first:?}"
    );
    assert!(
        first
            .iter()
            .any(|l| l.contains("route=\"/api/v1/agents/{id}\"")),
        "{first:?}"
    );
    // More made-up methods and paths: no new series.
    send_junk(2).await;
    s.get("/metrics", None).await;
    let second = request_series(&s.get("/metrics", None).await.text);
    assert_eq!(first, second);
}
