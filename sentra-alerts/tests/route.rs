//! The router: grouping timing, repeat, resolve, silences, inhibition, routes, restart.
#![allow(missing_docs)]

use std::time::Duration;

use sentra_alerts::{
    Error, MatchOp, Matcher, Status, Transition,
    route::{
        InhibitRule, Notification, Route, Router, RouterConfig, Silence, SilenceState,
        parse_routing,
    },
};
use sentra_core::UnixMillis;

const T0: i64 = 1_800_000_000_000;
const S: i64 = 1_000;

fn at(offset_s: i64) -> UnixMillis {
    UnixMillis::from_millis(T0 + offset_s * S)
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn fire(rule: &str, l: &[(&str, &str)], since: i64, now: i64) -> Transition {
    Transition::new(rule, Status::Firing, labels(l), at(since), at(now))
}

fn resolve(rule: &str, l: &[(&str, &str)], since: i64, now: i64) -> Transition {
    Transition::new(rule, Status::Resolved, labels(l), at(since), at(now))
}

fn route(receiver: &str) -> Route {
    let mut r = Route::new(receiver);
    r.group_wait = Duration::from_secs(30);
    r.group_interval = Duration::from_secs(300);
    r.repeat_interval = Duration::from_secs(3600);
    r
}

fn router(routes: Vec<Route>) -> Router {
    Router::new(RouterConfig::new(routes)).expect("valid config")
}

fn summary(n: &Notification) -> Vec<(String, Status)> {
    n.alerts
        .iter()
        .map(|a| {
            let peer = a
                .labels
                .iter()
                .find(|(k, _)| k == "peer")
                .map_or(String::new(), |(_, v)| v.clone());
            (peer, a.status)
        })
        .collect()
}

#[test]
fn group_wait_then_group_interval_then_repeat() {
    let mut r = router(vec![route("ops")]);
    r.push(&fire("Stale", &[("peer", "a")], 0, 0));
    r.push(&fire("Stale", &[("peer", "b")], 5, 5));
    assert_eq!(r.next_deadline(), Some(at(30)));
    assert!(r.tick(at(29)).is_empty(), "before group_wait");
    let n = r.tick(at(30));
    assert_eq!(n.len(), 1, "one notification for the group");
    assert_eq!(n[0].receiver, "ops");
    assert_eq!(n[0].status, Status::Firing);
    assert_eq!(n[0].group_labels, labels(&[("alertname", "Stale")]));
    assert_eq!(
        summary(&n[0]),
        vec![("a".into(), Status::Firing), ("b".into(), Status::Firing)]
    );
    assert_eq!(r.next_deadline(), Some(at(330)));

    // a third alert joins: waits for the group's next flush, not group_wait
    r.push(&fire("Stale", &[("peer", "c")], 40, 40));
    assert!(r.tick(at(100)).is_empty());
    let n = r.tick(at(330));
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].alerts.len(), 3);

    // nothing changes: silent until repeat_interval (3600 s after 330) has passed
    let mut t = 330;
    let mut repeats = Vec::new();
    while t < 330 + 2 * 3600 {
        t += 300;
        if !r.tick(at(t)).is_empty() {
            repeats.push(t);
        }
    }
    // flushes every 300 s; the first one more than 3600 s after the last notification
    assert_eq!(repeats, vec![330 + 3900]);
}

#[test]
fn resolved_is_sent_once_and_the_group_goes_away() {
    let mut r = router(vec![route("ops")]);
    r.push(&fire("Stale", &[("peer", "a")], 0, 0));
    r.push(&fire("Stale", &[("peer", "b")], 0, 0));
    assert_eq!(r.tick(at(30)).len(), 1);
    r.push(&resolve("Stale", &[("peer", "a")], 0, 60));
    let n = r.tick(at(330));
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].status, Status::Firing, "b still fires");
    assert_eq!(
        summary(&n[0]),
        vec![("b".into(), Status::Firing), ("a".into(), Status::Resolved)]
    );
    let a = n[0]
        .alerts
        .iter()
        .find(|a| a.status == Status::Resolved)
        .unwrap();
    assert_eq!(a.ends_at, Some(at(60)));
    assert!(r.tick(at(630)).is_empty(), "a's resolve is not repeated");

    r.push(&resolve("Stale", &[("peer", "b")], 0, 700));
    let n = r.tick(at(930));
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].status, Status::Resolved);
    assert_eq!(summary(&n[0]), vec![("b".into(), Status::Resolved)]);
    assert_eq!(r.stats().groups, 0, "empty group deleted");
    assert_eq!(r.stats().alerts, 0);
    assert_eq!(r.next_deadline(), None);
    assert!(r.tick(at(5000)).is_empty());
}

