//! One evaluation tick of 10 000 rules over 100 000 series (goal: <= 100 ms on one core).
//!
//! 1 000 metrics x 100 series each (labels `job`, `instance`, plus `agent`); 10 rules per
//! metric, each with a regex matcher that every series of its metric satisfies, so a tick
//! walks 1 000 000 (rule, series) pairs. Run: `cargo bench -p sentra-alerts --bench tick`.
#![allow(missing_docs)]

use std::{hint::black_box, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use sentra_alerts::{Config, Evaluator, parse_rules};
use sentra_core::{AgentId, Batch, Labels, MetricName, Sample, Seq, UnixMillis, Value};

const METRICS: usize = 1_000;
const SERIES_PER_METRIC: usize = 100;
const RULES_PER_METRIC: usize = 10;
const T0: i64 = 1_800_000_000_000;

fn rules_src() -> String {
    let mut s = String::new();
    for m in 0..METRICS {
        for r in 0..RULES_PER_METRIC {
            let kind = if r % 2 == 0 { "threshold" } else { "rate" };
            s.push_str(&format!(
                "[[rule]]\nname = \"r{m}_{r}\"\nkind = \"{kind}\"\nmetric = \"metric_{m}\"\n\
                 matchers = ['job=~\"node.*\"', 'instance!=\"none\"']\nop = \">\"\n\
                 value = {}.0\nfor = \"1m\"\n",
                1_000 + r
            ));
        }
    }
    s
}

fn batches(at: i64) -> Vec<Batch> {
    let ts = UnixMillis::from_millis(at);
    (0..SERIES_PER_METRIC)
        .map(|i| {
            let mut b = Batch::new(
                AgentId::new(format!("agent-{i}")).unwrap(),
                Seq::new(1).unwrap(),
                ts,
            );
            for m in 0..METRICS {
                b.samples.push(Sample {
                    name: MetricName::new(format!("metric_{m}")).unwrap(),
                    labels: Labels::from_pairs([("job", "node"), ("instance", &format!("i{i}"))])
                        .unwrap(),
                    timestamp: ts,
                    value: Value::Gauge(f64::from(u32::try_from(m % 7).unwrap())),
                });
            }
            b
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let (rules, _) = parse_rules(&rules_src(), None).unwrap();
    assert_eq!(rules.len(), METRICS * RULES_PER_METRIC);
    let mut ev = Evaluator::new(rules, Config::default()).unwrap();
    for b in batches(T0) {
        ev.observe(&b, UnixMillis::from_millis(T0));
    }
    for b in batches(T0 + 10_000) {
        ev.observe(&b, UnixMillis::from_millis(T0 + 10_000));
    }
    assert_eq!(
        ev.pair_count(),
        METRICS * RULES_PER_METRIC * SERIES_PER_METRIC
    );
    let mut g = c.benchmark_group("evaluator");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(10));
    let mut now = T0 + 10_000;
    g.bench_function("tick_10k_rules_100k_series", |b| {
        b.iter(|| {
            now += 1;
            black_box(ev.tick(UnixMillis::from_millis(now)))
        });
    });
    let fresh = batches(T0 + 20_000);
    g.bench_function("observe_100k_samples_known_series", |b| {
        b.iter(|| {
            for x in &fresh {
                ev.observe(x, UnixMillis::from_millis(T0 + 20_000));
            }
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
