//! End-to-end throughput through the JetStream bus (feature `jetstream`) beside the embedded
//! default, in the same run, on loopback: a real nats-server (JetStream, `sync_interval:
//! always`, `scripts/nats-test-server bin` or `SENTRA_TEST_NATS_BIN`) and a real PostgreSQL
//! (`SENTRA_TEST_PG_URL` or a sentra-testkit cluster).
//!
//! Every configuration stores the same signed workload into a fresh database; the clock
//! starts at the first push and stops when **every sample is queryable** (the bench counts
//! the rows in the store and fails otherwise):
//!
//! * `embedded, SQLite` / `embedded, PostgreSQL`: pushes straight into an `Ingest` (today's
//!   single server, `--role all`).
//! * `bus, N ingest x M workers`: N publisher connections (N ingest servers) publish every
//!   batch and await each PubAck while M storage workers (`BusWorker` over an `Ingest` on
//!   PostgreSQL) drain the stream *concurrently*. Workers share one database: the first
//!   holds the writer lock, a second waits for it as a hot standby (as `--role worker`
//!   does), so M = 2 measures what the standby costs, not a second writer.
//!
//! Beside samples/s: JetStream msgs/s (PubAcks), PostgreSQL rows/s, and where the time
//! went — CPU seconds of this process (ingest + worker + load), of nats-server and of all
//! `postgres` processes (from `/proc/<pid>/stat`), bytes they wrote to disk
//! (`/proc/<pid>/io`, i.e. what was fsynced), loopback traffic (`/proc/net/dev`), and the
//! load average. Bounded: the default shape runs in well under two minutes.
//!
//! ```text
//! cargo bench -p sentra-ingest --bench bus
//! BENCH_AGENTS=20 BENCH_SERIES=200 BENCH_POINTS=10 BENCH_BATCHES=20 cargo bench -p sentra-ingest --bench bus
//! ```
#![allow(missing_docs)]

mod support;

use support::cpu_seconds;

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use sentra_core::proto::AckStatus;
use sentra_ingest::{
    Backend, Config, Ingest,
    bus::jetstream::{BusConfig, BusPublisher, BusWorker},
};

fn nats_bin() -> PathBuf {
    if let Some(b) = std::env::var_os("SENTRA_TEST_NATS_BIN") {
        return b.into();
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/nats-test-server");
    let out = Command::new(&script).arg("bin").output().unwrap();
    assert!(out.status.success(), "scripts/nats-test-server bin failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A fresh nats-server (own store dir, free port); killed on drop.
/// (the child, its store dir kept until drop, the URL)
struct Nats(
    std::process::Child,
    #[allow(dead_code)] tempfile::TempDir,
    String,
);

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
        let child = Command::new(nats_bin())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self(child, dir, format!("nats://127.0.0.1:{port}"))
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU seconds (user + system) of process `pid`.
fn pid_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) as f64 / 100.0
}

/// Bytes process `pid` caused to be written to storage (`write_bytes` of `/proc/<pid>/io`).
fn pid_written(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes: ")?.trim().parse().ok())
        .unwrap_or(0)
}

/// The pids of every `postgres` process (server and backends).
fn postgres_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .collect()
}