#[test]
fn send_resolved_off_sends_no_resolved_alerts() {
    let mut ro = route("ops");
    ro.send_resolved = false;
    let mut r = router(vec![ro]);
    r.push(&fire("Stale", &[("peer", "a")], 0, 0));
    r.push(&fire("Stale", &[("peer", "b")], 0, 0));
    assert_eq!(r.tick(at(30)).len(), 1);
    r.push(&resolve("Stale", &[("peer", "a")], 0, 60));
    assert!(
        r.tick(at(330)).is_empty(),
        "only a resolve: nothing to send"
    );
    r.push(&resolve("Stale", &[("peer", "b")], 0, 400));
    assert!(r.tick(at(630)).is_empty());
    assert_eq!(r.stats().groups, 0);
}

#[test]
fn fire_and_resolve_between_flushes_is_never_notified() {
    let mut r = router(vec![route("ops")]);
    r.push(&fire("Stale", &[("peer", "a")], 0, 0));
    r.push(&resolve("Stale", &[("peer", "a")], 0, 10));
    assert!(r.tick(at(30)).is_empty());
    assert_eq!(r.stats().groups, 0);
    assert_eq!(r.stats().alerts, 0);
}

#[test]
fn silence_mutes_firing_and_resolved_and_expiry_unmutes() {
    let mut r = router(vec![route("ops")]);
    let m = Matcher::parse(r#"peer="a""#).unwrap();
    let id = r
        .add_silence(Silence::new(vec![m], at(0), Duration::from_secs(3600)))
        .unwrap();
    r.push(&fire("Stale", &[("peer", "a")], 0, 0));
    r.push(&fire("Stale", &[("peer", "b")], 0, 0));
    let n = r.tick(at(30));
    assert_eq!(summary(&n[0]), vec![("b".into(), Status::Firing)]);
    assert!(r.tick(at(330)).is_empty());

    r.expire_silence(id, at(400)).unwrap();
    let n = r.tick(at(630));
    assert_eq!(n.len(), 1, "a fires, unmuted: new to the receiver");
    assert_eq!(
        summary(&n[0]),
        vec![("a".into(), Status::Firing), ("b".into(), Status::Firing)]
    );
    assert!(matches!(
        r.expire_silence(id, at(700)),
        Err(Error::Config(m)) if m.contains("already expired")
    ));
    assert!(matches!(
        r.expire_silence(sentra_alerts::SilenceId(99), at(700)),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn silenced_resolve_is_not_sent() {
    let mut r = router(vec![route("ops")]);
    r.push(&fire("Stale", &[("peer", "a")], 0, 0));
    assert_eq!(r.tick(at(30)).len(), 1);
    let m = Matcher::parse(r#"alertname="Stale""#).unwrap();
    r.add_silence(Silence::new(vec![m], at(40), Duration::from_secs(3600)))
        .unwrap();
    r.push(&resolve("Stale", &[("peer", "a")], 0, 100));
    assert!(r.tick(at(330)).is_empty());
    assert_eq!(r.stats().groups, 0);
}

#[test]
fn a_pending_silence_starts_muting_at_its_start() {
    let mut r = router(vec![route("ops")]);
    let m = Matcher::parse(r#"peer="a""#).unwrap();
    r.add_silence(Silence::new(vec![m], at(300), Duration::from_secs(3600)))
        .unwrap();
    r.push(&fire("Stale", &[("peer", "a")], 0, 0));
    assert_eq!(r.tick(at(30)).len(), 1, "silence not started yet");
    assert!(r.is_silenced(&labels(&[("peer", "a")]), at(300)));
    assert!(!r.is_silenced(&labels(&[("peer", "a")]), at(3900)));
}

#[test]
fn silences_are_validated() {
    let mut r = router(vec![route("ops")]);
    let e = r
        .add_silence(Silence::new(vec![], at(0), Duration::from_secs(60)))
        .unwrap_err();
    assert!(e.to_string().contains("at least one matcher"), "{e}");
    let any = Matcher::parse(r#"peer=~".*""#).unwrap();
    let e = r
        .add_silence(Silence::new(vec![any], at(0), Duration::from_secs(60)))
        .unwrap_err();
    assert!(e.to_string().contains("must not match every alert"), "{e}");
    let m = Matcher::parse(r#"peer="a""#).unwrap();
    let e = r
        .add_silence(Silence::new(vec![m], at(0), Duration::ZERO))
        .unwrap_err();
    assert!(e.to_string().contains("end after it starts"), "{e}");
}

#[test]
fn offline_agent_inhibits_its_peers_only() {
    let mut config = RouterConfig::new(vec![route("ops")]);
    config.inhibit = vec![InhibitRule::agent_offline("AgentOffline").unwrap()];
    let mut r = Router::new(config).unwrap();
    r.push(&fire("AgentOffline", &[("agent", "gw-1")], 0, 0));
    r.push(&fire("Stale", &[("agent", "gw-1"), ("peer", "a")], 0, 0));
    r.push(&fire("Stale", &[("agent", "gw-2"), ("peer", "b")], 0, 0));
    let mut n = r.tick(at(30));
    n.sort_by(|a, b| a.group_key.cmp(&b.group_key));
    assert_eq!(n.len(), 2);
    assert_eq!(n[0].group_labels, labels(&[("alertname", "AgentOffline")]));
    assert_eq!(
        summary(&n[1]),
        vec![("b".into(), Status::Firing)],
        "gw-1's peer is inhibited"
    );

    // the agent comes back: its peer's alert (still firing) is notified at the next flush
    r.push(&resolve("AgentOffline", &[("agent", "gw-1")], 0, 100));
    let mut n = r.tick(at(330));
    n.sort_by(|a, b| a.group_key.cmp(&b.group_key));
    assert_eq!(n.len(), 2);
    assert_eq!(n[0].status, Status::Resolved);
    assert_eq!(
        summary(&n[1]),
        vec![("a".into(), Status::Firing), ("b".into(), Status::Firing)]
    );
}

#[test]
fn routes_continue_group_by_all_and_unrouted() {
    let mut pager = route("pager");
    pager.matchers = vec![Matcher::new("severity", MatchOp::Eq, "critical").unwrap()];
    pager.continue_ = true;
    pager.group_by_all = true;
    let mut chat = route("chat");
    chat.matchers = vec![Matcher::new("team", MatchOp::Eq, "net").unwrap()];
    let mut r = router(vec![pager, chat]);
    let mut t = fire("Stale", &[("peer", "a"), ("team", "net")], 0, 0);
    t.severity = "critical".into();
    r.push(&t);
    let mut t = fire("Stale", &[("peer", "b"), ("team", "net")], 0, 0);
    t.severity = "critical".into();
    r.push(&t);
    r.push(&fire("Other", &[("team", "db")], 0, 0));
    assert_eq!(r.stats().unrouted, 1);
    let n = r.tick(at(30));
    let pager: Vec<_> = n.iter().filter(|n| n.receiver == "pager").collect();
    let chat: Vec<_> = n.iter().filter(|n| n.receiver == "chat").collect();
    assert_eq!(pager.len(), 2, "group_by all: one group per alert");
    assert_eq!(
        chat.len(),
        1,
        "continue: chat gets them too, grouped by alertname"
    );
    assert_eq!(chat[0].alerts.len(), 2);
    assert!(
        pager[0].alerts[0]
            .labels
            .contains(&("severity".into(), "critical".into()))
    );
}

#[test]
fn restart_with_saved_state_does_not_repeat() {
    let mut r = router(vec![route("ops")]);
    r.push(&fire("Stale", &[("peer", "a")], 0, 0));
    let m = Matcher::parse(r#"peer=~"z|y""#).unwrap();
    r.add_silence(Silence::new(vec![m], at(0), Duration::from_secs(99_999)))
        .unwrap();
    assert_eq!(r.tick(at(30)).len(), 1);
    let json = serde_json::to_string(&r.snapshot()).unwrap();

    let state = serde_json::from_str(&json).unwrap();
    let mut r = Router::restore(RouterConfig::new(vec![route("ops")]), state).unwrap();
    assert_eq!(r.silences().count(), 1);
    assert!(r.is_silenced(&labels(&[("peer", "z")]), at(40)));
    // the evaluator re-sends the firing alert after its own restart: no new notification
    r.push(&fire("Stale", &[("peer", "a")], 0, 50));
    assert!(r.tick(at(330)).is_empty());
    r.push(&resolve("Stale", &[("peer", "a")], 0, 400));
    let n = r.tick(at(630));
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].status, Status::Resolved);
}

#[test]
fn routing_file_parses_and_reports_every_problem() {
    let config = parse_routing(
        r#"
[[route]]
receiver = "pager"
matchers = ['severity="critical"']
group_by = ["..."]
group_wait = "10s"
continue = true

[[route]]
receiver = "chat"
repeat_interval = "12h"
send_resolved = false

[[inhibit]]
source = ['alertname="AgentOffline"']
target = ['alertname!="AgentOffline"']
equal = ["agent"]
"#,
    )
    .unwrap();
    assert_eq!(config.routes.len(), 2);
    assert!(config.routes[0].group_by_all);
    assert_eq!(config.routes[0].group_wait, Duration::from_secs(10));
    assert!(config.routes[0].continue_);
    assert_eq!(
        config.routes[1].repeat_interval,
        Duration::from_secs(12 * 3600)
    );
    assert!(!config.routes[1].send_resolved);
    assert_eq!(config.inhibit.len(), 1);

    let err = parse_routing(
        "[[route]]\nreceiver = \"a\"\nmatchers = ['x=~\"(\"']\n\n[[route]]\nreceiver = \"b\"\ngroup_wait = \"soon\"\n",
    )
    .unwrap_err();
    let Error::Invalid(problems) = &err else {
        panic!("{err}")
    };
    assert_eq!(problems.len(), 2, "{err}");
    assert_eq!(problems[0].line, Some(1));
    assert!(problems[0].message.contains("invalid regex"), "{err}");
    assert_eq!(problems[1].line, Some(5));
    assert!(problems[1].message.contains("group_wait"), "{err}");

    let err = parse_routing("[[route]]\nreciever = \"a\"\n").unwrap_err();
    assert!(
        matches!(err, Error::Syntax(ref p) if p.line == Some(2)),
        "{err}"
    );
    let err = parse_routing("").unwrap_err();
    assert!(err.to_string().contains("no route"), "{err}");
}

#[test]
fn silences_have_states_and_are_purged_after_retention() {
    let mut r = router(vec![route("ops")]);
    let m = || Matcher::parse(r#"peer="a""#).unwrap();
    let s = Silence::new(vec![m()], at(100), Duration::from_secs(100));
    assert_eq!(s.state(at(0)), SilenceState::Pending);
    assert_eq!(s.state(at(100)), SilenceState::Active);
    assert_eq!(s.state(at(200)), SilenceState::Expired);
    let early = r.add_silence(s).unwrap();
    let late = r
        .add_silence(Silence::new(vec![m()], at(0), Duration::from_secs(10_000)))
        .unwrap();
    // an expired silence is kept for the retention period, then purged
    assert_eq!(r.purge_silences(at(300), Duration::from_secs(3600)), 0);
    assert_eq!(
        r.purge_silences(at(200 + 3601), Duration::from_secs(3600)),
        1
    );
    let left: Vec<_> = r.silences().map(|(id, _)| id).collect();
    assert_eq!(left, vec![late]);
    assert_ne!(early, late);
}

#[test]
fn restore_drops_groups_of_routes_that_are_gone() {
    let mut pager = route("pager");
    pager.matchers = vec![Matcher::parse(r#"team="net""#).unwrap()];
    let mut r = router(vec![pager, route("ops")]);
    r.push(&fire("Stale", &[("peer", "a"), ("team", "net")], 0, 0));
    r.push(&fire("Stale", &[("peer", "b")], 0, 0));
    assert_eq!(r.stats().groups, 2);

    let mut old = r.snapshot();
    old.version = 7;
    assert!(matches!(
        Router::restore(RouterConfig::new(vec![route("ops")]), old),
        Err(Error::State(m)) if m.contains("version 7")
    ));
    // the pager route is gone: its group (route 0, receiver "pager") must not be taken for
    // the new route 0 (receiver "ops"); ops's group was route 1 and is dropped too
    let mut restored =
        Router::restore(RouterConfig::new(vec![route("ops")]), r.snapshot()).unwrap();
    // ... and both firing alerts are routed again, to ops, flushed at the next tick
    assert_eq!(restored.stats().groups, 1);
    let n = restored.tick(at(1));
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].receiver, "ops");
    assert_eq!(n[0].alerts.len(), 2);
    // the same config keeps both
    let mut pager = route("pager");
    pager.matchers = vec![Matcher::parse(r#"team="net""#).unwrap()];
    let kept = Router::restore(RouterConfig::new(vec![pager, route("ops")]), r.snapshot()).unwrap();
    assert_eq!(kept.stats().groups, 2);
    // the evaluator re-sending one after its own restart changes nothing
    restored.push(&fire("Stale", &[("peer", "b")], 0, 10));
    assert!(restored.tick(at(400)).is_empty());
}
