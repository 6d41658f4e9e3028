//! `sentra agent rotate-key --reset-sequence` against a real `sentra-server` process with
//! its local agent (issue 10 item 13: operators reset an agent's sequence with the key
//! rotation).

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

fn sentra() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sentra"))
}

fn server_bin() -> PathBuf {
    let p = sentra().with_file_name("sentra-server");
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build -p sentra-server` (cargo test --workspace does)",
        p.display()
    );
    p
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(cli_dir: &Path, api: &str, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(sentra())
        .args(args)
        .env("SENTRA_CLI_DIR", cli_dir)
        .env("SENTRA_SERVER", api)
        .env_remove("SENTRA_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn rotate_key_with_reset_sequence() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cli_dir = tmp.path().join("cli");
    let (grpc, api_port) = (free_port(), free_port());
    let api = format!("http://127.0.0.1:{api_port}");
    let _server = Server(
        Command::new(server_bin())
            .arg("--data-dir")
            .arg(&data)
            .args(["--grpc-listen", &format!("127.0.0.1:{grpc}")])
            .args(["--api-listen", &format!("127.0.0.1:{api_port}")])
            .args(["--local-agent", "--status-interval", "0"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(tmp.path().join("server.log")).unwrap())
            .spawn()
            .unwrap(),
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
