//! Scale-out on NATS JetStream (issue 12): `sentra-server --role worker` processes against a
//! real nats-server (JetStream, `sync_interval: always`; the binary from
//! `SENTRA_TEST_NATS_BIN` or installed by `scripts/nats-test-server bin`) and a real
//! PostgreSQL (sentra-testkit). Batches are put on the bus the way an ingest server does
//! (`BusPublisher`: signed, verified, acknowledged after the PubAck).

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::http;
use sentra_core::{
    AgentId, Batch, KeyId, Labels, MemoryKeyring, Method, Nonce, Sample, SecretKey, Seq, Signer,
    UnixMillis, Validity, Value, Verified, Verifier, proto::AckStatus,
};
// `stored` reads the ledger: (agent, accepted, high water).
use sentra_ingest::bus::jetstream::{BusConfig, BusPublisher};
use sentra_testkit::TestDb;
use sqlx::Connection as _;

fn nats_bin() -> PathBuf {
    if let Some(b) = std::env::var_os("SENTRA_TEST_NATS_BIN") {
        return b.into();
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/nats-test-server");
    let out = Command::new(&script)
        .arg("bin")
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "scripts/nats-test-server bin failed: nats-server is needed for this test (set SENTRA_TEST_NATS_BIN)"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A nats-server child with JetStream on a free loopback port, killed on drop; restartable
/// on the same port and store.
struct Nats {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nats {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut n = Self {
            child: None,
            port,
            dir,
        };
        n.start_again();
        n
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn start_again(&mut self) {
        let (dir, port) = (&self.dir, self.port);
        let conf = dir.path().join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "listen: 127.0.0.1:{port}\njetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n",
                dir.path().join("js").display()
            ),
        )
        .unwrap();
        let log = dir.path().join("server.log");
        let child = Command::new(nats_bin())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Server is ready") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A `sentra-server` child, killed (-9) on drop; its stderr in `log`.
struct Worker {
    child: Option<Child>,
    log: PathBuf,
}

impl Worker {
    fn start(config: &Path, log: PathBuf) -> Self {
        Self::server(&["--role", "worker"], config, log)
    }

    fn server(args: &[&str], config: &Path, log: PathBuf) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sentra-server"));
        // A developer's SENTRA_* variables must not change what the worker does.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("SENTRA_") {
                cmd.env_remove(k);
            }
        }
        // Appending to the log: a restarted process keeps its predecessor's lines.
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = cmd
            .args(args)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Self {
            child: Some(child),
            log,
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM: a graceful stop must exit 0.
    fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let pid = c.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                assert!(status.success(), "worker exited {status}:\n{}", self.logs());
                return;
            }
            assert!(Instant::now() < deadline, "worker did not stop within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Every process's log, separated, for a failure message.
fn all_logs(procs: &[&Worker]) -> String {
    procs
        .iter()
        .map(|p| p.logs())
        .collect::<Vec<_>>()
        .join("\n----\n")
}

/// Polls `check` every `every` for at most `within` until it answers `Ok`; on timeout
/// panics with `what`, the last state `check` described (`Err`) and every process's log.
async fn until<T, F, Fut>(
    what: &str,
    within: Duration,
    every: Duration,
    procs: &[&Worker],
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) => assert!(
                Instant::now() < deadline,
                "{what}: not within {within:?}; {last}\n{}",
                all_logs(procs)
            ),
        }
        tokio::time::sleep(every).await;
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The log line without terminal colour codes.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... final byte in @..~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn verified(agent: &AgentId, seq: u64, ts: i64) -> Verified {
    let secret = SecretKey::from_bytes([42; 32]);
    let mut b = Batch::new(
        agent.clone(),
        Seq::new(seq).unwrap(),
        UnixMillis::from_millis(ts),
    );
    b.samples = vec![Sample::new(
        "scaleout_test".parse().unwrap(),
        Labels::from_pairs([("k", "v")]).unwrap(),
        UnixMillis::from_millis(ts),
        Value::Gauge(f64::from(u32::try_from(seq).unwrap())),
    )];
    let now = UnixMillis::now();
    let env = Signer::new(agent.clone(), KeyId::new(1), &secret).sign(
        Method::Push,
        Seq::new(seq).unwrap(),
        now,
        Nonce::from_bytes([0; 16]),
        Bytes::from(b.encode_to_vec()),
    );
    let mut keys = MemoryKeyring::new();
    keys.insert(agent.clone(), KeyId::new(1), &secret, Validity::always());
    Verifier::new()
        .verify(&env, Method::Push, now, &keys)
        .unwrap()
}

/// `(sum of accepted seqs over agents, per-agent (accepted, high water), samples)` as
/// stored in PostgreSQL.
async fn stored(db: &TestDb) -> (i64, Vec<(String, i64, i64)>, i64) {
    let mut c = sqlx::PgConnection::connect(db.url()).await.unwrap();
    // The schema appears with the first worker's migration.
    let ready: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.tables \
         WHERE table_schema = 'sentra_metrics' AND table_name = 'agents')",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    if !ready {
        c.close().await.unwrap();
        return (0, Vec::new(), 0);
    }
    let agents: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT agent_id, accepted, high_water FROM sentra_metrics.agents ORDER BY agent_id",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    let samples: i64 = i64::try_from(
        sentra_ingest::storage::samples_of_chunks(
            sqlx::query_as::<_, (i64, i64, Vec<u8>)>(
                "SELECT series_id, gen, data FROM sentra_metrics.chunks",
            )
            .fetch_all(&mut c)
            .await
            .unwrap(),
        )
        .unwrap()
        .len(),
    )
    .unwrap();
    c.close().await.unwrap();
    (agents.iter().map(|a| a.1).sum(), agents, samples)
}

