//! Property test: the evaluator against a tiny reference model, on random sample streams,
//! with a serde round trip of its state at a random point (a restart).

use std::time::Duration;

use proptest::prelude::*;
use sentra_alerts::{Config, Evaluator, Status, parse_rules};
use sentra_core::{AgentId, Batch, Labels, MetricName, Sample, Seq, UnixMillis, Value};

const T0: i64 = 1_800_000_000_000;
const STALE_S: i64 = 40;

/// The reference: the documented semantics written as plainly as possible.
fn model(steps: &[(i64, Option<u8>)], for_s: i64, keep_s: i64) -> Vec<(i64, Status)> {
    let mut out = Vec::new();
    let mut now = 0;
    let mut last: Option<(i64, u8)> = None;
    let mut pending_since: Option<i64> = None;
    let mut firing = false;
    let mut last_true = 0;
    for &(dt, sample) in steps {
        now += dt;
        if let Some(v) = sample {
            last = Some((now, v));
        }
        let Some((t, v)) = last else { continue };
        if now - t > STALE_S {
            continue; // unknown: nothing changes
        }
        let cond = v > 5;
        if firing {
            if cond {
                last_true = now;
            } else if now - last_true >= keep_s {
                out.push((now, Status::Resolved));
                firing = false;
                pending_since = None;
            }
        } else if cond {
            match pending_since {
                None if for_s == 0 => {
                    out.push((now, Status::Firing));
                    firing = true;
                    last_true = now;
                }
                None => {
                    pending_since = Some(now);
                    out.push((now, Status::Pending));
                }
                Some(p) if now - p >= for_s => {
                    out.push((now, Status::Firing));
                    firing = true;
                    last_true = now;
                }
                Some(_) => {}
            }
        } else {
            pending_since = None;
        }
    }
    out
}

