//! Two server processes sharing one PostgreSQL control database (a real server from
//! `sentra-testkit`: `SENTRA_TEST_PG_URL`, or a cluster started with `initdb`/`pg_ctl`; a
//! missing PostgreSQL fails with an install hint). Each has its own data directory
//! (metrics); an agent enrolled or a key rotated through one takes effect on the other
//! within 1 s, a token issued by one is accepted by the other, and a deleted user's token
//! stops at once on both.

mod common;

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use base64::Engine as _;
use prost::Message as _;
use sentra_control::{Actor, ControlStore, Password, PasswordCost, Role, StoreOptions};
use sentra_core::{AgentId, KeyId, Method, Nonce, SecretKey, Seq, Signer, UnixMillis, proto};

use common::free_addr;

/// A server process, killed on drop; stderr goes to `log`.
struct Server {
    child: Child,
    api: SocketAddr,
    log: PathBuf,
}

impl Server {
    fn start(dir: &Path, name: &str, url_file: &Path) -> Self {
        let api = free_addr();
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_sentra-server"))
            .arg("--data-dir")
            .arg(dir.join(name))
            .args(["--grpc-listen", &free_addr().to_string()])
            .args(["--api-listen", &api.to_string()])
            .arg("--control-database-url-file")
            .arg(url_file)
            .env("RUST_LOG", "info")
            .env_remove("SENTRA_CONTROL_DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut s = Self { child, api, log };
        s.wait_ready();
        s
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if matches!(http(self.api, "GET", "/readyz", &[], b""), Some((200, _))) {
                return;
            }
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!("server exited ({st}) before ready:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("server not ready within 60 s:\n{}", self.log_text());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request; `(status, body)`.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, buf[split + 4..].to_vec()))
}

struct Agent {
    id: AgentId,
    key_id: KeyId,
    secret: SecretKey,
}

impl Agent {
    /// `POST /api/v1/agent/key` signed with this key: the status (200 when the server's
    /// keyring verifies the key, 401 when it does not).
    fn fetch_key(&self, api: SocketAddr) -> u16 {
        let payload = proto::DesiredStateQuery {
            agent_id: self.id.to_string(),
            known_revision: 0,
        }
        .encode_to_vec();
        let env = Signer::new(self.id.clone(), self.key_id, &self.secret).sign(
            Method::FetchKey,
            Seq::FIRST,
            UnixMillis::now(),
            Nonce::random(),
            bytes::Bytes::from(payload),
        );
        http(
            api,
            "POST",
            "/api/v1/agent/key",
            &[("Content-Type", "application/x-protobuf")],
            &env.encode_to_vec(),
        )
        .map_or(0, |(s, _)| s)
    }
}

/// Polls `api` until `fetch_key` answers `want`; the time it took (at most 1 s).
fn until_status(agent: &Agent, api: SocketAddr, want: u16, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        let got = agent.fetch_key(api);
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{what}: the other server still answers {got}, not {want}, after 1 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn changes_through_one_server_take_effect_on_the_other_within_1s() {
    let (rt, db, dir, url_file) = common::shared_database();

    // An operator's tool on the same database: the first admin, a bootstrap token.
    let mut opts = StoreOptions::default();
    opts.password_cost = PasswordCost::insecure_for_tests();
    opts.reload_interval = None;
    let ops = rt
        .block_on(ControlStore::open_postgres(db.url(), opts))
        .unwrap();
    let token = rt.block_on(async {
        ops.create_user(
            &Actor::local(),
            "admin",
            Password::new("admin password"),
            Role::Admin,
        )
        .await
        .unwrap();
        ops.create_user(
            &Actor::local(),
            "viewer",
            Password::new("viewer password"),
            Role::Viewer,
        )
        .await
        .unwrap();
        ops.issue_bootstrap_token(&Actor::local(), Duration::from_secs(600), "multinode")
            .await
            .unwrap()
    });

    let a = Server::start(dir.path(), "a", &url_file);
    let b = Server::start(dir.path(), "b", &url_file);
    assert!(
        !a.log_text().contains(db.url()) && !b.log_text().contains(db.url()),
        "a server logged the database URL"
    );

    // Enrolment through A; B's keyring learns the key.
    let body = serde_json::json!({"token": token.token.expose_secret(), "name": "edge"});
    let (status, resp) = http(
        a.api,
        "POST",
        "/api/v1/agents/enroll",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&resp));
    let v: serde_json::Value = serde_json::from_slice(&resp).unwrap();
    let agent = Agent {
        id: AgentId::new(v["agent_id"].as_str().unwrap()).unwrap(),
        key_id: KeyId::new(u32::try_from(v["key_id"].as_u64().unwrap()).unwrap()),
        secret: SecretKey::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(v["secret"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap(),
    };
    let t_enrol = until_status(&agent, b.api, 200, "enrolment through A");
    assert_eq!(agent.fetch_key(a.api), 200);

    // A rotation with no overlap (through the operator's store, a third process view):
    // the old key ends now; both servers refuse it within 1 s.
    rt.block_on(ops.rotate_key(&Actor::local(), &agent.id, Duration::ZERO))
        .unwrap();
    let t_rotate_b = until_status(&agent, b.api, 401, "rotation");
    let t_rotate_a = until_status(&agent, a.api, 401, "rotation");

    // One access-token key for both (kept in the shared database): a token issued by A
    // is accepted by B. A user deleted through A's REST API: B refuses that token at once
    // (tokens are checked against the user row on every request).
    let login = serde_json::json!({"username": "viewer", "password": "viewer password"});
    let (status, resp) = http(
        a.api,
        "POST",
        "/api/v1/auth/login",
        &[("Content-Type", "application/json")],
        login.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
    let viewer: serde_json::Value = serde_json::from_slice(&resp).unwrap();
    let bearer = format!("Bearer {}", viewer["access_token"].as_str().unwrap());
    let auth = [("Authorization", bearer.as_str())];
    assert_eq!(
        http(b.api, "GET", "/api/v1/agents", &auth, b"").unwrap().0,
        200
    );
    let login = serde_json::json!({"username": "admin", "password": "admin password"});
    let (_, resp) = http(
        a.api,
        "POST",
        "/api/v1/auth/login",
        &[("Content-Type", "application/json")],
        login.to_string().as_bytes(),
    )
    .unwrap();
    let admin: serde_json::Value = serde_json::from_slice(&resp).unwrap();
    let admin_bearer = format!("Bearer {}", admin["access_token"].as_str().unwrap());
    let (status, _) = http(
        a.api,
        "DELETE",
        "/api/v1/users/viewer",
        &[("Authorization", admin_bearer.as_str())],
        b"",
    )
    .unwrap();
    assert_eq!(status, 204);
    assert_eq!(
        http(b.api, "GET", "/api/v1/agents", &auth, b"").unwrap().0,
        401
    );

    eprintln!(
        "two servers, one PostgreSQL control database (poll 250 ms): enrolment seen by B after {t_enrol:?}, \
         rotation refused by B after {t_rotate_b:?} (A {t_rotate_a:?}), token from A accepted by B, deleted user refused at once"
    );
    drop((a, b));
    rt.block_on(async { drop(ops) });
    drop(db);
}
