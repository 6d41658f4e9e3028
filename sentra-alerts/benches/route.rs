//! One router flush of 10 000 firing alerts (100 agents x 100 peers) grouped by
//! `alertname` and `agent` (100 groups), with the agent-offline inhibition rule and 10
//! offline agents, plus one silence. Run: `cargo bench -p sentra-alerts --bench route`.
//!
//! Baseline in the same run (`baseline_copy_into_notifications`): the least any router must
//! do — copy every alert's labels and annotations into per-agent notifications — with no
//! routing, grouping, dedup record, silence or inhibition. The ratio is the price of the
//! hygiene.
#![allow(missing_docs)]

use std::{collections::BTreeMap, hint::black_box, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use sentra_alerts::{
    Matcher, Status, Transition,
    route::{InhibitRule, Route, Router, RouterConfig, Silence},
};
use sentra_core::UnixMillis;

const AGENTS: usize = 100;
const PEERS: usize = 100;
const T0: i64 = 1_800_000_000_000;

/// An alert's labels and annotations, copied.
type Copied = (Vec<(String, String)>, Vec<(String, String)>);

fn transitions() -> Vec<Transition> {
    let at = UnixMillis::from_millis(T0);
    let mut out = Vec::new();
    for a in 0..AGENTS {
        if a % 10 == 0 {
            out.push(Transition::new(
                "AgentOffline",
                Status::Firing,
                vec![("agent".into(), format!("gw-{a}"))],
                at,
                at,
            ));
        }
        for p in 0..PEERS {
            let mut t = Transition::new(
                "WgHandshakeStale",
                Status::Firing,
                vec![
                    ("agent".into(), format!("gw-{a}")),
                    ("interface".into(), "wg0".into()),
                    ("peer".into(), format!("peer-{a}-{p}")),
                ],
                at,
                at,
            );
            t.summary = format!("peer-{a}-{p}: no handshake for 200 s");
            out.push(t);
        }
    }
    out
}

fn router(ts: &[Transition]) -> Router {
    let mut route = Route::new("ops");
    route.group_by = vec!["alertname".into(), "agent".into()];
    route.group_wait = Duration::from_secs(30);
    let mut config = RouterConfig::new(vec![route]);
    config.inhibit = vec![InhibitRule::agent_offline("AgentOffline").unwrap()];
    let mut r = Router::new(config).unwrap();
    r.add_silence(Silence::new(
        vec![Matcher::parse(r#"peer=~"peer-1-.*""#).unwrap()],
        UnixMillis::from_millis(T0),
        Duration::from_secs(3600),
    ))
    .unwrap();
    for t in ts {
        r.push(t);
    }
    r
}

fn bench(c: &mut Criterion) {
    let ts = transitions();
    let flush_at = UnixMillis::from_millis(T0 + 30_000);
    {
        // sanity: 10 offline agents' 1 000 peers inhibited, 100 silenced
        let mut r = router(&ts);
        let ns = r.tick(flush_at);
        let alerts: usize = ns.iter().map(|n| n.alerts.len()).sum();
        assert_eq!(alerts, ts.len() - 1_000 - 100);
    }
    let mut g = c.benchmark_group("route");
    g.sample_size(20);
    g.bench_function("flush_10k_alerts_100_groups_inhibit_silence", |b| {
        b.iter_batched(
            || router(&ts),
            |mut r| black_box(r.tick(flush_at)),
            criterion::BatchSize::LargeInput,
        );
    });
    g.bench_function("baseline_copy_into_notifications", |b| {
        b.iter(|| {
            let mut by_agent: BTreeMap<&str, Vec<Copied>> = BTreeMap::new();
            for t in &ts {
                let agent = t
                    .labels
                    .iter()
                    .find(|(k, _)| k == "agent")
                    .map_or("", |(_, v)| v);
                by_agent.entry(agent).or_default().push((
                    t.labels.clone(),
                    vec![("summary".into(), t.summary.clone())],
                ));
            }
            black_box(by_agent)
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