async fn wait_accepted(db: &TestDb, want: i64, within: Duration, workers: &[&Worker]) {
    let step = Duration::from_millis(100);
    until("batches stored", within, step, workers, || async {
        let (sum, _, _) = stored(db).await;
        if sum >= want {
            Ok(())
        } else {
            Err(format!("{sum} of {want} stored"))
        }
    })
    .await;
}

/// Two worker processes on one database: the first stores, the second waits as a hot
/// standby (the writer lock); the first is killed with -9 while batches keep coming; the
/// second takes over and the first's unacked messages are redelivered to it. Every
/// acknowledged batch is stored exactly once (the ledger counts each seq once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_standby_takes_over_nothing_lost_nothing_doubled() {
    let nats = Nats::start();
    let db = TestDb::new().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("database-url");
    std::fs::write(&url_file, db.url()).unwrap();
    let config = dir.path().join("worker.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\nbackend = \"postgres\"\ndatabase_url_file = \"{}\"\n\n\
             [bus]\nnats_urls = [\"{}\"]\nack_wait = \"2s\"\n",
            url_file.display(),
            nats.url()
        ),
    )
    .unwrap();

    let mut bus = BusConfig::new(nats.url());
    bus.ack_wait = Duration::from_secs(2);
    let publisher = BusPublisher::connect(bus).await.unwrap();
    let agents: Vec<AgentId> = (0..5)
        .map(|i| AgentId::new(format!("scale-{i}")).unwrap())
        .collect();
    let t = UnixMillis::now().as_millis();
    let per_agent = 40u64;
    let mut sent = 0u64;
    let mut acknowledged = 0u64;
    let mut publish = async |seqs: std::ops::RangeInclusive<u64>| {
        for seq in seqs {
            for (i, a) in agents.iter().enumerate() {
                let ts = t + i64::try_from(seq * 10 + i as u64).unwrap();
                sent += 1;
                let ack = publisher.publish(&verified(a, seq, ts)).await.unwrap();
                assert_eq!(ack.status, AckStatus::Accepted as i32, "{ack:?}");
                acknowledged += 1;
            }
        }
    };

    let mut first = Worker::start(&config, dir.path().join("worker-1.log"));
    publish(1..=10).await;
    wait_accepted(&db, 10, Duration::from_secs(90), &[&first]).await;
    let mut second = Worker::start(&config, dir.path().join("worker-2.log"));
    publish(11..=20).await;
    wait_accepted(&db, 60, Duration::from_secs(60), &[&first, &second]).await;
    // Kill the active worker while the next batches arrive.
    publish(21..=25).await;
    first.kill9();
    publish(26..=per_agent).await;
    let total = i64::try_from(per_agent).unwrap() * 5;
    wait_accepted(&db, total, Duration::from_secs(120), &[&first, &second]).await;
    // Late redeliveries (already stored) must not count twice: wait past AckWait.
    tokio::time::sleep(Duration::from_secs(3)).await;
    second.stop();
    let (sum, per, samples) = stored(&db).await;
    let lost = per
        .iter()
        .map(|(_, accepted, _)| (i64::try_from(per_agent).unwrap() - accepted).max(0))
        .sum::<i64>();
    let duplicated = (sum - total).max(0);
    let redelivered_line = second
        .logs()
        .lines()
        .find(|l| l.contains("storage worker stopping"))
        .map(strip_ansi)
        .unwrap_or_default();
    println!(
        "scaleout worker failover: sent {sent}, acknowledged {acknowledged}, stored {sum}, lost {lost}, duplicated-in-storage {duplicated}, samples {samples}; standby at stop: {redelivered_line}"
    );
    assert!(
        second.logs().contains("storage worker ready"),
        "the standby never took over:\n{}",
        second.logs()
    );
    assert_eq!((lost, duplicated), (0, 0), "{per:?}");
    for (agent, accepted, high_water) in &per {
        assert_eq!(
            (*accepted, *high_water),
            (
                i64::try_from(per_agent).unwrap(),
                i64::try_from(per_agent).unwrap()
            ),
            "{agent}"
        );
    }
    assert_eq!(samples, total);
}

/// A tiny seeded generator (splitmix64): the fault schedule is a function of the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Default)]
struct AgentStats {
    sent: std::sync::atomic::AtomicU64,
    acknowledged: std::sync::atomic::AtomicU64,
    /// Pushes answered with an error (UNAVAILABLE, connection refused): resent.
    resent: std::sync::atomic::AtomicU64,
}

