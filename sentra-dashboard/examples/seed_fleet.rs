//! Pushes one WireGuard status with many peers through the real gRPC ingest path, signed
//! with an enrolled agent's credentials (the browser test's seeder).
//!
//! ```text
//! seed_fleet <grpc-url> <agent-id> <key-id> <secret-base64> <peers> <seq> [ageing-peers] [history-minutes]
//! ```
//! Every peer handshook 10 s ago except the first `ageing-peers` (default 0), whose last
//! handshake is 60 s old: the browser test moves the page's clock past the dashboard's
//! 3-minute freshness line and watches them turn "ageing".
//!
//! With `history-minutes` H > 0 it pushes H + 1 batches, sequence numbers `seq..=seq+H`,
//! collected one minute apart and ending now: peer `i` moves `(i + 1)` kB/s in and half
//! that out, and each batch also carries host metrics as the agent names them
//! (`node_load1`, `node_memory_*_bytes`, `node_cpu_seconds_total`,
//! `node_network_*_bytes_total`), so the per-agent and per-peer charts have a history.

use std::time::Duration;

use base64::Engine as _;
use sentra_core::{
    AgentId, Batch, IpPrefix, KeyId, Labels, MetricName, Nonce, Sample, SecretKey, Seq, Signer,
    UnixMillis, Value, WgDevice, WgPeer, WgPublicKey,
};
use sentra_transport::{Client, RetryConfig};

fn key(i: u32, tag: u8) -> WgPublicKey {
    let mut b = [tag; 32];
    b[..4].copy_from_slice(&i.to_be_bytes());
    WgPublicKey::from_bytes(b)
}

/// Host metrics at minute `k` of the history, as the agent's host collector names them.
fn host_samples(at: UnixMillis, k: u64) -> Result<Vec<Sample>, Box<dyn std::error::Error>> {
    #[allow(clippy::cast_precision_loss)]
    let wave = ((k as f64) / 5.0).sin();
    let gauge =
        |name: &str, labels: &[(&str, &str)], v: f64| -> Result<Sample, sentra_core::Error> {
            Ok(Sample::new(
                MetricName::new(name)?,
                Labels::from_pairs(labels.iter().copied())?,
                at,
                Value::Gauge(v),
            ))
        };
    let counter =
        |name: &str, labels: &[(&str, &str)], v: u64| -> Result<Sample, sentra_core::Error> {
            Ok(Sample::new(
                MetricName::new(name)?,
                Labels::from_pairs(labels.iter().copied())?,
                at,
                Value::Counter(v),
            ))
        };
    let gib = 1024.0 * 1024.0 * 1024.0;
    Ok(vec![
        gauge("node_load1", &[], 0.5 + 0.4 * wave)?,
        gauge("node_load5", &[], 0.4 + 0.2 * wave)?,
        gauge("node_load15", &[], 0.3 + 0.1 * wave)?,
        gauge("node_memory_MemTotal_bytes", &[], 8.0 * gib)?,
        gauge("node_memory_MemAvailable_bytes", &[], (5.0 + wave) * gib)?,
        // One CPU, 60 s a minute: 25 % busy (user 9 s, system 6 s), the rest idle.
        counter(
            "node_cpu_seconds_total",
            &[("cpu", "0"), ("mode", "idle")],
            45 * k,
        )?,
        counter(
            "node_cpu_seconds_total",
            &[("cpu", "0"), ("mode", "user")],
            9 * k,
        )?,
        counter(
            "node_cpu_seconds_total",
            &[("cpu", "0"), ("mode", "system")],
            6 * k,
        )?,
        counter(
            "node_network_receive_bytes_total",
            &[("device", "eth0")],
            6_000_000 * k,
        )?,
        counter(
            "node_network_transmit_bytes_total",
            &[("device", "eth0")],
            3_000_000 * k,
        )?,
    ])
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 6 {
        return Err(
            "usage: seed_fleet <grpc-url> <agent-id> <key-id> <secret-base64> <peers> <seq> [ageing-peers] [history-minutes]"
                .into(),
        );
    }
    let agent = AgentId::new(args[1].as_str())?;
    let key_id = KeyId::new(args[2].parse()?);
    let secret =
        SecretKey::from_slice(&base64::engine::general_purpose::STANDARD.decode(&args[3])?)?;
    let peers: u32 = args[4].parse()?;
    let seq: u64 = args[5].parse()?;
    let ageing: u32 = args.get(6).map_or(Ok(0), |s| s.parse())?;
    let history: u64 = args.get(7).map_or(Ok(0), |s| s.parse())?;

    let client = Client::builder(args[0].clone())
        .retry(RetryConfig::disabled())
        .attempt_timeout(Duration::from_secs(30))
        .deadline(Duration::from_secs(60))
        .build()?;
    let signer = Signer::new(agent.clone(), key_id, &secret);
    let now = UnixMillis::now();
    // The server allows an agent 20 pushes a second (burst 40): pace the history at 15.
    let mut pace = tokio::time::interval(Duration::from_millis(66));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for k in 0..=history {
        pace.tick().await;
        let minutes_ago = i64::try_from(history - k)?;
        let created = UnixMillis::from_millis(now.as_millis() - minutes_ago * 60_000);
        let mut batch = Batch::new(agent.clone(), Seq::new(seq + k)?, created);
        if history > 0 {
            batch.samples = host_samples(created, k)?;
        }
        batch.wg_devices.push(device(created, peers, ageing, k));
        let env = signer.sign_batch(&batch, UnixMillis::now(), Nonce::random());
        let ack = client.push(env).await?;
        if ack.status() != sentra_core::proto::AckStatus::Accepted {
            return Err(format!("the server did not accept the batch: {ack:?}").into());
        }
    }
    if history > 0 {
        println!(
            "accepted seq {seq}..={}: {peers} peers, {history} minutes of history",
            seq + history
        );
    } else {
        println!("accepted seq {seq}: {peers} peers");
    }
    Ok(())
}

/// The WireGuard interface `wg0` as collected at `created`, minute `k` of the history.
fn device(created: UnixMillis, peers: u32, ageing: u32, k: u64) -> WgDevice {
    let recent = UnixMillis::from_millis(created.as_millis() - 10_000);
    let old = UnixMillis::from_millis(created.as_millis() - 60_000);
    WgDevice::new("wg0", 3)
        .with_public_key(key(u32::MAX, 9))
        .with_listen_port(51820)
        .with_peers(
            (0..peers)
                .map(|i| {
                    let [_, a, b, c] = i.to_be_bytes();
                    let moved = k * (u64::from(i) + 1) * 60_000;
                    WgPeer::new(key(i, 1))
                        .with_endpoint(
                            format!("198.51.{a}.{b}:{}", 40000 + u16::from(c))
                                .parse::<std::net::SocketAddr>()
                                .unwrap_or_else(|_| "198.51.100.1:51820".parse().expect("literal")),
                        )
                        .with_allowed_ips(vec![
                            format!("10.{a}.{b}.{c}/32")
                                .parse::<IpPrefix>()
                                .expect("valid prefix"),
                        ])
                        .with_last_handshake(if i < ageing { old } else { recent })
                        .with_transfer(u64::from(i) * 1000 + moved, u64::from(i) * 500 + moved / 2)
                        .with_persistent_keepalive_s(25)
                })
                .collect(),
        )
}
