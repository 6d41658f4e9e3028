//! Embed the ingest pipeline in your own program: open it on a data directory, feed it
//! authenticated batches (what `sentra-transport` does for every `Push`), follow stored
//! batches live, query, read the status cache, restart and find everything again.
//!
//! ```text
//! cargo run -p sentra-ingest --example embed_pipeline [DATA_DIR]
//! ```
//!
//! Without `DATA_DIR` it uses a temporary directory that is removed at the end.

use std::path::PathBuf;

use sentra_core::{
    AgentId, Batch, KeyId, Labels, MemoryKeyring, Method, Nonce, Sample, SecretKey, Seq, Signer,
    UnixMillis, Validity, Value, Verified, Verifier, proto::AckStatus,
};
use sentra_ingest::{Config, Event, Ingest, Selector};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let temp = tempfile::tempdir()?;
    let dir: PathBuf = std::env::args()
        .nth(1)
        .map_or_else(|| temp.path().to_path_buf(), PathBuf::from);
    println!("data directory: {}", dir.display());

    let agent = AgentId::new("edge-01")?;
    let secret = SecretKey::from_bytes([7; 32]);
    let mut keyring = MemoryKeyring::new();
    keyring.insert(agent.clone(), KeyId::new(1), &secret, Validity::always());
    let signer = Signer::new(agent.clone(), KeyId::new(1), &secret);

    let ingest = Ingest::open(&dir, Config::default()).await?;
    let mut feed = ingest.subscribe();
    // Continue after what an earlier run of this example stored in the same directory.
    let first = ingest.high_water(&agent).await?.map_or(1, |s| s.get() + 1);

    for seq in first..first + 3 {
        let verified = sign_and_verify(&signer, &keyring, &agent, seq)?;
        let ack = ingest.service().push(verified).await?;
        println!("push seq {seq}: {:?}", ack.status());
    }
    // A replayed batch (same agent and seq) is answered DUPLICATE and stored once.
    let replay = sign_and_verify(&signer, &keyring, &agent, first)?;
    let ack = ingest.service().push(replay).await?;
    assert_eq!(ack.status(), AckStatus::Duplicate);
    println!("push seq {first} again: {:?}", ack.status());

    // Subscribers see every stored batch once, after it is durable.
    for _ in 0..3 {
        match feed.recv().await {
            Some(Event::Stored(stored)) => println!(
                "subscriber: stored {} seq {} with {} sample(s)",
                stored.agent_id,
                stored.seq,
                stored.batch.samples.len()
            ),
            Some(other) => println!("subscriber: {other:?}"),
            None => break,
        }
    }

    // Queries read the database; the status cache never does.
    ingest.flush().await?;
    for value in ingest
        .query()
        .latest(&Selector::metric("cpu_usage_ratio")?)
        .await?
    {
        println!("latest: {value:?}");
    }
    for status in ingest.status().snapshot().agents {
        println!(
            "status: {} {:?}, high-water seq {}",
            status.agent_id, status.presence, status.high_water
        );
    }
    ingest.shutdown().await?;

    // Everything acknowledged is durable: a restart finds the agent's high-water mark.
    let ingest = Ingest::open(&dir, Config::default()).await?;
    let high_water = ingest.high_water(&agent).await?;
    assert_eq!(high_water, Some(Seq::new(first + 2)?));
    println!("after restart: high-water seq {high_water:?}");
    ingest.shutdown().await?;
    Ok(())
}

/// The agent signs a batch with one sample; the server verifies it (as the transport's auth
/// layer does) before the pipeline ever sees it.
fn sign_and_verify(
    signer: &Signer,
    keyring: &MemoryKeyring,
    agent: &AgentId,
    seq: u64,
) -> Result<Verified, BoxError> {
    let now = UnixMillis::now();
    let mut batch = Batch::new(agent.clone(), Seq::new(seq)?, now);
    batch.samples.push(Sample::new(
        "cpu_usage_ratio".parse()?,
        Labels::from_pairs([("core", "0")])?,
        now,
        Value::Gauge(0.25 * seq as f64),
    ));
    let envelope = signer.sign_batch(&batch, now, Nonce::random());
    Ok(Verifier::new().verify(&envelope, Method::Push, now, keyring)?)
}
