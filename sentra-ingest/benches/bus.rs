//! End-to-end throughput through the JetStream bus (feature `jetstream`) beside the embedded
//! path, in the same run, on loopback: a real nats-server (JetStream, `sync_interval:
//! always`, `scripts/nats-test-server bin` or `SENTRA_TEST_NATS_BIN`) and a real PostgreSQL
//! (`SENTRA_TEST_PG_URL` or a sentra-testkit cluster).
//!
//! * `embedded`: pushes straight into an `Ingest` on PostgreSQL (today's single server).
//! * `bus, N ingest`: N publisher connections (N ingest servers) publish every batch and
//!   await each PubAck (JetStream msgs/s), then one worker drains the stream into an
//!   `Ingest` on PostgreSQL (applied samples/s, PostgreSQL rows/s).
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
        "bus: {agents} agents x {batches} batches x {} samples = {total} samples, payload {:.1} B/sample",
        series * points,
        payload_bytes as f64 / total as f64,
    );
    rt.block_on(async {
        // Baseline: the embedded path on PostgreSQL.
        let db = sentra_testkit::TestDb::new().await.unwrap();
        let cpu0 = cpu_seconds();
        let ingest = Ingest::open_with(Backend::postgres(db.url()), Config::default())
            .await
            .unwrap();
        let start = Instant::now();
        let mut tasks = Vec::new();
        for mine in work.clone() {
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
        let s = start.elapsed().as_secs_f64();
        ingest.shutdown().await.unwrap();
        println!(
            "  embedded (PostgreSQL): acked + applied {:.0} samples/s ({s:.2} s), process CPU {:.2} s",
            total as f64 / s,
            cpu_seconds() - cpu0
        );

        for ingest_servers in [1usize, 2] {
            let nats = Nats::start();
            let db = sentra_testkit::TestDb::new().await.unwrap();
            let mut cfg = BusConfig::new(nats.2.as_str());
            cfg.timeout = Duration::from_secs(30);
            let mut pubs = Vec::new();
            for _ in 0..ingest_servers {
                pubs.push(BusPublisher::connect(cfg.clone()).await.unwrap());
            }
            let cpu0 = cpu_seconds();
            let start = Instant::now();
            let mut tasks = Vec::new();
            for (i, mine) in work.clone().into_iter().enumerate() {
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
            let published = start.elapsed().as_secs_f64();
            let cpu_pub = cpu_seconds() - cpu0;

            let ingest = Ingest::open_with(Backend::postgres(db.url()), Config::default())
                .await
                .unwrap();
            let worker = BusWorker::connect(cfg.clone(), &ingest).await.unwrap();
            let cpu1 = cpu_seconds();
            let drain_start = Instant::now();
            let run = {
                let w = worker.clone();
                tokio::spawn(async move { w.run(std::future::pending()).await })
            };
            while worker.counts().accepted < msgs {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            ingest.flush().await.unwrap();
            let drained = drain_start.elapsed().as_secs_f64();
            let cpu_drain = cpu_seconds() - cpu1;
            run.abort();
            let _ = run.await;
            ingest.shutdown().await.unwrap();
            println!(
                "  bus, {ingest_servers} ingest, 1 worker: acked (PubAck) {:.0} samples/s = {:.0} JetStream msgs/s ({published:.2} s, CPU {cpu_pub:.2} s); worker applied {:.0} samples/s = PostgreSQL rows/s ({drained:.2} s, CPU {cpu_drain:.2} s); end to end {:.0} samples/s",
                total as f64 / published,
                msgs as f64 / published,
                total as f64 / drained,
                total as f64 / (published + drained),
            );
        }
    });
}
