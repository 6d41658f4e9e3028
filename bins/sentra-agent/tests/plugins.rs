//! WASM plugin collectors in a running agent, against a real gRPC server (sentra-transport
//! on loopback, HMAC verification included) and the real wasmtime host of `sentra-plugin`,
//! with the committed WAT plugins of `plugins/wat`:
//!
//! * a good plugin's samples are stored in the WAL, signed and shipped like the built-in
//!   collectors'; broken installs (truncated module, bad manifest, module outside its
//!   directory) are refused at start and the agent runs without them;
//! * a plugin that traps on every run is quarantined, with the reason in the agent's
//!   health and in the shipped `sentra_agent_collector_quarantined` gauge;
//! * 50 hostile plugins (loops, memory and table bombs, recursion, floods, huge lengths,
//!   traps, snooping) next to one good one in one agent: the agent survives, the good plugin
//!   keeps shipping every scheduled run, the snooper reads nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sentra_agent::Agent;
use sentra_core::proto::{Ack, AckStatus};
use sentra_core::{Value, Verified};
use sentra_transport::BoxError;

#[allow(dead_code)]
mod common;
use common::{any_port, lock, stop_server};

/// Every sample the server stored: (seq, name, labels, value).
type Stored = Arc<Mutex<Vec<(u64, String, BTreeMap<String, String>, Value)>>>;

fn wat(name: &str) -> Vec<u8> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../plugins/wat/{name}.wat"));
    wat::parse_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Installs `module` as plugin `name` the way `sentra plugin install` lays it out.
fn install(dir: &Path, name: &str, module: &[u8], extra: &str) {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).expect("mkdir");
    std::fs::write(d.join(format!("{name}.wasm")), module).expect("module");
    std::fs::write(
        d.join(sentra_agent::plugin::MANIFEST_FILE),
        format!("name = \"{name}\"\nversion = \"0.1.0\"\nschedule = \"1s\"\n{extra}"),
    )
    .expect("manifest");
}

async fn server(
    stored: &Stored,
    agent: &str,
) -> (common::RunningServer, sentra_agent::Credentials) {
    let (creds, keyring) = common::creds(agent, 9);
    let stored = stored.clone();
    let svc = tower::service_fn(move |v: Verified| {
        let stored = stored.clone();
        async move {
            let batch = v.decode_batch()?;
            let seq = v.seq().get();
            let mut s = lock(&stored);
            for x in &batch.samples {
                let labels = x
                    .labels
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                s.push((seq, x.name.as_str().to_owned(), labels, x.value.clone()));
            }
            Ok::<_, BoxError>(Ack {
                agent_id: v.agent_id().to_string(),
                seq,
                status: AckStatus::Accepted.into(),
                ..Default::default()
            })
        }
    });
    (common::start_server(any_port(), keyring, svc).await, creds)
}