/// Loopback bytes received so far (`/proc/net/dev`).
fn loopback_bytes() -> u64 {
    std::fs::read_to_string("/proc/net/dev")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let rest = l.trim_start().strip_prefix("lo:")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Resource use between `start` and `stop`. A postgres backend that exits in between
/// takes its counters with it (pooled connections live through a run).
#[derive(Clone, Copy, Default)]
struct Use {
    wall: f64,
    cpu_self: f64,
    cpu_nats: f64,
    cpu_pg: f64,
    written_nats: u64,
    written_pg: u64,
    loopback: u64,
}

struct Meter {
    started: Instant,
    nats: Option<u32>,
    at: Use,
}

impl Meter {
    fn read(nats: Option<u32>) -> Use {
        let pg = postgres_pids();
        Use {
            wall: 0.0,
            cpu_self: cpu_seconds(),
            cpu_nats: nats.map_or(0.0, pid_cpu),
            cpu_pg: pg.iter().map(|p| pid_cpu(*p)).sum(),
            written_nats: nats.map_or(0, pid_written),
            written_pg: pg.iter().map(|p| pid_written(*p)).sum(),
            loopback: loopback_bytes(),
        }
    }

    fn start(nats: Option<u32>) -> Self {
        Self {
            at: Self::read(nats),
            nats,
            started: Instant::now(),
        }
    }

    fn stop(&self) -> Use {
        let wall = self.started.elapsed().as_secs_f64();
        let now = Self::read(self.nats);
        Use {
            wall,
            cpu_self: now.cpu_self - self.at.cpu_self,
            cpu_nats: now.cpu_nats - self.at.cpu_nats,
            cpu_pg: (now.cpu_pg - self.at.cpu_pg).max(0.0),
            written_nats: now.written_nats.saturating_sub(self.at.written_nats),
            written_pg: now.written_pg.saturating_sub(self.at.written_pg),
            loopback: now.loopback.saturating_sub(self.at.loopback),
        }
    }
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

/// Waits (bounded) until the PostgreSQL database at `url` holds `want` samples.
async fn pg_samples_reach(url: &str, want: u64) {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        // the chunks' sample counts are cheap to poll; decode (distinct samples, as queries
        // see them) only once they add up
        let stored: i64 =
            sqlx::query_scalar("SELECT COALESCE(sum(n), 0)::int8 FROM sentra_metrics.chunks")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        let n = if u64::try_from(stored).unwrap() >= want {
            let rows = sqlx::query_as(support::PG_CHUNKS)
                .fetch_all(&mut conn)
                .await
                .unwrap();
            support::distinct_samples(rows)
        } else {
            u64::try_from(stored).unwrap()
        };
        if n == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} of {want} samples queryable in PostgreSQL after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn row(label: &str, total: u64, u: &Use, extra: &str) {
    println!(
        "  {label:<34} {:>9.0} samples/s  ({:.2} s){extra}\n  {:<34} CPU s: bench process {:.2}, nats-server {:.2}, postgres {:.2}; written MB: nats-server {:.0}, postgres {:.0}; loopback {:.0} MB",
        total as f64 / u.wall,
        u.wall,
        "",
        u.cpu_self,
        u.cpu_nats,
        u.cpu_pg,
        mb(u.written_nats),
        mb(u.written_pg),
        mb(u.loopback),
    );
}

async fn embedded(
    ingest: Ingest,
    work: &[Vec<sentra_core::Verified>],
    nats: Option<u32>,
) -> (Ingest, Use) {
    let meter = Meter::start(nats);
    let mut tasks = Vec::new();
    for mine in work.iter().cloned() {
        let svc = ingest.service();
        tasks.push(tokio::spawn(async move {
            for v in mine {
                assert_eq!(svc.push(v).await.unwrap().status(), AckStatus::Accepted);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    ingest.flush().await.unwrap();
    (ingest, meter.stop())
}

fn main() {
    let shape = support::Shape::from_env([20, 200, 10, 20]);
    let (agents, series, points, batches) = shape.parts();
    let (work, payload_bytes) = support::verified_workload(shape);
    let total = shape.total();
    let msgs = agents * batches;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "bus: {agents} agents x {batches} batches x {} samples = {total} samples, payload {:.1} B/sample ({:.0} KB/message); load average before: {}; {} CPUs",
        series * points,
        payload_bytes as f64 / total as f64,
        payload_bytes as f64 / msgs as f64 / 1e3,
        loadavg(),
        std::thread::available_parallelism().map_or(0, usize::from),
    );
    rt.block_on(async {
        // Baselines: the embedded default on SQLite and on PostgreSQL.
        let dir = tempfile::tempdir().unwrap();
        let ingest = Ingest::open(dir.path(), Config::default()).await.unwrap();
        let (ingest, u) = embedded(ingest, &work, None).await;
        {
            use sqlx::Connection as _;
            let db = dir.path().join(sentra_ingest::DB_FILE);
            let url = format!("sqlite://{}?mode=ro", db.display());
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            let rows = sqlx::query_as(support::SQLITE_CHUNKS)
                .fetch_all(&mut conn)
                .await
                .unwrap();
            let n = support::distinct_samples(rows);
            assert_eq!(n, total, "samples queryable in SQLite");
        }
        ingest.shutdown().await.unwrap();
        row("embedded, SQLite", total, &u, "");

        let db = sentra_testkit::TestDb::new().await.unwrap();
        let ingest = Ingest::open_with(Backend::postgres(db.url()), Config::default())
            .await
            .unwrap();
        let meter = Meter::start(None);
        let (ingest, _) = embedded(ingest, &work, None).await;
        pg_samples_reach(db.url(), total).await;
        let u = meter.stop();
        ingest.shutdown().await.unwrap();
        row("embedded, PostgreSQL", total, &u, "");

        for (ingest_servers, workers) in [(1usize, 1usize), (2, 1), (1, 2), (2, 2)] {
            let nats = Nats::start();
            let nats_pid = Some(nats.0.id());
            let db = sentra_testkit::TestDb::new().await.unwrap();
            let mut cfg = BusConfig::new(nats.2.as_str());
            cfg.timeout = Duration::from_secs(30);
            let mut pubs = Vec::new();
            for _ in 0..ingest_servers {
                pubs.push(BusPublisher::connect(cfg.clone()).await.unwrap());
            }
            let ingest = Ingest::open_with(Backend::postgres(db.url()), Config::default())
                .await
                .unwrap();
            let worker = BusWorker::connect(cfg.clone(), &ingest).await.unwrap();
            let run = {
                let w = worker.clone();
                tokio::spawn(async move { w.run(std::future::pending()).await })
            };
            // A second worker waits for the writer lock, retrying as `--role worker` does
            // (polled beside the run below: sqlx's open future is not `Send` enough to spawn).
            let standby = async {
                if workers < 2 {
                    return std::future::pending::<()>().await;
                }
                loop {
                    if let Ok(i) =
                        Ingest::open_with(Backend::postgres(db.url()), Config::default()).await
                    {
                        let w = BusWorker::connect(cfg.clone(), &i).await.unwrap();
                        let _ = w.run(std::future::pending()).await;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            };
            let measured = async {
                let meter = Meter::start(nats_pid);
                let mut tasks = Vec::new();
                for (i, mine) in work.iter().cloned().enumerate() {
                    let p = pubs[i % ingest_servers].clone();
                    tasks.push(tokio::spawn(async move {
                        for v in mine {
                            let ack = p.publish(&v).await.unwrap();
                            assert_eq!(ack.status(), AckStatus::Accepted);
                        }
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
                let published = meter.started.elapsed().as_secs_f64();
                let deadline = Instant::now() + Duration::from_secs(120);
                while worker.counts().accepted < msgs {
                    assert!(Instant::now() < deadline, "the worker stored {} of {msgs} batches in 120 s", worker.counts().accepted);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                ingest.flush().await.unwrap();
                pg_samples_reach(db.url(), total).await;
                let u = meter.stop();
                (u, published)
            };
            let (u, published) = tokio::select! {
                r = measured => r,
                () = standby => unreachable!("the standby never ends"),
            };
            run.abort();
            let _ = run.await;
            ingest.shutdown().await.unwrap();
            row(
                &format!("bus, {ingest_servers} ingest x {workers} worker{}", if workers > 1 { "s" } else { "" }),
                total,
                &u,
                &format!(
                    "; PubAcks {:.0} msgs/s = {:.0} samples/s ({published:.2} s); PostgreSQL {:.0} samples/s stored end to end",
                    msgs as f64 / published,
                    total as f64 / published,
                    total as f64 / u.wall,
                ),
            );
        }
        println!("  load average after: {}", loadavg());
    });
}
