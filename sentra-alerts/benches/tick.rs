//! One evaluation tick of 10 000 rules over 100 000 series (goal: <= 100 ms on one core).
//!
//! 1 000 metrics x 100 series each (labels `job`, `instance`, plus `agent`); 10 rules per
//! metric, each with a regex matcher that every series of its metric satisfies, so a tick
//! walks 1 000 000 (rule, series) pairs. Run: `cargo bench -p sentra-alerts --bench tick`.
//!
//! Baseline in the same run (`baseline_rematch_every_tick`): what a Prometheus-style rule
//! evaluation does per tick — select the series of the rule's metric, run every matcher on
//! every series, compare the latest value (threshold) or the rate between the two latest
//! samples (rate). It keeps no alert state (no pending/firing bookkeeping), so it does less
//! than the evaluator; the ratio is the cost of matching once per series plus state versus
//! matching every tick without state. Both check that they saw every pair.
#![allow(missing_docs)]

use std::{hint::black_box, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use sentra_alerts::{Config, Evaluator, Rule, RuleKind, parse_rules};
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
                b.samples.push(Sample::new(
                    MetricName::new(format!("metric_{m}")).unwrap(),
                    Labels::from_pairs([("job", "node"), ("instance", &format!("i{i}"))]).unwrap(),
                    ts,
                    Value::Gauge(f64::from(u32::try_from(m % 7).unwrap())),
                ));
            }
            b
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let (rules, _) = parse_rules(&rules_src(), None).unwrap();
    let rules_for_baseline = rules.clone();
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
    let baseline = Baseline::new(&rules_for_baseline, &[batches(T0), batches(T0 + 10_000)]);
    assert_eq!(
        baseline.pairs(),
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
    g.bench_function("baseline_rematch_every_tick", |b| {
        b.iter(|| black_box(baseline.tick()));
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

/// Per metric: each series' sorted labels and its two latest (time, value) samples.
type Series = (Vec<(String, String)>, [(i64, f64); 2]);

struct Baseline<'a> {
    rules: &'a [Rule],
    by_metric: std::collections::HashMap<String, Vec<Series>>,
}

impl<'a> Baseline<'a> {
    fn new(rules: &'a [Rule], rounds: &[Vec<Batch>]) -> Self {
        let mut by_metric: std::collections::HashMap<String, Vec<Series>> = Default::default();
        for (round, bs) in rounds.iter().enumerate() {
            for (i, b) in bs.iter().enumerate() {
                for s in &b.samples {
                    let Value::Gauge(v) = s.value else { continue };
                    let list = by_metric.entry(s.name.as_str().to_owned()).or_default();
                    if round == 0 {
                        let mut labels: Vec<(String, String)> = s
                            .labels
                            .iter()
                            .map(|(k, v)| (k.to_owned(), v.to_owned()))
                            .collect();
                        labels.push(("agent".into(), b.agent_id.to_string()));
                        labels.sort();
                        list.push((labels, [(0, 0.0); 2]));
                    }
                    let hist = &mut list[i].1;
                    hist[0] = hist[1];
                    hist[1] = (s.timestamp.as_millis(), v);
                }
            }
        }
        Self { rules, by_metric }
    }

    fn pairs(&self) -> usize {
        self.rules
            .iter()
            .map(|r| match &r.kind {
                RuleKind::Threshold { metric, .. } | RuleKind::Rate { metric, .. } => {
                    self.by_metric.get(metric).map_or(0, |s| {
                        s.iter()
                            .filter(|(l, _)| r.matchers.iter().all(|m| m.matches(l)))
                            .count()
                    })
                }
                _ => 0,
            })
            .sum()
    }

    /// One evaluation: how many (rule, series) pairs hold.
    fn tick(&self) -> usize {
        let mut holding = 0;
        for r in self.rules {
            let (metric, op, value, rate) = match &r.kind {
                RuleKind::Threshold { metric, op, value } => (metric, *op, *value, false),
                RuleKind::Rate { metric, op, value } => (metric, *op, *value, true),
                _ => continue,
            };
            let Some(series) = self.by_metric.get(metric) else {
                continue;
            };
            for (labels, [(t0, v0), (t1, v1)]) in series {
                if !r.matchers.iter().all(|m| m.matches(labels)) {
                    continue;
                }
                #[allow(clippy::cast_precision_loss)]
                let x = if rate {
                    (v1 - v0) / ((t1 - t0) as f64 / 1000.0)
                } else {
                    *v1
                };
                holding += usize::from(op.apply(x, value));
            }
        }
        holding
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