/// One agent's shipping loop: each batch is signed once (the agent's WAL keeps the
/// envelope) and pushed, alternating between the ingest servers; an error keeps it and
/// resends it to the other server until it is acknowledged (`ACCEPTED` or `DUPLICATE`).
async fn ship(
    e: sentra_control::Enrolment,
    n: u64,
    t: i64,
    grpc: Vec<std::net::SocketAddr>,
    stats: std::sync::Arc<AgentStats>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let clients: Vec<sentra_transport::Client> = grpc
        .iter()
        .map(|a| {
            sentra_transport::Client::builder(format!("http://{a}"))
                .retry(sentra_transport::RetryConfig::disabled())
                .attempt_timeout(Duration::from_secs(10))
                .deadline(Duration::from_secs(15))
                .build()
                .unwrap()
        })
        .collect();
    let signer = Signer::new(e.agent_id.clone(), e.key_id, &e.secret);
    let mut k = 0usize;
    for seq in 1..=n {
        let ts = t + i64::try_from(seq).unwrap() * 10;
        let mut b = Batch::new(
            e.agent_id.clone(),
            Seq::new(seq).unwrap(),
            UnixMillis::from_millis(ts),
        );
        b.samples = vec![Sample::new(
            "scaleout_fault".parse().unwrap(),
            Labels::from_pairs([("k", "v")]).unwrap(),
            UnixMillis::from_millis(ts),
            Value::Gauge(f64::from(u32::try_from(seq).unwrap())),
        )];
        let env = signer.sign_batch(&b, UnixMillis::now(), Nonce::random());
        stats.sent.fetch_add(1, Relaxed);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let client = &clients[k % clients.len()];
            k += 1;
            match client.push(env.clone()).await {
                Ok(ack)
                    if ack.status() == AckStatus::Accepted
                        || ack.status() == AckStatus::Duplicate =>
                {
                    stats.acknowledged.fetch_add(1, Relaxed);
                    break;
                }
                Ok(ack) => panic!("agent {} seq {seq} refused: {ack:?}", e.agent_id),
                Err(err) => {
                    stats.resent.fetch_add(1, Relaxed);
                    assert!(
                        Instant::now() < deadline,
                        "agent {} seq {seq} not acknowledged within 120 s: {err}",
                        e.agent_id
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

use common::free_addr;

/// The fault test (issue 12): 2 ingest servers, 2 workers, 5 agents on their shipping
/// code (signed envelopes over gRPC, resent until acknowledged); nats-server, a worker, an
/// ingest server (each `kill -9`) and PostgreSQL (`pg_ctl stop -m immediate`, a private
/// cluster) die at seeded points and come back. Pass: every acknowledged batch stored, none
/// twice. Seed: `SENTRA_SCALEOUT_SEED` (default 12), printed with the summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_test_kill9_nats_worker_ingest_and_postgres() {
    use std::sync::atomic::Ordering::Relaxed;
    let seed: u64 = std::env::var("SENTRA_SCALEOUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let mut rng = Rng(seed);
    let pg = std::sync::Arc::new(
        tokio::task::spawn_blocking(sentra_testkit::PgServer::start)
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("a PostgreSQL cluster of this test: {e}")),
    );
    let db = TestDb::on(&pg).await.unwrap();
    let mut nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("database-url");
    std::fs::write(&url_file, db.url()).unwrap();
    let config = dir.path().join("scaleout.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\nbackend = \"postgres\"\ndatabase_url_file = \"{}\"\n\n\
             [bus]\nnats_urls = [\"{}\"]\nack_wait = \"2s\"\n",
            url_file.display(),
            nats.url()
        ),
    )
    .unwrap();

    // Five agents enrolled in the shared control database.
    let mut opts = sentra_control::StoreOptions::default();
    opts.password_cost = sentra_control::PasswordCost::insecure_for_tests();
    opts.reload_interval = None;
    let ops = sentra_control::ControlStore::open_postgres(db.url(), opts)
        .await
        .unwrap();
    let mut agents = Vec::new();
    for i in 0..5 {
        let token = ops
            .issue_bootstrap_token(
                &sentra_control::Actor::local(),
                Duration::from_secs(600),
                "scaleout",
            )
            .await
            .unwrap();
        agents.push(
            ops.enroll(&token.token, &format!("scale-{i}"))
                .await
                .unwrap(),
        );
    }
    drop(ops);

    let grpc = [free_addr(), free_addr()];
    let ingest_args = |i: usize| {
        vec![
            "--role".to_owned(),
            "ingest".to_owned(),
            "--grpc-listen".to_owned(),
            grpc[i].to_string(),
            "--data-dir".to_owned(),
            dir.path().join(format!("ingest-{i}")).display().to_string(),
        ]
    };
    let start_ingest = |i: usize| {
        let args = ingest_args(i);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Worker::server(&args, &config, dir.path().join(format!("ingest-{i}.log")))
    };
    let start_worker =
        |i: usize| Worker::start(&config, dir.path().join(format!("worker-{i}.log")));
    let mut ingest = [start_ingest(0), start_ingest(1)];
    let mut workers = [start_worker(0), start_worker(1)];

    let per_agent = 30u64;
    let total = per_agent * 5;
    let t = UnixMillis::now().as_millis();
    let stats = std::sync::Arc::new(AgentStats::default());
    let shippers: Vec<_> = agents
        .into_iter()
        .map(|e| tokio::spawn(ship(e, per_agent, t, grpc.to_vec(), stats.clone())))
        .collect();

    // The seeded schedule: which fault at which count of acknowledged batches, how long
    // down, and which worker / ingest server.
    let mut faults = ["nats", "worker", "ingest", "postgres"];
    for i in (1..faults.len()).rev() {
        faults.swap(i, usize::try_from(rng.below(i as u64 + 1)).unwrap());
    }
    let mut schedule = Vec::new();
    for (i, f) in faults.iter().enumerate() {
        let at = total * (i as u64 + 1) / 5 + rng.below(total / 10);
        schedule.push((
            *f,
            at,
            200 + rng.below(1300),
            usize::try_from(rng.below(2)).unwrap(),
        ));
    }
    let mut log = Vec::new();
    for &(fault, at, down_ms, which) in &schedule {
        let deadline = Instant::now() + Duration::from_secs(180);
        while stats.acknowledged.load(Relaxed) < at {
            assert!(
                Instant::now() < deadline,
                "stuck at {} acknowledged before {fault}",
                stats.acknowledged.load(Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let down = Duration::from_millis(down_ms);
        match fault {
            "nats" => {
                nats.kill9();
                tokio::time::sleep(down).await;
                nats.start_again();
            }
            "worker" => {
                // The active one (the other waits on the writer lock as a standby).
                let which = workers
                    .iter()
                    .position(|w| w.logs().contains("storage worker ready"))
                    .unwrap_or(which);
                workers[which].kill9();
                tokio::time::sleep(down).await;
                workers[which] = start_worker(which);
            }
            "ingest" => {
                ingest[which].kill9();
                tokio::time::sleep(down).await;
                ingest[which] = start_ingest(which);
            }
            _ => {
                let p = pg.clone();
                tokio::task::spawn_blocking(move || p.crash())
                    .await
                    .unwrap()
                    .unwrap();
                tokio::time::sleep(down).await;
                let p = pg.clone();
                tokio::task::spawn_blocking(move || p.start_again())
                    .await
                    .unwrap()
                    .unwrap();
            }
        }
        log.push(format!("{fault}@{at}+{down_ms}ms"));
    }
    for s in shippers {
        s.await.unwrap();
    }
    let total_i = i64::try_from(total).unwrap();
    let all: Vec<&Worker> = workers.iter().chain(ingest.iter()).collect();
    wait_accepted(&db, total_i, Duration::from_secs(120), &all).await;
    // Late redeliveries (already stored) must not count twice: wait past AckWait.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (sum, per, samples) = stored(&db).await;
    let mut redelivered = 0u64;
    for w in &mut workers {
        w.stop();
        let logs = w.logs();
        let line = logs
            .lines()
            .rev()
            .find(|l| l.contains("storage worker stopping"))
            .map(strip_ansi)
            .unwrap_or_default();
        redelivered += line
            .split_whitespace()
            .find_map(|f| f.strip_prefix("redelivered="))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    for i in &mut ingest {
        i.stop();
    }
    let per_agent_i = i64::try_from(per_agent).unwrap();
    let lost: i64 =
        (per_agent_i * 5 - per.iter().map(|p| p.1.min(per_agent_i)).sum::<i64>()).max(0);
    let duplicated = per.iter().map(|p| (p.1 - per_agent_i).max(0)).sum::<i64>();
    println!(
        "scaleout fault test (seed {seed}; {}): sent {}, acknowledged {}, lost {lost}, duplicated-in-storage {duplicated}, raw redeliveries {redelivered} (surviving workers), agent resends {}, stored {sum}, samples {samples}",
        log.join(", "),
        stats.sent.load(Relaxed),
        stats.acknowledged.load(Relaxed),
        stats.resent.load(Relaxed),
    );
    assert_eq!(stats.acknowledged.load(Relaxed), total);
    assert_eq!((lost, duplicated), (0, 0), "{per:?}");
    assert_eq!(per.len(), 5, "{per:?}");
    assert_eq!(samples, total_i);
}

/// `GET path` on `addr` over plain HTTP/1.0: (status, body); `None` while nothing listens.
fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// Polls `GET path` until `ok(status, body)` holds (bounded); the last answer on failure.
async fn wait_http(
    addr: std::net::SocketAddr,
    path: &str,
    what: &str,
    within: Duration,
    procs: &[&Worker],
    ok: impl Fn(u16, &str) -> bool,
) -> String {
    until(what, within, Duration::from_millis(200), procs, || async {
        let path_owned = path.to_owned();
        let got = tokio::task::spawn_blocking(move || http_get(addr, &path_owned))
            .await
            .unwrap();
        match got {
            Some((status, body)) if ok(status, &body) => Ok(body),
            got => Err(format!("last answer of {addr}{path}: {got:?}")),
        }
    })
    .await
}

/// The value of the first sample line starting with `series ` (exact series text).
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// An ingest server and a storage worker with `--observe-listen`: `/readyz` is 200 once
/// NATS and PostgreSQL answer, 503 naming NATS while nats-server is down (kill -9), 503
/// naming PostgreSQL while it is stopped (immediate), 200 again after each restart (and an
/// API server's `/readyz` names its PostgreSQL metric store meanwhile); `/metrics` has the bus series (connection state, reconnects,
/// publishes, PubAck latency, worker results, consumer pending) and passes `promtool check
/// metrics` (scripts/install-deps installs promtool; under `CI` a missing promtool fails).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_and_worker_readyz_and_metrics_follow_nats() {
    let mut nats = Nats::start();
    // A private cluster: this test stops PostgreSQL too.
    let pg = std::sync::Arc::new(
        tokio::task::spawn_blocking(sentra_testkit::PgServer::start)
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("a PostgreSQL cluster of this test: {e}")),
    );
    let db = TestDb::on(&pg).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("database-url");
    std::fs::write(&url_file, db.url()).unwrap();
    let config = dir.path().join("observe.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\nbackend = \"postgres\"\ndatabase_url_file = \"{}\"\n\n\
             [bus]\nnats_urls = [\"{}\"]\nack_wait = \"2s\"\n",
            url_file.display(),
            nats.url()
        ),
    )
    .unwrap();
    let (ingest_obs, worker_obs) = (free_addr(), free_addr());
    let grpc = free_addr().to_string();
    let ingest_data = dir.path().join("ingest").display().to_string();
    let ingest_observe = ingest_obs.to_string();
    let mut ingest = Worker::server(
        &[
            "--role",
            "ingest",
            "--grpc-listen",
            &grpc,
            "--data-dir",
            &ingest_data,
            "--observe-listen",
            &ingest_observe,
        ],
        &config,
        dir.path().join("ingest.log"),
    );
    let worker_observe = worker_obs.to_string();
    let mut worker = Worker::server(
        &["--role", "worker", "--observe-listen", &worker_observe],
        &config,
        dir.path().join("worker.log"),
    );
    let within = Duration::from_secs(60);
    for (addr, what) in [(ingest_obs, "ingest"), (worker_obs, "worker")] {
        wait_http(
            addr,
            "/readyz",
            &format!("{what} ready"),
            within,
            &[&ingest, &worker],
            |s, _| s == 200,
        )
        .await;
    }

    // An API server (read-only metric store) on the same databases.
    let api_addr = free_addr();
    let (api_listen, api_data) = (
        api_addr.to_string(),
        dir.path().join("api").display().to_string(),
    );
    let mut api = Worker::server(
        &[
            "--role",
            "api",
            "--api-listen",
            &api_listen,
            "--data-dir",
            &api_data,
        ],
        &config,
        dir.path().join("api.log"),
    );
    wait_http(api_addr, "/readyz", "api ready", within, &[&api], |s, _| {
        s == 200
    })
    .await;

    // Batches through the bus: the worker counts what it stored.
    let publisher = BusPublisher::connect(BusConfig::new(nats.url()))
        .await
        .unwrap();
    let agent = AgentId::new("observe-0").unwrap();
    let t = UnixMillis::now().as_millis();
    for seq in 1..=5u64 {
        let ack = publisher
            .publish(&verified(&agent, seq, t + i64::try_from(seq).unwrap()))
            .await
            .unwrap();
        assert_eq!(ack.status, AckStatus::Accepted as i32, "{ack:?}");
    }
    drop(publisher);
    let worker_page = wait_http(
        worker_obs,
        "/metrics",
        "worker counted 5 stored batches and nothing pending or unacked",
        within,
        &[&worker],
        // The consumer gauges are sampled from the consumer info on a timer, so they
        // lag the counter; wait for all three rather than reading them once.
        |s, b| {
            s == 200
                && sample(b, "sentra_bus_worker_messages_total{result=\"accepted\"}") == Some(5.0)
                && sample(b, "sentra_bus_consumer_pending") == Some(0.0)
                && sample(b, "sentra_bus_consumer_ack_pending") == Some(0.0)
        },
    )
    .await;
    let ingest_page = http_get(ingest_obs, "/metrics").unwrap().1;
    for (page, wants) in [
        (
            &ingest_page,
            &[
                "# TYPE sentra_bus_publishes_total counter",
                "# TYPE sentra_bus_puback_seconds histogram",
                "sentra_bus_connected 1",
                "sentra_bus_reconnects_total 0",
                "sentra_component_ready{component=\"nats\"} 1",
                "sentra_component_ready{component=\"postgres\"} 1",
                "sentra_database_reachable 1",
                "# TYPE sentra_transport_connections_closed_total counter",
            ][..],
        ),
        (
            &worker_page,
            &[
                "sentra_bus_connected 1",
                "sentra_bus_redeliveries_total 0",
                "sentra_bus_dead_letters_total 0",
                "sentra_bus_consumer_ack_pending 0",
                "sentra_component_ready{component=\"storage\"} 1",
                "sentra_database_reachable 1",
                "# TYPE sentra_ingest_commit_duration_seconds histogram",
            ][..],
        ),
    ] {
        for want in wants {
            assert!(page.contains(want), "{want} missing in\n{page}");
        }
    }
    match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .output()
    {
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "promtool not runnable under CI ({e}): scripts/install-deps installs Debian's prometheus"
            );
            println!("promtool not installed: metric names not linted here");
        }
        Ok(_) => {
            for (what, page) in [("ingest", &ingest_page), ("worker", &worker_page)] {
                use std::io::Write as _;
                let mut child = Command::new("promtool")
                    .args(["check", "metrics"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(page.as_bytes())
                    .unwrap();
                let out = child.wait_with_output().unwrap();
                let said = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(
                    out.status.success() && said.trim().is_empty(),
                    "promtool check metrics on the {what}'s /metrics: {said}\n{page}"
                );
            }
        }
    }

    // NATS dies: both say so on /readyz and /metrics; then it comes back.
    nats.kill9();
    for (addr, what) in [(ingest_obs, "ingest"), (worker_obs, "worker")] {
        let body = wait_http(
            addr,
            "/readyz",
            &format!("{what} /readyz 503 naming NATS"),
            within,
            &[&ingest, &worker],
            |s, b| s == 503 && b.contains("\"component\":\"nats\"") && b.contains("NATS"),
        )
        .await;
        assert!(body.contains("\"status\":\"unavailable\""), "{body}");
        wait_http(
            addr,
            "/metrics",
            &format!("{what} sentra_bus_connected 0"),
            within,
            &[&ingest, &worker],
            |s, b| s == 200 && sample(b, "sentra_bus_connected") == Some(0.0),
        )
        .await;
    }
    nats.start_again();
    for (addr, what) in [(ingest_obs, "ingest"), (worker_obs, "worker")] {
        wait_http(
            addr,
            "/readyz",
            &format!("{what} ready again after the NATS restart"),
            within,
            &[&ingest, &worker],
            |s, _| s == 200,
        )
        .await;
        let page = http_get(addr, "/metrics").unwrap().1;
        assert!(
            sample(&page, "sentra_bus_reconnects_total").is_some_and(|n| n >= 1.0),
            "{what}: {page}"
        );
    }

    // PostgreSQL stops (immediate): both name it on /readyz; then it comes back.
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.crash())
        .await
        .unwrap()
        .unwrap();
    for (addr, what) in [(ingest_obs, "ingest"), (worker_obs, "worker")] {
        wait_http(
            addr,
            "/readyz",
            &format!("{what} /readyz 503 naming PostgreSQL"),
            within,
            &[&ingest, &worker],
            |s, b| s == 503 && b.contains("\"component\":\"postgres\"") && b.contains("PostgreSQL"),
        )
        .await;
    }
    // The API server probes its metric store every second.
    wait_http(
        api_addr,
        "/readyz",
        "api /readyz 503 naming the PostgreSQL metric store",
        within,
        &[&api],
        |s, b| s == 503 && b.contains("\"component\":\"postgres\"") && b.contains("metric store"),
    )
    .await;
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.start_again())
        .await
        .unwrap()
        .unwrap();
    for (addr, what) in [(ingest_obs, "ingest"), (worker_obs, "worker")] {
        wait_http(
            addr,
            "/readyz",
            &format!("{what} ready again after the PostgreSQL restart"),
            within,
            &[&ingest, &worker],
            |s, _| s == 200,
        )
        .await;
    }
    wait_http(
        api_addr,
        "/readyz",
        "api ready again after the PostgreSQL restart",
        within,
        &[&api],
        |s, _| s == 200,
    )
    .await;
    api.stop();
    ingest.stop();
    worker.stop();
}

/// A batch of `agent` with one WireGuard interface and one peer (persistent keepalive, last
/// handshake `handshake_age` ago) whose counters grow with `seq`, signed with the agent's
/// enrolled key.
fn wg_envelope(
    e: &sentra_control::Enrolment,
    seq: u64,
    t: i64,
    handshake_age: Duration,
) -> sentra_core::proto::SignedBatch {
    let ts = t + i64::try_from(seq).unwrap() * 1000;
    let mut b = Batch::new(
        e.agent_id.clone(),
        Seq::new(seq).unwrap(),
        UnixMillis::from_millis(ts),
    );
    b.samples = vec![Sample::new(
        "scaleout_follow".parse().unwrap(),
        Labels::from_pairs([("k", "v")]).unwrap(),
        UnixMillis::from_millis(ts),
        Value::Gauge(f64::from(u32::try_from(seq).unwrap())),
    )];
    b.wg_devices = vec![
        sentra_core::WgDevice::new("wg0".to_owned(), 3)
            .with_public_key(sentra_core::WgPublicKey::from_bytes([7; 32]))
            .with_listen_port(51820)
            .with_peers(vec![
                sentra_core::WgPeer::new(sentra_core::WgPublicKey::from_bytes([9; 32]))
                    .with_endpoint("192.0.2.1:51820".parse::<std::net::SocketAddr>().unwrap())
                    .with_allowed_ips(vec!["10.0.0.2/32".parse().unwrap()])
                    .with_last_handshake(UnixMillis::from_millis(
                        UnixMillis::now().as_millis()
                            - i64::try_from(handshake_age.as_millis()).unwrap(),
                    ))
                    .with_transfer(1000 * seq, 500 * seq)
                    .with_persistent_keepalive_s(25),
            ]),
    ];
    Signer::new(e.agent_id.clone(), e.key_id, &e.secret).sign_batch(
        &b,
        UnixMillis::now(),
        Nonce::random(),
    )
}

/// Pushes `env` to the ingest server until it is acknowledged (bounded).
async fn push_until_acked(
    grpc: std::net::SocketAddr,
    env: sentra_core::proto::SignedBatch,
    procs: &[&Worker],
) {
    let client = sentra_transport::Client::builder(format!("http://{grpc}"))
        .retry(sentra_transport::RetryConfig::disabled())
        .attempt_timeout(Duration::from_secs(10))
        .deadline(Duration::from_secs(15))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client.push(env.clone()).await {
            Ok(ack) if ack.status() == AckStatus::Accepted => return,
            Ok(ack) => panic!("push refused: {ack:?}"),
            Err(err) => {
                assert!(
                    Instant::now() < deadline,
                    "push not acknowledged within 60 s: {err}\n{}",
                    all_logs(procs)
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// The agent's entry in a `/api/v1/status` answer: (high water, peers as
/// `(public_key, endpoint, rx, tx, allowed_ips)`).
fn agent_in(body: &str, agent: &str) -> Option<(u64, Vec<String>)> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let a = v["agents"]
        .as_array()?
        .iter()
        .find(|a| a["agent_id"] == agent)?;
    let peers = a["interfaces"]
        .as_array()?
        .iter()
        .flat_map(|i| i["peers"].as_array().cloned().unwrap_or_default())
        .map(|p| {
            format!(
                "{} {} {} {} {}",
                p["public_key"], p["endpoint"], p["rx_bytes"], p["tx_bytes"], p["allowed_ips"]
            )
        })
        .collect();
    Some((a["high_water"].as_u64()?, peers))
}

/// A handshake age well within the stale threshold (180 s), and one beyond it.
const FRESH: Duration = Duration::from_secs(5);
const STALE: Duration = Duration::from_secs(200);

/// Polls `/api/v1/status` of `addr` until `agent` is at `seq` (bounded): its entry.
async fn wait_status(
    addr: std::net::SocketAddr,
    token: &str,
    agent: &str,
    seq: u64,
    within: Duration,
    procs: &[&Worker],
) -> (u64, Vec<String>) {
    let what = format!("{addr}: {agent} at seq {seq} in /api/v1/status");
    until(&what, within, Duration::from_millis(200), procs, || async {
        let tk = token.to_owned();
        let got = tokio::task::spawn_blocking(move || {
            http(addr, "GET", "/api/v1/status", Some(&tk), None)
        })
        .await
        .unwrap();
        match &got {
            Some((200, body)) => match agent_in(body, agent) {
                Some(a) if a.0 == seq => Ok(a),
                _ => Err(format!("last answer: {got:?}")),
            },
            _ => Err(format!("last answer: {got:?}")),
        }
    })
    .await
}

/// `--role api` (issue 12): 1 ingest server, 1 storage worker and 2 API servers on one
/// nats-server and PostgreSQL. An agent's batches pushed to the ingest server appear in
/// `/api/v1/status` of both API servers (same seq, same peer data) and on the live stream
/// of one; nats-server killed (-9): both `/readyz` 503 naming nats while the REST API still
/// serves; restarted: ready again and new batches flow to both. With `[alerts] lease =
/// true` one of them evaluates the fleet: a stale peer fires exactly once. A restarted API
/// server shows the fleet from the metric store before the next batch (warm-up). A sequence
/// reset on an API server is refused with 409 and rotates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_servers_follow_the_bus_status_stream_and_readyz() {
    use std::io::{BufRead as _, Write as _};
    let mut nats = Nats::start();
    let db = TestDb::new().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("database-url");
    std::fs::write(&url_file, db.url()).unwrap();
    let config = dir.path().join("api.toml");
    // Alerts: the lease (one API server evaluates the fleet), notifications of the stale
    // handshake rule to the server log.
    let routing = dir.path().join("routing.toml");
    std::fs::write(
        &routing,
        "[[route]]\nreceiver = \"log\"\nmatchers = ['alertname=\"WgHandshakeStale\"']\n\
         group_wait = \"1s\"\ngroup_interval = \"2s\"\nrepeat_interval = \"1h\"\n",
    )
    .unwrap();
    std::fs::write(
        &config,
        format!(
            "[storage]\nbackend = \"postgres\"\ndatabase_url_file = \"{}\"\n\n\
             [bus]\nnats_urls = [\"{}\"]\nack_wait = \"2s\"\n\n\
             [alerts]\nlease = true\nrouting_file = \"{}\"\ntick = \"500ms\"\n\
             state_save_every = \"500ms\"\n",
            url_file.display(),
            nats.url(),
            routing.display()
        ),
    )
    .unwrap();

    // One enrolled agent and a viewer in the shared control database.
    let mut opts = sentra_control::StoreOptions::default();
    opts.password_cost = sentra_control::PasswordCost::insecure_for_tests();
    opts.reload_interval = None;
    let ops = sentra_control::ControlStore::open_postgres(db.url(), opts)
        .await
        .unwrap();
    let token = ops
        .issue_bootstrap_token(
            &sentra_control::Actor::local(),
            Duration::from_secs(600),
            "scaleout",
        )
        .await
        .unwrap();
    let enrolment = ops.enroll(&token.token, "follow-0").await.unwrap();
    let agent = enrolment.agent_id.as_str();
    let password = "follow the bus, both of you";
    ops.create_user(
        &sentra_control::Actor::local(),
        "viewer",
        sentra_control::Password::new(password),
        sentra_control::Role::Viewer,
    )
    .await
    .unwrap();
    ops.create_user(
        &sentra_control::Actor::local(),
        "admin",
        sentra_control::Password::new(password),
        sentra_control::Role::Admin,
    )
    .await
    .unwrap();
    drop(ops);

    let grpc = free_addr();
    let (grpc_s, ingest_dir) = (
        grpc.to_string(),
        dir.path().join("ingest").display().to_string(),
    );
    let mut ingest = Worker::server(
        &[
            "--role",
            "ingest",
            "--grpc-listen",
            &grpc_s,
            "--data-dir",
            &ingest_dir,
        ],
        &config,
        dir.path().join("ingest.log"),
    );
    let mut worker = Worker::start(&config, dir.path().join("worker.log"));
    let apis = [free_addr(), free_addr()];
    let start_api = |i: usize| {
        let (listen, data) = (
            apis[i].to_string(),
            dir.path().join(format!("api-{i}")).display().to_string(),
        );
        Worker::server(
            &[
                "--role",
                "api",
                "--api-listen",
                &listen,
                "--data-dir",
                &data,
            ],
            &config,
            dir.path().join(format!("api-{i}.log")),
        )
    };
    let mut api_servers: Vec<Worker> = (0..2).map(start_api).collect();
    let within = Duration::from_secs(60);
    for (i, addr) in apis.iter().enumerate() {
        wait_http(
            *addr,
            "/readyz",
            &format!("api server {i} ready"),
            within,
            &[&api_servers[i]],
            |s, _| s == 200,
        )
        .await;
    }
    let login = serde_json::json!({ "username": "viewer", "password": password }).to_string();
    let tokens: Vec<String> = apis
        .iter()
        .map(|a| {
            let (status, body) =
                http(*a, "POST", "/api/v1/auth/login", None, Some(&login)).unwrap();
            assert_eq!(status, 200, "login on {a}: {body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            v["access_token"].as_str().unwrap().to_owned()
        })
        .collect();

    // A live-stream client on the first API server: every line it reads, on a channel.
    let mut sse = std::net::TcpStream::connect(apis[0]).unwrap();
    write!(
        sse,
        "GET /api/v1/status/stream HTTP/1.0\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
        apis[0], tokens[0]
    )
    .unwrap();
    let sse_closer = sse.try_clone().unwrap();
    let (line_tx, line_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(sse).lines() {
            let Ok(line) = line else { return };
            if line_tx.send(line).is_err() {
                return;
            }
        }
    });
    let next_line = |what: &str, ok: &dyn Fn(&str) -> bool| {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match line_rx.recv_timeout(left) {
                Ok(l) if ok(&l) => return l,
                Ok(_) => {}
                Err(e) => panic!("live stream: no {what} within {within:?} ({e})"),
            }
        }
    };
    next_line("snapshot event", &|l| l == "event: snapshot");

    let t = UnixMillis::now().as_millis();
    for seq in 1..=2u64 {
        push_until_acked(grpc, wg_envelope(&enrolment, seq, t, FRESH), &[&ingest]).await;
    }
    let want_peer = format!(
        "\"{}\" \"192.0.2.1:51820\" 2000 1000 [\"10.0.0.2/32\"]",
        sentra_core::WgPublicKey::from_bytes([9; 32])
    );
    let mut seen = Vec::new();
    for (i, addr) in apis.iter().enumerate() {
        let got = wait_status(
            *addr,
            &tokens[i],
            agent,
            2,
            within,
            &[&api_servers[i], &worker],
        )
        .await;
        assert_eq!(got.1, vec![want_peer.clone()], "api server {i}");
        seen.push(got);
    }
    assert_eq!(seen[0], seen[1], "both API servers show the same fleet");
    next_line("agent event of follow-0 seq 2", &|l| {
        l.starts_with("data:")
            && l.contains(&format!("\"agent_id\":\"{agent}\""))
            && l.contains("\"seq\":2")
    });

    // NATS dies: both API servers say so on /readyz and still serve what is stored.
    nats.kill9();
    for (i, addr) in apis.iter().enumerate() {
        wait_http(
            *addr,
            "/readyz",
            &format!("api server {i} /readyz 503 naming nats"),
            within,
            &[&api_servers[i]],
            |s, b| s == 503 && b.contains("\"component\":\"nats\"") && b.contains("NATS"),
        )
        .await;
        let (status, body) = http(*addr, "GET", "/api/v1/status", Some(&tokens[i]), None).unwrap();
        assert_eq!(status, 200, "api server {i} without NATS: {body}");
        assert_eq!(agent_in(&body, agent).map(|a| a.0), Some(2), "{body}");
        let (status, body) = http(*addr, "GET", "/api/v1/agents", Some(&tokens[i]), None).unwrap();
        assert_eq!(status, 200, "api server {i} without NATS: {body}");
        assert!(body.contains(agent), "{body}");
    }
    nats.start_again();
    for (i, addr) in apis.iter().enumerate() {
        wait_http(
            *addr,
            "/readyz",
            &format!("api server {i} ready again after the NATS restart"),
            within,
            &[&api_servers[i]],
            |s, _| s == 200,
        )
        .await;
    }
    push_until_acked(grpc, wg_envelope(&enrolment, 3, t, FRESH), &[&ingest]).await;
    for (i, addr) in apis.iter().enumerate() {
        wait_status(
            *addr,
            &tokens[i],
            agent,
            3,
            within,
            &[&api_servers[i], &worker],
        )
        .await;
    }
    next_line("agent event of follow-0 seq 3", &|l| {
        l.starts_with("data:")
            && l.contains(&format!("\"agent_id\":\"{agent}\""))
            && l.contains("\"seq\":3")
    });

    // Alerts fed from the bus: exactly one API server holds the lease; a stale handshake
    // (200 s > 180 s) fires once across both, and a second stale batch does not repeat it.
    let api_procs: Vec<&Worker> = api_servers.iter().collect();
    until(
        "exactly one alert lease holder",
        within,
        Duration::from_millis(200),
        &api_procs,
        || async {
            let leaders: Vec<Option<f64>> = apis
                .iter()
                .map(|a| sample(&http_get(*a, "/metrics")?.1, "sentra_alerts_leader"))
                .collect();
            if leaders.iter().flatten().sum::<f64>() == 1.0 {
                Ok(())
            } else {
                Err(format!("sentra_alerts_leader per server: {leaders:?}"))
            }
        },
    )
    .await;
    drop(api_procs);
    let firings = |servers: &[Worker]| -> usize {
        servers
            .iter()
            .flat_map(|s| s.logs().lines().map(strip_ansi).collect::<Vec<_>>())
            .filter(|l| {
                l.contains("alert notification")
                    && l.contains("notification=\"firing\"")
                    && l.contains("WgHandshakeStale")
            })
            .count()
    };
    push_until_acked(grpc, wg_envelope(&enrolment, 4, t, STALE), &[&ingest]).await;
    let api_procs: Vec<&Worker> = api_servers.iter().collect();
    until(
        "a WgHandshakeStale notification",
        within,
        Duration::from_millis(200),
        &api_procs,
        || async {
            match firings(&api_servers) {
                0 => Err("none in the API servers' logs".to_owned()),
                _ => Ok(()),
            }
        },
    )
    .await;
    drop(api_procs);
    push_until_acked(grpc, wg_envelope(&enrolment, 5, t, STALE), &[&ingest]).await;
    for (i, addr) in apis.iter().enumerate() {
        wait_status(*addr, &tokens[i], agent, 5, within, &[&api_servers[i]]).await;
    }
    // Longer than group_interval (2 s) and several ticks: a repeat would have been sent.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        firings(&api_servers),
        1,
        "one stale peer, two API servers, one evaluator: exactly one firing notification"
    );

    // A restarted API server is warmed up from the metric store: the fleet is there before
    // the next batch (the consumer delivers new messages only).
    until(
        "the worker applies 5 batches",
        within,
        Duration::from_millis(100),
        &[&worker],
        || async {
            match stored(&db).await.2 {
                n if n >= 5 => Ok(()),
                n => Err(format!("{n} applied")),
            }
        },
    )
    .await;
    api_servers[1].stop();
    api_servers[1] = start_api(1);
    wait_http(
        apis[1],
        "/readyz",
        "api server 1 ready after its restart",
        within,
        &[&api_servers[1]],
        |s, _| s == 200,
    )
    .await;
    let token = {
        let (status, body) =
            http(apis[1], "POST", "/api/v1/auth/login", None, Some(&login)).unwrap();
        assert_eq!(status, 200, "login after the restart: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["access_token"].as_str().unwrap().to_owned()
    };
    let (status, body) = http(apis[1], "GET", "/api/v1/status", Some(&token), None).unwrap();
    assert_eq!(status, 200, "{body}");
    let warm = agent_in(&body, agent).unwrap_or_else(|| {
        panic!(
            "the restarted API server does not show {agent}: {body}\n{}",
            api_servers[1].logs()
        )
    });
    assert_eq!(warm.0, 5, "{body}");
    assert_eq!(
        warm.1,
        vec![format!(
            "\"{}\" \"192.0.2.1:51820\" 5000 2500 [\"10.0.0.2/32\"]",
            sentra_core::WgPublicKey::from_bytes([9; 32])
        )],
        "{body}"
    );

    // An API server only reads the metric store: a sequence reset is refused up front with
    // 409 naming why, and the key is not rotated by the refused call (the next rotation is
    // key 2, not 3).
    let admin = {
        let login = serde_json::json!({ "username": "admin", "password": password }).to_string();
        let (status, body) =
            http(apis[0], "POST", "/api/v1/auth/login", None, Some(&login)).unwrap();
        assert_eq!(status, 200, "admin login: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["access_token"].as_str().unwrap().to_owned()
    };
    let rotate = format!("/api/v1/agents/{agent}/rotate-key");
    let (status, body) = http(
        apis[0],
        "POST",
        &format!("{rotate}?reset_sequence=true"),
        Some(&admin),
        None,
    )
    .unwrap();
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("only reads the metrics store") && body.contains("nothing was changed"),
        "{body}"
    );
    let (status, body) = http(apis[0], "POST", &rotate, Some(&admin), None).unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["new_key_id"], 2, "{body}");

    let _ = sse_closer.shutdown(std::net::Shutdown::Both);
    for s in &mut api_servers {
        s.stop();
    }
    ingest.stop();
    worker.stop();
}
