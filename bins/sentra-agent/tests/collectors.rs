//! The collector seam against a real gRPC server (sentra-transport on loopback, HMAC
//! verification included): a collector that panics on every run, one that hangs past its
//! timeout (awaiting forever, or stuck in a blocking read), and one that errors every time
//! run next to a good collector and the built-in
//! host collector. The good collector's samples keep arriving at the server, in order and
//! without gaps; each bad one shows up in per-collector health with its kind and reason —
//! in `Health::snapshot` and in the `sentra_agent_collector_*` samples the server receives —
//! and the one that errors is backed off.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sentra_agent::health::FailureKind;
use sentra_agent::{Agent, CollectContext, CollectError, Collection, Collector, Schedule};
use sentra_core::proto::{Ack, AckStatus};
use sentra_core::{Value, Verified};
use sentra_transport::BoxError;

#[allow(dead_code)]
mod common;
use common::{any_port, lock, stop_server};

const TICK: Duration = Duration::from_millis(100);

/// Counts its runs in `good_runs_total`.
struct Good(u64);

impl Collector for Good {
    fn name(&self) -> &str {
        "good"
    }
    fn schedule(&self) -> Schedule {
        Schedule::every(TICK)
    }
    async fn collect(&mut self, cx: &CollectContext) -> Result<Collection, CollectError> {
        self.0 += 1;
        let mut out = cx.sample_set();
        out.counter("good_runs_total", &[], self.0);
        Ok(Collection::from_samples(out))
    }
}

enum Bad {
    Panics,
    Hangs,
    /// Stuck in a blocking read (an unresponsive NFS mount), on a blocking thread.
    Blocks,
    Fails,
}

impl Collector for Bad {
    fn name(&self) -> &str {
        match self {
            Self::Panics => "panics",
            Self::Hangs => "hangs",
            Self::Blocks => "blocks",
            Self::Fails => "fails",
        }
    }
    fn schedule(&self) -> Schedule {
        match self {
            // No backoff: it keeps panicking / hanging at full rate next to the others.
            Self::Panics => Schedule::every(TICK).max_backoff(TICK),
            Self::Hangs => Schedule::every(TICK)
                .timeout(Duration::from_millis(300))
                .max_backoff(TICK),
            Self::Blocks => Schedule::every(TICK)
                .timeout(Duration::from_millis(200))
                .max_backoff(TICK),
            // Default backoff: up to 8 × the interval.
            Self::Fails => Schedule::every(TICK),
        }
    }
    async fn collect(&mut self, _cx: &CollectContext) -> Result<Collection, CollectError> {
        match self {
            Self::Panics => panic!("hostile collector panics"),
            Self::Hangs => std::future::pending().await,
            Self::Blocks => {
                tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_secs(1)))
                    .await
                    .map(|()| Collection::new())
                    .map_err(|e| CollectError::new(e.to_string()))
            }
            Self::Fails => Err(CollectError::new("always fails: /dev/sensor0 is gone")),
        }
    }
}

