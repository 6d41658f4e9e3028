//! The JetStream bus against a real nats-server (JetStream, `sync_interval: always`,
//! started and killed by these tests; the binary from `SENTRA_TEST_NATS_BIN` or installed by
//! `scripts/nats-test-server bin`) and a real PostgreSQL (sentra-testkit). Missing servers
//! fail the tests.

mod support;

use std::{
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use sentra_core::{AgentId, UnixMillis, Verified, proto::AckStatus};
use sentra_ingest::{
    Backend, Config, Error, Ingest,
    bus::jetstream::{BusConfig, BusPublisher, BusWorker},
};
use sentra_testkit::TestDb;
use sqlx::Connection as _;
use support::*;

/// A nats-server child with its own store dir on a fixed loopback port (restartable).
struct Nats {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    /// In a cluster: the `server_name`/`cluster` block of this node's config.
    cluster: Option<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn nats_bin() -> PathBuf {
    if let Some(b) = std::env::var_os("SENTRA_TEST_NATS_BIN") {
        return b.into();
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/nats-test-server");
    let out = Command::new(&script)
        .arg("bin")
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "scripts/nats-test-server bin failed: nats-server is needed for these tests (set SENTRA_TEST_NATS_BIN)"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

impl Nats {
    fn start() -> Self {
        let mut n = Self {
            bin: nats_bin(),
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
            child: None,
            cluster: None,
        };
        n.start_again();
        n
    }

    /// `n` nodes routed to each other in one JetStream cluster (meta group of `n`).
    fn start_cluster(n: usize) -> Vec<Self> {
        let bin = nats_bin();
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let all = routes
            .iter()
            .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let mut nodes: Vec<Self> = routes
            .iter()
            .enumerate()
            .map(|(i, route)| Self {
                bin: bin.clone(),
                dir: tempfile::tempdir().unwrap(),
                port: free_port(),
                child: None,
                cluster: Some(format!(
                    "server_name: n{i}\ncluster {{\n  name: sentra-test\n  listen: 127.0.0.1:{route}\n  routes: [{all}]\n}}\n"
                )),
            })
            .collect();
        for node in &mut nodes {
            node.start_again();
        }
        nodes
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn start_again(&mut self) {
        let conf = self.dir.path().join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "listen: 127.0.0.1:{}\njetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n{}",
                self.port,
                self.dir.path().join("js").display(),
                self.cluster.as_deref().unwrap_or_default()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log =
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            if log.contains("Server is ready") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not start:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// kill -9.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
        // the port is free once the process is gone
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn config() -> Config {
    let mut c = Config::default();
    c.apply_delay = Duration::from_millis(100);
    c.maintenance_interval = Duration::from_secs(3600);
    c
}

fn bus_config(url: &str) -> BusConfig {
    let mut c = BusConfig::new(url);
    c.ack_wait = Duration::from_secs(2);
    c.timeout = Duration::from_secs(2);
    c.nak_delay = Duration::from_millis(200);
    c
}

fn now() -> i64 {
    UnixMillis::now().as_millis()
}

/// A batch of one gauge sample at a timestamp unique to `(agent index, seq)`.
fn one(a: &AgentId, seq: u64, ts: i64) -> Verified {
    #[allow(clippy::cast_precision_loss)]
    verify(&batch(
        a,
        seq,
        ts,
        vec![gauge("bus_test", &[("k", "v")], ts, seq as f64)],
    ))
}

async fn samples_in_store(db: &TestDb) -> i64 {
    let mut c = sqlx::PgConnection::connect(db.url()).await.unwrap();
    let rows: Vec<(i64, i64, Vec<u8>)> =
        sqlx::query_as("SELECT series_id, gen, data FROM sentra_metrics.chunks")
            .fetch_all(&mut c)
            .await
            .unwrap();
    c.close().await.unwrap();
    i64::try_from(merge_chunks(rows).len()).unwrap()
}

/// Waits until every agent's ledger shows `want` accepted seqs.
async fn wait_stored(ingest: &Ingest, agents: &[AgentId], want: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let mut done = true;
        for a in agents {
            let got = ingest
                .agent_ledger(a)
                .await
                .unwrap()
                .map_or(0, |l| l.accepted);
            assert!(
                got <= want,
                "agent {a}: {got} seqs accepted, more than the {want} sent"
            );
            done &= got == want;
        }
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not all {want} batches per agent stored within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stream_messages(url: &str, cfg: &BusConfig) -> u64 {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut s = js.get_stream(&cfg.stream).await.unwrap();
    s.info().await.unwrap().state.messages
}

/// One test's world: a nats-server of its own, a database, the bus config and a publisher
/// (the ingest server's side). Workers are started with [`World::worker`].
struct World {
    nats: Nats,
    db: TestDb,
    cfg: BusConfig,
    publisher: BusPublisher,
}

/// A running worker task: [`Running::stop`] shuts it down, [`Running::kill`] aborts it
/// (unacked messages are redelivered after AckWait).
struct Running {
    worker: BusWorker,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<sentra_ingest::Result<()>>,
}

impl Running {
    /// Runs `worker` in a task until [`Running::stop`].
    fn start(worker: BusWorker) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = {
            let w = worker.clone();
            tokio::spawn(async move {
                w.run(async {
                    let _ = stopped.await;
                })
                .await
            })
        };
        Self { worker, stop, task }
    }

    async fn stop(self) -> BusWorker {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
        self.worker
    }

    async fn kill(self) -> BusWorker {
        self.task.abort();
        let _ = self.task.await;
        self.worker
    }
}

/// The setup every test shares: `tune` adjusts the bus config before anything connects;
/// `db` is the test's database (a fresh one on the shared cluster when `None`).
async fn world(db: Option<TestDb>, tune: impl FnOnce(&mut BusConfig)) -> World {
    let nats = Nats::start();
    let db = match db {
        Some(db) => db,
        None => TestDb::new().await.unwrap(),
    };
    let mut cfg = bus_config(&nats.url());
    tune(&mut cfg);
    let publisher = BusPublisher::connect(cfg.clone()).await.unwrap();
    World {
        nats,
        db,
        cfg,
        publisher,
    }
}

impl World {
    /// An `Ingest` on the test's PostgreSQL database (the worker's store).
    async fn ingest(&self, config: Config) -> Ingest {
        Ingest::open_with(Backend::postgres(self.db.url()), config)
            .await
            .unwrap()
    }

    /// A worker feeding `ingest`, running in a task.
    async fn worker(&self, ingest: &Ingest) -> Running {
        Running::start(BusWorker::connect(self.cfg.clone(), ingest).await.unwrap())
    }

    /// Publishes one batch per `(agent, seq)` in seq-major order; every answer must be
    /// ACCEPTED.
    async fn publish_all(&self, agents: &[AgentId], seqs: std::ops::RangeInclusive<u64>, t: i64) {
        for seq in seqs {
            for (i, a) in agents.iter().enumerate() {
                let v = one(a, seq, t + i64::try_from(seq * 10 + i as u64).unwrap());
                let ack = self.publisher.publish(&v).await.unwrap();
                assert_eq!(ack.status, AckStatus::Accepted as i32, "{ack:?}");
            }
        }
    }
}

/// Every ACCEPTED answer comes after the message is in the stream (the PubAck was awaited);
/// a resend inside the dedup window is DUPLICATE and adds nothing; a worker then stores
/// every batch exactly once in PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_only_after_pub_ack_and_stored_once() {
    let w = world(None, |_| {}).await;
    let (cfg, publisher, url) = (&w.cfg, &w.publisher, w.nats.url());
    let agents: Vec<AgentId> = (0..5).map(|i| agent(&format!("bus-a{i}"))).collect();
    let t = now();
    let mut in_stream = 0;
    for seq in 1..=20u64 {
        for (i, a) in agents.iter().enumerate() {
            let v = one(a, seq, t + i64::try_from(seq * 10 + i as u64).unwrap());
            let ack = publisher.publish(&v).await.unwrap();
            assert_eq!(ack.status, AckStatus::Accepted as i32, "{ack:?}");
            in_stream += 1;
            // Acked means stored in JetStream already.
            assert_eq!(stream_messages(&url, cfg).await, in_stream);
            if seq % 7 == 0 {
                let again = publisher.publish(&v).await.unwrap();
                assert_eq!(again.status, AckStatus::Duplicate as i32, "{again:?}");
                assert_eq!(stream_messages(&url, cfg).await, in_stream);
            }
        }
    }
    // A payload no worker could store is refused before the bus.
    let bad = verify_raw(&agents[0], 21, b"\xff\xff not a batch".to_vec(), 0);
    let ack = publisher.publish(&bad).await.unwrap();
    assert_eq!(ack.status, AckStatus::Rejected as i32);
    assert_eq!(stream_messages(&url, cfg).await, in_stream);

    let ingest = w.ingest(config()).await;
    let run = w.worker(&ingest).await;
    wait_stored(&ingest, &agents, 20, Duration::from_secs(60)).await;
    ingest.flush().await.unwrap();
    let counts = run.stop().await.counts();
    println!("bus: sent 100, acknowledged 100, worker {counts:?}");
    assert_eq!(counts.accepted, 100);
    assert_eq!(counts.dead_lettered, 0);
    assert_eq!(samples_in_store(&w.db).await, 100);
    ingest.shutdown().await.unwrap();
}

/// A worker killed mid-batch (its task aborted between commits and acks): the unacked
/// messages are redelivered to the next worker after AckWait, and nothing is stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_mid_batch_redelivers_without_duplicates() {
    let w = world(None, |c| c.worker_concurrency = 32).await;
    let agents: Vec<AgentId> = (0..5).map(|i| agent(&format!("bus-k{i}"))).collect();
    let per_agent = 60u64;
    w.publish_all(&agents, 1..=per_agent, now()).await;

    let ingest = w.ingest(config()).await;
    let run = w.worker(&ingest).await;
    // Kill it once some batches are committed and others are in flight.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let c = run.worker.counts();
        if c.accepted >= 40 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "first worker stored nothing: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let at_kill = run.kill().await.counts();
    // The worker process dies with its store connection: close the store, open it again.
    ingest.shutdown().await.unwrap();
    drop(ingest);
    let ingest = w.ingest(config()).await;
    let run = w.worker(&ingest).await;
    wait_stored(&ingest, &agents, per_agent, Duration::from_secs(90)).await;
    // Let late redeliveries (already stored) arrive and be acked as duplicates.
    tokio::time::sleep(w.cfg.ack_wait + Duration::from_millis(500)).await;
    let after = run.kill().await.counts();
    ingest.flush().await.unwrap();
    let total = per_agent * agents.len() as u64;
    println!(
        "worker kill: sent {total}, acknowledged {total}, first worker at kill {at_kill:?}, second worker {after:?}"
    );
    assert!(
        after.redelivered > 0,
        "nothing was redelivered after the kill: {after:?}"
    );
    // Exactly once in storage: the ledger counted each seq once, and one row per batch.
    for a in &agents {
        let l = ingest.agent_ledger(a).await.unwrap().unwrap();
        assert_eq!((l.accepted, l.high_water), (per_agent, Some(per_agent)));
    }
    assert_eq!(samples_in_store(&w.db).await, i64::try_from(total).unwrap());
    // Batches the first worker committed but never acked (its count missed those whose
    // push was cut off) came again and were refused as duplicates.
    assert!(
        at_kill.accepted + after.accepted <= total,
        "{at_kill:?} {after:?}"
    );
    assert!(
        at_kill.accepted + after.accepted + after.duplicates >= total,
        "first {at_kill:?}, second {after:?}"
    );
    ingest.shutdown().await.unwrap();
}

/// nats-server killed with -9 and restarted: publishing answers `Error::Bus` (the ingest
/// server's UNAVAILABLE; the agent keeps the batch) meanwhile, the client reconnects by
/// itself, and what was acknowledged before the kill survived (`sync_interval: always`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_killed_then_unavailable_then_reconnects() {
    let mut w = world(None, |_| {}).await;
    let (cfg, publisher) = (w.cfg.clone(), w.publisher.clone());
    let a = agent("bus-nk");
    let t = now();
    let ts = |seq: u64| t + i64::try_from(seq).unwrap();
    for seq in 1..=10 {
        let ack = publisher.publish(&one(&a, seq, ts(seq))).await.unwrap();
        assert_eq!(ack.status, AckStatus::Accepted as i32);
    }
    w.nats.kill9();
    // The agent's view: seq 11 fails (kept in its WAL) for as long as NATS is down.
    for _ in 0..3 {
        let started = Instant::now();
        let err = publisher
            .publish(&one(&a, 11, ts(11)))
            .await
            .expect_err("acknowledged with NATS down");
        assert!(matches!(err, Error::Bus { .. }), "{err:?}");
        assert!(started.elapsed() < cfg.timeout + Duration::from_secs(1));
        let text = format!("{err} / {:?}", std::error::Error::source(&err));
        assert!(!text.contains("nats://"), "error repeats the URL: {text}");
    }
    w.nats.start_again();
    // The client reconnects by itself; the agent resends seq 11 until it is acked.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut resent = 0;
    loop {
        resent += 1;
        match publisher.publish(&one(&a, 11, ts(11))).await {
            Ok(ack) => {
                // DUPLICATE: a publish the client buffered before it noticed the kill reached
                // the restarted server after its PubAck wait had timed out; the Msg-Id dedup
                // makes the agent's resend harmless.
                assert!(
                    ack.status == AckStatus::Accepted as i32
                        || ack.status == AckStatus::Duplicate as i32,
                    "{ack:?}"
                );
                break;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "no reconnect within 30 s: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert!(publisher.is_connected());
    for seq in 12..=15 {
        let ack = publisher.publish(&one(&a, seq, ts(seq))).await.unwrap();
        assert_eq!(ack.status, AckStatus::Accepted as i32);
    }
    println!("nats kill -9: seq 11 refused 3 times while down, accepted after {resent} resends");
    let ingest = w.ingest(config()).await;
    let run = w.worker(&ingest).await;
    wait_stored(
        &ingest,
        std::slice::from_ref(&a),
        15,
        Duration::from_secs(60),
    )
    .await;
    run.stop().await;
    ingest.flush().await.unwrap();
    assert_eq!(samples_in_store(&w.db).await, 15);
    ingest.shutdown().await.unwrap();
}

/// A batch replayed after JetStream's dedup window passes the bus, and the worker's store
/// refuses it: a stored seq is a duplicate (not stored again), a never-stored seq below the
/// high-water mark outside the replay window is rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_after_the_dedup_window_is_refused_by_the_store() {
    let w = world(None, |c| c.duplicate_window = Duration::from_secs(1)).await;
    let (cfg, publisher) = (&w.cfg, &w.publisher);
    let a = agent("bus-replay");
    let t = now();
    let ts = |seq: u64| t + i64::try_from(seq).unwrap();
    let mut store_config = config();
    store_config.replay_window = 4;
    let ingest = w.ingest(store_config).await;
    let run = w.worker(&ingest).await;
    // seq 2 is held back (an agent whose send failed) while 1, 3..=20 go through.
    for seq in (1..=20).filter(|s| *s != 2) {
        let ack = publisher.publish(&one(&a, seq, ts(seq))).await.unwrap();
        assert_eq!(ack.status, AckStatus::Accepted as i32);
    }
    // Inside the dedup window JetStream itself drops a replay.
    let ack = publisher.publish(&one(&a, 20, ts(20))).await.unwrap();
    assert_eq!(ack.status, AckStatus::Duplicate as i32);
    wait_stored(
        &ingest,
        std::slice::from_ref(&a),
        19,
        Duration::from_secs(60),
    )
    .await;
    tokio::time::sleep(cfg.duplicate_window + Duration::from_millis(1500)).await;

    // After the window: the bus takes both again...
    let replayed = publisher.publish(&one(&a, 5, ts(5))).await.unwrap();
    assert_eq!(replayed.status, AckStatus::Accepted as i32, "{replayed:?}");
    let stale = publisher.publish(&one(&a, 2, ts(2))).await.unwrap();
    assert_eq!(stale.status, AckStatus::Accepted as i32, "{stale:?}");
    // ...and the store refuses both.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = run.worker.counts();
        if c.duplicates >= 1 && c.rejected >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "replays not refused: {c:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c = run.stop().await.counts();
    ingest.flush().await.unwrap();
    println!("replay after the dedup window: worker {c:?}");
    assert_eq!((c.accepted, c.duplicates, c.rejected), (19, 1, 1));
    let l = ingest.agent_ledger(&a).await.unwrap().unwrap();
    assert_eq!((l.accepted, l.rejected_stale), (19, 1));
    assert_eq!(samples_in_store(&w.db).await, 19);
    ingest.shutdown().await.unwrap();
}

/// A message no worker can decode goes to the dead-letter stream with its reason and is
/// terminated (not redelivered); the good batches around it are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_message_is_dead_lettered() {
    let w = world(None, |_| {}).await;
    let (cfg, publisher) = (&w.cfg, &w.publisher);
    let a = agent("bus-dead");
    let t = now();
    publisher.publish(&one(&a, 1, t)).await.unwrap();
    // Someone else publishes junk on the agent's subject.
    let client = async_nats::connect(w.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.publish(
        "sentra.batch.bus-dead",
        bytes::Bytes::from_static(b"\xff junk"),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    publisher.publish(&one(&a, 2, t + 1)).await.unwrap();

    let ingest = w.ingest(config()).await;
    let run = w.worker(&ingest).await;
    wait_stored(
        &ingest,
        std::slice::from_ref(&a),
        2,
        Duration::from_secs(60),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while run.worker.counts().dead_lettered < 1 {
        assert!(
            Instant::now() < deadline,
            "not dead-lettered: {:?}",
            run.worker.counts()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Terminated: no redelivery after AckWait.
    tokio::time::sleep(cfg.ack_wait + Duration::from_millis(500)).await;
    let c = run.stop().await.counts();
    assert_eq!(
        (c.accepted, c.dead_lettered, c.redelivered),
        (2, 1, 0),
        "{c:?}"
    );
    let mut dead = js.get_stream(format!("{}_DEAD", cfg.stream)).await.unwrap();
    assert_eq!(dead.info().await.unwrap().state.messages, 1);
    let msg = dead
        .get_last_raw_message_by_subject("sentra.dead.bus-dead")
        .await
        .unwrap();
    let reason = msg
        .headers
        .get(sentra_ingest::bus::jetstream::HEADER_DEAD_REASON)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    assert!(reason.contains("Sentra-Fingerprint"), "reason: {reason}");
    ingest.shutdown().await.unwrap();
}

/// PostgreSQL crashes (`pg_ctl stop -m immediate`) under a running worker: commits fail,
/// the worker naks (nothing acked that is not stored), and after the restart every batch
/// is stored exactly once. A commit PostgreSQL made durable just before the crash, whose
/// answer never arrived, is the hard case: the writer reads its state back from the store
/// before the next write (it used to reuse the staged ids and fail forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crash_under_the_worker_loses_nothing() {
    let server = std::sync::Arc::new(
        tokio::task::spawn_blocking(sentra_testkit::PgServer::start)
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("a PostgreSQL cluster of this test: {e}")),
    );
    let db = TestDb::on(&server).await.unwrap();
    let w = world(Some(db), |c| c.max_deliver = 1000).await;
    let ingest = w.ingest(config()).await;
    let run = w.worker(&ingest).await;
    let agents: Vec<AgentId> = (0..3).map(|i| agent(&format!("bus-pg{i}"))).collect();
    let t = now();
    let per_agent = 40u64;
    for seq in 1..=per_agent {
        w.publish_all(&agents, seq..=seq, t).await;
        if seq == 15 {
            let s = std::sync::Arc::clone(&server);
            tokio::task::spawn_blocking(move || s.crash())
                .await
                .unwrap()
                .unwrap();
        }
        if seq == 25 {
            let s = std::sync::Arc::clone(&server);
            tokio::task::spawn_blocking(move || s.start_again())
                .await
                .unwrap()
                .unwrap();
        }
    }
    wait_stored(&ingest, &agents, per_agent, Duration::from_secs(120)).await;
    let c = run.stop().await.counts();
    ingest.flush().await.unwrap();
    println!("postgres crash under the worker: sent 120, acknowledged 120, worker {c:?}");
    assert!(
        c.failed > 0,
        "no commit failed while PostgreSQL was down: {c:?}"
    );
    assert_eq!(c.dead_lettered, 0);
    // A commit whose answer was lost in the crash counts as failed here although it is
    // stored: its redelivery is then a duplicate (the writer read its state back).
    assert!(
        c.accepted <= 120 && c.accepted + c.duplicates >= 120,
        "{c:?}"
    );
    assert_eq!(samples_in_store(&w.db).await, 120);
    ingest.shutdown().await.unwrap();
}

/// Two partitions on one nats-server (a second set of stream, subject prefixes and consumer
/// names, as `[bus]` in sentra-server's config sets them), each with its own worker and
/// database: every batch lands in its partition's stream and database only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_by_names_stay_apart() {
    let w = world(None, |_| {}).await;
    let mut cfg_b = w.cfg.clone();
    cfg_b.stream = "P2_BATCHES".to_owned();
    cfg_b.subject_prefix = "sentra.p2.batch".to_owned();
    cfg_b.dead_letter_prefix = "sentra.p2.dead".to_owned();
    cfg_b.consumer = "p2-workers".to_owned();
    let publisher_b = BusPublisher::connect(cfg_b.clone()).await.unwrap();
    let db_b = TestDb::new().await.unwrap();
    let (a, b) = (agent("part-a"), agent("part-b"));
    let t = now();
    w.publish_all(std::slice::from_ref(&a), 1..=10, t).await;
    for seq in 1..=7u64 {
        let ack = publisher_b
            .publish(&one(&b, seq, t + i64::try_from(seq).unwrap()))
            .await
            .unwrap();
        assert_eq!(ack.status, AckStatus::Accepted as i32, "{ack:?}");
    }
    let url = w.nats.url();
    assert_eq!(stream_messages(&url, &w.cfg).await, 10);
    assert_eq!(stream_messages(&url, &cfg_b).await, 7);

    let ingest_a = w.ingest(config()).await;
    let run_a = w.worker(&ingest_a).await;
    let ingest_b = Ingest::open_with(Backend::postgres(db_b.url()), config())
        .await
        .unwrap();
    let run_b = Running::start(BusWorker::connect(cfg_b, &ingest_b).await.unwrap());
    wait_stored(
        &ingest_a,
        std::slice::from_ref(&a),
        10,
        Duration::from_secs(60),
    )
    .await;
    wait_stored(
        &ingest_b,
        std::slice::from_ref(&b),
        7,
        Duration::from_secs(60),
    )
    .await;
    ingest_a.flush().await.unwrap();
    ingest_b.flush().await.unwrap();
    assert_eq!(run_a.stop().await.counts().accepted, 10);
    assert_eq!(run_b.stop().await.counts().accepted, 7);
    // Neither database has the other partition's agent.
    assert!(ingest_a.agent_ledger(&b).await.unwrap().is_none());
    assert!(ingest_b.agent_ledger(&a).await.unwrap().is_none());
    assert_eq!(samples_in_store(&w.db).await, 10);
    assert_eq!(samples_in_store(&db_b).await, 7);
    ingest_a.shutdown().await.unwrap();
    ingest_b.shutdown().await.unwrap();
}

/// An R3 stream on a 3-node nats-server cluster (`[bus] replicas = 3`): its leader killed
/// with -9 while batches flow loses nothing acknowledged: the client fails over to another node,
/// the agent's view (resend until ACCEPTED or DUPLICATE) completes every seq, and the
/// worker stores each batch exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_stream_survives_a_node_killed() {
    let mut nodes = Nats::start_cluster(3);
    let urls = nodes.iter().map(Nats::url).collect::<Vec<_>>().join(",");
    let mut cfg = bus_config(&urls);
    cfg.replicas = 3;
    // The cluster elects its meta leader after "ready": creating the R3 streams waits.
    let deadline = Instant::now() + Duration::from_secs(60);
    let publisher = loop {
        match BusPublisher::connect(cfg.clone()).await {
            Ok(p) => break p,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "R3 streams not created within 60 s: {e:?}"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    let agents: Vec<AgentId> = (0..3).map(|i| agent(&format!("r3-a{i}"))).collect();
    let t = now();
    // An agent's resend loop: errors (NATS failing over) and DUPLICATE are retried or
    // final as an agent would treat them.
    let send = |a: &AgentId, seq: u64, i: usize| {
        let v = one(
            a,
            seq,
            t + i64::try_from(seq * 10).unwrap() + i64::try_from(i).unwrap(),
        );
        let publisher = publisher.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut failures = 0u32;
            loop {
                match publisher.publish(&v).await {
                    Ok(ack)
                        if ack.status == AckStatus::Accepted as i32
                            || ack.status == AckStatus::Duplicate as i32 =>
                    {
                        return failures;
                    }
                    Ok(ack) => panic!("refused: {ack:?}"),
                    Err(e) => {
                        failures += 1;
                        assert!(
                            Instant::now() < deadline,
                            "seq {seq} not acked in 60 s: {e}"
                        );
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    };
    let mut failures = 0;
    let mut killed = String::new();
    for seq in 1..=40u64 {
        if seq == 21 {
            // Kill the batch stream's leader: the surviving replicas elect another.
            let client = async_nats::connect(urls.split(',').collect::<Vec<_>>())
                .await
                .unwrap();
            let js = async_nats::jetstream::new(client);
            let mut stream = js.get_stream(&cfg.stream).await.unwrap();
            let info = stream.info().await.unwrap();
            let leader = info
                .cluster
                .as_ref()
                .and_then(|c| c.leader.clone())
                .expect("an R3 stream has a leader");
            assert_eq!(info.config.num_replicas, 3);
            killed = leader.clone();
            let i: usize = leader.trim_start_matches('n').parse().unwrap();
            nodes[i].kill9();
        }
        for (i, a) in agents.iter().enumerate() {
            failures += send(a, seq, i).await;
        }
    }
    println!(
        "R3 cluster, stream leader {killed} killed -9 after seq 20: 120 batches acked, {failures} failed sends resent"
    );
    let db = TestDb::new().await.unwrap();
    let ingest = Ingest::open_with(Backend::postgres(db.url()), config())
        .await
        .unwrap();
    let worker = loop {
        match BusWorker::connect(cfg.clone(), &ingest).await {
            Ok(w) => break w,
            Err(e) => {
                assert!(
                    Instant::now() < deadline + Duration::from_secs(60),
                    "worker: {e:?}"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    let run = Running::start(worker);
    wait_stored(&ingest, &agents, 40, Duration::from_secs(90)).await;
    ingest.flush().await.unwrap();
    run.stop().await;
    assert_eq!(
        samples_in_store(&db).await,
        120,
        "each batch stored exactly once"
    );
    ingest.shutdown().await.unwrap();
}
