//! End to end with real processes, real sockets and real storage: one `sentra-server` and
//! two `sentra-agent` processes on loopback. The agents are killed with SIGKILL mid-stream
//! and restarted, the server is killed with SIGKILL and restarted, and the server is stopped
//! for 30 s while the agents keep collecting. Afterwards every collection an agent
//! acknowledged (appended to its WAL) must be in the server's storage exactly once.
//!
//! How it counts: with `--no-wireguard` every agent WAL record is one host collection and
//! one batch. Sequence numbers are `seq_base + LSN` (see the agent's `store` module), so
//! after the drain the records an agent holds are the seqs `seq_base + 1 ..= seq_base +
//! last`. The check is on pipeline decisions, read through the REST API
//! (`GET /api/v1/agents/{id}/ingest`, the server's durable ingest ledger) so the same test
//! runs on any storage backend: the high-water mark covers every record, every seq up to
//! it was *accepted* exactly once (accepted batches == seqs, no accepted gap, nothing
//! missing), and nothing was refused.
//!
//! The same test runs twice: on the embedded SQLite files, and with `--storage-backend
//! postgres` on a fresh database of a real PostgreSQL (`sentra-testkit`: the server from
//! `SENTRA_TEST_PG_URL`, or one it starts with `initdb`/`pg_ctl`).

mod common;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{Server, agent_bin, clean_env, free_addr, http, json, login, terminate, wait_for};

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
        let status = terminate(&mut self.child, &self.name);
        assert!(status.success(), "{} exited with {status}", self.name);
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
    /// `Some`: the server stores everything in this PostgreSQL database.
    database: Option<sentra_testkit::TestDb>,
}

impl Cluster {
    fn log(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))
            .unwrap()
    }

    fn start_server(&self) -> Server {
        let mut args: Vec<std::ffi::OsString> =
            vec!["--data-dir".into(), self.dir.join("server").into()];
        args.extend(["--log-format".into(), "json".into()]);
        if let Some(db) = &self.database {
            let url_file = self.dir.join("database-url");
            std::fs::write(&url_file, db.url()).unwrap();
            args.extend([
                "--storage-backend".into(),
                "postgres".into(),
                "--database-url-file".into(),
                url_file.into(),
            ]);
        }
        Server::start(&self.dir, "server", self.api, self.grpc, &args)
    }

    fn agent_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn start_agent(&self, name: &str, host_interval: &str) -> Proc {
        let child = clean_env(&mut Command::new(agent_bin()))
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

/// An agent's durable ingest ledger, through `GET /api/v1/agents/{id}/ingest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ledger {
    high_water: Option<u64>,
    accepted: u64,
    gaps: u64,
    missing: u64,
    rejected_stale: u64,
    rejected_ahead: u64,
}

