//! One alert evaluator per fleet: two `sentra-server` processes on one PostgreSQL control
//! database (a real server from `sentra-testkit`: `SENTRA_TEST_PG_URL`, or a cluster
//! started with `initdb`/`pg_ctl`), a real HTTP receiver in this test, an agent enrolled
//! over REST pushing real signed batches over gRPC to both servers.
//!
//! Only the server holding the alert lease (a PostgreSQL session advisory lock) evaluates:
//! a peer with a 200 s old handshake reported to both servers gives exactly one `firing`
//! notification; the standby answers 503 on `/api/v1/alerts` and 0 on
//! `sentra_alerts_leader`. The holder is killed with SIGKILL once its state is saved to
//! the database; the standby takes the lease, restores the state (the alert still fires,
//! no second `firing`), and a fresh handshake gives exactly one `resolved` notification.
//! A holder whose database session the database ends exits with an error (another server
//! may already evaluate) and the standby takes the lease.
//! Every wait is on a condition with a bound; no timing is asserted.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::Engine as _;
use sentra_control::{Actor, ControlStore, Password, PasswordCost, Role, StoreOptions};
use sentra_core::{
    AgentId, Batch, KeyId, Nonce, SecretKey, Seq, Signer, UnixMillis, WgDevice, WgPeer, WgPublicKey,
};

const USER: &str = "alerts-admin";
const PASSWORD: &str = "alerts-admin-password-1";
const SECRET: &str = "webhook-signing-secret-for-the-test";

fn server_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sentra-server"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    signature: Option<String>,
    body: String,
}

