//! Serve your own ingest service behind Sentra's gRPC transport on a real TCP socket, and
//! push to it with Sentra's client.
//!
//! ```text
//! cargo run -p sentra-transport --example custom_ingest
//! ```
//!
//! The inner service is yours: here an in-memory store that keeps the highest sequence number
//! per agent and answers `DUPLICATE` to anything at or below it. The transport in front of it
//! does TLS (left out here: plaintext h2c on loopback), HMAC authentication against the
//! keyring, limits, rate limiting and load shedding, so the service only ever sees
//! authenticated envelopes ([`Verified`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sentra_core::{
    AgentId, Batch, KeyId, Labels, MemoryKeyring, Nonce, Sample, SecretKey, Seq, Signer,
    UnixMillis, Validity, Value, Verified,
    proto::{Ack, AckStatus},
};
use sentra_transport::{BoxError, Client, Server};
use tokio::net::TcpListener;
use tower::service_fn;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let agent = AgentId::new("edge-01")?;
    let secret = SecretKey::from_bytes([7; 32]);
    let mut keyring = MemoryKeyring::new();
    keyring.insert(agent.clone(), KeyId::new(1), &secret, Validity::always());

    // The custom service: highest seq per agent, in memory.
    let store: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let service = {
        let store = store.clone();
        service_fn(move |verified: Verified| {
            let store = store.clone();
            async move {
                let batch = verified.decode_batch()?;
                let seq = verified.seq().get();
                let mut store = store.lock().map_err(|_| "store poisoned")?;
                let high = store.entry(batch.agent_id.to_string()).or_default();
                let status = if seq <= *high {
                    AckStatus::Duplicate
                } else {
                    *high = seq;
                    println!(
                        "server: {} seq {seq}: {} sample(s)",
                        batch.agent_id,
                        batch.samples.len()
                    );
                    AckStatus::Accepted
                };
                Ok::<_, BoxError>(Ack {
                    agent_id: batch.agent_id.to_string(),
                    seq,
                    status: status.into(),
                    ..Default::default()
                })
            }
        })
    };

    // A real socket; `ServerBuilder::tls` turns on TLS (and optionally mTLS).
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = Server::builder(keyring, service).build();
    let serving = tokio::spawn(server.serve_with_shutdown(listener, async {
        let _ = stopped.await;
    }));
    println!("serving on http://{addr}");

    // The agent side: sign, push, read the ack.
    let client = Client::builder(format!("http://{addr}")).build()?;
    let signer = Signer::new(agent.clone(), KeyId::new(1), &secret);
    for seq in [1, 2, 2] {
        let now = UnixMillis::now();
        let mut batch = Batch::new(agent.clone(), Seq::new(seq)?, now);
        batch.samples.push(Sample::new(
            "cpu_usage_ratio".parse()?,
            Labels::from_pairs([("core", "0")])?,
            now,
            Value::Gauge(0.5),
        ));
        let ack = client
            .push(signer.sign_batch(&batch, now, Nonce::random()))
            .await?;
        println!("client: seq {seq} -> {:?}", ack.status());
    }

    // A batch signed with a key the server does not know never reaches the service.
    let forger = Signer::new(
        agent.clone(),
        KeyId::new(1),
        &SecretKey::from_bytes([9; 32]),
    );
    let now = UnixMillis::now();
    let forged = forger.sign_batch(&Batch::new(agent, Seq::new(3)?, now), now, Nonce::random());
    match client.push(forged).await {
        Ok(ack) => return Err(format!("a forged batch was answered {ack:?}").into()),
        Err(e) => println!(
            "client: forged batch refused: {:?} ({:?})",
            e.code(),
            e.reject_reason()
        ),
    }
    assert_eq!(store.lock().map_err(|_| "store poisoned")?["edge-01"], 2);

    let _ = stop.send(());
    serving.await??;
    println!("server stopped");
    Ok(())
}
