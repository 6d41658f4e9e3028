//! `GET /api/v1/agents/{id}/ingest` over a real `sentra-ingest` pipeline: the durable
//! ingest ledger (accepted batches, accepted gaps, missing seqs) as an operator sees it.

mod support;

use reqwest::StatusCode;
use sentra_core::{
    Batch, Labels, Method, Nonce, Sample, Seq, Signer, UnixMillis, Value, Verifier, proto,
};
use support::*;

async fn push(s: &Server, a: &AgentCreds, seq: u64) -> proto::AckStatus {
    let now = UnixMillis::now();
    let mut batch = Batch::new(a.agent_id.clone(), Seq::new(seq).unwrap(), now);
    batch.samples.push(Sample::new(
        "node_load1".parse().unwrap(),
        Labels::from_pairs([("host", "h")]).unwrap(),
        now,
        Value::Gauge(seq as f64),
    ));
    let env = Signer::new(a.agent_id.clone(), a.key_id, &a.secret).sign_batch(
        &batch,
        now,
        Nonce::random(),
    );
    let verified = Verifier::new()
        .verify(&env, Method::Push, now, &s.api.keyring())
        .unwrap();
    s.ingest
        .as_ref()
        .unwrap()
        .service()
        .push(verified)
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn the_ledger_counts_accepted_batches_gaps_and_missing_seqs() {
    let s = start_full(test_config(), true).await;
    let admin = s.admin().await;
    let viewer = s.viewer().await;
    let a = s.enroll(&admin, "edge-ledger").await;
    let path = format!("/api/v1/agents/{}/ingest", a.agent_id);

    // Authenticated like every agent read.
    let r = s.get(&path, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    // Enrolled but nothing received yet: 404 naming the ledger.
    let r = s.get(&path, Some(&viewer)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    assert_eq!(r.error_code(), "not_found");
    let r = s.get("/api/v1/agents/bad%20id/ingest", Some(&viewer)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);

    // Seqs 1, 2, then 5 (3 and 4 never arrive), then 2 again (a duplicate).
    for seq in [1, 2, 5] {
        assert_eq!(push(&s, &a, seq).await, proto::AckStatus::Accepted);
    }
    assert_eq!(push(&s, &a, 2).await, proto::AckStatus::Duplicate);

    let r = s.get(&path, Some(&viewer)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let v = r.json();
    assert_eq!(v["high_water"], 5, "{v}");
    assert_eq!(
        v["accepted"], 3,
        "a duplicate is not an accepted batch: {v}"
    );
    assert_eq!(v["gaps"], 1, "{v}");
    assert_eq!(v["missing"], 2, "{v}");
    assert_eq!(v["rejected_stale"], 0, "{v}");
    assert_eq!(v["rejected_ahead"], 0, "{v}");
}

#[tokio::test]
async fn without_a_metrics_store_the_ledger_is_unavailable() {
    let s = start_full(test_config(), false).await;
    let admin = s.admin().await;
    let a = s.enroll(&admin, "edge-none").await;
    let r = s
        .get(
            &format!("/api/v1/agents/{}/ingest", a.agent_id),
            Some(&admin),
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
}
