//! Helpers shared by the integration tests: signing real envelopes and building batches.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;

use bytes::Bytes;
use sentra_core::{
    AgentId, Batch, IpPrefix, KeyId, Labels, MemoryKeyring, Method, Nonce, Sample, SecretKey, Seq,
    Signer, UnixMillis, Validity, Value, Verified, Verifier, WgDevice, WgPeer, WgPublicKey,
};

pub fn agent(name: &str) -> AgentId {
    AgentId::new(name).unwrap()
}

fn secret() -> SecretKey {
    SecretKey::from_bytes([42; 32])
}

/// Signs `payload` as agent/seq and runs it through the real verifier.
pub fn verify_raw(agent: &AgentId, seq: u64, payload: Vec<u8>, nonce: u8) -> Verified {
    let now = UnixMillis::now();
    let signer = Signer::new(agent.clone(), KeyId::new(1), &secret());
    let env = signer.sign(
        Method::Push,
        Seq::new(seq).unwrap(),
        now,
        Nonce::from_bytes([nonce; 16]),
        Bytes::from(payload),
    );
    let mut keys = MemoryKeyring::new();
    keys.insert(agent.clone(), KeyId::new(1), &secret(), Validity::always());
    Verifier::new()
        .verify(&env, Method::Push, now, &keys)
        .unwrap()
}

pub fn verify(batch: &Batch) -> Verified {
    verify_raw(&batch.agent_id, batch.seq.get(), batch.encode_to_vec(), 0)
}

pub fn verify_with_nonce(batch: &Batch, nonce: u8) -> Verified {
    verify_raw(
        &batch.agent_id,
        batch.seq.get(),
        batch.encode_to_vec(),
        nonce,
    )
}

pub fn gauge(name: &str, labels: &[(&str, &str)], ts: i64, v: f64) -> Sample {
    Sample::new(
        name.parse().unwrap(),
        Labels::from_pairs(labels.iter().copied()).unwrap(),
        UnixMillis::from_millis(ts),
        Value::Gauge(v),
    )
}

pub fn counter(name: &str, labels: &[(&str, &str)], ts: i64, v: u64) -> Sample {
    Sample::new(
        name.parse().unwrap(),
        Labels::from_pairs(labels.iter().copied()).unwrap(),
        UnixMillis::from_millis(ts),
        Value::Counter(v),
    )
}

/// A batch of `agent` with `seq`, created at `created` ms, holding `samples`.
pub fn batch(agent: &AgentId, seq: u64, created: i64, samples: Vec<Sample>) -> Batch {
    let mut b = Batch::new(
        agent.clone(),
        Seq::new(seq).unwrap(),
        UnixMillis::from_millis(created),
    );
    b.samples = samples;
    b
}

pub fn peer_key(n: u8) -> WgPublicKey {
    WgPublicKey::from_bytes([n; 32])
}

/// One interface `wg0` with one peer.
pub fn wg(rx: u64, tx: u64, handshake_ms: Option<i64>) -> WgDevice {
    WgDevice::new("wg0", 3)
        .with_public_key(peer_key(1))
        .with_listen_port(51820)
        .with_peers(vec![
            WgPeer::new(peer_key(2))
                .with_endpoint("192.0.2.7:51820".parse::<SocketAddr>().unwrap())
                .with_allowed_ips(vec!["10.7.0.2/32".parse::<IpPrefix>().unwrap()])
                .with_last_handshake(handshake_ms.map(UnixMillis::from_millis))
                .with_transfer(rx, tx)
                .with_persistent_keepalive_s(25),
        ])
}

/// Every stored sample as queries see it (`sentra_ingest::storage::samples_of_chunks`).
pub fn merge_chunks(
    rows: impl IntoIterator<Item = (i64, i64, Vec<u8>)>,
) -> std::collections::BTreeMap<(i64, i64), f64> {
    sentra_ingest::storage::samples_of_chunks(rows).unwrap()
}

/// The stored samples of the SQLite store in `dir` (see [`merge_chunks`]).
pub async fn sqlite_samples(dir: &std::path::Path) -> std::collections::BTreeMap<(i64, i64), f64> {
    use sqlx::Connection as _;
    let url = format!("sqlite://{}?mode=ro", dir.join("metrics.db").display());
    let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let rows = sqlite_chunk_rows(&mut c).await;
    c.close().await.unwrap();
    merge_chunks(rows)
}

/// Rows `series_id, gen, data` of table `chunks`.
pub async fn sqlite_chunk_rows(c: &mut sqlx::SqliteConnection) -> Vec<(i64, i64, Vec<u8>)> {
    sqlx::query_as("SELECT series_id, gen, data FROM chunks")
        .fetch_all(c)
        .await
        .unwrap()
}

/// `(ts, number of series with a sample at ts)`, by ts, as queries see the samples.
pub async fn series_per_ts(c: &mut sqlx::SqliteConnection) -> Vec<(i64, i64)> {
    let mut per_ts = std::collections::BTreeMap::<i64, i64>::new();
    for (_, ts) in merge_chunks(sqlite_chunk_rows(c).await).into_keys() {
        *per_ts.entry(ts).or_default() += 1;
    }
    per_ts.into_iter().collect()
}
