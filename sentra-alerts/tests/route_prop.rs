//! Property tests of the router on random streams of firing/resolved transitions, silences
//! and ticks: a silenced alert never notifies; a group never gets the same notification
//! twice within repeat_interval; a resolve is sent at most once per firing episode; and
//! (without silences) a receiver is never left believing a resolved alert still fires,
//! nor missing one that fires.

use std::{collections::HashMap, time::Duration};

use proptest::prelude::*;
use sentra_alerts::{
    Fingerprint, Matcher, SilenceId, Status, Transition,
    route::{InhibitRule, Notification, Route, Router, RouterConfig, Silence},
};
use sentra_core::UnixMillis;

const T0: i64 = 1_800_000_000_000;
const REPEAT_S: i64 = 600;
const ALERTS: usize = 6;

/// What a notification says: (fingerprint, episode start, status) per alert.
type Content = Vec<(Fingerprint, i64, Status)>;

#[derive(Clone, Debug)]
enum Op {
    Fire(usize),
    Resolve(usize),
    Silence {
        peer: usize,
        from_s: i64,
        for_s: i64,
    },
    Expire(usize),
    Nothing,
}

fn op(silences: bool) -> impl Strategy<Value = Op> {
    let base = prop_oneof![
        4 => (0..ALERTS).prop_map(Op::Fire),
        3 => (0..ALERTS).prop_map(Op::Resolve),
        2 => Just(Op::Nothing),
    ];
    if silences {
        prop_oneof![
            9 => base,
            1 => (0..3usize, 0..200i64, 1..900i64)
                .prop_map(|(peer, from_s, for_s)| Op::Silence { peer, from_s, for_s }),
            1 => (0..4usize).prop_map(Op::Expire),
        ]
        .boxed()
    } else {
        base.boxed()
    }
}

fn alert_labels(i: usize) -> Vec<(String, String)> {
    vec![
        ("agent".to_owned(), format!("g{}", i % 2)),
        ("peer".to_owned(), format!("p{}", i % 3)),
    ]
}

fn alert_name(i: usize) -> &'static str {
    if i < 3 { "A" } else { "B" }
}

struct Run {
    notifications: Vec<Notification>,
    /// (peer value, start ms, end ms) — the test's own record of silences.
    silences: Vec<(String, i64, i64)>,
    firing: Vec<Option<i64>>,
    fps: Vec<Fingerprint>,
}

