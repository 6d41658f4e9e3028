//! Crash safety with a real process kill: a child process pushes batches through the
//! pipeline and prints every ack; the parent SIGKILLs it at arbitrary points, restarts it,
//! and finally checks that every acked seq is stored, exactly once and whole.

mod support;

use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sentra_core::proto::AckStatus;
use sentra_ingest::{Config, Ingest};
use sqlx::{Connection as _, Row as _, SqliteConnection};
use support::*;

const DIR_ENV: &str = "SENTRA_INGEST_KILL9_DIR";
const START_ENV: &str = "SENTRA_INGEST_KILL9_START";
const PER_BATCH: i64 = 100;
const BASE_TS: i64 = 1_700_000_000_000;

/// The child side; does nothing unless started by the parent test below.
#[test]
#[ignore = "helper process for kill9_every_acked_seq_is_stored_once_and_whole"]
fn kill9_child_writer() {
    let (Ok(dir), Ok(start)) = (std::env::var(DIR_ENV), std::env::var(START_ENV)) else {
        return;
    };
    let start: u64 = start.parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut config = Config::default();
        config.maintenance_interval = Duration::from_secs(3600);
        let ingest = Ingest::open(&dir, config).await.unwrap();
        let next = Arc::new(AtomicU64::new(start));
        let a = agent("crash-1");
        let mut tasks = tokio::task::JoinSet::new();
        // four pushes in flight, like a pipelining agent
        for _ in 0..4 {
            let svc = ingest.service();
            let next = Arc::clone(&next);
            let a = a.clone();
            tasks.spawn(async move {
                loop {
                    let seq = next.fetch_add(1, Ordering::SeqCst);
                    let ts = BASE_TS + seq as i64;
                    let samples = (0..PER_BATCH)
                        .map(|i| gauge("load", &[("i", &i.to_string())], ts, seq as f64))
                        .collect();
                    let ack = svc
                        .push(verify(&batch(&a, seq, ts, samples)))
                        .await
                        .unwrap();
                    assert_ne!(ack.status(), AckStatus::Rejected);
                    println!("ACK {seq}");
                }
            });
        }
        // runs until killed; a failing pusher ends the process (and the parent notices)
        if let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    });
}

#[test]
fn kill9_every_acked_seq_is_stored_once_and_whole() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked = BTreeSet::new();
    let mut next_start = 1u64;
    for round in 0..4u64 {
        let mut child = Command::new(&exe)
            .args(["--exact", "kill9_child_writer", "--ignored", "--nocapture"])
            .env(DIR_ENV, dir.path())
            .env(START_ENV, next_start.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let want = 20 + round * 17; // kill at varying points
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut got = 0;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(seq) = line.strip_prefix("ACK ") {
                acked.insert(seq.trim().parse::<u64>().unwrap());
                got += 1;
                if got >= want {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "child too slow");
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(got >= want, "child stopped early in round {round}");
        // the restarted agent resends from just after the highest ack it saw
        next_start = acked.last().copied().unwrap_or(0) + 1;
    }

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Restart: batches acked while staged are applied on open.
        let ingest = Ingest::open(dir.path(), Config::default()).await.unwrap();
        let hw = ingest
            .high_water(&agent("crash-1"))
            .await
            .unwrap()
            .unwrap()
            .get();
        // pipeline decisions, not rows (the primary key makes a second copy impossible):
        // one durable accept decision per stored seq
        let ledger = ingest
            .agent_ledger(&agent("crash-1"))
            .await
            .unwrap()
            .unwrap();
        ingest.shutdown().await.unwrap();

        let url = format!(
            "sqlite://{}?mode=ro",
            dir.path().join("metrics.db").display()
        );
        let mut c = SqliteConnection::connect(&url).await.unwrap();
        let stored: BTreeSet<u64> = series_per_ts(&mut c)
            .await
            .into_iter()
            .map(|(ts, n)| {
                assert_eq!(n, PER_BATCH, "batch at ts {ts} stored partially");
                (ts - BASE_TS) as u64
            })
            .collect();
        let lost: Vec<_> = acked.difference(&stored).collect();
        assert!(lost.is_empty(), "acked but not stored: {lost:?}");
        assert_eq!(
            ledger.accepted,
            stored.len() as u64,
            "a seq was accepted more than once (or stored without an accept)"
        );
        let ranges: Vec<(i64, i64)> = sqlx::query("SELECT lo, hi FROM seq_ranges ORDER BY lo")
            .fetch_all(&mut c)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let recorded: BTreeSet<u64> = ranges
            .iter()
            .flat_map(|&(lo, hi)| lo as u64..=hi as u64)
            .collect();
        assert_eq!(
            recorded, stored,
            "recorded stored seqs differ from the data"
        );
        assert_eq!(
            hw,
            *stored.last().unwrap(),
            "high-water mark disagrees with data"
        );
        let staged: i64 = sqlx::query("SELECT COUNT(*) FROM pending")
            .fetch_one(&mut c)
            .await
            .unwrap()
            .get(0);
        assert_eq!(staged, 0);
        c.close().await.unwrap();
    });
    assert!(acked.len() >= 20 + 37 + 54 + 71 - 3 * 4);
}
