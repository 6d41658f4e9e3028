//! The admin commands against a real `sentra-server` process on loopback: init, login,
//! status, metrics, agents, tokens and doctor, plus the errors a person meets first
//! (not logged in, wrong password).

mod common;

use std::time::{Duration, Instant};

use common::{Server, ok, run};

#[test]
fn admin_commands_against_a_running_server() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::spawn(tmp.path(), &["--local-agent"], None);
    let (data, cli_dir, api) = (
        server.data.clone(),
        server.cli_dir.clone(),
        server.api.clone(),
    );

    // Before anything: a clear message, non-zero exit.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = run(&cli_dir, &api, &["status"], None);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success());
        if err.contains("401") {
            assert!(err.contains("sentra login"), "{err}");
            break;
        }
        assert!(Instant::now() < deadline, "server never came up: {err}");
        std::thread::sleep(Duration::from_millis(200));
    }

    let data_s = data.to_str().unwrap();
    // An init that fails (a password below the policy's 8 characters) leaves nothing behind:
    // neither control.db nor the directories it would have created.
    let fresh = tmp.path().join("fresh/data");
    let failed = run(
        &cli_dir,
        &api,
        &[
            "init",
            "--data-dir",
            fresh.to_str().unwrap(),
            "--password-stdin",
        ],
        Some("short\n"),
    );
    assert!(!failed.status.success());
    assert!(
        !tmp.path().join("fresh").exists(),
        "a failed init left {} behind",
        fresh.display()
    );
    // A successful one creates the directory 0700 (it was 0755) and prints JSON on request.
    let init: serde_json::Value = serde_json::from_str(&ok(&run(
        &cli_dir,
        &api,
        &[
            "init",
            "--data-dir",
            fresh.to_str().unwrap(),
            "--password-stdin",
            "--json",
        ],
        Some("a long enough passphrase\n"),
    )))
    .unwrap();
    assert_eq!(init["username"], "admin");
    assert_eq!(init["role"], "admin");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "data directory mode {mode:o}");
    }
    ok(&run(
        &cli_dir,
        &api,
        &["init", "--data-dir", data_s, "--password-stdin"],
        Some("a long enough passphrase\n"),
    ));
    // A second init for the same user fails clearly.
    let again = run(
        &cli_dir,
        &api,
        &["init", "--data-dir", data_s, "--password-stdin"],
        Some("a long enough passphrase\n"),
    );
    assert!(!again.status.success());

    let bad = run(
        &cli_dir,
        &api,
        &["login", "--password-stdin"],
        Some("wrong password here\n"),
    );
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("401"), "{err}");
    assert!(err.contains("wrong user name or password"), "{err}");
    assert!(!err.contains("sentra login"), "misleading hint: {err}");
    assert!(
        !err.contains("wrong password here"),
        "password echoed: {err}"
    );
    let login: serde_json::Value = serde_json::from_str(&ok(&run(
        &cli_dir,
        &api,
        &["login", "--password-stdin", "--json"],
        Some("a long enough passphrase\n"),
    )))
    .unwrap();
    assert_eq!(login["role"], "admin");
    assert_eq!(login["username"], "admin");
    assert!(login["expires_in_s"].as_u64().unwrap() > 0);
    assert!(
        login.get("access_token").is_none(),
        "token printed: {login}"
    );
    let bad_again = run(
        &cli_dir,
        &api,
        &["login", "--password-stdin"],
        Some("wrong password here\n"),
    );
    assert!(!bad_again.status.success());
    assert!(
        String::from_utf8_lossy(&bad_again.stderr).contains("wrong user name or password"),
        "{}",
        String::from_utf8_lossy(&bad_again.stderr)
    );

    // The local agent reports within seconds.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let v: serde_json::Value =
            serde_json::from_str(&ok(&run(&cli_dir, &api, &["status", "--json"], None))).unwrap();
        if v["agents"].as_array().is_some_and(|a| !a.is_empty()) {
            break v;
        }
        assert!(Instant::now() < deadline, "no agent in status: {v}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(status["agents"][0]["presence"], "online");
    let agent_id = status["agents"][0]["agent_id"].as_str().unwrap().to_owned();

    let table = ok(&run(&cli_dir, &api, &["status"], None));
    assert!(
        table.starts_with("AGENT") && table.contains(&agent_id),
        "{table}"
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: serde_json::Value = serde_json::from_str(&ok(&run(
            &cli_dir,
            &api,
            &["metrics", "latest", "node_load1", "--json"],
            None,
        )))
        .unwrap();
        if v["values"].as_array().is_some_and(|a| !a.is_empty()) {
            assert_eq!(v["values"][0]["series"]["agent_id"], agent_id.as_str());
            break;
        }
        assert!(Instant::now() < deadline, "node_load1 never queryable: {v}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let csv = ok(&run(
        &cli_dir,
        &api,
        &["metrics", "export", "node_load1", "--since", "10m"],
        None,
    ));
    assert!(csv.lines().count() >= 2, "{csv}");

    let agents: serde_json::Value = serde_json::from_str(&ok(&run(
        &cli_dir,
        &api,
        &["agent", "list", "--json"],
        None,
    )))
    .unwrap();
    assert_eq!(agents["agents"][0]["agent_id"], agent_id.as_str());

    let tok: serde_json::Value = serde_json::from_str(&ok(&run(
        &cli_dir,
        &api,
        &["token", "issue", "--ttl", "5m", "--json"],
        None,
    )))
    .unwrap();
    assert!(tok["token"].as_str().unwrap().len() > 20);
    let list = ok(&run(&cli_dir, &api, &["token", "list"], None));
    assert!(
        !list.contains(tok["token"].as_str().unwrap()),
        "token list shows a secret"
    );

    let bad_ttl = run(
        &cli_dir,
        &api,
        &["token", "issue", "--ttl", "5 fortnights"],
        None,
    );
    assert!(!bad_ttl.status.success());
    assert!(String::from_utf8_lossy(&bad_ttl.stderr).contains("is not a duration"));

    let missing = run(&cli_dir, &api, &["agent", "show", "no-such-agent"], None);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));

    let doctor = ok(&run(
        &cli_dir,
        &api,
        &[
            "doctor",
            "--json",
            "--grpc",
            &server.grpc,
            "--data-dir",
            data_s,
        ],
        None,
    ));
    let checks: serde_json::Value = serde_json::from_str(&doctor).unwrap();
    for c in checks.as_array().unwrap() {
        assert_ne!(c["outcome"], "fail", "{c}");
    }
}