fn run(steps: &[(i64, Op)], send_resolved: bool, inhibit: bool, settle: bool) -> Run {
    let mut route = Route::new("r");
    route.group_wait = Duration::from_secs(30);
    route.group_interval = Duration::from_secs(60);
    route.repeat_interval = Duration::from_secs(REPEAT_S as u64);
    route.send_resolved = send_resolved;
    let mut config = RouterConfig::new(vec![route]);
    if inhibit {
        // alert 0 (A, g0, p0) mutes B alerts of the same agent
        config.inhibit = vec![InhibitRule::new(
            vec![
                Matcher::parse(r#"alertname="A""#).unwrap(),
                Matcher::parse(r#"peer="p0""#).unwrap(),
            ],
            vec![Matcher::parse(r#"alertname="B""#).unwrap()],
            vec!["agent".into()],
        )];
    }
    let mut router = Router::new(config).unwrap();
    let mut now = T0;
    let mut firing: Vec<Option<i64>> = vec![None; ALERTS];
    let mut ids: Vec<SilenceId> = Vec::new();
    let mut silences = Vec::new();
    let mut notifications = Vec::new();
    let fps = (0..ALERTS)
        .map(|i| {
            Transition::new(
                alert_name(i),
                Status::Firing,
                alert_labels(i),
                UnixMillis::from_millis(0),
                UnixMillis::from_millis(0),
            )
            .fingerprint
        })
        .collect();
    let tick = |router: &mut Router, now: i64, out: &mut Vec<Notification>| {
        out.extend(router.tick(UnixMillis::from_millis(now)));
    };
    for (dt, op) in steps {
        now += dt * 1000;
        let at = UnixMillis::from_millis(now);
        match op {
            Op::Fire(i) => {
                let since = *firing[*i].get_or_insert(now);
                let t = Transition::new(
                    alert_name(*i),
                    Status::Firing,
                    alert_labels(*i),
                    UnixMillis::from_millis(since),
                    at,
                );
                router.push(&t);
            }
            Op::Resolve(i) => {
                if let Some(since) = firing[*i].take() {
                    let t = Transition::new(
                        alert_name(*i),
                        Status::Resolved,
                        alert_labels(*i),
                        UnixMillis::from_millis(since),
                        at,
                    );
                    router.push(&t);
                }
            }
            Op::Silence {
                peer,
                from_s,
                for_s,
            } => {
                let start = now + from_s * 1000;
                let m = Matcher::parse(&format!(r#"peer="p{peer}""#)).unwrap();
                let s = Silence::new(
                    vec![m],
                    UnixMillis::from_millis(start),
                    Duration::from_secs(*for_s as u64),
                );
                ids.push(router.add_silence(s).unwrap());
                silences.push((format!("p{peer}"), start, start + for_s * 1000));
            }
            Op::Expire(k) => {
                if let Some(id) = ids.get(*k)
                    && router.expire_silence(*id, at).is_ok()
                {
                    let s: &mut (String, i64, i64) = &mut silences[*k];
                    if now < s.1 {
                        s.1 = now;
                    }
                    s.2 = now;
                }
            }
            Op::Nothing => {}
        }
        tick(&mut router, now, &mut notifications);
    }
    if settle {
        for _ in 0..30 {
            now += 60_000;
            tick(&mut router, now, &mut notifications);
        }
    }
    Run {
        notifications,
        silences,
        firing,
        fps,
    }
}

fn steps(silences: bool) -> impl Strategy<Value = Vec<(i64, Op)>> {
    prop::collection::vec((1..120i64, op(silences)), 1..120)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn silenced_alerts_never_notify(steps in steps(true), send_resolved: bool, inhibit: bool) {
        let r = run(&steps, send_resolved, inhibit, true);
        for n in &r.notifications {
            let t = n.at.as_millis();
            for a in &n.alerts {
                let peer = &a.labels.iter().find(|(k, _)| k == "peer").unwrap().1;
                for (sp, start, end) in &r.silences {
                    prop_assert!(
                        !(sp == peer && *start <= t && t < *end),
                        "alert {peer} notified at {t} under silence [{start}, {end})"
                    );
                }
            }
        }
    }

    #[test]
    fn no_duplicate_within_repeat_interval_and_one_resolve_per_episode(
        steps in steps(true), send_resolved: bool, inhibit: bool,
    ) {
        let r = run(&steps, send_resolved, inhibit, true);
        // the same alerts in the same episodes with the same status (a re-fired alert is news)
        let mut last: HashMap<&str, (i64, Content)> = HashMap::new();
        let mut resolves: HashMap<(Fingerprint, i64), u32> = HashMap::new();
        for n in &r.notifications {
            let content: Vec<_> = n
                .alerts
                .iter()
                .map(|a| (a.fingerprint, a.starts_at.as_millis(), a.status))
                .collect();
            if let Some((t, prev)) = last.get(n.group_key.as_str()) {
                prop_assert!(
                    *prev != content || n.at.as_millis() - t > REPEAT_S * 1000,
                    "group {} notified the same alerts at {} and {}", n.group_key, t, n.at.as_millis()
                );
            }
            last.insert(&n.group_key, (n.at.as_millis(), content));
            for a in n.alerts.iter().filter(|a| a.status == Status::Resolved) {
                let c = resolves.entry((a.fingerprint, a.starts_at.as_millis())).or_default();
                *c += 1;
                prop_assert_eq!(*c, 1, "resolve of {:?} sent twice", a.fingerprint);
            }
        }
    }

    #[test]
    fn receivers_end_up_with_the_truth(steps in steps(false), inhibit: bool) {
        let r = run(&steps, true, inhibit, true);
        for (i, fp) in r.fps.iter().enumerate() {
            let last = r
                .notifications
                .iter()
                .rev()
                .find_map(|n| n.alerts.iter().find(|a| a.fingerprint == *fp).map(|a| a.status));
            // alert 4 (B, g0) is the only one alert 0 (A, g0, p0) can inhibit; a muted
            // alert is left out entirely (its resolve too), as with silences
            if inhibit && i == 4 {
                continue;
            }
            match (r.firing[i].is_some(), last) {
                // resolved now: the receiver saw the resolve, or never saw it fire
                (false, None | Some(Status::Resolved)) | (true, Some(Status::Firing)) => {}
                (false, Some(s)) => prop_assert!(false, "alert {i} resolved, receiver's last word: {s:?}"),
                (true, s) => prop_assert!(false, "alert {i} firing, receiver's last word: {s:?}"),
            }
        }
    }
}
