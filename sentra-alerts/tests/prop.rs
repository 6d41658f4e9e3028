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
                b.samples.push(Sample {
                    name: MetricName::new("m").unwrap(),
                    labels: Labels::from_pairs([("k", k)]).unwrap(),
                    timestamp: ts,
                    value: Value::Gauge(value),
                });
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