/// Batches (distinct seqs) that carry a sample named `name`.
fn batches_with(stored: &Stored, name: &str) -> usize {
    let mut seqs: Vec<u64> = lock(stored)
        .iter()
        .filter(|(_, n, _, _)| n == name)
        .map(|(s, _, _, _)| *s)
        .collect();
    seqs.dedup();
    seqs.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_samples_are_shipped_and_broken_plugins_are_refused() {
    let stored: Stored = Arc::default();
    let (server, creds) = server(&stored, "edge-plugins").await;
    let dir = tempfile::tempdir().expect("tmp");
    let plugins = dir.path().join("plugins");
    install(&plugins, "uptime", &wat("uptime"), "");
    install(&plugins, "trap", &wat("trap"), "timeout = \"200ms\"\n");
    // Broken installs: a truncated module, a manifest that does not parse, a module path
    // leaving the plugin's directory, an unknown import.
    let good = wat("uptime");
    install(&plugins, "truncated", &good[..good.len() / 2], "");
    install(&plugins, "badmanifest", &good, "schedule = \"nope\"\n");
    install(
        &plugins,
        "escape",
        &good,
        "module = \"../uptime/uptime.wasm\"\n",
    );
    let unknown = wat::parse_str(
        r#"(module (import "env" "system" (func)) (memory (export "memory") 1)
           (func (export "collect") (result i32) (i32.const 0)))"#,
    )
    .expect("wat");
    install(&plugins, "unknownimport", &unknown, "");

    let mut cfg = common::config(
        &dir.path().join("agent"),
        server.addr,
        &creds,
        Duration::from_millis(500),
    );
    cfg.plugins_dir = Some(plugins);
    let agent = Agent::new(cfg).expect("agent").without_wireguard().spawn();

    let deadline = Instant::now() + Duration::from_secs(60);
    let quarantined_shipped = |stored: &Stored| {
        lock(stored).iter().any(|(_, n, l, v)| {
            n == "sentra_agent_collector_quarantined"
                && l.get("collector").map(String::as_str) == Some("plugin:trap")
                && *v == Value::Gauge(1.0)
        })
    };
    loop {
        let h = agent.health().snapshot();
        let trap_q = h
            .collectors
            .get("plugin:trap")
            .is_some_and(|c| c.quarantined.is_some());
        if batches_with(&stored, "plugin_up") >= 3 && trap_q && quarantined_shipped(&stored) {
            break;
        }
        assert!(!agent.is_finished(), "the agent stopped");
        assert!(
            Instant::now() < deadline,
            "plugin samples or the quarantine did not arrive: {} plugin batches, health {:?}",
            batches_with(&stored, "plugin_up"),
            h.collectors
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let h = agent.health().snapshot();
    agent.shutdown().await.expect("graceful stop");
    stop_server(server).await;

    // The good plugin's samples, with its labels, came through the signed path.
    let up: Vec<_> = lock(&stored)
        .iter()
        .filter(|(_, n, _, _)| n == "plugin_up")
        .map(|(_, _, l, v)| (l.clone(), v.clone()))
        .collect();
    assert!(up.iter().all(|(l, v)| {
        l.get("source").map(String::as_str) == Some("wat") && *v == Value::Gauge(1.0)
    }));
    assert!(batches_with(&stored, "plugin_runs_total") >= 3);
    let u = &h.collectors["plugin:uptime"];
    assert!(
        u.runs >= 3 && u.failures() == 0 && u.quarantined.is_none(),
        "{u:?}"
    );
    // Refused plugins never became collectors; the host collector ran as usual.
    for refused in ["truncated", "badmanifest", "escape", "unknownimport"] {
        assert!(
            !h.collectors.contains_key(&format!("plugin:{refused}")),
            "{refused} was refused: {:?}",
            h.collectors.keys()
        );
    }
    assert!(h.collectors["host"].runs >= 2);
    // The trapping plugin: quarantined with the host's reason, not run any more.
    let t = &h.collectors["plugin:trap"];
    let reason = t.quarantined.as_deref().expect("quarantined");
    assert!(
        reason.contains("quarantined") && reason.contains("trap"),
        "{reason}"
    );
    assert_eq!(t.last_ok_ms, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_hostile_plugins_next_to_a_good_one_in_one_agent() {
    const HOSTILE: [&str; 10] = [
        "loop",
        "loop_start",
        "memory_bomb",
        "memory_bomb_big",
        "table_bomb",
        "recursion",
        "flood",
        "huge_string",
        "trap",
        "snoop",
    ];
    let stored: Stored = Arc::default();
    let (server, creds) = server(&stored, "edge-hostile").await;
    let dir = tempfile::tempdir().expect("tmp");
    let plugins = dir.path().join("plugins");
    install(&plugins, "good", &wat("uptime"), "");
    let modules: BTreeMap<&str, Vec<u8>> = HOSTILE.iter().map(|n| (*n, wat(n))).collect();
    let mut failing = Vec::new();
    for i in 0..50 {
        let kind = HOSTILE[i % HOSTILE.len()];
        let name = format!("{}-{i:02}", kind.replace('_', "-"));
        install(&plugins, &name, &modules[kind], "timeout = \"100ms\"\n");
        if kind != "snoop" {
            failing.push(format!("plugin:{name}"));
        }
    }
    let mut cfg = common::config(
        &dir.path().join("agent"),
        server.addr,
        &creds,
        Duration::from_secs(1),
    );
    cfg.plugins_dir = Some(plugins);
    let started = Instant::now();
    let agent = Agent::new(cfg).expect("agent").without_wireguard().spawn();

    // Until every failing plugin is quarantined (5 failures each, backed off 1, 1, 2, 4 s),
    // then 5 more seconds.
    let deadline = started + Duration::from_secs(90);
    let mut all_quarantined: Option<Instant> = None;
    loop {
        let h = agent.health().snapshot();
        let q = failing
            .iter()
            .filter(|n| {
                h.collectors
                    .get(*n)
                    .is_some_and(|c| c.quarantined.is_some())
            })
            .count();
        if q == failing.len() && all_quarantined.is_none() {
            all_quarantined = Some(Instant::now());
        }
        if all_quarantined.is_some_and(|t| t.elapsed() >= Duration::from_secs(5)) {
            break;
        }
        assert!(!agent.is_finished(), "a hostile plugin took the agent down");
        assert!(
            Instant::now() < deadline,
            "{q}/{} failing plugins quarantined after {:?}",
            failing.len(),
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    let h = agent.health().snapshot();
    assert!(!agent.is_finished(), "the agent survived");
    agent.shutdown().await.expect("graceful stop");
    stop_server(server).await;

    let g = &h.collectors["plugin:good"];
    // One run per second from the start (the first at once): the good plugin was never
    // delayed by its 50 neighbours.
    let expected = elapsed.as_secs_f64().floor();
    let ratio = g.runs as f64 / expected;
    let shipped = batches_with(&stored, "plugin_up");
    eprintln!(
        "R7 agent battery: 50 hostile + 1 good plugin, {:.1} s: good runs={} failures={} \
         shipped batches={shipped} ratio to schedule={ratio:.2}; {} hostile failing → \
         quarantined, snoopers denied",
        elapsed.as_secs_f64(),
        g.runs,
        g.failures(),
        failing.len()
    );
    assert_eq!(g.failures(), 0, "{g:?}");
    assert!(
        ratio >= 0.8,
        "good plugin ran {} times in {elapsed:?}",
        g.runs
    );
    assert!(
        shipped as f64 >= 0.8 * expected,
        "{shipped} batches shipped in {elapsed:?}"
    );
    // Each failing plugin: quarantined with its reason; every hostile kind was contained.
    for n in &failing {
        let c = &h.collectors[n];
        assert!(c.last_ok_ms.is_none(), "{n}: {c:?}");
        assert!(
            c.quarantined
                .as_deref()
                .is_some_and(|r| r.contains("quarantined")),
            "{n}: {c:?}"
        );
    }
    let loops = &h.collectors["plugin:loop-00"];
    assert!(
        loops
            .quarantined
            .as_deref()
            .is_some_and(|r| r.contains("timeout")),
        "{loops:?}"
    );
    // The snoopers ran, and every read of a file or variable not granted was refused.
    let snoop: Vec<Value> = lock(&stored)
        .iter()
        .filter(|(_, n, _, _)| n == "snoop_status")
        .map(|(_, _, _, v)| v.clone())
        .collect();
    assert!(!snoop.is_empty(), "the snoopers' samples arrive");
    assert!(
        snoop
            .iter()
            .all(|v| matches!(v, Value::Gauge(x) if *x < 0.0)),
        "{snoop:?}"
    );
}
