//! Load rules, feed the pure evaluator a WireGuard peer whose handshakes stop and start
//! again, and print every alert transition (pending → firing → resolved).
//!
//! ```text
//! cargo run -p sentra-alerts --example evaluate
//! ```
//!
//! The evaluator has no clock and no I/O: `observe` takes each batch with its receive time,
//! `tick` takes `now`. Here a simulated minute passes per step.

use sentra_alerts::{Config, Evaluator, parse_rules};
use sentra_core::{AgentId, Batch, Seq, UnixMillis, WgDevice, WgPeer, WgPublicKey};

const RULES: &str = r#"
[[rule]]
name = "WgHandshakeStale"
kind = "wg_handshake_stale"
max_age = "3m"
for = "1m"
matchers = ['interface=~"wg.*"']
severity = "critical"
summary = "peer {{ $labels.peer }} on {{ $labels.agent }}: no handshake for {{ $value }} s"
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (rules, warnings) = parse_rules(RULES, None)?;
    for warning in warnings {
        println!("warning: {warning}");
    }
    let mut evaluator = Evaluator::new(rules, Config::default())?;

    let agent = AgentId::new("gw-1")?;
    let start = UnixMillis::from_millis(1_800_000_000_000);
    let minute = 60_000;
    // The peer handshakes at t = 0, then not until minute 7.
    let mut last_handshake = start;
    for step in 0..10 {
        let now = UnixMillis::from_millis(start.as_millis() + step * minute);
        if step == 7 {
            last_handshake = now;
        }
        let mut batch = Batch::new(agent.clone(), Seq::new(step as u64 + 1)?, now);
        batch.wg_devices.push(
            WgDevice::new("wg0", 4)
                .with_listen_port(51820)
                .with_peers(vec![
                    WgPeer::new(WgPublicKey::from_bytes([1; 32]))
                        .with_last_handshake(last_handshake)
                        .with_persistent_keepalive_s(25),
                ]),
        );
        evaluator.observe(&batch, now);
        let transitions = evaluator.tick(now);
        if transitions.is_empty() {
            println!("minute {step}: no change");
        }
        for t in transitions {
            println!(
                "minute {step}: {} {:?} [{}] {}",
                t.rule, t.status, t.severity, t.summary
            );
        }
    }
    Ok(())
}
