//! A custom native collector plugged into the agent's scheduler. Its samples take the same
//! path as the built-in ones — WAL (fdatasync) → HMAC-signed batch → gRPC push — to a real
//! `sentra-transport` server on loopback, which verifies each batch and prints what arrived.
//!
//! `cargo run -p sentra-agent --example custom_collector` (stops after three batches).

use std::time::Duration;

use sentra_agent::{CollectContext, CollectError, Collection, Collector, Schedule};

/// The collector: this process's open file descriptors, every 200 ms.
struct OpenFds;

impl Collector for OpenFds {
    fn name(&self) -> &str {
        "open_fds"
    }

    fn schedule(&self) -> Schedule {
        Schedule::every(Duration::from_millis(200)).timeout(Duration::from_secs(1))
    }

    async fn collect(&mut self, cx: &CollectContext) -> Result<Collection, CollectError> {
        let fds = std::fs::read_dir("/proc/self/fd")
            .map_err(|e| CollectError::new(format!("/proc/self/fd: {e}")))?
            .count();
        let mut out = cx.sample_set();
        out.gauge("process_open_fds", &[("source", "example")], fds as f64);
        Ok(Collection::from_samples(out))
    }
}

// Everything below is set-up: a server to ship to, and an agent with the collector added.
use sentra_core::proto::{Ack, AckStatus};
use sentra_core::{AgentId, KeyId, MemoryKeyring, SecretKey, Validity, Verified};

/// Starts the server and an agent with `OpenFds`; returns once three batches arrived.
#[tokio::main]
pub(crate) async fn main() -> anyhow::Result<()> {
    let (agent_id, secret) = (AgentId::new("example")?, SecretKey::from_bytes([7; 32]));
    let mut keyring = MemoryKeyring::new();
    keyring.insert(agent_id.clone(), KeyId::new(1), &secret, Validity::always());
    let (seen, mut arrived) = tokio::sync::mpsc::unbounded_channel();
    let svc = tower::service_fn(move |v: Verified| {
        let batch = v.decode_batch();
        let seen = seen.clone();
        async move {
            let batch = batch?;
            for s in batch
                .samples
                .iter()
                .filter(|s| s.name.as_str() == "process_open_fds")
            {
                println!(
                    "seq {} (HMAC verified): {} {:?} = {:?}",
                    v.seq().get(),
                    s.name.as_str(),
                    s.labels,
                    s.value
                );
                let _ = seen.send(());
            }
            let ack = Ack {
                agent_id: v.agent_id().to_string(),
                seq: v.seq().get(),
                ..Default::default()
            };
            Ok::<_, sentra_transport::BoxError>(Ack {
                status: AckStatus::Accepted.into(),
                ..ack
            })
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = sentra_transport::Server::builder(keyring, svc).build();
    tokio::spawn(async move {
        server
            .serve_with_shutdown(listener, std::future::pending())
            .await
    });

    let state = tempfile::tempdir()?;
    let mut config = sentra_agent::Config::new(state.path());
    config.server = Some(format!("http://{addr}"));
    config.credentials = Some(sentra_agent::Credentials::new(
        agent_id,
        KeyId::new(1),
        secret,
    ));
    let agent = sentra_agent::Agent::new(config)?
        .without_wireguard()
        .with_collector(OpenFds);
    let agent = agent.spawn();
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(30), arrived.recv()).await?;
    }
    let health = agent.health().snapshot().collectors["open_fds"].clone();
    println!(
        "open_fds collector: {} runs, {} failures",
        health.runs,
        health.failures()
    );
    agent.shutdown().await?;
    Ok(())
}
