//! The evaluator, rule kind by rule kind, and its persistence.

use std::net::SocketAddr;

use sentra_alerts::{Config, Evaluator, Fingerprint, Rule, Status, Transition, parse_rules};
use sentra_core::{
    AgentId, Batch, Labels, MetricName, Sample, Seq, UnixMillis, Value, WgDevice, WgPeer,
    WgPublicKey,
};

const T0: i64 = 1_800_000_000_000;

fn at(s: i64) -> UnixMillis {
    UnixMillis::from_millis(T0 + s * 1000)
}

fn batch(agent: &str, s: i64) -> Batch {
    Batch::new(AgentId::new(agent).unwrap(), Seq::new(1).unwrap(), at(s))
}

fn gauge(b: &mut Batch, name: &str, labels: &[(&str, &str)], s: i64, v: f64) {
    b.samples.push(Sample::new(
        MetricName::new(name).unwrap(),
        Labels::from_pairs(labels.iter().copied()).unwrap(),
        at(s),
        Value::Gauge(v),
    ));
}

fn counter(b: &mut Batch, name: &str, s: i64, v: u64) {
    b.samples.push(Sample::new(
        MetricName::new(name).unwrap(),
        Labels::new(),
        at(s),
        Value::Counter(v),
    ));
}

fn rules(src: &str) -> Vec<Rule> {
    parse_rules(src, None).unwrap().0
}

fn ev(src: &str) -> Evaluator {
    Evaluator::new(rules(src), Config::default()).unwrap()
}

fn statuses(ts: &[Transition]) -> Vec<(String, Status)> {
    ts.iter().map(|t| (t.rule.clone(), t.status)).collect()
}

fn st(rule: &str, s: Status) -> Vec<(String, Status)> {
    vec![(rule.to_owned(), s)]
}

#[derive(Clone, Copy)]
struct PeerObs {
    handshake_s: Option<i64>,
    rx: u64,
    tx: u64,
    keepalive: bool,
    endpoint: &'static str,
}

fn wg(agent: &str, s: i64, ifaces: &[(&str, &[PeerObs])]) -> Batch {
    let mut b = batch(agent, s);
    for (name, peers) in ifaces {
        b.wg_devices.push(
            WgDevice::new((*name).to_owned(), 3)
                .with_listen_port(51820)
                .with_peers(
                    peers
                        .iter()
                        .map(|p| {
                            WgPeer::new(WgPublicKey::from_bytes([7; 32]))
                                .with_endpoint(p.endpoint.parse::<SocketAddr>().unwrap())
                                .with_last_handshake(p.handshake_s.map(at))
                                .with_transfer(p.rx, p.tx)
                                .with_persistent_keepalive_s(p.keepalive.then_some(25))
                        })
                        .collect(),
                ),
        );
    }
    b
}

const THRESHOLD: &str = r#"
[[rule]]
name = "Hot"
kind = "threshold"
metric = "temp"
matchers = ['room="a"']
op = ">"
value = 30.0
for = "20s"
keep_firing_for = "15s"
labels = { team = "ops", room = "override" }
summary = "{{ $labels.room }} at {{ $value }}"
"#;

#[test]
fn threshold_pending_firing_hysteresis_resolved() {
    let mut e = ev(THRESHOLD);
    let feed = |e: &mut Evaluator, s: i64, v: f64| {
        let mut b = batch("a1", s);
        gauge(&mut b, "temp", &[("room", "a")], s, v);
        gauge(&mut b, "temp", &[("room", "b")], s, 99.0); // not matched
        e.observe(&b, at(s));
        e.tick(at(s))
    };
    assert_eq!(e.pair_count(), 0);
    assert!(feed(&mut e, 0, 10.0).is_empty());
    assert_eq!(e.pair_count(), 1, "room=b must not match");
    assert_eq!(
        statuses(&feed(&mut e, 10, 31.0)),
        st("Hot", Status::Pending)
    );
    assert!(feed(&mut e, 20, 32.0).is_empty(), "for = 20s not elapsed");
    let f = feed(&mut e, 30, 33.0);
    assert_eq!(statuses(&f), st("Hot", Status::Firing));
    let f = &f[0];
    assert!(f.is_notification());
    assert_eq!(f.value, 33.0);
    assert_eq!(f.active_since, at(10));
    assert_eq!(f.summary, "override at 33");
    assert_eq!(
        f.labels.iter().find(|(n, _)| n == "alertname").unwrap().1,
        "Hot"
    );
    assert_eq!(f.labels.iter().find(|(n, _)| n == "agent").unwrap().1, "a1");
    assert_eq!(f.labels.iter().find(|(n, _)| n == "team").unwrap().1, "ops");
    let fp = f.fingerprint;
    // flapping below the threshold for less than keep_firing_for: no resolve
    assert!(feed(&mut e, 40, 20.0).is_empty());
    assert!(feed(&mut e, 50, 35.0).is_empty());
    assert!(feed(&mut e, 60, 20.0).is_empty());
    let r = feed(&mut e, 75, 20.0);
    assert_eq!(statuses(&r), st("Hot", Status::Resolved));
    assert_eq!(r[0].fingerprint, fp);
    assert_eq!(r[0].value, 35.0, "a resolve carries the last true value");
    assert!(feed(&mut e, 80, 20.0).is_empty());
    // pending then false: silently back to inactive, no notification
    assert_eq!(
        statuses(&feed(&mut e, 90, 40.0)),
        st("Hot", Status::Pending)
    );
    assert!(feed(&mut e, 100, 20.0).is_empty());
    assert_eq!(
        statuses(&feed(&mut e, 110, 40.0)),
        st("Hot", Status::Pending)
    );
}

