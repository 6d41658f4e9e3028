//! Route alerts: grouping, an inhibition (an offline agent mutes its peers' alerts) and a
//! silence, on a simulated clock; prints every notification the router would send.
//!
//! ```text
//! cargo run -p sentra-alerts --example route
//! ```
//!
//! The router is pure like the evaluator: `push` takes transitions, `tick` takes `now`
//! and returns notifications; the dispatcher (feature `notify`) sends them for real.

use std::time::Duration;

use sentra_alerts::{
    Matcher, Status, Transition,
    route::{Router, Silence, parse_routing},
};
use sentra_core::UnixMillis;

const ROUTING: &str = r#"
[[route]]
receiver = "ops"
group_by = ["alertname", "agent"]
group_wait = "30s"
group_interval = "5m"
repeat_interval = "4h"

[[inhibit]]
source = ['alertname="AgentOffline"']
target = ['alertname!="AgentOffline"']
equal = ["agent"]
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut router = Router::new(parse_routing(ROUTING)?)?;
    let t0 = 1_800_000_000_000;
    let at = |s: i64| UnixMillis::from_millis(t0 + s * 1000);
    let alert = |rule: &str, agent: &str, peer: Option<&str>, status, s| {
        let mut labels = vec![("agent".to_owned(), agent.to_owned())];
        if let Some(p) = peer {
            labels.push(("peer".to_owned(), p.to_owned()));
        }
        Transition::new(rule, status, labels, at(0), at(s))
    };

    // gw-1 goes offline: its peer alerts are inhibited; gw-2's peers are not
    router.push(&alert("AgentOffline", "gw-1", None, Status::Firing, 0));
    router.push(&alert(
        "WgHandshakeStale",
        "gw-1",
        Some("a"),
        Status::Firing,
        0,
    ));
    router.push(&alert(
        "WgHandshakeStale",
        "gw-2",
        Some("b"),
        Status::Firing,
        5,
    ));
    router.push(&alert(
        "WgHandshakeStale",
        "gw-2",
        Some("c"),
        Status::Firing,
        5,
    ));
    // maintenance on gw-2's peer c for an hour
    router.add_silence(Silence::new(
        vec![Matcher::parse(r#"peer="c""#)?],
        at(0),
        Duration::from_secs(3600),
    ))?;

    let mut now = 0;
    while now <= 900 {
        if now == 400 {
            router.push(&alert("AgentOffline", "gw-1", None, Status::Resolved, 400));
            router.push(&alert(
                "WgHandshakeStale",
                "gw-2",
                Some("b"),
                Status::Resolved,
                400,
            ));
        }
        for n in router.tick(at(now)) {
            println!(
                "t={now:>4}s -> {} [{}] {:?}",
                n.receiver, n.group_key, n.status
            );
            for a in &n.alerts {
                println!("           {:?} {:?}", a.status, a.labels);
            }
        }
        now += 10;
    }
    Ok(())
}
