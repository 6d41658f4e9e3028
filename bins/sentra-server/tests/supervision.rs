//! The server process as a whole, with real processes, sockets and files: the data
//! directory lock (a second server on the same directory refuses), supervision of its
//! long-lived tasks (a dead task stops the process with a non-zero exit and a log line),
//! and readiness.

mod common;

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

fn server_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sentra-server"))
}

use common::free_addr;

/// A server process, killed on drop; stderr goes to `log`.
struct Server {
    child: Child,
    api: SocketAddr,
    grpc: SocketAddr,
    log: PathBuf,
}

impl Server {
    fn start(data_dir: &Path, log: &Path, extra: &[&str]) -> Self {
        let api = free_addr();
        let grpc = free_addr();
        let child = Command::new(server_bin())
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--grpc-listen", &grpc.to_string()])
            .args(["--api-listen", &api.to_string()])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        Self {
            child,
            api,
            grpc,
            log: log.to_path_buf(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/readyz` answers 200.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if matches!(http_get(self.api, "/readyz"), Some((200, _))) {
                return;
            }
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!("server exited ({st}) before ready:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("server not ready within 30 s:\n{}", self.log_text());
    }

    /// Waits for the process to exit on its own.
    fn wait_exit(&mut self, within: Duration, why: &str) -> ExitStatus {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "server still running after {within:?} although {why}; its log:\n{}",
            self.log_text()
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, buf))
}

#[test]
fn a_second_server_on_the_same_data_dir_refuses_and_names_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut first = Server::start(&data, &dir.path().join("first.log"), &[]);
    first.wait_ready();

    let mut second = Server::start(&data, &dir.path().join("second.log"), &[]);
    let st = second.wait_exit(
        Duration::from_secs(20),
        "another server holds the data directory",
    );
    assert!(!st.success(), "second server exited with {st}");
    let log = second.log_text();
    assert!(
        log.contains(&data.display().to_string()),
        "the refusal does not name the directory:\n{log}"
    );
    assert!(
        log.contains(&format!("pid {}", first.pid())),
        "the refusal does not name the holder's pid {}:\n{log}",
        first.pid()
    );
    assert!(log.contains("in use"), "unclear refusal:\n{log}");

    // The first server is unaffected and still ready.
    assert!(matches!(http_get(first.api, "/readyz"), Some((200, _))));

    // Once the holder is gone (even by SIGKILL: the lock dies with the process), a new
    // server starts on the directory.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let mut third = Server::start(&data, &dir.path().join("third.log"), &[]);
    third.wait_ready();
}

#[test]
fn a_dead_local_agent_stops_the_server_with_a_nonzero_exit_and_a_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A real fault: another process (this test) holds the local agent's WAL lock, so the
    // local agent gives up after its 10 s wait and its task ends with an error.
    let wal = data.join("local-agent").join("wal");
    std::fs::create_dir_all(&wal).unwrap();
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(wal.join("LOCK"))
        .unwrap();
    lock.try_lock().unwrap();

    let mut server = Server::start(&data, &dir.path().join("server.log"), &["--local-agent"]);
    server.wait_ready();
    let st = server.wait_exit(
        Duration::from_secs(40),
        "its local agent task ended with an error",
    );
    assert!(!st.success(), "server exited with {st}");
    let log = server.log_text();
    assert!(
        log.contains("local agent") && log.contains("task ended"),
        "no log line for the dead task:\n{log}"
    );
    assert!(
        log.to_lowercase().contains("lock"),
        "the log line does not carry the task's error:\n{log}"
    );
    drop(lock);
}

fn agent_bin() -> PathBuf {
    let p = server_bin().with_file_name("sentra-agent");
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build -p sentra-agent` (cargo test --workspace does)",
        p.display()
    );
    p
}

/// A tmpfs mounted for the test; unmounted on drop (also on panic). Declare it before the
/// processes that use it, so they are dropped (killed) first.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on {} failed", at.display());
        Self(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Fills the filesystem of `dir` with `file` until a write fails for lack of space.
fn fill(file: &Path) {
    let mut f = std::fs::File::create(file).unwrap();
    let chunk = vec![0xa5u8; 64 * 1024];
    loop {
        match f.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling {}: {e}", file.display()),
        }
    }
    // The last partial chunk may sit in no buffer (File is unbuffered); make sure the
    // filesystem really is at its limit.
    while f.write_all(&chunk[..512]).is_ok() {}
    let _ = f.sync_all();
}

fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool, log: impl Fn() -> String) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what}: not within {within:?}; server log:\n{}", log());
}