#[test]
fn stale_series_hold_their_phase() {
    let mut e = ev(THRESHOLD.replace("for = \"20s\"", "for = \"0s\"").as_str());
    let mut b = batch("a1", 0);
    gauge(&mut b, "temp", &[("room", "a")], 0, 50.0);
    e.observe(&b, at(0));
    assert_eq!(statuses(&e.tick(at(0))), st("Hot", Status::Firing));
    // no data for an hour: unknown, neither resolved nor re-fired
    assert!(e.tick(at(3600)).is_empty());
    assert_eq!(e.firing().len(), 1);
}

#[test]
fn rate_of_change_handles_counter_resets() {
    let mut e = ev(r#"
[[rule]]
name = "Fast"
kind = "rate"
metric = "pkts_total"
op = ">"
value = 100.0
"#);
    let feed = |e: &mut Evaluator, s: i64, v: u64| {
        let mut b = batch("a1", s);
        counter(&mut b, "pkts_total", s, v);
        e.observe(&b, at(s));
        e.tick(at(s))
    };
    assert!(feed(&mut e, 0, 1000).is_empty(), "one sample: no rate yet");
    assert!(feed(&mut e, 10, 1500).is_empty(), "50/s");
    let f = feed(&mut e, 20, 3500);
    assert_eq!(statuses(&f), st("Fast", Status::Firing));
    assert_eq!(f[0].value, 200.0);
    // reset to 400 in 10 s: rate 40/s from zero, not a huge negative
    let r = feed(&mut e, 30, 400);
    assert_eq!(statuses(&r), st("Fast", Status::Resolved));
    let f = feed(&mut e, 40, 2400);
    assert_eq!(f[0].value, 200.0);
}

#[test]
fn absence_fires_after_silence_and_resolves_on_data() {
    let mut e = ev(r#"
[[rule]]
name = "Gone"
kind = "absent"
metric = "up"
after = "60s"
"#);
    let mut b = batch("a1", 0);
    gauge(&mut b, "up", &[], 0, 1.0);
    e.observe(&b, at(0));
    assert!(e.tick(at(60)).is_empty());
    let f = e.tick(at(61));
    assert_eq!(statuses(&f), st("Gone", Status::Firing));
    assert_eq!(f[0].value, 61.0);
    let mut b = batch("a1", 70);
    gauge(&mut b, "up", &[], 70, 1.0);
    e.observe(&b, at(70));
    assert_eq!(statuses(&e.tick(at(70))), st("Gone", Status::Resolved));
}

const STALE: &str = r#"
[[rule]]
name = "Stale"
kind = "wg_handshake_stale"
"#;

fn peer(handshake_s: Option<i64>, rx: u64, tx: u64, keepalive: bool) -> PeerObs {
    PeerObs {
        handshake_s,
        rx,
        tx,
        keepalive,
        endpoint: "192.0.2.1:51820",
    }
}

#[test]
fn handshake_stale_with_keepalive_is_age_alone() {
    let mut e = ev(STALE);
    e.observe(
        &wg("a1", 0, &[("wg0", &[peer(Some(0), 0, 0, true)])]),
        at(0),
    );
    assert!(e.tick(at(0)).is_empty());
    e.observe(
        &wg("a1", 180, &[("wg0", &[peer(Some(0), 0, 0, true)])]),
        at(180),
    );
    assert!(e.tick(at(180)).is_empty(), "180 s is not > 180 s");
    e.observe(
        &wg("a1", 181, &[("wg0", &[peer(Some(0), 0, 0, true)])]),
        at(181),
    );
    let f = e.tick(at(181));
    assert_eq!(statuses(&f), st("Stale", Status::Firing));
    assert_eq!(f[0].value, 181.0);
    let peer_label = &f[0].labels.iter().find(|(n, _)| n == "peer").unwrap().1;
    assert_eq!(peer_label, &WgPublicKey::from_bytes([7; 32]).to_string());
    e.observe(
        &wg("a1", 190, &[("wg0", &[peer(Some(189), 9, 9, true)])]),
        at(190),
    );
    assert_eq!(statuses(&e.tick(at(190))), st("Stale", Status::Resolved));
}

#[test]
fn handshake_stale_ignores_idle_peers_without_keepalive() {
    let mut e = ev(STALE);
    // idle: no keepalive, counters frozen, handshake 10 minutes old -> not stale
    for s in [0, 300, 600] {
        e.observe(
            &wg("a1", s, &[("wg0", &[peer(Some(0), 100, 100, false)])]),
            at(s),
        );
        assert!(e.tick(at(s)).is_empty(), "idle peer at {s}");
    }
    // it starts sending (tx grows: handshake initiations) but no handshake completes
    e.observe(
        &wg("a1", 610, &[("wg0", &[peer(Some(0), 100, 248, false)])]),
        at(610),
    );
    assert_eq!(statuses(&e.tick(at(610))), st("Stale", Status::Firing));
}

#[test]
fn handshake_age_is_measured_on_the_agent_clock() {
    let mut e = ev(STALE);
    // agent clock 1 hour behind the server: handshake 10 s ago by the agent's clock
    let mut b = wg("a1", 0, &[("wg0", &[peer(Some(-10), 0, 0, true)])]);
    b.created = at(-3600);
    b.wg_devices[0].peers[0].last_handshake = Some(at(-3610));
    e.observe(&b, at(0));
    assert!(
        e.tick(at(0)).is_empty(),
        "skew must not make the peer look stale"
    );
}

#[test]
fn endpoint_change_fires_then_resolves_after_hold() {
    let mut e = ev(r#"
[[rule]]
name = "Moved"
kind = "wg_endpoint_changed"
hold = "60s"
"#);
    let mut p = peer(Some(0), 0, 0, true);
    e.observe(&wg("a1", 0, &[("wg0", &[p])]), at(0));
    assert!(e.tick(at(0)).is_empty());
    p.endpoint = "198.51.100.7:4500";
    p.handshake_s = Some(10);
    e.observe(&wg("a1", 10, &[("wg0", &[p])]), at(10));
    assert_eq!(statuses(&e.tick(at(10))), st("Moved", Status::Firing));
    e.observe(&wg("a1", 69, &[("wg0", &[p])]), at(69));
    assert!(e.tick(at(69)).is_empty());
    e.observe(&wg("a1", 70, &[("wg0", &[p])]), at(70));
    assert_eq!(statuses(&e.tick(at(70))), st("Moved", Status::Resolved));
}

#[test]
fn transfer_stalled_needs_tx_without_rx() {
    let mut e = ev(r#"
[[rule]]
name = "Stalled"
kind = "wg_transfer_stalled"
window = "60s"
"#);
    let obs = |e: &mut Evaluator, s: i64, rx: u64, tx: u64| {
        e.observe(
            &wg("a1", s, &[("wg0", &[peer(Some(s), rx, tx, true)])]),
            at(s),
        );
        e.tick(at(s))
    };
    assert!(obs(&mut e, 0, 10, 10).is_empty());
    assert!(
        obs(&mut e, 30, 10, 10).is_empty(),
        "both frozen: idle, not stalled"
    );
    assert!(obs(&mut e, 90, 10, 10).is_empty());
    // tx grows, rx has not moved since first sight (100 s > 60 s)
    let f = obs(&mut e, 100, 10, 20);
    assert_eq!(statuses(&f), st("Stalled", Status::Firing));
    assert_eq!(f[0].value, 100.0);
    assert!(obs(&mut e, 105, 10, 30).is_empty());
    assert_eq!(
        statuses(&obs(&mut e, 110, 11, 40)),
        st("Stalled", Status::Resolved)
    );
    // rx moves with tx: healthy
    assert!(obs(&mut e, 200, 12, 50).is_empty());
}

#[test]
fn interface_gone_and_agent_offline_hold_peer_alerts() {
    let mut e = Evaluator::new(
        rules(&format!(
            "{STALE}\n[[rule]]\nname = \"IfGone\"\nkind = \"wg_interface_gone\"\n\
             [[rule]]\nname = \"Off\"\nkind = \"agent_offline\"\nafter = \"120s\"\n"
        )),
        Config::default(),
    )
    .unwrap();
    let p = peer(Some(0), 0, 0, true);
    e.observe(&wg("a1", 0, &[("wg0", &[p]), ("wg1", &[])]), at(0));
    assert!(e.tick(at(0)).is_empty());
    e.observe(&wg("a1", 200, &[("wg0", &[p])]), at(200));
    let mut got = statuses(&e.tick(at(200)));
    got.sort();
    assert_eq!(
        got,
        vec![
            ("IfGone".to_owned(), Status::Firing),
            ("Stale".to_owned(), Status::Firing)
        ]
    );
    // the agent goes silent: offline fires; the peer's alert neither resolves nor repeats
    assert!(e.tick(at(320)).is_empty());
    assert_eq!(statuses(&e.tick(at(321))), st("Off", Status::Firing));
    assert!(e.tick(at(3600)).is_empty());
    // back, with wg1 and a fresh handshake: everything resolves exactly once
    let p = peer(Some(3700), 5, 5, true);
    e.observe(&wg("a1", 3700, &[("wg0", &[p]), ("wg1", &[])]), at(3700));
    let mut got = statuses(&e.tick(at(3700)));
    got.sort();
    assert_eq!(
        got,
        vec![
            ("IfGone".to_owned(), Status::Resolved),
            ("Off".to_owned(), Status::Resolved),
            ("Stale".to_owned(), Status::Resolved)
        ]
    );
}

#[test]
fn restart_while_firing_neither_loses_nor_repeats() {
    let src = THRESHOLD;
    let mut e = ev(src);
    let mut b = batch("a1", 0);
    gauge(&mut b, "temp", &[("room", "a")], 0, 50.0);
    e.observe(&b, at(0));
    assert_eq!(statuses(&e.tick(at(0))), st("Hot", Status::Pending));
    e.observe(&b, at(25));
    let fired = e.tick(at(25));
    assert_eq!(statuses(&fired), st("Hot", Status::Firing));
    let json = serde_json::to_string(&e.snapshot()).unwrap();
    drop(e);
    let state = serde_json::from_str(&json).unwrap();
    let mut e = Evaluator::restore(rules(src), Config::default(), state).unwrap();
    assert_eq!(e.firing().len(), 1);
    assert_eq!(e.firing()[0].fingerprint, fired[0].fingerprint);
    // still hot after the restart: no second "firing"
    let mut b = batch("a1", 30);
    gauge(&mut b, "temp", &[("room", "a")], 30, 51.0);
    e.observe(&b, at(30));
    assert!(e.tick(at(30)).is_empty(), "firing repeated after restart");
    // and the resolve is not lost
    let mut b = batch("a1", 50);
    gauge(&mut b, "temp", &[("room", "a")], 50, 1.0);
    e.observe(&b, at(50));
    let r = e.tick(at(50));
    assert_eq!(statuses(&r), st("Hot", Status::Resolved));
    assert_eq!(r[0].fingerprint, fired[0].fingerprint);
}

#[test]
fn restore_rejects_unknown_versions_and_drops_deleted_rules() {
    let mut e = ev(THRESHOLD);
    let mut b = batch("a1", 0);
    gauge(&mut b, "temp", &[("room", "a")], 0, 50.0);
    e.observe(&b, at(0));
    e.tick(at(0));
    let mut v: serde_json::Value = serde_json::to_value(e.snapshot()).unwrap();
    let ok = serde_json::from_value(v.clone()).unwrap();
    let e2 = Evaluator::restore(rules(STALE), Config::default(), ok).unwrap();
    assert!(e2.firing().is_empty());
    v["version"] = 9.into();
    let bad = serde_json::from_value(v).unwrap();
    let err = Evaluator::restore(rules(THRESHOLD), Config::default(), bad).unwrap_err();
    assert!(err.to_string().contains("version 9"), "{err}");
}

#[test]
fn fingerprints_are_stable_and_order_independent() {
    let l = |p: &[(&str, &str)]| -> Vec<(String, String)> {
        p.iter().map(|(a, b)| ((*a).into(), (*b).into())).collect()
    };
    let a = Fingerprint::of("R", &l(&[("a", "1"), ("b", "2")]));
    // FNV-1a 64 of "R" 0xff "a" 0xfe "1" 0xff "b" 0xfe "2" 0xff: a fixed value, so that a
    // change of the hash (which would re-notify every alert after an upgrade) fails here
    assert_eq!(a.to_string(), "df11496be611a692");
    assert_eq!(a, Fingerprint::of("R", &l(&[("a", "1"), ("b", "2")])));
    assert_ne!(a, Fingerprint::of("R", &l(&[("a", "12")])));
    assert_ne!(a, Fingerprint::of("S", &l(&[("a", "1"), ("b", "2")])));
    assert_ne!(
        Fingerprint::of("R", &l(&[("a", "1b")])),
        Fingerprint::of("R", &l(&[("a", "1"), ("b", "")]))
    );
}

#[test]
fn a_peer_removed_from_a_reporting_agent_resolves_once() {
    let mut e = ev(STALE);
    let p = peer(Some(0), 0, 0, true);
    e.observe(&wg("a1", 200, &[("wg0", &[p])]), at(200));
    assert_eq!(statuses(&e.tick(at(200))), st("Stale", Status::Firing));
    // the operator removes the peer; the agent keeps reporting wg0 without it
    e.observe(&wg("a1", 210, &[("wg0", &[])]), at(210));
    assert_eq!(statuses(&e.tick(at(210))), st("Stale", Status::Resolved));
    e.observe(&wg("a1", 220, &[("wg0", &[])]), at(220));
    assert!(e.tick(at(220)).is_empty());
}

#[test]
fn duplicate_rule_names_out_of_order_samples_and_own_agent_label() {
    let mut r = rules(THRESHOLD);
    r.extend(rules(THRESHOLD));
    let err = Evaluator::new(r, Config::default()).unwrap_err();
    assert!(err.to_string().contains("duplicate rule name"), "{err}");

    let mut e = ev(&THRESHOLD.replace("for = \"20s\"", "for = \"0s\""));
    let mut b = batch("a1", 10);
    gauge(
        &mut b,
        "temp",
        &[("room", "a"), ("agent", "probe-9")],
        10,
        10.0,
    );
    e.observe(&b, at(10));
    // an older sample arriving late does not replace the newer one
    let mut late = batch("a1", 11);
    gauge(
        &mut late,
        "temp",
        &[("room", "a"), ("agent", "probe-9")],
        5,
        99.0,
    );
    e.observe(&late, at(11));
    assert!(e.tick(at(11)).is_empty());
    let mut b = batch("a1", 12);
    gauge(
        &mut b,
        "temp",
        &[("room", "a"), ("agent", "probe-9")],
        12,
        99.0,
    );
    e.observe(&b, at(12));
    let f = e.tick(at(12));
    assert_eq!(statuses(&f), st("Hot", Status::Firing));
    let agent = &f[0].labels.iter().find(|(n, _)| n == "agent").unwrap().1;
    assert_eq!(agent, "probe-9", "a sample's own agent label is kept");
}

#[test]
fn forgetting_old_entities_keeps_active_alerts() {
    let mut e = Evaluator::new(
        rules(&format!(
            "{STALE}\n[[rule]]\nname = \"Hot\"\nkind = \"threshold\"\nmetric = \"temp\"\n\
             op = \">\"\nvalue = 30.0\n"
        )),
        Config::default(),
    )
    .unwrap();
    // agent a1: an old cool series and an old idle peer; agent a2: a hot series
    let mut b = wg("a1", 0, &[("wg0", &[peer(Some(0), 0, 0, false)])]);
    gauge(&mut b, "temp", &[("room", "old")], 0, 10.0);
    e.observe(&b, at(0));
    let mut b = batch("a2", 0);
    gauge(&mut b, "temp", &[("room", "hot")], 0, 50.0);
    e.observe(&b, at(0));
    assert_eq!(statuses(&e.tick(at(0))), st("Hot", Status::Firing));
    assert_eq!(e.pair_count(), 3);
    // a week later, forget what was not seen for a day, except what an alert is about
    let forgotten = e.forget_older_than(at(6 * 86_400));
    assert_eq!(
        forgotten, 5,
        "a1, a2, wg0, the peer, room=old; room=hot stays: it fires"
    );
    assert_eq!(e.pair_count(), 1);
    assert_eq!(e.firing().len(), 1);
    // a forgotten agent that comes back is tracked again from scratch
    let mut b = wg("a1", 7 * 86_400, &[("wg0", &[peer(Some(0), 0, 0, true)])]);
    gauge(&mut b, "temp", &[("room", "old")], 7 * 86_400, 40.0);
    e.observe(&b, at(7 * 86_400));
    let mut got = statuses(&e.tick(at(7 * 86_400)));
    got.sort();
    assert_eq!(
        got,
        vec![
            ("Hot".to_owned(), Status::Firing),
            ("Stale".to_owned(), Status::Firing)
        ]
    );
}
