//! Terminal injection (issue 10, item 17): label values with ESC, CR/LF, NUL
//! and bidi overrides are stored by a real server (a signed batch over gRPC from an enrolled
//! agent); every human-readable CLI output must show them escaped, never raw.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{Server, ok};
use sentra_core::{
    AgentId, Batch, KeyId, Labels, MetricName, Nonce, Sample, SecretKey, Seq, Signer, UnixMillis,
    Value,
};

const CLEAR: &str = "\x1b[2J\x1b[31mred";
const FAKE_ROW: &str = "ok\nagent-x  hostile_metric  fake=row  1  2020-01-01T00:00:00Z";
const BIDI: &str = "abc\u{202e}def\u{2066}ghi\u{2069}";
const CR_NUL: &str = "x\ry\0z\u{9b}1m";

/// Control characters that must never reach a terminal from data.
fn raw_controls(s: &str) -> Vec<char> {
    s.chars()
        .filter(|&c| {
            (c.is_control() && c != '\n')
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
        .collect()
}

/// Enrols an agent through the REST API (bootstrap token from `sentra agent enrol`), then
/// pushes one signed batch with hostile label values over gRPC.
async fn ingest_hostile(server: &Server) -> String {
    // (the server refuses control characters in agent names and token notes)
    let out = ok(&server.run(&["agent", "enrol", "evil", "--json"], None));
    let tok: serde_json::Value = serde_json::from_str(&out).unwrap();
    let token = tok["token"].as_str().unwrap();
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/api/v1/agents/enroll", server.api))
        .json(&serde_json::json!({ "token": token, "name": "evil" }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "enrol: {}", resp.status());
    let body: serde_json::Value = resp.json().await.unwrap();
    let agent_id = AgentId::new(body["agent_id"].as_str().unwrap()).unwrap();
    let key_id = KeyId::new(u32::try_from(body["key_id"].as_u64().unwrap()).unwrap());
    let secret = base64::engine::general_purpose::STANDARD
        .decode(body["secret"].as_str().unwrap())
        .unwrap();
    let signer = Signer::new(
        agent_id.clone(),
        key_id,
        &SecretKey::from_slice(&secret).unwrap(),
    );

    let now = UnixMillis::now();
    let mut batch = Batch::new(agent_id.clone(), Seq::new(1).unwrap(), now);
    batch.samples.push(Sample::new(
        MetricName::new("hostile_metric").unwrap(),
        Labels::from_pairs([
            ("clear", CLEAR),
            ("fake", FAKE_ROW),
            ("bidi", BIDI),
            ("crnul", CR_NUL),
        ])
        .unwrap(),
        now,
        Value::Gauge(1.0),
    ));
    let client = sentra_transport::Client::builder(format!("http://{}", server.grpc))
        .build()
        .unwrap();
    let ack = client
        .push(signer.sign_batch(&batch, UnixMillis::now(), Nonce::random()))
        .await
        .unwrap();
    assert_eq!(
        ack.status(),
        sentra_core::proto::AckStatus::Accepted,
        "{ack:?}"
    );
    agent_id.as_str().to_owned()
}

fn assert_escaped(what: &str, out: &str, want: &[&str]) {
    let raw = raw_controls(out);
    assert!(
        raw.is_empty(),
        "{what}: raw control characters {raw:?} in:\n{}",
        out.escape_debug()
    );
    for w in want {
        assert!(out.contains(w), "{what}: {w:?} not in:\n{out}");
    }
}

#[test]
fn hostile_label_values_are_escaped_in_human_output() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &[]);
    server.init_and_login();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let agent = rt.block_on(ingest_hostile(&server));

    // Stored raw (JSON keeps the exact value, escaped by JSON itself).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = ok(&server.run(&["metrics", "latest", "hostile_metric", "--json"], None));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        if let Some(x) = v["values"].as_array().and_then(|a| a.first()) {
            assert_eq!(x["series"]["labels"]["clear"], CLEAR);
            assert_eq!(x["series"]["labels"]["fake"], FAKE_ROW);
            assert!(raw_controls(&out).is_empty(), "JSON escapes: {out}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "hostile_metric never stored: {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let latest = ok(&server.run(&["metrics", "latest", "hostile_metric"], None));
    assert_escaped(
        "metrics latest",
        &latest,
        &[
            "\\u{1b}[2J\\u{1b}[31mred",
            "ok\\nagent-x",
            "abc\\u{202e}def\\u{2066}ghi\\u{2069}",
            "x\\ry\\0z\\u{9b}1m",
        ],
    );
    // header + exactly one row: the newline in the value did not fake a second row
    assert_eq!(latest.lines().count(), 2, "{latest}");
    assert!(latest.contains(&agent));

    let history = ok(&server.run(
        &["metrics", "history", "hostile_metric", "--since", "1h"],
        None,
    ));
    assert_escaped("metrics history", &history, &["\\u{1b}[2J", "ok\\nagent-x"]);

    let list = ok(&server.run(&["agent", "list"], None));
    assert_escaped("agent list", &list, &["evil"]);
    let show = ok(&server.run(&["agent", "show", &agent], None));
    assert_escaped("agent show", &show, &["evil"]);
    let tokens = ok(&server.run(&["token", "list"], None));
    assert_escaped("token list", &tokens, &[]);

    // errors echo server text (here: the agent id asked for) escaped too
    let missing = server.run(&["agent", "show", "no\x1b[2Jsuch"], None);
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        raw_controls(&err).is_empty(),
        "stderr: {}",
        err.escape_debug()
    );
}