#[test]
fn failing_storage_shows_in_readyz_metrics_and_the_log_once_and_clears() {
    if std::env::var_os("SENTRA_TEST_MOUNT").is_none() {
        eprintln!(
            "SKIPPED: failing_storage_shows_in_readyz_metrics_and_the_log_once_and_clears needs \
             SENTRA_TEST_MOUNT=1 (root, mounts a 16 MiB tmpfs)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _fs = Tmpfs::mount(&data, "16m");

    // An enrolled agent with its state outside the small filesystem.
    let token = {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = sentra_api::ControlStore::open(&data, sentra_api::StoreOptions::default())
                .await
                .unwrap();
            let t = store
                .issue_bootstrap_token(&sentra_api::Actor::local(), Duration::from_secs(600), "t")
                .await
                .unwrap();
            t.token.expose_secret().to_owned()
        })
    };
    let mut server = Server::start(
        &data,
        &dir.path().join("server.log"),
        &["--status-interval", "1"],
    );
    server.wait_ready();
    let agent_state = dir.path().join("agent");
    let st = Command::new(agent_bin())
        .arg("--state-dir")
        .arg(&agent_state)
        .args(["enroll", "--server-api", &format!("http://{}", server.api)])
        .args(["--token", &token, "--name", "full"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "enrolling the agent failed");
    let grpc = server.grpc;
    let mut agent = Command::new(agent_bin())
        .arg("--state-dir")
        .arg(&agent_state)
        .args(["--server", &format!("http://{grpc}")])
        .args(["--api", &format!("http://{}", server.api)])
        .args(["--host-interval", "100ms", "--no-wireguard"])
        .args(["--backoff-initial", "100ms", "--backoff-max", "500ms"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("agent.log")).unwrap())
        .spawn()
        .unwrap();
    let metrics = |api| {
        http_get(api, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    };
    let api = server.api;
    wait_for(
        "first batches stored",
        Duration::from_secs(60),
        || {
            metrics(api).contains("sentra_storage_healthy 1")
                && server.log_text().contains("agents 1/1")
        },
        || server.log_text(),
    );

    // Fill the filesystem: commits fail.
    let filler = data.join("filler");
    fill(&filler);
    let mut body = String::new();
    wait_for(
        "/readyz turns 503 naming storage",
        Duration::from_secs(60),
        || match http_get(api, "/readyz") {
            Some((503, b)) => {
                body = b;
                true
            }
            _ => false,
        },
        || server.log_text(),
    );
    assert!(body.contains(r#""status":"unavailable""#), "{body}");
    assert!(body.contains(r#""component":"storage""#), "{body}");
    assert!(body.contains("full"), "the reason lacks the error: {body}");
    let m = metrics(api);
    assert!(m.contains("sentra_storage_healthy 0\n"), "{m}");
    assert!(!m.contains("sentra_storage_failed_commits 0\n"), "{m}");
    // Several failed retries later, still one log line for the episode; the status line
    // says it on every tick.
    std::thread::sleep(Duration::from_secs(3));
    let log = server.log_text();
    assert_eq!(
        log.matches("metrics storage cannot commit").count(),
        1,
        "not once per episode:\n{log}"
    );
    assert!(
        log.contains("STORAGE FAILING"),
        "status line silent:\n{log}"
    );
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "storage failure is not fatal"
    );

    // Space returns: the writer recovers by itself and readiness clears.
    std::fs::remove_file(&filler).unwrap();
    wait_for(
        "/readyz back to 200",
        Duration::from_secs(60),
        || matches!(http_get(api, "/readyz"), Some((200, _))),
        || server.log_text(),
    );
    assert!(metrics(api).contains("sentra_storage_healthy 1\n"));
    wait_for(
        "recovery logged",
        Duration::from_secs(5),
        || server.log_text().contains("metrics storage commits again"),
        || server.log_text(),
    );
    let _ = agent.kill();
    let _ = agent.wait();
}

/// Whether the server closes a fresh TCP connection to `addr` within 2 s (reset or EOF)
/// rather than holding it open waiting for the client's first request.
fn closed_at_once(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return true; // refused outright
    };
    if s.set_read_timeout(Some(Duration::from_secs(2))).is_err() {
        return true; // already reset
    }
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn grpc_connection_limit_per_address_comes_from_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(
        &dir.path().join("data"),
        &dir.path().join("server.log"),
        &["--grpc-max-connections-per-address", "1"],
    );
    server.wait_ready();
    let _first = TcpStream::connect(server.grpc).unwrap();
    std::thread::sleep(Duration::from_millis(200)); // let the accept loop count it
    assert!(
        closed_at_once(server.grpc),
        "a second connection from 127.0.0.1 must be refused with the limit at 1:\n{}",
        server.log_text()
    );
    drop(server);

    // The default (256) holds a second connection open.
    let mut server = Server::start(
        &dir.path().join("data2"),
        &dir.path().join("server2.log"),
        &[],
    );
    server.wait_ready();
    let _first = TcpStream::connect(server.grpc).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(!closed_at_once(server.grpc), "{}", server.log_text());
}
