//! `sentra agent rotate-key --reset-sequence` against a real `sentra-server` process with
//! its local agent (issue 10 item 13: operators reset an agent's sequence with the key
//! rotation).

mod common;

use std::time::{Duration, Instant};

use common::{Server, ok, run};

#[test]
fn rotate_key_with_reset_sequence() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::spawn(tmp.path(), &["--local-agent"], None);
    let (data, cli_dir, api) = (
        server.data.clone(),
        server.cli_dir.clone(),
        server.api.clone(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&run(&cli_dir, &api, &["status"], None).stderr).contains("401") {
        assert!(Instant::now() < deadline, "server never came up");
        std::thread::sleep(Duration::from_millis(200));
    }
    let data_s = data.to_str().unwrap();
    ok(&run(
        &cli_dir,
        &api,
        &["init", "--data-dir", data_s, "--password-stdin"],
        Some("a long enough passphrase\n"),
    ));
    ok(&run(
        &cli_dir,
        &api,
        &["login", "--password-stdin"],
        Some("a long enough passphrase\n"),
    ));
    // Wait until the local agent has shipped, so the server holds a high-water mark.
    let deadline = Instant::now() + Duration::from_secs(30);
    let agent_id = loop {
        let v: serde_json::Value = serde_json::from_str(&ok(&run(
            &cli_dir,
            &api,
            &["metrics", "latest", "node_load1", "--json"],
            None,
        )))
        .unwrap();
        if let Some(id) = v["values"][0]["series"]["agent_id"].as_str() {
            break id.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the local agent never shipped: {v}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };

    let text = ok(&run(
        &cli_dir,
        &api,
        &[
            "agent",
            "rotate-key",
            &agent_id,
            "--overlap",
            "1h",
            "--reset-sequence",
        ],
        None,
    ));
    assert!(text.contains("now has key 2"), "{text}");
    assert!(
        text.contains("Sequence reset: the server forgot high-water mark "),
        "{text}"
    );
    // Without the flag: a plain rotation, no reset.
    let v: serde_json::Value = serde_json::from_str(&ok(&run(
        &cli_dir,
        &api,
        &["agent", "rotate-key", &agent_id, "--json"],
        None,
    )))
    .unwrap();
    assert_eq!(v["new_key_id"], 3, "{v}");
    assert!(v.get("sequence_reset").is_none(), "{v}");
    let v: serde_json::Value = serde_json::from_str(&ok(&run(
        &cli_dir,
        &api,
        &[
            "agent",
            "rotate-key",
            &agent_id,
            "--reset-sequence",
            "--json",
        ],
        None,
    )))
    .unwrap();
    assert_eq!(v["new_key_id"], 4, "{v}");
    assert!(v["sequence_reset"].is_object(), "{v}");
}