fn run(
    steps: &[(i64, Option<u8>)],
    for_s: i64,
    keep_s: i64,
    restart_at: usize,
) -> Vec<(i64, Status)> {
    let src = format!(
        "[[rule]]\nname = \"R\"\nkind = \"threshold\"\nmetric = \"m\"\nmatchers = ['k=\"a\"']\n\
         op = \">\"\nvalue = 5.0\nfor = \"{for_s}s\"\nkeep_firing_for = \"{keep_s}s\"\n"
    );
    let rules = || parse_rules(&src, None).unwrap().0;
    let mut config = Config::default();
    config.stale_after = Duration::from_secs(STALE_S.unsigned_abs());
    let mut ev = Evaluator::new(rules(), config).unwrap();
    let mut out = Vec::new();
    let mut now = 0;
    for (i, &(dt, sample)) in steps.iter().enumerate() {
        if i == restart_at {
            let json = serde_json::to_vec(&ev.snapshot()).unwrap();
            ev = Evaluator::restore(rules(), config, serde_json::from_slice(&json).unwrap())
                .unwrap();
        }
        now += dt;
        let ts = UnixMillis::from_millis(T0 + now * 1000);
        if let Some(v) = sample {
            let mut b = Batch::new(AgentId::new("a").unwrap(), Seq::new(1).unwrap(), ts);
            for (k, value) in [("a", f64::from(v)), ("b", 9.0)] {
                b.samples.push(Sample::new(
                    MetricName::new("m").unwrap(),
                    Labels::from_pairs([("k", k)]).unwrap(),
                    ts,
                    Value::Gauge(value),
                ));
            }
            ev.observe(&b, ts);
        }
        for t in ev.tick(ts) {
            assert_eq!(t.rule, "R");
            assert_eq!(
                t.labels
                    .iter()
                    .find(|(n, _)| n == "k")
                    .map(|(_, v)| v.as_str()),
                Some("a")
            );
            out.push((now, t.status));
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn evaluator_matches_reference_model(
        steps in prop::collection::vec((1i64..30, prop::option::weighted(0.8, 0u8..10)), 1..80),
        for_s in prop::sample::select(vec![0i64, 5, 10, 30, 60]),
        keep_s in prop::sample::select(vec![0i64, 5, 10, 30, 60]),
        restart_at in 0usize..100,
    ) {
        let want = model(&steps, for_s, keep_s);
        let got = run(&steps, for_s, keep_s, restart_at);
        prop_assert_eq!(&got, &want);
        // notifications alternate firing / resolved, starting with firing
        let notes: Vec<Status> = got.iter().map(|x| x.1).filter(|s| *s != Status::Pending).collect();
        for (i, s) in notes.iter().enumerate() {
            prop_assert_eq!(*s, if i % 2 == 0 { Status::Firing } else { Status::Resolved });
        }
    }
}

/// Matchers from a pool, each with a plain Rust predicate as the reference.
type Reference = fn(&str, &str) -> bool;

fn matcher_pool() -> Vec<(&'static str, Reference)> {
    vec![
        (r#"k1="a""#, |k1, _| k1 == "a"),
        (r#"k1!="a""#, |k1, _| k1 != "a"),
        (r#"k1=~"a|b""#, |k1, _| k1 == "a" || k1 == "b"),
        (r#"k1!~"b.*""#, |k1, _| !k1.starts_with('b')),
        (r#"k1="""#, |k1, _| k1.is_empty()),
        (r#"k2=~"x""#, |_, k2| k2 == "x"),
        (r#"k2!="y""#, |_, k2| k2 != "y"),
        (r#"k2=~".+""#, |_, k2| !k2.is_empty()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn indexed_matching_equals_brute_force(
        series in prop::collection::btree_set(
            (prop::sample::select(vec!["", "a", "b", "bb", "c"]),
             prop::sample::select(vec!["", "x", "y"])), 1..15),
        rules in prop::collection::vec(prop::collection::vec(0usize..8, 0..3), 1..6),
        split in 0usize..15,
    ) {
        let pool = matcher_pool();
        let mut src = String::new();
        for (i, ms) in rules.iter().enumerate() {
            let list: Vec<String> = ms.iter().map(|&m| format!("'{}'", pool[m].0)).collect();
            src.push_str(&format!(
                "[[rule]]\nname = \"R{i}\"\nkind = \"threshold\"\nmetric = \"m\"\n\
                 matchers = [{}]\nop = \">\"\nvalue = 0.0\n",
                list.join(", ")
            ));
        }
        let parsed = || parse_rules(&src, None).unwrap().0;
        let mut ev = Evaluator::new(parsed(), Config::default()).unwrap();
        let ts = UnixMillis::from_millis(T0);
        let series: Vec<_> = series.into_iter().collect();
        // first part of the series, then a restart, then the rest: matching must not depend
        // on when a series appeared
        for (i, (k1, k2)) in series.iter().enumerate() {
            if i == split {
                ev = Evaluator::restore(parsed(), Config::default(), ev.snapshot()).unwrap();
            }
            let mut b = Batch::new(AgentId::new("a").unwrap(), Seq::new(1).unwrap(), ts);
            let pairs: Vec<(&str, &str)> =
                [("k1", *k1), ("k2", *k2)].into_iter().filter(|(_, v)| !v.is_empty()).collect();
            b.samples.push(Sample::new(MetricName::new("m").unwrap(), Labels::from_pairs(pairs).unwrap(), ts, Value::Gauge(1.0)));
            ev.observe(&b, ts);
        }
        let mut got: Vec<(String, String, String)> = ev
            .tick(ts)
            .into_iter()
            .map(|t| {
                let get = |n: &str| {
                    t.labels.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()).unwrap_or_default()
                };
                (t.rule.clone(), get("k1"), get("k2"))
            })
            .collect();
        got.sort();
        let mut want = Vec::new();
        for (i, ms) in rules.iter().enumerate() {
            for (k1, k2) in &series {
                if ms.iter().all(|&m| (pool[m].1)(k1, k2)) {
                    want.push((format!("R{i}"), (*k1).to_owned(), (*k2).to_owned()));
                }
            }
        }
        want.sort();
        prop_assert_eq!(got, want);
    }
}
