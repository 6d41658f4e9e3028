//! `sentra alerts …` against a real `sentra-server` process on loopback (alert engine on by
//! default, the built-in WireGuard rules, notifications to the `log` receiver): rules and
//! alerts as tables and `--json`, silences added, listed, expired (also as `unsilence`),
//! a real test notification, and clear errors for a bad matcher, an unknown receiver or
//! silence, and a missing login.

mod common;

use common::Server;
use serde_json::Value;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok_json(s: &Server, args: &[&str]) -> Value {
    let out = s.run(args, None);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", stdout(&out)))
}

fn fails(s: &Server, args: &[&str]) -> String {
    let out = s.run(args, None);
    assert!(
        !out.status.success(),
        "{args:?} succeeded: {}",
        stdout(&out)
    );
    stderr(&out)
}

#[test]
fn alerts_rules_silences_and_a_receiver_test() {
    let root = tempfile::tempdir().unwrap();
    let s = Server::start(root.path(), &[]);

    // not logged in yet
    let err = fails(&s, &["alerts", "list"]);
    assert!(err.contains("401") && err.contains("sentra login"), "{err}");
    s.init_and_login();

    // the built-in rules
    let v = ok_json(&s, &["alerts", "rules", "--json"]);
    let names: Vec<&str> = v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    for want in [
        "WgHandshakeStale",
        "WgEndpointChanged",
        "WgTransferStalled",
        "WgInterfaceGone",
        "AgentOffline",
    ] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    let out = s.run(&["alerts", "rules"], None);
    let table = stdout(&out);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("wg_handshake_stale"), "{table}");

    // nothing fires on an empty fleet
    let v = ok_json(&s, &["alerts", "list", "--json"]);
    assert_eq!(v["alerts"], Value::Array(vec![]));
    let out = s.run(&["alerts", "list"], None);
    assert!(stdout(&out).contains("No alert"), "{}", stdout(&out));

    // silences
    let v = ok_json(
        &s,
        &[
            "alerts",
            "silence",
            "add",
            "agent=\"gw-1\"",
            "alertname=~\"Wg.*\"",
            "--for",
            "2h",
            "--comment",
            "maintenance",
            "--json",
        ],
    );
    let id = v["id"].as_u64().unwrap();
    let out = s.run(
        &["alerts", "silence", "add", "agent=\"gw-2\"", "--for", "30m"],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("created for 30m"), "{}", stdout(&out));
    let v = ok_json(&s, &["alerts", "silence", "list", "--json"]);
    let list = v["silences"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{v}");
    let mine = list.iter().find(|x| x["id"] == id).unwrap();
    assert_eq!(mine["state"], "active");
    assert_eq!(mine["comment"], "maintenance");
    assert_eq!(mine["created_by"], "admin");
    let table = stdout(&s.run(&["alerts", "silence", "list"], None));
    assert!(
        table.starts_with("ID") && table.contains("maintenance"),
        "{table}"
    );

    let out = s.run(&["alerts", "silence", "expire", &id.to_string()], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&format!("Silence {id} expired")));
    let v = ok_json(&s, &["alerts", "silence", "list", "--json"]);
    let mine = v["silences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == id)
        .unwrap()
        .clone();
    assert_eq!(mine["state"], "expired");
    // again: already expired (409); unknown: 404
    let err = fails(&s, &["alerts", "unsilence", &id.to_string()]);
    assert!(err.contains("409"), "{err}");
    let err = fails(&s, &["alerts", "silence", "expire", "999999"]);
    assert!(err.contains("404"), "{err}");

    // a bad matcher is refused with what is wrong
    let err = fails(
        &s,
        &["alerts", "silence", "add", "agent~~\"x\"", "--for", "1h"],
    );
    assert!(err.contains("400") && err.contains("matchers[0]"), "{err}");
    let err = fails(
        &s,
        &["alerts", "silence", "add", "a=\"b\"", "--for", "soon"],
    );
    assert!(err.contains("--for"), "{err}");

    // a real test notification through the built-in log receiver
    let v = ok_json(&s, &["alerts", "test", "log", "--json"]);
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["attempts"], 1, "{v}");
    let out = s.run(&["alerts", "test", "log"], None);
    assert!(
        stdout(&out).contains("Receiver log answered 200"),
        "{}",
        stdout(&out)
    );
    let err = fails(&s, &["alerts", "test", "nope"]);
    assert!(err.contains("404"), "{err}");
    let log = std::fs::read_to_string(root.path().join("server.log")).unwrap();
    assert!(log.contains("alert notification"), "{log}");
}
