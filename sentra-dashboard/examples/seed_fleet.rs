//! Pushes one WireGuard status with many peers through the real gRPC ingest path, signed
//! with an enrolled agent's credentials (the browser test's seeder).
//!
//! ```text
//! seed_fleet <grpc-url> <agent-id> <key-id> <secret-base64> <peers> <seq> [ageing-peers]
//! ```
//! Every peer handshook 10 s ago except the first `ageing-peers` (default 0), whose last
//! handshake is 175 s old: they cross the dashboard's 3-minute freshness line while watched.

use std::time::Duration;

use base64::Engine as _;
use sentra_core::{
    AgentId, Batch, IpPrefix, KeyId, Nonce, SecretKey, Seq, Signer, UnixMillis, WgDevice, WgPeer,
    WgPublicKey,
};
use sentra_transport::{Client, RetryConfig};

fn key(i: u32, tag: u8) -> WgPublicKey {
    let mut b = [tag; 32];
    b[..4].copy_from_slice(&i.to_be_bytes());
    WgPublicKey::from_bytes(b)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 6 {
        return Err(
            "usage: seed_fleet <grpc-url> <agent-id> <key-id> <secret-base64> <peers> <seq> [ageing-peers]"
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

    let now = UnixMillis::now();
    let recent = UnixMillis::from_millis(now.as_millis() - 10_000);
    let old = UnixMillis::from_millis(now.as_millis() - 175_000);
    let mut batch = Batch::new(agent.clone(), Seq::new(seq)?, now);
    batch.wg_devices.push(WgDevice {
        name: "wg0".into(),
        ifindex: 3,
        public_key: Some(key(u32::MAX, 9)),
        listen_port: 51820,
        fwmark: 0,
        peers: (0..peers)
            .map(|i| {
                let [_, a, b, c] = i.to_be_bytes();
                WgPeer {
                    public_key: key(i, 1),
                    endpoint: Some(
                        format!("198.51.{a}.{b}:{}", 40000 + u16::from(c))
                            .parse()
                            .unwrap_or_else(|_| "198.51.100.1:51820".parse().expect("literal")),
                    ),
                    allowed_ips: vec![
                        format!("10.{a}.{b}.{c}/32")
                            .parse::<IpPrefix>()
                            .expect("valid prefix"),
                    ],
                    last_handshake: Some(if i < ageing { old } else { recent }),
                    rx_bytes: u64::from(i) * 1000,
                    tx_bytes: u64::from(i) * 500,
                    persistent_keepalive_s: Some(25),
                    has_preshared_key: false,
                }
            })
            .collect(),
    });
    let env = Signer::new(agent, key_id, &secret).sign_batch(&batch, now, Nonce::random());
    let client = Client::builder(args[0].clone())
        .retry(RetryConfig::disabled())
        .attempt_timeout(Duration::from_secs(30))
        .deadline(Duration::from_secs(60))
        .build()?;
    let ack = client.push(env).await?;
    if ack.status() != sentra_core::proto::AckStatus::Accepted {
        return Err(format!("the server did not accept the batch: {ack:?}").into());
    }
    println!("accepted seq {seq}: {peers} peers");
    Ok(())
}
