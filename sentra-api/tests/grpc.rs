//! `FetchDesiredState` through the real gRPC service (`sentra-transport` server and client
//! on loopback) backed by the API's `DesiredStateService` and keyring.

mod support;

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use sentra_core::{
    Method, Nonce, Seq, Signer, UnixMillis, Verified,
    proto::{Ack, RejectReason},
};
use sentra_transport::{Client, RetryConfig, Server as GrpcServer, status};
use support::*;
use tonic::Code;
use tower::service_fn;

/// A gRPC server on loopback serving the API's desired state (pushes are acknowledged and
/// dropped: this file is about `FetchDesiredState`).
async fn grpc(s: &Server) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let push =
        service_fn(
            |_v: Verified| async move { Ok::<_, sentra_transport::BoxError>(Ack::default()) },
        );
    let server = GrpcServer::builder(s.api.keyring(), push)
        .desired_state(s.api.desired_state_service())
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        server.serve(listener).await.unwrap();
    });
    (addr, task)
}

fn client(addr: SocketAddr) -> Client {
    Client::builder(format!("http://{addr}"))
        .retry(RetryConfig::disabled())
        .attempt_timeout(Duration::from_secs(5))
        .deadline(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test]
async fn fetch_desired_state_bad_query_is_invalid_argument() {
    let s = start().await;
    let admin = s.admin().await;
    let a = s.enroll(&admin, "edge-grpc").await;
    let (addr, _task) = grpc(&s).await;
    let c = client(addr);
    // A good query works.
    let state = c
        .fetch_desired_state(a.sign(Method::FetchDesiredState, 0))
        .await
        .unwrap();
    assert!(state.unchanged);
    // Validly signed, but the payload is not a DesiredStateQuery.
    let signer = Signer::new(a.agent_id.clone(), a.key_id, &a.secret);
    let garbage = signer.sign(
        Method::FetchDesiredState,
        Seq::FIRST,
        UnixMillis::now(),
        Nonce::random(),
        Bytes::from_static(&[0xff, 0xff, 0xff, 0x01]),
    );
    let err = c.fetch_desired_state(garbage).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
    assert!(!err.is_retryable(), "{err}");
    // A query naming another agent than the signer.
    let other = sentra_core::proto::DesiredStateQuery {
        agent_id: "someone-else".into(),
        known_revision: 0,
    };
    let mismatch = signer.sign(
        Method::FetchDesiredState,
        Seq::FIRST,
        UnixMillis::now(),
        Nonce::random(),
        Bytes::from(prost::Message::encode_to_vec(&other)),
    );
    let err = c.fetch_desired_state(mismatch).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
}

#[tokio::test]
async fn fetch_desired_state_replays_are_refused() {
    let s = start().await;
    let admin = s.admin().await;
    let a = s.enroll(&admin, "edge-replay").await;
    let (addr, _task) = grpc(&s).await;
    let c = client(addr);
    let env = a.sign(Method::FetchDesiredState, 0);
    c.fetch_desired_state(env.clone()).await.unwrap();
    for _ in 0..3 {
        let err = c.fetch_desired_state(env.clone()).await.unwrap_err();
        assert_eq!(err.code(), Some(Code::Unauthenticated), "{err}");
        let st = err.status().unwrap();
        assert_eq!(
            status::reject_reason(st),
            Some(RejectReason::Replay),
            "{st:?}"
        );
        assert!(!err.is_retryable());
    }
    // A fresh envelope (new nonce) from the same agent is served.
    c.fetch_desired_state(a.sign(Method::FetchDesiredState, 0))
        .await
        .unwrap();
    // The same envelope through the REST key endpoint's guard and back: one guard for
    // both signed agent calls, but a FetchKey envelope is never a FetchDesiredState one.
    let key_env = a.sign(Method::FetchKey, 0);
    assert_eq!(
        s.post_envelope(&key_env).await.status,
        reqwest::StatusCode::OK
    );
    assert_eq!(
        s.post_envelope(&key_env).await.status,
        reqwest::StatusCode::UNAUTHORIZED
    );
}

/// Issue 10 item 13: a validly signed batch with a far-ahead seq silences the agent (every
/// later batch is below the high-water mark); `rotate-key?reset_sequence=true` lets it ship
/// again. Pushes go through the real gRPC server into a real `sentra_ingest::Ingest`.
#[tokio::test]
async fn rotate_key_with_reset_sequence_unsilences_an_agent() {
    use sentra_core::{Batch, proto::AckStatus};

    let s = start_full(test_config(), true).await;
    let admin = s.admin().await;
    let a = s.enroll(&admin, "edge-seq").await;
    let ingest = s.ingest.clone().unwrap();
    let server = GrpcServer::builder(s.api.keyring(), ingest.service()).build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _task = tokio::spawn(async move { server.serve(listener).await.unwrap() });
    let c = client(addr);
    let push = |creds: &AgentCreds, seq: u64| {
        let batch = Batch::new(
            creds.agent_id.clone(),
            Seq::new(seq).unwrap(),
            UnixMillis::now(),
        );
        Signer::new(creds.agent_id.clone(), creds.key_id, &creds.secret).sign_batch(
            &batch,
            UnixMillis::now(),
            Nonce::random(),
        )
    };
    for seq in 1..=2 {
        let ack = c.push(push(&a, seq)).await.unwrap();
        assert_eq!(ack.status(), AckStatus::Accepted, "seq {seq}: {ack:?}");
    }
    // Signed with the agent's key, far ahead but inside the server's jump bound.
    let forged = u64::try_from(UnixMillis::now().as_millis()).unwrap() * 1000 + (1 << 40);
    let ack = c.push(push(&a, forged)).await.unwrap();
    assert_eq!(ack.status(), AckStatus::Accepted, "{ack:?}");
    // The agent's own next batch is now refused.
    let ack = c.push(push(&a, 3)).await.unwrap();
    assert_ne!(ack.status(), AckStatus::Accepted, "{ack:?}");

    // Rotation alone does not help; with reset_sequence it does.
    let path = format!("/api/v1/agents/{}/rotate-key", a.agent_id);
    let r = s
        .send(reqwest::Method::POST, &path, Some(&admin), None)
        .await;
    assert_eq!(r.status, reqwest::StatusCode::OK, "{}", r.text);
    assert!(r.json().get("sequence_reset").is_none(), "{}", r.text);
    let ack = c.push(push(&a, 3)).await.unwrap();
    assert_ne!(ack.status(), AckStatus::Accepted, "{ack:?}");
    let r = s
        .send(
            reqwest::Method::POST,
            &format!("{path}?reset_sequence=true"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, reqwest::StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.json()["sequence_reset"]["previous_high_water"],
        forged,
        "{}",
        r.text
    );
    assert_eq!(r.json()["new_key_id"], 3, "{}", r.text);
    // The agent collects its new key and ships again from where it was.
    let fetched = s.fetch_key(&a).await;
    assert_eq!(fetched.status, reqwest::StatusCode::OK, "{}", fetched.text);
    let b = AgentCreds::from_json(&fetched.json());
    assert_eq!(b.key_id.get(), 3);
    for seq in 3..=5 {
        let ack = c.push(push(&b, seq)).await.unwrap();
        assert_eq!(ack.status(), AckStatus::Accepted, "seq {seq}: {ack:?}");
    }
    let audit = s.audit(&admin).await;
    assert!(
        audit.iter().any(|e| e["action"] == "agent.reset_sequence"
            && e["outcome"] == "success"
            && e["detail"] == format!("previous_high_water={forged}")),
        "{audit:?}"
    );
}

/// Without a metrics store, `reset_sequence` is refused with 409 and the key is not rotated.
#[tokio::test]
async fn reset_sequence_without_metrics_store_is_refused() {
    let s = start().await;
    let admin = s.admin().await;
    let a = s.enroll(&admin, "edge-noingest").await;
    let r = s
        .send(
            reqwest::Method::POST,
            &format!(
                "/api/v1/agents/{}/rotate-key?reset_sequence=true",
                a.agent_id
            ),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, reqwest::StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("metrics store"), "{}", r.text);
    let info = s
        .get(&format!("/api/v1/agents/{}", a.agent_id), Some(&admin))
        .await
        .json();
    assert_eq!(info["keys"].as_array().unwrap().len(), 1, "{info}");
}
