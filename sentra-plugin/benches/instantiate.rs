//! Instantiate + one collection call of a plugin (pooling allocator, `InstancePre`, fresh
//! instance per run) next to a native Rust function doing the same work, in the same run.
//!
//! * `plugin/empty`: a module whose `collect` returns 0 — the fixed cost of a run (store,
//!   pooled instance with a 1-page memory, epoch deadline, limiter, the call).
//! * `plugin/uptime`: `plugins/wat/uptime.wat` — one gauge with two labels, one counter,
//!   one log line, through the `sentra_v1` host functions (names and labels validated).
//! * `native/uptime`: the same two samples and log line built directly in Rust.
//!
//! After the criterion groups, an interleaved same-run measurement prints one line with
//! the per-run times and the plugin/native ratio (goal: plugin run ≤ 50 µs), and a line
//! with the time to kill a runaway plugin (`plugins/wat/loop.wat`, 50 ms deadline, 10 ms
//! tick, 200 runs) in this optimised build.

// criterion_group! generates an undocumented pub fn.
#![allow(missing_docs)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use sentra_core::{Labels, MetricName, Sample, UnixMillis, Value};
use sentra_plugin::{Capabilities, Host, HostConfig, Manifest, Plugin};

const EMPTY: &str = r#"(module (memory (export "memory") 1)
  (func (export "collect") (result i32) (i32.const 0)))"#;

fn load(host: &Host, name: &str, wasm: &[u8]) -> Plugin {
    let m = Manifest::new(name, "0.1.0", Duration::from_secs(10))
        .unwrap()
        .with_capabilities(Capabilities::default());
    host.load(m, wasm).unwrap()
}

fn plugin_wasm(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../plugins/wat/{name}.wat"));
    wat::parse_file(p).unwrap()
}

/// What `uptime.wat` does, natively.
fn native_uptime() -> (Vec<Sample>, Vec<String>) {
    let now = UnixMillis::now();
    let up = Sample::new(
        MetricName::new("plugin_up").unwrap(),
        Labels::from_pairs([("source", "wat"), ("kind", "example")]).unwrap(),
        now,
        Value::Gauge(1.0),
    );
    let runs = Sample::new(
        MetricName::new("plugin_runs_total").unwrap(),
        Labels::new(),
        UnixMillis::now(),
        Value::Counter(u64::try_from(now.as_millis() / 1000).unwrap_or(0)),
    );
    (vec![up, runs], vec![String::from("collected")])
}

fn bench(c: &mut Criterion) {
    let host = Host::new(HostConfig::default()).unwrap();
    let empty = load(&host, "empty", &wat::parse_str(EMPTY).unwrap());
    let uptime = load(&host, "uptime", &plugin_wasm("uptime"));
    let mut g = c.benchmark_group("instantiate_collect");
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("plugin/empty", |b| {
        b.iter(|| black_box(empty.collect().unwrap()));
    });
    g.bench_function("plugin/uptime", |b| {
        b.iter(|| black_box(uptime.collect().unwrap()));
    });
    g.bench_function("native/uptime", |b| b.iter(|| black_box(native_uptime())));
    g.finish();

    // Same-run ratio: interleaved batches, median per-run time of each.
    let batch = 2_000;
    let (mut e, mut p, mut n) = (Vec::new(), Vec::new(), Vec::new());
    let per_run = |f: &mut dyn FnMut()| {
        let t0 = Instant::now();
        for _ in 0..batch {
            f();
        }
        t0.elapsed() / batch
    };
    for _ in 0..15 {
        e.push(per_run(&mut || {
            black_box(empty.collect().unwrap());
        }));
        p.push(per_run(&mut || {
            black_box(uptime.collect().unwrap());
        }));
        n.push(per_run(&mut || {
            black_box(native_uptime());
        }));
    }
    for v in [&mut e, &mut p, &mut n] {
        v.sort();
    }
    let (e, p, n) = (e[7], p[7], n[7]);
    println!(
        "sentra-plugin same-run: plugin/empty {e:?} per run, plugin/uptime {p:?} per run \
         (goal <= 50µs: {}), native/uptime {n:?}; plugin/native = {:.1}x",
        if p <= Duration::from_micros(50) {
            "met"
        } else {
            "missed"
        },
        p.as_secs_f64() / n.as_secs_f64()
    );

    let deadline = Duration::from_millis(50);
    let m = Manifest::new("loop", "0.1.0", Duration::from_secs(10))
        .unwrap()
        .with_timeout(deadline);
    // Quarantine off: every run must reach its deadline.
    let mut cfg = HostConfig::default();
    cfg.quarantine_after = u32::MAX;
    let host = Host::new(cfg).unwrap();
    let looping = host.load(m, &plugin_wasm("loop")).unwrap();
    let mut kills: Vec<Duration> = (0..200)
        .map(|_| {
            let t0 = Instant::now();
            assert!(looping.collect().is_err());
            t0.elapsed()
        })
        .collect();
    kills.sort();
    let tick = host.config().epoch_tick;
    println!(
        "sentra-plugin kill time (runaway loop, 200 runs): min {:?} p50 {:?} p99 {:?} max {:?}; \
         bound deadline + tick = {:?}",
        kills[0],
        kills[100],
        kills[197],
        kills[199],
        deadline + tick
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
