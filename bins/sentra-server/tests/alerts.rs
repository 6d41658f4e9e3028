//! The built-in alert engine end to end, with real processes and sockets: a `sentra-server`
//! process with a routing file (one signed webhook receiver), an agent enrolled over REST
//! that pushes real signed batches over gRPC, and an HTTP receiver in this test.
//!
//! A peer with persistent keepalive whose last handshake is 200 s old fires
//! `WgHandshakeStale` (built-in rule, > 180 s): the receiver gets exactly one `firing`
//! notification, signed (`Sentra-Signature`, HMAC-SHA256 over "t.body"). The server is then
//! stopped (SIGTERM) and started again on the same data directory while the alert fires,
//! and evaluates a new batch (the peer still stale): no second `firing` arrives. A batch
//! with a fresh handshake resolves it: exactly one `resolved` notification follows, and
//! nothing else after more evaluation ticks. Every wait is on a condition with a bound.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::Engine as _;
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

struct Server {
    child: Child,
}

impl Server {
    fn start(dir: &Path, config: &Path, grpc: SocketAddr, api: SocketAddr) -> Self {
        let mut cmd = Command::new(server_bin());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("SENTRA_") {
                cmd.env_remove(k);
            }
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .unwrap();
        let child = cmd
            .arg("--config")
            .arg(config)
            .args(["--grpc-listen", &grpc.to_string()])
            .args(["--api-listen", &api.to_string()])
            .args(["--status-interval", "0"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let s = Self { child };
        wait_for("server ready", Duration::from_secs(60), || {
            matches!(http(api, "GET", "/readyz", None, None), Some((200, _))).then_some(())
        });
        s
    }

    /// SIGTERM, then waits for the exit (the engine saves its state on the way out).
    fn terminate(mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "server exited with {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server did not stop within 30 s of SIGTERM");
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

/// One WireGuard peer with keepalive whose last handshake is `age` old.
fn push(rt: &tokio::runtime::Runtime, grpc: SocketAddr, agent: &Agent, seq: u64, age: Duration) {
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
    let ack = rt.block_on(async {
        let client = sentra_transport::Client::builder(format!("http://{grpc}"))
            .retry(sentra_transport::RetryConfig::disabled())
            .attempt_timeout(Duration::from_secs(30))
            .deadline(Duration::from_secs(60))
            .build()
            .unwrap();
        client.push(env).await.unwrap()
    });
    assert_eq!(
        ack.status(),
        sentra_core::proto::AckStatus::Accepted,
        "{ack:?}"
    );
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

#[test]
fn stale_handshake_fires_once_survives_a_restart_and_resolves_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (hook, received) = start_receiver();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // an admin and a bootstrap token, straight in the control store
    let token = rt.block_on(async {
        let store = sentra_api::ControlStore::open(&data, sentra_api::StoreOptions::default())
            .await
            .unwrap();
        store
            .create_user(
                &sentra_api::Actor::local(),
                USER,
                sentra_api::Password::new(PASSWORD),
                sentra_api::Role::Admin,
            )
            .await
            .unwrap();
        let t = store
            .issue_bootstrap_token(
                &sentra_api::Actor::local(),
                Duration::from_secs(600),
                "alerts",
            )
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
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n\n[alerts]\nrouting_file = \"{}\"\ntick = \"500ms\"\n",
            data.display(),
            routing.display()
        ),
    )
    .unwrap();
    let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let server = Server::start(dir.path(), &config, grpc, api);

    // enrol over REST
    let (status, body) = http(
        api,
        "POST",
        "/api/v1/agents/enroll",
        None,
        Some(&format!(r#"{{"token":"{token}","name":"gw-alerts"}}"#)),
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

    // stale: 200 s > 180 s
    push(&rt, grpc, &agent, 1, Duration::from_secs(200));
    let firing = wait_for("one firing notification", Duration::from_secs(60), || {
        received.lock().unwrap().first().cloned()
    });
    let n = verified(&firing);
    assert_eq!(n["status"], "firing", "{n}");
    assert_eq!(n["receiver"], "ops");
    assert_eq!(n["version"], "4");
    let alerts = n["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{n}");
    assert_eq!(alerts[0]["labels"]["alertname"], "WgHandshakeStale");
    assert_eq!(alerts[0]["labels"]["agent"], agent.id.as_str());
    assert_eq!(alerts[0]["labels"]["interface"], "wg0");
    let fingerprint = alerts[0]["fingerprint"].as_str().unwrap().to_owned();
    eprintln!("receiver got: {}", firing.body);

    // the API shows it firing
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
    let bearer = json(&body)["access_token"].as_str().unwrap().to_owned();
    let (status, body) = http(api, "GET", "/api/v1/alerts", Some(&bearer), None).unwrap();
    assert_eq!(status, 200, "{body}");
    let list = json(&body);
    assert!(
        list["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["rule"] == "WgHandshakeStale" && a["status"] == "firing"),
        "{list}"
    );

    // restart while firing
    server.terminate();
    assert!(data.join("alerts-state.json").exists());
    let server = Server::start(dir.path(), &config, grpc, api);
    // still stale; wait until the restarted engine observed it and ticked twice since
    push(&rt, grpc, &agent, 2, Duration::from_secs(210));
    wait_for("the batch evaluated", Duration::from_secs(60), || {
        (metric(api, "sentra_alerts_batches_total")? >= 1).then_some(())
    });
    let ticks = metric(api, "sentra_alerts_ticks_total").unwrap();
    wait_for("more ticks", Duration::from_secs(60), || {
        (metric(api, "sentra_alerts_ticks_total")? >= ticks + 6).then_some(())
    });
    assert_eq!(
        metric(api, "sentra_alerts_firing"),
        Some(1),
        "the alert still fires after the restart"
    );
    assert_eq!(
        received.lock().unwrap().len(),
        1,
        "a restart must not repeat the firing notification"
    );

    // a fresh handshake resolves it: exactly one resolved notification
    push(&rt, grpc, &agent, 3, Duration::from_secs(5));
    let resolved = wait_for("one resolved notification", Duration::from_secs(60), || {
        received.lock().unwrap().get(1).cloned()
    });
    let n = verified(&resolved);
    assert_eq!(n["status"], "resolved", "{n}");
    let alerts = n["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{n}");
    assert_eq!(alerts[0]["status"], "resolved");
    assert_eq!(alerts[0]["fingerprint"], fingerprint.as_str());
    eprintln!("receiver got: {}", resolved.body);

    // nothing more: several flush intervals later, still two
    let ticks = metric(api, "sentra_alerts_ticks_total").unwrap();
    wait_for("more ticks", Duration::from_secs(60), || {
        (metric(api, "sentra_alerts_ticks_total")? >= ticks + 10).then_some(())
    });
    assert_eq!(metric(api, "sentra_alerts_firing"), Some(0));
    assert_eq!(
        received.lock().unwrap().len(),
        2,
        "exactly one firing and one resolved notification"
    );
    assert_eq!(
        metric(api, "sentra_alerts_notifications_delivered_total"),
        Some(1)
    );
    server.terminate();

    // the server log names the receiver, never the secret or the URL's path
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    assert!(log.contains("alert engine started"), "{log}");
    assert!(
        !log.contains(SECRET),
        "the signing secret leaked into the log"
    );
}
