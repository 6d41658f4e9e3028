//! The binary as a user runs it: `--version`, `--help`, `--once --output json`, and the
//! flag > environment > file precedence.

use std::process::Command;

fn agent() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sentra-agent"));
    // Start from a clean environment so a developer's SENTRA_AGENT_* cannot leak in.
    for (k, _) in std::env::vars() {
        if k.starts_with("SENTRA_AGENT_") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn version_and_help() {
    let out = agent().arg("--version").output().expect("run");
    assert!(out.status.success());
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(v.contains(env!("CARGO_PKG_VERSION")), "{v}");
    let out = agent().arg("--help").output().expect("run");
    assert!(out.status.success());
    let h = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--once",
        "--state-dir",
        "SENTRA_AGENT_SERVER",
        "--wireguard-interval",
        "enroll",
    ] {
        assert!(h.contains(needle), "--help lacks {needle}:\n{h}");
    }
}

#[test]
fn once_json_shape() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = agent()
        .args(["--once", "--output", "json", "--state-dir"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is pure JSON");
    assert_eq!(doc["format"], "sentra-agent/once/v1");
    assert!(doc["agent_id"].is_null(), "not enrolled");
    assert!(doc["created_ms"].as_i64().expect("created_ms") > 1_600_000_000_000);
    let wg = &doc["wireguard"];
    let available = wg["available"].as_bool().expect("available");
    assert_eq!(available, wg["error"].is_null());
    if !available {
        assert!(wg["error"]["kind"].is_string() && wg["error"]["reason"].is_string());
    }
    for d in wg["devices"].as_array().expect("devices") {
        for key in [
            "name",
            "ifindex",
            "public_key",
            "listen_port",
            "fwmark",
            "peers",
        ] {
            assert!(d.get(key).is_some(), "device lacks {key}: {d}");
        }
    }
    let samples = doc["samples"].as_array().expect("samples");
    let find = |name: &str| samples.iter().find(|s| s["name"] == name);
    let load = find("node_load1").expect("node_load1");
    assert_eq!(load["type"], "gauge");
    assert!(load["value"].is_f64());
    assert!(find("node_memory_MemAvailable_bytes").is_some());
    let cpu = find("node_cpu_seconds_total").expect("cpu");
    assert!(cpu["labels"]["cpu"].is_string() && cpu["labels"]["mode"].is_string());
    let net = find("node_network_receive_bytes_total").expect("net");
    assert_eq!(net["type"], "counter");
    assert!(net["value"].is_u64());
    assert!(doc["problems"].is_array());
    // No WAL or credentials are created by --once.
    assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
}

#[test]
fn once_names_the_enrolled_agent() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("credentials.toml"),
        "agent_id = \"edge-07\"\nkey_id = 1\nsecret = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n",
    )
    .expect("write");
    let out = agent()
        .args(["--once", "--output", "json"])
        .env("SENTRA_AGENT_STATE_DIR", dir.path())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["agent_id"], "edge-07");
}

#[test]
fn flags_beat_environment_beat_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("agent.toml");
    std::fs::write(&file, "host_interval = \"bogus\"\n").expect("write");
    // The file's bad value is reported with its key...
    let out = agent()
        .arg("--config")
        .arg(&file)
        .arg("--once")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("host_interval"));
    // ...unless the environment overrides it,
    let out = agent()
        .arg("--config")
        .arg(&file)
        .args(["--once", "--state-dir"])
        .arg(dir.path())
        .env("SENTRA_AGENT_HOST_INTERVAL", "0s")
        .output()
        .expect("run");
    assert!(!out.status.success(), "env's 0s is used (and rejected)");
    assert!(String::from_utf8_lossy(&out.stderr).contains("greater than zero"));
    // ...and a flag overrides the environment.
    let out = agent()
        .arg("--config")
        .arg(&file)
        .args(["--once", "--host-interval", "5s", "--state-dir"])
        .arg(dir.path())
        .env("SENTRA_AGENT_HOST_INTERVAL", "0s")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn running_without_credentials_says_how_to_enrol() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = agent()
        .args(["--server", "http://127.0.0.1:1", "--state-dir"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("enroll"), "{err}");
}

#[test]
fn a_broken_plugin_is_refused_with_a_log_line_and_the_agent_runs_on() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("credentials.toml"),
        "agent_id = \"edge-08\"\nkey_id = 1\nsecret = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n",
    )
    .expect("write");
    let plugins = dir.path().join("plugins");
    let wat_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/wat");
    let good = wat::parse_file(wat_dir.join("uptime.wat")).expect("wat");
    for (name, module) in [("uptime", &good[..]), ("broken", &good[..good.len() / 3])] {
        let d = plugins.join(name);
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join(format!("{name}.wasm")), module).expect("module");
        std::fs::write(
            d.join("manifest.toml"),
            format!("name = \"{name}\"\nversion = \"1\"\nschedule = \"1s\"\n"),
        )
        .expect("manifest");
    }
    let log = dir.path().join("agent.log");
    let mut child = agent()
        .args([
            "--no-wireguard",
            "--server",
            "http://127.0.0.1:9",
            "--state-dir",
        ])
        .arg(dir.path())
        .env("SENTRA_AGENT_PLUGINS_DIR", &plugins)
        .env("SENTRA_AGENT_KEY_CHECK_INTERVAL", "0s")
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(std::fs::File::create(dir.path().join("agent.err")).expect("log"))
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default()
            + &std::fs::read_to_string(dir.path().join("agent.err")).unwrap_or_default();
        if (text.contains("plugin refused") && text.contains("plugin loaded"))
            || std::time::Instant::now() > deadline
            || child.try_wait().expect("wait").is_some()
        {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let still_running = child.try_wait().expect("wait").is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(still_running, "the agent stopped:\n{text}");
    let refused = text
        .lines()
        .find(|l| l.contains("plugin refused"))
        .unwrap_or_else(|| panic!("no refusal logged:\n{text}"));
    assert!(
        refused.contains("plugins/broken") && refused.contains("does not compile"),
        "{refused}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("plugin loaded") && l.contains("plugin:uptime")),
        "{text}"
    );
}