/// Every batch the server stored: seq → samples as (name, labels, value).
type Stored = Arc<Mutex<BTreeMap<u64, Vec<(String, BTreeMap<String, String>, Value)>>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_hanging_or_failing_collector_never_stops_the_others() {
    let (creds, keyring) = common::creds("edge-collectors", 5);
    let stored: Stored = Arc::default();
    let svc = {
        let stored = stored.clone();
        tower::service_fn(move |v: Verified| {
            let stored = stored.clone();
            async move {
                let batch = v.decode_batch()?;
                let samples = batch
                    .samples
                    .iter()
                    .map(|s| {
                        let labels = s
                            .labels
                            .iter()
                            .map(|(k, v)| (k.to_owned(), v.to_owned()))
                            .collect();
                        (s.name.as_str().to_owned(), labels, s.value.clone())
                    })
                    .collect();
                lock(&stored).insert(v.seq().get(), samples);
                Ok::<_, BoxError>(Ack {
                    agent_id: v.agent_id().to_string(),
                    seq: v.seq().get(),
                    status: AckStatus::Accepted.into(),
                    ..Default::default()
                })
            }
        })
    };
    let server = common::start_server(any_port(), keyring, svc).await;
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = common::config(&dir.path().join("agent"), server.addr, &creds, TICK * 2);
    let agent = Agent::new(cfg)
        .expect("agent")
        .without_wireguard()
        .with_collector(Bad::Panics)
        .with_collector(Good(0))
        .with_collector(Bad::Hangs)
        .with_collector(Bad::Blocks)
        .with_collector(Bad::Fails)
        .spawn();

    let good_values = |stored: &Stored| -> Vec<u64> {
        lock(stored)
            .values()
            .flatten()
            .filter_map(|(n, _, v)| match v {
                Value::Counter(c) if n == "good_runs_total" => Some(*c),
                _ => None,
            })
            .collect()
    };
    // The agent's own samples about collector `c`, kind `k`, in the newest host batch that
    // has them.
    let shipped_failures = |stored: &Stored, c: &str, k: &str| -> Option<u64> {
        lock(stored).values().rev().flatten().find_map(|(n, l, v)| {
            let hit = n == "sentra_agent_collector_failures_total"
                && l.get("collector").map(String::as_str) == Some(c)
                && l.get("kind").map(String::as_str) == Some(k);
            match v {
                Value::Counter(x) if hit => Some(*x),
                _ => None,
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let h = agent.health().snapshot();
        let c = |n: &str| h.collectors.get(n).cloned().unwrap_or_default();
        let done = good_values(&stored).len() >= 20
            && c("panics").panics >= 5
            && c("hangs").timeouts >= 3
            && c("blocks").timeouts >= 3
            && c("fails").errors >= 3
            && shipped_failures(&stored, "panics", "panic").is_some_and(|n| n >= 2)
            && shipped_failures(&stored, "hangs", "timeout").is_some_and(|n| n >= 2)
            && shipped_failures(&stored, "fails", "error").is_some_and(|n| n >= 2);
        if done {
            break;
        }
        assert!(
            !agent.is_finished(),
            "the agent stopped: a bad collector took it down"
        );
        assert!(
            Instant::now() < deadline,
            "the good collector's samples or the bad ones' health did not arrive: \
             {} good samples stored, health {:?}",
            good_values(&stored).len(),
            h.collectors
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!agent.is_finished(), "the agent kept running");
    let h = agent.health().snapshot();
    agent.shutdown().await.expect("graceful stop");
    stop_server(server).await;

    // The good collector: every run stored and shipped, in order, none missing.
    let good = good_values(&stored);
    let expected: Vec<u64> = (1..=good.len() as u64).collect();
    assert_eq!(
        good, expected,
        "the good collector's samples arrive without gaps"
    );
    let g = &h.collectors["good"];
    assert_eq!((g.failures(), g.consecutive_failures), (0, 0), "{g:?}");
    assert!(g.last_ok_ms.is_some() && g.samples >= 20, "{g:?}");
    let host = &h.collectors["host"];
    assert!(host.runs >= 2 && host.failures() == 0, "{host:?}");
    assert!(
        lock(&stored)
            .values()
            .flatten()
            .any(|(n, _, _)| n == "node_load1"),
        "host samples arrive too"
    );

    // Each bad collector: its failures, kind and reason.
    let p = &h.collectors["panics"];
    assert_eq!(
        p.last_error,
        Some((
            FailureKind::Panic,
            "panicked: hostile collector panics".to_owned()
        ))
    );
    assert_eq!((p.errors, p.timeouts, p.last_ok_ms), (0, 0, None), "{p:?}");
    assert!(p.consecutive_failures >= 5, "{p:?}");
    let hg = &h.collectors["hangs"];
    let (kind, reason) = hg.last_error.clone().expect("hangs failed");
    assert_eq!(kind, FailureKind::Timeout);
    assert!(reason.contains("300ms"), "{reason}");
    assert!(
        hg.last_duration >= Duration::from_millis(300),
        "abandoned at the timeout, not before: {hg:?}"
    );
    let b = &h.collectors["blocks"];
    assert_eq!(b.last_ok_ms, None, "{b:?}");
    assert!(
        matches!(&b.last_error, Some((FailureKind::Timeout, r)) if r.contains("200ms")),
        "{b:?}"
    );
    let f = &h.collectors["fails"];
    assert_eq!(
        f.last_error,
        Some((
            FailureKind::Error,
            "always fails: /dev/sensor0 is gone".to_owned()
        ))
    );
    // Backoff: 100 ms, 100, 200, 400, 800, 800, … between runs, against 100 ms for `good`.
    assert!(
        f.runs * 2 < g.runs,
        "the failing collector is backed off: {} runs vs {} for the good one",
        f.runs,
        g.runs
    );
}

#[tokio::test]
async fn duplicate_or_reserved_names_and_zero_intervals_are_refused() {
    let (creds, _) = common::creds("edge-names", 5);
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = |d: &str| common::config(&dir.path().join(d), any_port(), &creds, TICK);
    let err = |agent: Agent| async move {
        agent
            .run(std::future::pending())
            .await
            .expect_err("refused")
            .to_string()
    };

    struct Named(&'static str, Duration);
    impl Collector for Named {
        fn name(&self) -> &str {
            self.0
        }
        fn schedule(&self) -> Schedule {
            Schedule::every(self.1)
        }
        async fn collect(&mut self, _: &CollectContext) -> Result<Collection, CollectError> {
            Ok(Collection::new())
        }
    }
    let a = Agent::new(cfg("a"))
        .expect("agent")
        .with_collector(Named("x", TICK))
        .with_collector(Named("x", TICK));
    let e = err(a).await;
    assert!(e.contains("\"x\"") && e.contains("unique"), "{e}");
    let a = Agent::new(cfg("b"))
        .expect("agent")
        .with_collector(Named("host", TICK));
    let e = err(a).await;
    assert!(e.contains("\"host\""), "{e}");
    let a = Agent::new(cfg("c"))
        .expect("agent")
        .with_collector(Named("zero", Duration::ZERO));
    let e = err(a).await;
    assert!(e.contains("\"zero\"") && e.contains("interval"), "{e}");
}

/// The built-in WireGuard collector on the seam: readable or not on this machine, it shows in
/// per-collector health (an unavailable WireGuard as a failure with its reason) and is not
/// backed off — it keeps being re-read every `wireguard_interval`, as before the seam —
/// while host collections keep arriving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wireguard_collector_reports_its_state_and_is_not_backed_off() {
    let (creds, keyring) = common::creds("edge-wg-seam", 6);
    let stored = Arc::new(Mutex::new(0u64));
    let svc = {
        let stored = stored.clone();
        tower::service_fn(move |v: Verified| {
            let stored = stored.clone();
            async move {
                v.decode_batch()?;
                *lock(&stored) += 1;
                Ok::<_, BoxError>(Ack {
                    agent_id: v.agent_id().to_string(),
                    seq: v.seq().get(),
                    status: AckStatus::Accepted.into(),
                    ..Default::default()
                })
            }
        })
    };
    let server = common::start_server(any_port(), keyring, svc).await;
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = common::config(&dir.path().join("agent"), server.addr, &creds, TICK * 2);
    cfg.wireguard_interval = TICK;
    cfg.desired_state_interval = Duration::ZERO; // read-only: no peer applier
    let agent = Agent::new(cfg).expect("agent").spawn();
    let deadline = Instant::now() + Duration::from_secs(60);
    let h = loop {
        let h = agent.health().snapshot();
        if h.collectors.get("host").is_some_and(|c| c.runs >= 8) && *lock(&stored) >= 8 {
            break h;
        }
        assert!(!agent.is_finished(), "the agent stopped");
        assert!(Instant::now() < deadline, "no progress: {:?}", h.collectors);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    agent.shutdown().await.expect("graceful stop");
    stop_server(server).await;

    let (w, host) = (&h.collectors["wireguard"], &h.collectors["host"]);
    match &w.last_error {
        None => assert!(
            w.last_ok_ms.is_some() && w.consecutive_failures == 0,
            "{w:?}"
        ),
        Some((kind, reason)) => {
            assert_eq!(*kind, FailureKind::Error, "{w:?}");
            assert!(reason.starts_with("WireGuard unavailable ("), "{reason}");
            // Whatever it is, it does not change between runs here: all failed or none.
            assert_eq!(u64::from(w.consecutive_failures), w.runs, "{w:?}");
        }
    }
    // Every 100 ms against the host collector's 200 ms: with backoff (up to 8 × 100 ms) an
    // unavailable WireGuard would fall far behind.
    assert!(
        w.runs >= host.runs,
        "wireguard {} runs, host {} runs",
        w.runs,
        host.runs
    );
    assert_eq!(host.failures(), 0, "{host:?}");
}