/// A real HTTP receiver on loopback: records every POST, answers 200.
fn start_receiver() -> (SocketAddr, Arc<Mutex<Vec<Received>>>) {
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

fn http(
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
    let body = body.unwrap_or("");
    req.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
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

/// Waits up to `limit` for `f` to return `Some`.
fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
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

/// A metric's value on `/metrics` (no token configured).
fn metric(api: SocketAddr, name: &str) -> Option<u64> {
    let (status, body) = http(api, "GET", "/metrics", None, None)?;
    if status != 200 {
        return None;
    }
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A server process on the shared control database, killed on drop; stderr to `<name>.log`.
struct Server {
    child: Child,
    api: SocketAddr,
    grpc: SocketAddr,
    log: PathBuf,
}

impl Server {
    fn start(dir: &Path, name: &str, url_file: &Path, routing: &Path) -> Self {
        let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\n\n[alerts]\nlease = true\nrouting_file = \"{}\"\ntick = \"500ms\"\nstate_save_every = \"500ms\"\n",
                dir.join(name).display(),
                routing.display()
            ),
        )
        .unwrap();
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new(server_bin());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("SENTRA_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .arg("--config")
            .arg(&config)
            .arg("--control-database-url-file")
            .arg(url_file)
            .args(["--grpc-listen", &grpc.to_string()])
            .args(["--api-listen", &api.to_string()])
            .args(["--status-interval", "0"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut s = Self {
            child,
            api,
            grpc,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if matches!(http(api, "GET", "/readyz", None, None), Some((200, _))) {
                break;
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
        s
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn leader(&self) -> Option<u64> {
        metric(self.api, "sentra_alerts_leader")
    }

    /// SIGKILL: no shutdown, no final save; the database session simply ends.
    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

struct Agent {
    id: AgentId,
    key: KeyId,
    secret: SecretKey,
}

/// One WireGuard peer with keepalive whose last handshake is `age` old, pushed until the
/// server accepts it (a server learns an agent enrolled through another one within a
/// moment: the wait is on that condition, bounded).
fn push(rt: &tokio::runtime::Runtime, grpc: SocketAddr, agent: &Agent, seq: u64, age: Duration) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = UnixMillis::now();
        let handshake = UnixMillis::from_millis(now.as_millis() - age.as_millis() as i64);
        let mut batch = Batch::new(agent.id.clone(), Seq::new(seq).unwrap(), now);
        batch.wg_devices.push(WgDevice {
            name: "wg0".into(),
            ifindex: 3,
            public_key: Some(WgPublicKey::from_bytes([9; 32])),
            listen_port: 51820,
            fwmark: 0,
            peers: vec![WgPeer {
                public_key: WgPublicKey::from_bytes([1; 32]),
                endpoint: Some("198.51.100.7:51820".parse().unwrap()),
                allowed_ips: vec!["10.0.0.2/32".parse().unwrap()],
                last_handshake: Some(handshake),
                rx_bytes: 1000 * seq,
                tx_bytes: 1000 * seq,
                persistent_keepalive_s: Some(25),
                has_preshared_key: false,
            }],
        });
        let env = Signer::new(agent.id.clone(), agent.key, &agent.secret).sign_batch(
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

/// Checks the `Sentra-Signature` of `r` against the shared secret and returns the parsed
/// body.
fn verified(r: &Received) -> serde_json::Value {
    let sig = r.signature.as_deref().expect("a Sentra-Signature header");
    let t: i64 = sig
        .strip_prefix("t=")
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("malformed signature {sig}"));
    let want = sentra_alerts::notify::signature(
        &sentra_alerts::notify::Secret::new(SECRET),
        t,
        r.body.as_bytes(),
    );
    assert_eq!(sig, want, "the HMAC over t.body does not verify");
    let wrong = sentra_alerts::notify::signature(
        &sentra_alerts::notify::Secret::new("another secret"),
        t,
        r.body.as_bytes(),
    );
    assert_ne!(sig, wrong);
    let age = UnixMillis::now().as_millis() / 1000 - t;
    assert!(
        (-5..300).contains(&age),
        "signature timestamp {t} is {age} s old"
    );
    json(&r.body)
}

fn login(api: SocketAddr) -> String {
    let (status, body) = http(
        api,
        "POST",
        "/api/v1/auth/login",
        None,
        Some(&format!(
            r#"{{"username":"{USER}","password":"{PASSWORD}"}}"#
        )),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    json(&body)["access_token"].as_str().unwrap().to_owned()
}

fn firing_count(received: &Mutex<Vec<Received>>) -> usize {
    received
        .lock()
        .unwrap()
        .iter()
        .filter(|r| json(&r.body)["status"] == "firing")
        .count()
}

#[test]
fn one_evaluator_per_fleet_and_the_standby_takes_over_without_renotifying() {
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
    let (hook, received) = start_receiver();

    // an admin and a bootstrap token, straight in the shared control store
    let mut opts = StoreOptions::default();
    opts.password_cost = PasswordCost::insecure_for_tests();
    opts.reload_interval = None;
    let token = rt.block_on(async {
        let ops = ControlStore::open_postgres(db.url(), opts).await.unwrap();
        ops.create_user(&Actor::local(), USER, Password::new(PASSWORD), Role::Admin)
            .await
            .unwrap();
        let t = ops
            .issue_bootstrap_token(&Actor::local(), Duration::from_secs(600), "alerts-ha")
            .await
            .unwrap();
        t.token.expose_secret().to_owned()
    });

    let secret_file = dir.path().join("hook-secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let routing = dir.path().join("routing.toml");
    std::fs::write(
        &routing,
        format!(
            r#"
[[receiver]]
name = "ops"
url = "http://{hook}/hook"
secret_file = "{}"
timeout = "10s"
backoff = "200ms"

[[route]]
receiver = "ops"
matchers = ['alertname="WgHandshakeStale"']
group_by = ["alertname", "agent"]
group_wait = "1s"
group_interval = "2s"
repeat_interval = "1h"
send_resolved = true
"#,
            secret_file.display()
        ),
    )
    .unwrap();

    // a starts first and takes the lease; b waits on standby
    let a = Server::start(dir.path(), "a", &url_file, &routing);
    wait_for("a holds the alert lease", Duration::from_secs(60), || {
        (a.leader()? == 1).then_some(())
    });
    let b = Server::start(dir.path(), "b", &url_file, &routing);
    wait_for("b on standby", Duration::from_secs(60), || {
        b.log_text()
            .contains("alert engine on standby")
            .then_some(())
    });
    assert_eq!(b.leader(), Some(0), "{}", b.log_text());

    // enrol over REST (through a; the agent is known to both)
    let (status, body) = http(
        a.api,
        "POST",
        "/api/v1/agents/enroll",
        None,
        Some(&format!(r#"{{"token":"{token}","name":"gw-ha"}}"#)),
    )
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let e = json(&body);
    let agent = Agent {
        id: AgentId::new(e["agent_id"].as_str().unwrap()).unwrap(),
        key: KeyId::new(u32::try_from(e["key_id"].as_u64().unwrap()).unwrap()),
        secret: SecretKey::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(e["secret"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap(),
    };

    // the standby answers 503 on the alerts API
    let bearer_b = login(b.api);
    let (status, body) = http(b.api, "GET", "/api/v1/alerts", Some(&bearer_b), None).unwrap();
    assert_eq!(status, 503, "the standby does not evaluate: {body}");

    // the same stale peer reported to both servers: one firing notification
    push(&rt, a.grpc, &agent, 1, Duration::from_secs(200));
    push(&rt, b.grpc, &agent, 2, Duration::from_secs(201));
    let firing = wait_for("one firing notification", Duration::from_secs(60), || {
        received.lock().unwrap().first().cloned()
    });
    let n = verified(&firing);
    assert_eq!(n["status"], "firing", "{n}");
    let fingerprint = n["alerts"][0]["fingerprint"].as_str().unwrap().to_owned();
    eprintln!("receiver got: {}", firing.body);
    // the holder's state, with the notification recorded, is saved to the database twice
    // after the notification arrived (so at least one save started after it)
    let saves = metric(a.api, "sentra_alerts_state_saves_total").unwrap();
    wait_for("two more state saves", Duration::from_secs(60), || {
        (metric(a.api, "sentra_alerts_state_saves_total")? >= saves + 2).then_some(())
    });
    let ticks = metric(a.api, "sentra_alerts_ticks_total").unwrap();
    wait_for("more ticks on a", Duration::from_secs(60), || {
        (metric(a.api, "sentra_alerts_ticks_total")? >= ticks + 6).then_some(())
    });
    assert_eq!(
        received.lock().unwrap().len(),
        1,
        "two servers, one evaluator: exactly one firing notification"
    );
    assert_eq!(b.leader(), Some(0));

    // kill -9 the holder: b takes over from the saved state
    a.kill9();
    wait_for("b holds the alert lease", Duration::from_secs(60), || {
        (b.leader()? == 1).then_some(())
    });
    assert!(
        b.log_text()
            .contains("this server holds the alert lease and evaluates the alerts"),
        "{}",
        b.log_text()
    );
    let body = wait_for("the alert firing on b", Duration::from_secs(60), || {
        let (status, body) = http(b.api, "GET", "/api/v1/alerts", Some(&bearer_b), None)?;
        (status == 200
            && json(&body)["alerts"]
                .as_array()?
                .iter()
                .any(|x| x["rule"] == "WgHandshakeStale" && x["status"] == "firing"))
        .then_some(body)
    });
    eprintln!("b after the takeover: {body}");
    // still stale: evaluated on b, no second firing
    push(&rt, b.grpc, &agent, 3, Duration::from_secs(210));
    wait_for("the batch evaluated on b", Duration::from_secs(60), || {
        (metric(b.api, "sentra_alerts_batches_total")? >= 1).then_some(())
    });
    let ticks = metric(b.api, "sentra_alerts_ticks_total").unwrap();
    wait_for("more ticks on b", Duration::from_secs(60), || {
        (metric(b.api, "sentra_alerts_ticks_total")? >= ticks + 6).then_some(())
    });
    assert_eq!(
        received.lock().unwrap().len(),
        1,
        "the takeover must not repeat the firing notification"
    );

    // a fresh handshake: exactly one resolved notification, from b
    push(&rt, b.grpc, &agent, 4, Duration::from_secs(5));
    let resolved = wait_for("one resolved notification", Duration::from_secs(60), || {
        received.lock().unwrap().get(1).cloned()
    });
    let n = verified(&resolved);
    assert_eq!(n["status"], "resolved", "{n}");
    assert_eq!(n["alerts"][0]["fingerprint"], fingerprint.as_str());
    eprintln!("receiver got: {}", resolved.body);
    let ticks = metric(b.api, "sentra_alerts_ticks_total").unwrap();
    wait_for("more ticks on b", Duration::from_secs(60), || {
        (metric(b.api, "sentra_alerts_ticks_total")? >= ticks + 10).then_some(())
    });
    assert_eq!(metric(b.api, "sentra_alerts_firing"), Some(0));
    assert_eq!(firing_count(&received), 1, "no second firing");
    assert_eq!(
        received.lock().unwrap().len(),
        2,
        "exactly one firing and one resolved notification"
    );
    assert!(!b.log_text().contains(SECRET));
}

#[test]
fn a_holder_that_loses_its_session_exits_and_the_standby_takes_over() {
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
    let routing = dir.path().join("routing.toml");
    std::fs::write(&routing, "[[route]]\nreceiver = \"log\"\n").unwrap();

    let mut a = Server::start(dir.path(), "a", &url_file, &routing);
    wait_for("a holds the alert lease", Duration::from_secs(60), || {
        (a.leader()? == 1).then_some(())
    });
    let b = Server::start(dir.path(), "b", &url_file, &routing);
    wait_for("b on standby", Duration::from_secs(60), || {
        b.log_text()
            .contains("alert engine on standby")
            .then_some(())
    });

    // the database ends the holder's session (as a restart or a broken network would)
    let ended = rt.block_on(async {
        use sqlx::Connection as _;
        let mut c = sqlx::PgConnection::connect(db.url()).await.unwrap();
        let n: Vec<(bool,)> = sqlx::query_as(
            "SELECT pg_terminate_backend(pid) FROM pg_locks
             WHERE locktype = 'advisory' AND granted AND database =
               (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_all(&mut c)
        .await
        .unwrap();
        n.len()
    });
    assert_eq!(ended, 1, "one session holds the lease");
    let status = wait_for("a exits", Duration::from_secs(60), || {
        a.child.try_wait().unwrap()
    });
    assert!(!status.success(), "a lost lease is an error exit: {status}");
    assert!(
        a.log_text().contains("lost the alert lease"),
        "{}",
        a.log_text()
    );
    wait_for("b holds the alert lease", Duration::from_secs(60), || {
        (b.leader()? == 1).then_some(())
    });
}