fn ledger(api: SocketAddr, token: &str, agent: &str) -> Option<Ledger> {
    let (status, body) = http(
        api,
        "GET",
        &format!("/api/v1/agents/{agent}/ingest"),
        Some(token),
        None,
    )?;
    if status == 404 && body.contains("agent ingest ledger") {
        return None; // nothing received from the agent yet
    }
    assert_eq!(status, 200, "GET /api/v1/agents/{agent}/ingest: {body}");
    let v = json(&body);
    let n = |k: &str| -> u64 {
        v[k].as_u64()
            .unwrap_or_else(|| panic!("{k} missing in {body}"))
    };
    Some(Ledger {
        high_water: v["high_water"].as_u64(),
        accepted: n("accepted"),
        gaps: n("gaps"),
        missing: n("missing"),
        rejected_stale: n("rejected_stale"),
        rejected_ahead: n("rejected_ahead"),
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

/// Where the server under test stores metrics and the control plane.
#[derive(Debug, Clone, Copy)]
enum Storage {
    Sqlite,
    Postgres,
}

#[test]
fn kill9_agents_and_server_and_a_30s_outage_lose_and_duplicate_nothing_sqlite() {
    kill9_agents_and_server_and_a_30s_outage_lose_and_duplicate_nothing(Storage::Sqlite);
}

#[test]
fn kill9_agents_and_server_and_a_30s_outage_lose_and_duplicate_nothing_postgres() {
    kill9_agents_and_server_and_a_30s_outage_lose_and_duplicate_nothing(Storage::Postgres);
}

fn kill9_agents_and_server_and_a_30s_outage_lose_and_duplicate_nothing(storage: Storage) {
    // SENTRA_E2E_KEEP=1 keeps the directory (logs, databases, WALs) for a post-mortem.
    let guard;
    let root = if std::env::var_os("SENTRA_E2E_KEEP").is_some() {
        tempfile::tempdir().unwrap().keep()
    } else {
        guard = tempfile::tempdir().unwrap();
        guard.path().to_path_buf()
    };
    eprintln!("e2e directory ({storage:?}): {}", root.display());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let database = match storage {
        Storage::Sqlite => None,
        Storage::Postgres => Some(rt.block_on(sentra_testkit::TestDb::new()).unwrap()),
    };
    let cluster = Cluster {
        dir: root,
        grpc: free_addr(),
        api: free_addr(),
        database,
    };
    let server_dir = cluster.dir.join("server");
    std::fs::create_dir_all(&server_dir).unwrap();

    // Bootstrap tokens straight into the control store (what `sentra token issue` asks the
    // API to do), then enrol both agents over the REST API.
    let tokens: Vec<String> = {
        rt.block_on(async {
            let options = sentra_api::StoreOptions::default();
            let store = match &cluster.database {
                None => sentra_api::ControlStore::open(&server_dir, options).await,
                Some(db) => sentra_control::ControlStore::open_postgres(db.url(), options).await,
            }
            .unwrap();
            store
                .create_user(
                    &sentra_api::Actor::local(),
                    E2E_USER,
                    sentra_api::Password::new(E2E_PASSWORD),
                    sentra_api::Role::Viewer,
                )
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
        let status = clean_env(&mut Command::new(agent_bin()))
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
    let token = login(cluster.api, E2E_USER, E2E_PASSWORD);
    // Instead of sleeping: wait until the server has stored at least 10 more batches of
    // each agent, so every fault below hits a live stream.
    let streamed = |what: &str| {
        let high_water = |name: &str| {
            let state = cluster.agent_dir(name);
            ledger(cluster.api, &token, &agent_id(&state))
                .and_then(|l| l.high_water)
                .unwrap_or(0)
        };
        let start: Vec<u64> = names.iter().map(|n| high_water(n)).collect();
        wait_for(what, Duration::from_secs(60), || {
            names
                .iter()
                .zip(&start)
                .all(|(n, s)| high_water(n) >= s + 10)
                .then_some(())
        });
    };
    let mut a = cluster.start_agent("edge-a", "100ms");
    let b = cluster.start_agent("edge-b", "100ms");
    streamed("both agents streaming");

    // kill -9 an agent mid-stream, restart it.
    a.kill9();
    std::thread::sleep(Duration::from_millis(300));
    a = cluster.start_agent("edge-a", "100ms");
    streamed("both agents streaming after edge-a's kill -9");

    // kill -9 the server, restart it on the same data.
    server.kill9();
    server = cluster.start_server();
    streamed("both agents streaming after the server's kill -9");

    // Stop the server for 30 s; the agents keep collecting into their WALs.
    let status = server.terminate();
    assert!(
        status.success(),
        "server exited with {status} after SIGTERM"
    );
    std::thread::sleep(Duration::from_secs(30));
    server = cluster.start_server();
    streamed("both agents streaming after the outage");

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
    // covers everything that was in the WALs.
    let drain: Vec<Proc> = names.iter().map(|n| cluster.start_agent(n, "1h")).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !expected.iter().all(|(name, last)| {
        let state = cluster.agent_dir(name);
        ledger(cluster.api, &token, &agent_id(&state))
            .and_then(|l| l.high_water)
            .is_some_and(|hw| hw >= seq_base(&state) + last)
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

    for (name, last_before_drain) in expected {
        let state = cluster.agent_dir(name);
        let (_last, acked) = wal_state(&state);
        assert!(
            acked >= last_before_drain,
            "{name}: acked {acked} < {last_before_drain}"
        );
        let base = seq_base(&state);
        let l = ledger(cluster.api, &token, &agent_id(&state))
            .unwrap_or_else(|| panic!("{name}: no ingest ledger"));
        let hw = l.high_water.expect("a high-water mark after the drain");
        let stored_records = hw - base;
        eprintln!("{name}: appended_before_drain={last_before_drain} acked={acked} ledger={l:?}");
        assert!(
            stored_records >= acked,
            "{name}: the agent trimmed records the server lacks (high-water {hw}, base {base}, acked {acked})"
        );
        // Every seq base+1..=hw accepted exactly once: as many accepted decisions as seqs
        // (a duplicate stored twice would exceed it, a lost batch fall short of it) and no
        // accepted gap (a gap would let fewer accepted batches reach the same high-water).
        assert_eq!(
            l.accepted, stored_records,
            "{name}: accepted batches != seqs up to the high-water mark: {l:?}"
        );
        assert_eq!(
            (l.gaps, l.missing),
            (0, 0),
            "{name}: acknowledged collections missing from storage: {l:?}"
        );
        assert_eq!(
            (l.rejected_stale, l.rejected_ahead),
            (0, 0),
            "{name}: batches refused: {l:?}"
        );
    }
    let status = server.terminate();
    assert!(
        status.success(),
        "server exited with {status} after SIGTERM"
    );
}

const E2E_USER: &str = "e2e-viewer";
const E2E_PASSWORD: &str = "e2e viewer passphrase";
