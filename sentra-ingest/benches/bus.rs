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

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use sentra_core::{
    AgentId, Batch, KeyId, Labels, MemoryKeyring, Method, Nonce, Sample, SecretKey, Seq, Signer,
    UnixMillis, Validity, Value, Verified, Verifier, proto::AckStatus,
};
use sentra_ingest::{
    Backend, Config, Ingest,
    bus::jetstream::{BusConfig, BusPublisher, BusWorker},
};

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) as f64 / 100.0
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

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
    let quick = !std::env::args().any(|a| a == "--bench");
    let agents = env("BENCH_AGENTS", if quick { 2 } else { 20 });
    let series = env("BENCH_SERIES", if quick { 10 } else { 200 });
    let points = env("BENCH_POINTS", if quick { 2 } else { 10 });
    let batches = env("BENCH_BATCHES", if quick { 3 } else { 20 });

    let secret = SecretKey::from_bytes([1; 32]);
    let mut keys = MemoryKeyring::new();
    let now = UnixMillis::now();
    let t0 = now.as_millis() - 3_600_000;
    let mut work: Vec<Vec<Verified>> = Vec::new();
    let mut payload_bytes = 0usize;
    for a in 0..agents {
        let agent = AgentId::new(format!("bench-{a}")).unwrap();
        keys.insert(agent.clone(), KeyId::new(1), &secret, Validity::always());
        let signer = Signer::new(agent.clone(), KeyId::new(1), &secret);
        let labels: Vec<Labels> = (0..series)
            .map(|s| {
                Labels::from_pairs([
                    ("host", format!("host-{a}")),
                    ("series", s.to_string()),
                    ("kind", "bench".to_owned()),
                ])
                .unwrap()
            })
            .collect();
        let mut mine = Vec::new();
        for b in 0..batches {
            let mut batch = Batch::new(agent.clone(), Seq::new(b + 1).unwrap(), now);
            for p in 0..points {
                let ts = t0 + ((b * points + p) * 1000) as i64;
                for (s, l) in labels.iter().enumerate() {
                    batch.samples.push(Sample {
                        name: if s % 2 == 0 {
                            "bench_gauge"
                        } else {
                            "bench_counter_total"
                        }
                        .parse()
                        .unwrap(),
                        labels: l.clone(),
                        timestamp: UnixMillis::from_millis(ts),
                        value: if s % 2 == 0 {
                            Value::Gauge((ts % 1000) as f64 * 0.5)
                        } else {
                            Value::Counter((b * points + p) * 1000 + s as u64)
                        },
                    });
                }
            }
            let payload = Bytes::from(batch.encode_to_vec());
            payload_bytes += payload.len();
            let env = signer.sign(Method::Push, batch.seq, now, Nonce::random(), payload);
            mine.push(
                Verifier::new()
                    .verify(&env, Method::Push, now, &keys)
                    .unwrap(),
            );
        }
        work.push(mine);
    }
    let total = agents * series * points * batches;
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
