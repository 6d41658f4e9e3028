//! End to end with real processes, real sockets and real storage: one `sentra-server` and
//! two `sentra-agent` processes on loopback. The agents are killed with SIGKILL mid-stream
//! and restarted, the server is killed with SIGKILL and restarted, and the server is stopped
//! for 30 s while the agents keep collecting. Afterwards every collection an agent
//! acknowledged (appended to its WAL) must be in the server's storage exactly once.
//!
//! How it counts: with `--no-wireguard` every agent WAL record is one host collection, and
//! every host collection carries exactly one `node_load1` sample stamped with the collection
//! time. Sequence numbers are `seq_base + LSN` (see the agent's `store` module), so after
//! the drain the server's high-water mark minus the agent's `seq_base` is the number of
//! records stored, and the stored `node_load1` samples of that agent must number exactly
//! that.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

fn server_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sentra-server"))
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn terminate(mut self) {
        // SIGTERM: the graceful path.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} did not stop within 15 s of SIGTERM", self.name);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Cluster {
    dir: PathBuf,
    grpc: SocketAddr,
    api: SocketAddr,
}

impl Cluster {
    fn log(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))
            .unwrap()
    }

    fn start_server(&self) -> Proc {
        let child = Command::new(server_bin())
            .arg("--data-dir")
            .arg(self.dir.join("server"))
            .args(["--grpc-listen", &self.grpc.to_string()])
            .args(["--api-listen", &self.api.to_string()])
            .args(["--status-interval", "0", "--log-format", "json"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(self.log("server"))
            .spawn()
            .unwrap();
        let p = Proc {
            name: "server".into(),
            child,
        };
        wait_ready(self.api);
        p
    }

    fn agent_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn start_agent(&self, name: &str, host_interval: &str) -> Proc {
        let child = Command::new(agent_bin())
            .arg("--state-dir")
            .arg(self.agent_dir(name))
            .args(["--server", &format!("http://{}", self.grpc)])
            .args(["--api", &format!("http://{}", self.api)])
            .args(["--host-interval", host_interval, "--no-wireguard"])
            .args(["--backoff-initial", "100ms", "--backoff-max", "1s"])
            .args(["--log-format", "json"])
            .stdout(Stdio::null())
            .stderr(self.log(name))
            .spawn()
            .unwrap();
        Proc {
            name: name.into(),
            child,
        }
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

fn wait_ready(api: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if matches!(http_get(api, "/readyz"), Some((200, _))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("server on {api} not ready within 30 s");
}

/// (high-water, node_load1 samples, node_load1 distinct timestamps) of `agent` in the
/// server's metrics.db, read with plain SQL while the server is stopped.
fn stored(db: &Path, agent: &str) -> (u64, u64, u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use sqlx::{ConnectOptions as _, Row as _};
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(db)
            .read_only(true)
            .connect()
            .await
            .unwrap();
        let hw: i64 = sqlx::query("SELECT high_water FROM agents WHERE agent_id = ?")
            .bind(agent)
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .get(0);
        let row = sqlx::query(
            "SELECT count(*), count(DISTINCT s.ts) FROM samples s JOIN series x ON s.series_id = x.id \
             WHERE x.agent = ? AND x.name = 'node_load1'",
        )
        .bind(agent)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        (hw as u64, row.get::<i64, _>(0) as u64, row.get::<i64, _>(1) as u64)
    })
}

fn agent_id(state: &Path) -> String {
    let text = std::fs::read_to_string(state.join("credentials.toml")).unwrap();
    let v: toml::Value = toml::from_str(&text).unwrap();
    v["agent_id"].as_str().unwrap().to_owned()
}

fn seq_base(state: &Path) -> u64 {
    std::fs::read_to_string(state.join("wal.seq-base"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The last LSN in an agent's WAL and the acknowledged LSN (agent stopped).
fn wal_state(state: &Path) -> (u64, u64) {
    let insp = sentra_wal::inspect_dir(state.join("wal")).unwrap();
    assert!(insp.losses.is_empty(), "WAL damage: {:?}", insp.losses);
    let last = insp
        .segments
        .iter()
        .filter(|s| s.records > 0)
        .map(|s| s.next_lsn - 1)
        .max()
        .unwrap_or(0);
    (last, insp.acked_lsn.unwrap_or(0))
}

#[test]
fn kill9_agents_and_server_and_a_30s_outage_lose_and_duplicate_nothing() {
    // SENTRA_E2E_KEEP=1 keeps the directory (logs, databases, WALs) for a post-mortem.
    let guard;
    let root = if std::env::var_os("SENTRA_E2E_KEEP").is_some() {
        tempfile::tempdir().unwrap().keep()
    } else {
        guard = tempfile::tempdir().unwrap();
        guard.path().to_path_buf()
    };
    eprintln!("e2e directory: {}", root.display());
    let cluster = Cluster {
        dir: root,
        grpc: SocketAddr::from(([127, 0, 0, 1], free_port())),
        api: SocketAddr::from(([127, 0, 0, 1], free_port())),
    };
    let server_dir = cluster.dir.join("server");
    std::fs::create_dir_all(&server_dir).unwrap();

    // Bootstrap tokens straight into the control store (what `sentra token issue` asks the
    // API to do), then enrol both agents over the REST API.
    let tokens: Vec<String> = {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store =
                sentra_api::ControlStore::open(&server_dir, sentra_api::StoreOptions::default())
                    .await
                    .unwrap();
            let mut out = Vec::new();
            for _ in 0..2 {
                let t = store
                    .issue_bootstrap_token(
                        &sentra_api::Actor::local(),
                        Duration::from_secs(600),
                        "e2e",
                    )
                    .await
                    .unwrap();
                out.push(t.token.expose_secret().to_owned());
            }
            out
        })
    };
    let mut server = cluster.start_server();
    let names = ["edge-a", "edge-b"];
    for (name, token) in names.iter().zip(&tokens) {
        let status = Command::new(agent_bin())
            .arg("--state-dir")
            .arg(cluster.agent_dir(name))
            .args(["enroll", "--server-api", &format!("http://{}", cluster.api)])
            .args(["--token", token, "--name", name])
            .stdout(Stdio::null())
            .stderr(cluster.log(name))
            .status()
            .unwrap();
        assert!(
            status.success(),
            "enrolling {name} failed; see {}/{name}.log",
            cluster.dir.display()
        );
    }
    let mut a = cluster.start_agent("edge-a", "100ms");
    let b = cluster.start_agent("edge-b", "100ms");
    std::thread::sleep(Duration::from_secs(3));

    // kill -9 an agent mid-stream, restart it.
    a.kill9();
    std::thread::sleep(Duration::from_millis(300));
    a = cluster.start_agent("edge-a", "100ms");
    std::thread::sleep(Duration::from_secs(3));

    // kill -9 the server, restart it on the same data.
    server.kill9();
    server = cluster.start_server();
    std::thread::sleep(Duration::from_secs(3));

    // Stop the server for 30 s; the agents keep collecting into their WALs.
    server.terminate();
    std::thread::sleep(Duration::from_secs(30));
    server = cluster.start_server();
    std::thread::sleep(Duration::from_secs(3));

    // End of the stream: kill both agents hard, note what their WALs hold.
    a.kill9();
    b.kill9();
    let mut expected = Vec::new();
    for name in names {
        let state = cluster.agent_dir(name);
        let (last, _acked) = wal_state(&state);
        assert!(last > 50, "{name} appended only {last} records");
        expected.push((name, last));
    }

    // Drain: restart with collection nearly off; wait until the server's high-water mark
    // covers everything that was in the WALs (read while the server runs: WAL-mode SQLite).
    let db = server_dir.join("metrics.db");
    let drain: Vec<Proc> = names.iter().map(|n| cluster.start_agent(n, "1h")).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !expected.iter().all(|(name, last)| {
        let state = cluster.agent_dir(name);
        stored(&db, &agent_id(&state)).0 >= seq_base(&state) + last
    }) {
        assert!(
            Instant::now() < deadline,
            "agents did not drain within 60 s; logs in {}",
            cluster.dir.display()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    for p in drain {
        p.terminate();
    }
    server.terminate();

    for (name, last_before_drain) in expected {
        let state = cluster.agent_dir(name);
        let (_last, acked) = wal_state(&state);
        assert!(
            acked >= last_before_drain,
            "{name}: acked {acked} < {last_before_drain}"
        );
        let base = seq_base(&state);
        let (hw, samples, distinct) = stored(&db, &agent_id(&state));
        let stored_records = hw - base;
        eprintln!(
            "{name}: appended_before_drain={last_before_drain} acked={acked} server_records={stored_records} \
             node_load1_rows={samples} distinct_ts={distinct} lost={} duplicated={}",
            stored_records.saturating_sub(distinct),
            samples - distinct
        );
        // Every record up to the high-water mark is stored exactly once: sequence numbers
        // are dense and each record carries one node_load1 sample.
        assert!(
            stored_records >= acked,
            "{name}: the agent trimmed records the server lacks"
        );
        assert_eq!(samples, distinct, "{name}: duplicated samples in storage");
        assert_eq!(
            distinct,
            stored_records,
            "{name}: {} acknowledged collections missing from storage",
            stored_records.saturating_sub(distinct)
        );
    }
}
