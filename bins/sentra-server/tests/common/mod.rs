//! What the process tests of `sentra-server` share: spawning the server and agent binaries
//! with a clean environment, a plain HTTP/1.1 client for the REST API, bounded waits on
//! conditions, a webhook receiver, and an agent identity that pushes signed batches.
//! Each test binary uses a part of it.
#![allow(dead_code, unreachable_pub)]

use std::{
    ffi::OsStr,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::Engine as _;
use sentra_core::{
    AgentId, Batch, KeyId, Nonce, SecretKey, Seq, Signer, UnixMillis, WgDevice, WgPeer, WgPublicKey,
};

pub fn server_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sentra-server"))
}

pub fn agent_bin() -> PathBuf {
    let p = server_bin().with_file_name("sentra-agent");
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build -p sentra-agent` (cargo test --workspace does)",
        p.display()
    );
    p
}

/// Removes every `SENTRA_*` variable this test inherited from `cmd`'s environment: a
/// developer's shell (a storage backend, a data directory, an agent's server or token)
/// must not change what the spawned server or agent does.
pub fn clean_env(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SENTRA_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// A loopback address with a port that was free a moment ago.
/// A loopback address with a free port, never one this process handed out before: the
/// kernel may give a port just released back to the next `bind(0)`, and the tests of a
/// binary run in parallel (a server once failed with "Address already in use" in CI).
pub fn free_addr() -> SocketAddr {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        if !given.contains(&addr.port()) {
            given.push(addr.port());
            return addr;
        }
    }
}

/// Waits up to `limit` for `f` to return `Some`, polling every 100 ms.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One HTTP/1.1 request (`Connection: close`); `None` when the server cannot be reached or
/// the answer is not HTTP. A body is sent as JSON.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = bearer {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or(""));
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Some((status, body))
}

fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let n = usize::from_str_radix(size.trim(), 16).ok()?;
        if n == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..n)?);
        body = rest.get(n + 2..)?;
    }
}

pub fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Logs in over the REST API; the access token.
pub fn login(api: SocketAddr, user: &str, password: &str) -> String {
    let body = serde_json::json!({ "username": user, "password": password }).to_string();
    let (status, body) = http(api, "POST", "/api/v1/auth/login", None, Some(&body))
        .unwrap_or_else(|| panic!("no answer from {api} to the login"));
    assert_eq!(status, 200, "login failed: {body}");
    json(&body)["access_token"]
        .as_str()
        .expect("access_token in the login answer")
        .to_owned()
}

/// A metric's value on `/metrics` (no scrape token configured).
pub fn metric(api: SocketAddr, name: &str) -> Option<u64> {
    let (status, body) = http(api, "GET", "/metrics", None, None)?;
    if status != 200 {
        return None;
    }
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A `sentra-server` process on fixed loopback ports, killed on drop; its stderr is
/// appended to `<dir>/<name>.log` (a restart on the same ports keeps one log).
pub struct Server {
    pub child: Child,
    pub name: String,
    pub api: SocketAddr,
    pub grpc: SocketAddr,
    log: PathBuf,
}

impl Server {
    /// Starts the server with `args` (besides the listen addresses) and waits until
    /// `/readyz` answers 200; panics with the log if it exits first or takes over 60 s.
    pub fn start<S: AsRef<OsStr>>(
        dir: &Path,
        name: &str,
        api: SocketAddr,
        grpc: SocketAddr,
        args: &[S],
    ) -> Self {
        let log = dir.join(format!("{name}.log"));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = clean_env(&mut Command::new(server_bin()))
            .args(args)
            .args(["--grpc-listen", &grpc.to_string()])
            .args(["--api-listen", &api.to_string()])
            .args(["--status-interval", "0"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut s = Self {
            child,
            name: name.to_owned(),
            api,
            grpc,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if matches!(http(api, "GET", "/readyz", None, None), Some((200, _))) {
                return s;
            }
            if let Some(st) = s.child.try_wait().unwrap() {
                panic!(
                    "server {name} exited ({st}) before ready:\n{}",
                    s.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "server {name} not ready within 60 s:\n{}",
                s.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no shutdown, no final save.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits up to 30 s for the exit; the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        terminate(&mut self.child, &self.name)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGTERM (the graceful path), then waits up to 30 s for `child` to exit.
pub fn terminate(child: &mut Child, name: &str) -> ExitStatus {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    wait_for(
        &format!("{name} stops after SIGTERM"),
        Duration::from_secs(30),
        || child.try_wait().unwrap(),
    )
}

/// One request the webhook receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub signature: Option<String>,
    pub body: String,
}

/// A real HTTP receiver on loopback: records every POST, answers 200.
pub fn start_receiver() -> (SocketAddr, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let got: Arc<Mutex<Vec<Received>>> = Arc::default();
    let store = Arc::clone(&got);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let _ = serve(conn, &store);
            });
        }
    });
    (addr, got)
}

fn serve(conn: TcpStream, store: &Mutex<Vec<Received>>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut conn = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut length = 0usize;
        let mut signature = None;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                } else if k.eq_ignore_ascii_case("sentra-signature") {
                    signature = Some(v.trim().to_owned());
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        store.lock().unwrap().push(Received {
            signature,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")?;
    }
}

/// An agent identity from an enrolment answer, pushing signed batches itself.
pub struct Agent {
    pub id: AgentId,
    pub key: KeyId,
    pub secret: SecretKey,
}

impl Agent {
    /// Enrols over REST with a bootstrap token.
    pub fn enroll(api: SocketAddr, token: &str, name: &str) -> Self {
        let req = serde_json::json!({ "token": token, "name": name }).to_string();
        let (status, body) = http(api, "POST", "/api/v1/agents/enroll", None, Some(&req))
            .unwrap_or_else(|| panic!("no answer from {api} to the enrolment"));
        assert_eq!(status, 201, "{body}");
        let e = json(&body);
        Self {
            id: AgentId::new(e["agent_id"].as_str().unwrap()).unwrap(),
            key: KeyId::new(u32::try_from(e["key_id"].as_u64().unwrap()).unwrap()),
            secret: SecretKey::from_slice(
                &base64::engine::general_purpose::STANDARD
                    .decode(e["secret"].as_str().unwrap())
                    .unwrap(),
            )
            .unwrap(),
        }
    }

    /// Pushes batch `seq`: interface wg0 with one peer with keepalive whose last handshake
    /// is `age` old, until the server accepts it (a server learns an agent enrolled
    /// through another one a moment later: the wait is on that condition, bounded).
    pub fn push_peer_handshake(
        &self,
        rt: &tokio::runtime::Runtime,
        grpc: SocketAddr,
        seq: u64,
        age: Duration,
    ) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now = UnixMillis::now();
            let handshake = UnixMillis::from_millis(now.as_millis() - age.as_millis() as i64);
            let mut batch = Batch::new(self.id.clone(), Seq::new(seq).unwrap(), now);
            batch.wg_devices.push(
                WgDevice::new("wg0", 3)
                    .with_public_key(WgPublicKey::from_bytes([9; 32]))
                    .with_listen_port(51820)
                    .with_peers(vec![
                        WgPeer::new(WgPublicKey::from_bytes([1; 32]))
                            .with_endpoint(
                                "198.51.100.7:51820"
                                    .parse::<std::net::SocketAddr>()
                                    .unwrap(),
                            )
                            .with_allowed_ips(vec!["10.0.0.2/32".parse().unwrap()])
                            .with_last_handshake(handshake)
                            .with_transfer(1000 * seq, 1000 * seq)
                            .with_persistent_keepalive_s(25),
                    ]),
            );
            let env = Signer::new(self.id.clone(), self.key, &self.secret).sign_batch(
                &batch,
                now,
                Nonce::random(),
            );
            let answer = rt.block_on(async {
                let client = sentra_transport::Client::builder(format!("http://{grpc}"))
                    .retry(sentra_transport::RetryConfig::disabled())
                    .attempt_timeout(Duration::from_secs(30))
                    .deadline(Duration::from_secs(60))
                    .build()
                    .unwrap();
                client.push(env).await
            });
            let why = match answer {
                Ok(ack) if ack.status() == sentra_core::proto::AckStatus::Accepted => return,
                Ok(ack) => format!("{ack:?}"),
                Err(e) => e.to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "batch {seq} to {grpc} not accepted within 60 s: {why}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A runtime, a fresh database on the test PostgreSQL, a temp dir and the file with the
/// database's URL in it (what `--control-database-url-file` reads).
pub fn shared_database() -> (
    tokio::runtime::Runtime,
    sentra_testkit::TestDb,
    tempfile::TempDir,
    std::path::PathBuf,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = rt
        .block_on(sentra_testkit::TestDb::new())
        .unwrap_or_else(|e| panic!("test PostgreSQL: {e}"));
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("control-db.url");
    std::fs::write(&url_file, db.url()).unwrap();
    (rt, db, dir, url_file)
}
