//! Scale-out on NATS JetStream (issue 12): `sentra-server --role worker` processes against a
//! real nats-server (JetStream, `sync_interval: always`; the binary from
//! `SENTRA_TEST_NATS_BIN` or installed by `scripts/nats-test-server bin`) and a real
//! PostgreSQL (sentra-testkit). Batches are put on the bus the way an ingest server does
//! (`BusPublisher`: signed, verified, acknowledged after the PubAck).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use sentra_core::{
    AgentId, Batch, KeyId, Labels, MemoryKeyring, Method, Nonce, Sample, SecretKey, Seq, Signer,
    UnixMillis, Validity, Value, Verified, Verifier, proto::AckStatus,
};
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

/// A nats-server child with JetStream on a free loopback port, killed on drop.
struct Nats {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Nats {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
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
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `sentra-server --role worker` child, killed (-9) on drop; its stderr in `log`.
struct Worker {
    child: Option<Child>,
    log: PathBuf,
}

impl Worker {
    fn start(config: &Path, log: PathBuf) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sentra-server"));
        // A developer's SENTRA_* variables must not change what the worker does.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("SENTRA_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .args(["--role", "worker", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
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
    b.samples = vec![Sample {
        name: "scaleout_test".parse().unwrap(),
        labels: Labels::from_pairs([("k", "v")]).unwrap(),
        timestamp: UnixMillis::from_millis(ts),
        value: Value::Gauge(f64::from(u32::try_from(seq).unwrap())),
    }];
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
    let samples: i64 = sqlx::query_scalar("SELECT count(*) FROM sentra_metrics.samples")
        .fetch_one(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    (agents.iter().map(|a| a.1).sum(), agents, samples)
}

async fn wait_accepted(db: &TestDb, want: i64, within: Duration, workers: &[&Worker]) {
    let deadline = Instant::now() + within;
    loop {
        let (sum, _, _) = stored(db).await;
        if sum >= want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sum} of {want} batches stored within {within:?}; worker logs:\n{}",
            workers
                .iter()
                .map(|w| w.logs())
                .collect::<Vec<_>>()
                .join("\n----\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
