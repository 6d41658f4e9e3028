//! Integration tests over real loopback sockets (TLS and plaintext) and the in-process
//! transport: round trips, mutual TLS binding, every bad-input class with its status, the
//! middleware layers end to end, retries, slow and idle connections, and a flood.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use sentra_core::{
    AgentId, Batch, KeyId, MemoryKeyring, Method, Nonce, SecretKey, Seq, Signer, UnixMillis,
    Validity, Verified,
    proto::{Ack, AckStatus, DesiredState, DesiredStateQuery, RejectReason, SignedBatch},
};
use sentra_transport::{
    BoxError, Client, Limits, PeerInfo, RetryConfig, Server, ServerBuilder, metrics::Metrics,
    rate_limit::Quota, status, tls::ServerTls,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tonic::Code;
use tower::{service_fn, util::BoxCloneSyncService};

// ---------------------------------------------------------------------------------------
// fixtures

struct Pki {
    ca_pem: String,
    server_cert: String,
    server_key: String,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    fn new() -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sentra test CA");
        let ca = params.self_signed(&ca_key).unwrap();
        let (server_cert, server_key) = Self::leaf(
            &ca,
            &ca_key,
            "localhost",
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        );
        Self {
            ca_pem: ca.pem(),
            server_cert,
            server_key,
            ca,
            ca_key,
        }
    }

    fn leaf(
        ca: &rcgen::Certificate,
        ca_key: &rcgen::KeyPair,
        name: &str,
        usage: rcgen::ExtendedKeyUsagePurpose,
    ) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, ca, ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn client_cert(&self, agent: &str) -> (String, String) {
        Self::leaf(
            &self.ca,
            &self.ca_key,
            agent,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    fn server_tls(&self, mtls: bool) -> ServerTls {
        ServerTls::from_pem(
            self.server_cert.as_bytes(),
            self.server_key.as_bytes(),
            mtls.then_some(self.ca_pem.as_bytes()),
        )
        .unwrap()
    }
}

fn agent(name: &str) -> AgentId {
    AgentId::new(name).unwrap()
}

fn secret(name: &str) -> SecretKey {
    let mut b = [0u8; 32];
    for (i, c) in name.bytes().enumerate() {
        b[i % 32] ^= c;
    }
    b[31] ^= 0x5a;
    SecretKey::from_bytes(b)
}

fn keyring(agents: &[&str]) -> MemoryKeyring {
    let mut k = MemoryKeyring::new();
    for a in agents {
        k.insert(agent(a), KeyId::new(1), &secret(a), Validity::always());
    }
    k
}

fn signer(name: &str) -> Signer {
    Signer::new(agent(name), KeyId::new(1), &secret(name))
}

fn push_env(s: &Signer, seq: u64) -> SignedBatch {
    let batch = Batch::new(
        s.agent_id().clone(),
        Seq::new(seq).unwrap(),
        UnixMillis::now(),
    );
    s.sign_batch(&batch, UnixMillis::now(), Nonce::random())
}

fn fetch_env(s: &Signer, seq: u64) -> SignedBatch {
    let q = DesiredStateQuery {
        agent_id: s.agent_id().to_string(),
        known_revision: 0,
    };
    s.sign(
        Method::FetchDesiredState,
        Seq::new(seq).unwrap(),
        UnixMillis::now(),
        Nonce::random(),
        prost::Message::encode_to_vec(&q).into(),
    )
}

/// A pipeline double: decodes, records, answers ACCEPTED (or DUPLICATE for a seen seq).
#[derive(Clone, Default)]
struct Pipeline {
    seen: Arc<Mutex<Vec<(String, u64)>>>,
    calls: Arc<AtomicUsize>,
    /// Fail this many calls with an opaque error first.
    fail_first: Arc<AtomicUsize>,
    delay: Duration,
}

impl Pipeline {
    fn service(&self) -> BoxCloneSyncService<Verified, Ack, BoxError> {
        let this = self.clone();
        BoxCloneSyncService::new(service_fn(move |v: Verified| {
            let this = this.clone();
            async move {
                this.calls.fetch_add(1, Ordering::SeqCst);
                if this
                    .fail_first
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    return Err::<Ack, BoxError>("storage: connection refused to 10.9.9.9".into());
                }
                if !this.delay.is_zero() {
                    tokio::time::sleep(this.delay).await;
                }
                let batch = v.decode_batch()?;
                let key = (batch.agent_id.to_string(), v.seq().get());
                let mut seen = this.seen.lock().unwrap();
                let status = if seen.contains(&key) {
                    AckStatus::Duplicate
                } else {
                    seen.push(key);
                    AckStatus::Accepted
                };
                Ok(Ack {
                    agent_id: v.agent_id().to_string(),
                    seq: v.seq().get(),
                    status: status.into(),
                    server_time_ms: UnixMillis::now().as_millis(),
                    ..Default::default()
                })
            }
        }))
    }
}

fn desired_state() -> BoxCloneSyncService<Verified, DesiredState, BoxError> {
    BoxCloneSyncService::new(service_fn(|v: Verified| async move {
        let q = v.decode_desired_state_query()?;
        Ok::<_, BoxError>(DesiredState {
            revision: q.known_revision + 7,
            unchanged: false,
            interfaces: Vec::new(),
        })
    }))
}

async fn spawn(builder: ServerBuilder) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = builder.build();
    let task = tokio::spawn(async move {
        server.serve(listener).await.unwrap();
    });
    (addr, task)
}

fn tls_client(pki: &Pki, addr: SocketAddr) -> sentra_transport::ClientBuilder {
    Client::builder(format!("https://localhost:{}", addr.port()))
        .ca_pem(pki.ca_pem.clone())
        .attempt_timeout(Duration::from_secs(5))
        .deadline(Duration::from_secs(10))
}

fn no_retry(b: sentra_transport::ClientBuilder) -> Client {
    b.retry(RetryConfig::disabled()).build().unwrap()
}

// ---------------------------------------------------------------------------------------
// round trips

#[tokio::test]
async fn tls_push_and_fetch_round_trip() {
    let pki = Pki::new();
    let pipeline = Pipeline::default();
    let metrics = Metrics::new();
    let builder = Server::builder(keyring(&["edge-01"]), pipeline.service())
        .desired_state(desired_state())
        .metrics(metrics.clone())
        .tls(pki.server_tls(false));
    let (addr, _task) = spawn(builder).await;
    let client = tls_client(&pki, addr).build().unwrap();
    let s = signer("edge-01");

    let ack = client.push(push_env(&s, 1)).await.unwrap();
    assert_eq!(ack.status(), AckStatus::Accepted);
    assert_eq!((ack.agent_id.as_str(), ack.seq), ("edge-01", 1));
    // A resend of the same seq is absorbed as a duplicate.
    let ack = client.push(push_env(&s, 1)).await.unwrap();
    assert_eq!(ack.status(), AckStatus::Duplicate);

    let state = client.fetch_desired_state(fetch_env(&s, 2)).await.unwrap();
    assert_eq!(state.revision, 7);
    // An envelope signed for Push does not authenticate as FetchDesiredState.
    let err = client
        .fetch_desired_state(push_env(&s, 3))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::Unauthenticated));

    // Concurrent pushes share the connection.
    let mut handles = Vec::new();
    for seq in 10..40 {
        let (c, e) = (client.clone(), push_env(&s, seq));
        handles.push(tokio::spawn(async move { c.push(e).await }));
    }
    for h in handles {
        assert_eq!(h.await.unwrap().unwrap().status(), AckStatus::Accepted);
    }
    assert_eq!(pipeline.seen.lock().unwrap().len(), 31);
    assert_eq!(metrics.count("push", "accepted"), 31);
    assert_eq!(metrics.count("push", "duplicate"), 1);
    assert_eq!(metrics.count("fetch_desired_state", "ok"), 1);
    assert_eq!(metrics.count("fetch_desired_state", "unauthenticated"), 1);
    let text = metrics.render_prometheus();
    assert!(
        text.contains("sentra_transport_requests_total{method=\"push\",outcome=\"accepted\"} 31")
    );
}

#[tokio::test]
async fn no_key_material_in_any_error() {
    // A canary key: neither its bytes (hex, decimal) nor the tag may show up anywhere.
    let canary = SecretKey::from_bytes([0xC3; 32]);
    let mut ring = MemoryKeyring::new();
    ring.insert(agent("a"), KeyId::new(1), &canary, Validity::always());
    let server = Server::builder(ring, Pipeline::default().service())
        .build()
        .in_process();
    let client = no_retry(server.client());
    let forger = Signer::new(agent("a"), KeyId::new(1), &secret("x"));
    let real = Signer::new(agent("a"), KeyId::new(1), &canary);
    let good = push_env(&real, 1);
    let tag_hex: String = good.tag.iter().map(|b| format!("{b:02x}")).collect();
    let mut skewed = real.sign_batch(
        &Batch::new(agent("a"), Seq::new(2).unwrap(), UnixMillis::now()),
        UnixMillis::from_millis(0),
        Nonce::random(),
    );
    skewed.tag.clone_from(&good.tag);
    for env in [push_env(&forger, 1), skewed, {
        let mut e = good.clone();
        e.payload = "changed".into();
        e
    }] {
        let err = client.push(env).await.unwrap_err();
        let text = format!("{err} {err:?}").to_lowercase();
        for needle in ["c3c3c3", "195, 195", &tag_hex[..16]] {
            assert!(!text.contains(needle), "{needle} leaked: {text}");
        }
    }
}

#[tokio::test]
async fn plaintext_without_desired_state_is_unimplemented() {
    let (addr, _task) = spawn(Server::builder(
        keyring(&["a"]),
        Pipeline::default().service(),
    ))
    .await;
    let client = no_retry(Client::builder(format!("http://{addr}")));
    let s = signer("a");
    assert_eq!(
        client.push(push_env(&s, 1)).await.unwrap().status(),
        AckStatus::Accepted
    );
    let err = client
        .fetch_desired_state(fetch_env(&s, 2))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::Unimplemented));
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn client_rejects_bad_configuration() {
    assert!(Client::builder("ftp://x").build().is_err());
    // https without a CA, and TLS material on http.
    assert!(Client::builder("https://localhost:1").build().is_err());
    assert!(
        Client::builder("http://localhost:1")
            .ca_pem("x")
            .build()
            .is_err()
    );
    let err = Client::builder("https://localhost:1")
        .ca_pem("not pem")
        .build()
        .unwrap_err();
    assert!(matches!(err, sentra_transport::Error::Pem { .. }), "{err}");
}

// ---------------------------------------------------------------------------------------
// mutual TLS

#[tokio::test]
async fn mtls_binds_the_client_certificate_to_the_agent_id() {
    let pki = Pki::new();
    let builder = Server::builder(
        keyring(&["edge-01", "edge-02"]),
        Pipeline::default().service(),
    )
    .tls(pki.server_tls(true))
    .require_client_cert(true);
    let (addr, _task) = spawn(builder).await;
    let (cert, key) = pki.client_cert("edge-01");
    let client = no_retry(tls_client(&pki, addr).identity_pem(cert, key));

    let ack = client.push(push_env(&signer("edge-01"), 1)).await.unwrap();
    assert_eq!(ack.status(), AckStatus::Accepted);
    // edge-01's certificate with edge-02's (valid) key: refused.
    let err = client
        .push(push_env(&signer("edge-02"), 1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::PermissionDenied));
    assert_eq!(err.reject_reason(), Some(RejectReason::Unauthenticated));

    // No client certificate: the server ends the handshake (with TLS 1.3 the client learns
    // it on its first read), the call fails as a transport error.
    let anon = no_retry(tls_client(&pki, addr));
    let err = anon
        .push(push_env(&signer("edge-01"), 2))
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Some(Code::Unavailable | Code::Unknown)),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// bad input: each gets its status, and the server keeps serving

#[derive(Clone, PartialEq, prost::Message)]
struct EvilEnvelope {
    // SignedBatch.agent_id is field 2, a string: a varint there does not decode.
    #[prost(uint64, tag = "2")]
    agent_id: u64,
}

async fn raw_call<M: prost::Message + Send + Sync + 'static>(
    addr: SocketAddr,
    msg: M,
) -> tonic::Status {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc.unary::<M, Ack, _>(
        tonic::Request::new(msg),
        http::uri::PathAndQuery::from_static("/sentra.v1.Ingest/Push"),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .unwrap_err()
}

#[tokio::test]
async fn bad_input_gets_specific_statuses_and_the_server_keeps_serving() {
    let pipeline = Pipeline::default();
    let mut limits = Limits::default();
    limits.max_payload_bytes = 64 * 1024;
    limits.max_decoding_message_size = 256 * 1024;
    let builder = Server::builder(keyring(&["good", "other"]), pipeline.service()).limits(limits);
    let (addr, _task) = spawn(builder).await;
    let client = no_retry(Client::builder(format!("http://{addr}")));
    let good = signer("good");

    // Malformed protobuf.
    let s = raw_call(addr, EvilEnvelope { agent_id: 7 }).await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert_eq!(status::reject_reason(&s), Some(RejectReason::Malformed));

    // Over the transport limit (tonic's decoder) and over the payload cap (our layer).
    let huge = SignedBatch {
        payload: vec![0u8; 300 * 1024].into(),
        ..push_env(&good, 1)
    };
    let s = raw_call(addr, huge).await;
    assert_eq!(s.code(), Code::OutOfRange, "{s:?}");
    assert_eq!(status::reject_reason(&s), Some(RejectReason::TooLarge));
    let big = signer("good").sign(
        Method::Push,
        Seq::new(1).unwrap(),
        UnixMillis::now(),
        Nonce::random(),
        vec![0u8; 100 * 1024].into(),
    );
    let err = client.push(big).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::OutOfRange));
    assert_eq!(err.reject_reason(), Some(RejectReason::TooLarge));
    assert!(!err.is_retryable());

    // Wrong key, unknown agent, tampered envelope: one status, one message.
    let wrong_key = Signer::new(agent("good"), KeyId::new(1), &secret("evil"));
    let unknown_agent = signer("stranger");
    let unknown_key = Signer::new(agent("good"), KeyId::new(2), &secret("good"));
    let mut tampered = push_env(&good, 5);
    tampered.seq = 6;
    let mut messages = Vec::new();
    for env in [
        push_env(&wrong_key, 1),
        push_env(&unknown_agent, 1),
        push_env(&unknown_key, 1),
        tampered,
    ] {
        let err = client.push(env).await.unwrap_err();
        assert_eq!(err.code(), Some(Code::Unauthenticated));
        assert_eq!(err.reject_reason(), Some(RejectReason::Unauthenticated));
        assert!(!err.is_retryable());
        let s = err.status().unwrap();
        assert!(!format!("{s:?}").contains("stranger"));
        messages.push(s.message().to_owned());
    }
    messages.dedup();
    assert_eq!(messages.len(), 1, "{messages:?}");

    // Skewed clock: FAILED_PRECONDITION with the server's time.
    let before = UnixMillis::now();
    let batch = Batch::new(agent("good"), Seq::new(9).unwrap(), before);
    let skewed = good.sign_batch(
        &batch,
        before.saturating_add_millis(-3_600_000),
        Nonce::random(),
    );
    let err = client.push(skewed).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::FailedPrecondition));
    assert_eq!(err.reject_reason(), Some(RejectReason::ClockSkew));
    let server_time = err.server_time().expect("server time in metadata");
    assert!(server_time >= before && server_time <= UnixMillis::now());

    // Nothing above reached the pipeline, and the server still serves.
    assert_eq!(pipeline.calls.load(Ordering::SeqCst), 0);
    let ack = client.push(push_env(&good, 10)).await.unwrap();
    assert_eq!(ack.status(), AckStatus::Accepted);
}

#[tokio::test]
async fn layers_end_to_end_rate_limit_timeout_shed_unavailable() {
    let pipeline = Pipeline {
        delay: Duration::from_millis(300),
        ..Pipeline::default()
    };
    let mut limits = Limits::default();
    limits.per_agent_quota = Quota::per_second(0.5).burst(2);
    limits.request_timeout = Duration::from_millis(200);
    let builder = Server::builder(keyring(&["a", "b"]), pipeline.service()).limits(limits);
    let (addr, _task) = spawn(builder).await;
    let client = no_retry(Client::builder(format!("http://{addr}")));

    // Inner service slower than the request timeout.
    let err = client.push(push_env(&signer("a"), 1)).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::DeadlineExceeded));
    assert!(err.is_retryable());
    // Rate limit: burst 2 used up (the timed-out call counted), the third is refused.
    let _ = client.push(push_env(&signer("a"), 2)).await;
    let err = client.push(push_env(&signer("a"), 3)).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::ResourceExhausted));
    assert_eq!(err.reject_reason(), Some(RejectReason::RateLimited));
    assert!(err.retry_after().unwrap() > Duration::from_millis(100));
    assert!(err.is_retryable());

    // Global concurrency limit with shedding, and opaque inner errors.
    let pipeline = Pipeline {
        delay: Duration::from_millis(1000),
        fail_first: Arc::new(AtomicUsize::new(1)),
        ..Pipeline::default()
    };
    let mut limits = Limits::default();
    limits.global_concurrency_limit = 1;
    let server = Server::builder(keyring(&["a", "b"]), pipeline.service()).limits(limits);
    let (addr, _task) = spawn(server).await;
    let client = no_retry(Client::builder(format!("http://{addr}")));
    let err = client.push(push_env(&signer("a"), 1)).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::Unavailable));
    assert!(!err.status().unwrap().message().contains("10.9.9.9"));
    let c2 = client.clone();
    let slow = tokio::spawn(async move { c2.push(push_env(&signer("a"), 2)).await });
    // Wait until the slow call holds the only slot (it is inside the pipeline).
    while pipeline.calls.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let err = client.push(push_env(&signer("b"), 1)).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::ResourceExhausted));
    assert!(err.retry_after().is_some());
    assert_eq!(slow.await.unwrap().unwrap().status(), AckStatus::Accepted);

    // Coarse per-IP limit before authentication: even forged envelopes are counted.
    let mut limits = Limits::default();
    limits.per_ip_quota = Some(Quota::per_second(0.01).burst(2));
    let server =
        Server::builder(keyring(&["a", "b"]), Pipeline::default().service()).limits(limits);
    let (addr, _task) = spawn(server).await;
    let client = no_retry(Client::builder(format!("http://{addr}")));
    let forged = push_env(&Signer::new(agent("a"), KeyId::new(1), &secret("x")), 1);
    assert_eq!(
        client.push(forged).await.unwrap_err().code(),
        Some(Code::Unauthenticated)
    );
    assert!(client.push(push_env(&signer("a"), 1)).await.is_ok());
    let err = client.push(push_env(&signer("b"), 1)).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::ResourceExhausted));
    assert_eq!(err.reject_reason(), Some(RejectReason::RateLimited));
}

#[tokio::test]
async fn client_retries_only_what_is_retryable() {
    let pipeline = Pipeline {
        fail_first: Arc::new(AtomicUsize::new(2)),
        ..Pipeline::default()
    };
    let server = Server::builder(keyring(&["a"]), pipeline.service())
        .build()
        .in_process();
    let client = server
        .client()
        .retry(RetryConfig::default().backoff(Duration::from_millis(5), Duration::from_millis(20)))
        .build()
        .unwrap();
    // Two UNAVAILABLE answers, then success.
    let ack = client.push(push_env(&signer("a"), 1)).await.unwrap();
    assert_eq!(ack.status(), AckStatus::Accepted);
    assert_eq!(pipeline.calls.load(Ordering::SeqCst), 3);
    // UNAUTHENTICATED is not retried.
    let err = client.push(push_env(&signer("zz"), 1)).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::Unauthenticated));
    assert_eq!(server.metrics().count("push", "unauthenticated"), 1);
    assert_eq!(server.metrics().count("push", "unavailable"), 2);
    assert_eq!(server.metrics().count("push", "accepted"), 1);

    // Retries give up at max_attempts.
    pipeline.fail_first.store(100, Ordering::SeqCst);
    let client = server
        .client()
        .retry(
            RetryConfig::default()
                .max_attempts(3)
                .backoff(Duration::from_millis(1), Duration::from_millis(5)),
        )
        .build()
        .unwrap();
    let before = pipeline.calls.load(Ordering::SeqCst);
    let err = client.push(push_env(&signer("a"), 2)).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::Unavailable));
    assert_eq!(pipeline.calls.load(Ordering::SeqCst) - before, 3);
}

#[tokio::test]
async fn client_deadline_bounds_the_whole_call() {
    // Nothing listens on this port: every attempt fails to connect.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = Client::builder(format!("http://{addr}"))
        .deadline(Duration::from_millis(600))
        .retry(
            RetryConfig::default()
                .max_attempts(100)
                .backoff(Duration::from_millis(50), Duration::from_millis(100)),
        )
        .build()
        .unwrap();
    let t0 = Instant::now();
    let err = client.push(SignedBatch::default()).await.unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(err.is_retryable(), "{err}");
}

#[tokio::test]
async fn client_reconnects_after_a_server_restart() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = Server::builder(keyring(&["a"]), Pipeline::default().service()).build();
    let first = tokio::spawn(server.serve_with_shutdown(listener, async {
        let _ = stop_rx.await;
    }));
    let client = Client::builder(format!("http://{addr}"))
        .retry(
            RetryConfig::default().backoff(Duration::from_millis(20), Duration::from_millis(200)),
        )
        .build()
        .unwrap();
    assert!(client.push(push_env(&signer("a"), 1)).await.is_ok());

    // Graceful stop: GOAWAY, listener closed.
    stop_tx.send(()).unwrap();
    first.await.unwrap().unwrap();
    let down = no_retry(Client::builder(format!("http://{addr}")));
    assert!(
        down.push(push_env(&signer("a"), 2))
            .await
            .unwrap_err()
            .is_retryable()
    );

    // Same port, new server: the old client reconnects on its own.
    let listener = TcpListener::bind(addr).await.unwrap();
    let server = Server::builder(keyring(&["a"]), Pipeline::default().service()).build();
    let _second = tokio::spawn(server.serve(listener));
    let ack = client.push(push_env(&signer("a"), 3)).await.unwrap();
    assert_eq!(ack.status(), AckStatus::Accepted);
}

// ---------------------------------------------------------------------------------------
// user layers on both sides

#[derive(Clone)]
struct Tag;
impl<S> tower::Layer<S> for Tag {
    type Service = TagService<S>;
    fn layer(&self, inner: S) -> TagService<S> {
        TagService(inner)
    }
}
#[derive(Clone)]
struct TagService<S>(S);
impl<S, R> tower::Service<tonic::Request<SignedBatch>> for TagService<S>
where
    S: tower::Service<tonic::Request<SignedBatch>, Response = R, Error = BoxError>,
{
    type Response = R;
    type Error = BoxError;
    type Future = S::Future;
    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx)
    }
    fn call(&mut self, mut req: tonic::Request<SignedBatch>) -> S::Future {
        // Client side adds a header; server side checks it and the connection info.
        if req.extensions().get::<PeerInfo>().is_some() {
            assert_eq!(req.metadata().get("x-tag").unwrap(), "yes");
        } else {
            req.metadata_mut().insert("x-tag", "yes".parse().unwrap());
        }
        self.0.call(req)
    }
}

#[tokio::test]
async fn user_layers_on_client_and_server() {
    let builder = Server::builder(keyring(&["a"]), Pipeline::default().service()).layer(Tag);
    let (addr, _task) = spawn(builder).await;
    let client = Client::builder(format!("http://{addr}"))
        .layer(Tag)
        .build()
        .unwrap();
    let ack = client.push(push_env(&signer("a"), 1)).await.unwrap();
    assert_eq!(ack.status(), AckStatus::Accepted);
    // Without the client layer the server layer's check fails the call.
    let bare = no_retry(Client::builder(format!("http://{addr}")));
    assert!(bare.push(push_env(&signer("a"), 2)).await.is_err());
}

// ---------------------------------------------------------------------------------------
// slow and idle connections

async fn closed_within(mut s: TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn silent_connections_are_closed_and_the_cap_frees_up() {
    let pki = Pki::new();
    let mut limits = Limits::default();
    limits.max_connections = 2;
    limits.tls_handshake_timeout = Duration::from_millis(300);
    let builder = Server::builder(keyring(&["a"]), Pipeline::default().service())
        .tls(pki.server_tls(false))
        .limits(limits);
    let (addr, _task) = spawn(builder).await;

    // Two slowloris connections take both slots and never send a ClientHello.
    let t0 = Instant::now();
    let s1 = TcpStream::connect(addr).await.unwrap();
    let s2 = TcpStream::connect(addr).await.unwrap();
    // One that starts a handshake and stalls.
    let (c1, c2) = (
        closed_within(s1, Duration::from_secs(3)),
        closed_within(s2, Duration::from_secs(3)),
    );
    let (r1, r2) = tokio::join!(c1, c2);
    assert!(r1 && r2, "silent connections must be closed");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());

    // The slots are free again: a well-behaved client gets through.
    let client = no_retry(tls_client(&pki, addr));
    let ack = client.push(push_env(&signer("a"), 1)).await.unwrap();
    assert_eq!(ack.status(), AckStatus::Accepted);
}

#[tokio::test]
async fn plaintext_idle_connection_is_closed() {
    let mut limits = Limits::default();
    limits.idle_timeout = Duration::from_millis(300);
    let builder = Server::builder(keyring(&["a"]), Pipeline::default().service()).limits(limits);
    let (addr, _task) = spawn(builder).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // Half an h2 preface, then silence.
    s.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    assert!(closed_within(s, Duration::from_secs(3)).await);
    // And the server still serves.
    let client = no_retry(Client::builder(format!("http://{addr}")));
    assert!(client.push(push_env(&signer("a"), 1)).await.is_ok());
}

// ---------------------------------------------------------------------------------------
// flood

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_does_not_starve_a_well_behaved_agent() {
    let pki = Pki::new();
    let pipeline = Pipeline {
        delay: Duration::from_millis(1),
        ..Pipeline::default()
    };
    let mut limits = Limits::default();
    limits.per_agent_quota = Quota::per_second(50.0).burst(20);
    limits.max_payload_bytes = 16 * 1024;
    // Flood and good agent share 127.0.0.1 here; this test is about per-agent isolation.
    limits.per_ip_quota = None;
    let builder = Server::builder(keyring(&["good", "flood"]), pipeline.service())
        .tls(pki.server_tls(false))
        .limits(limits);
    let (addr, _task) = spawn(builder).await;

    let stop = Arc::new(AtomicBool::new(false));
    let flood_client = no_retry(tls_client(&pki, addr));
    let mut flooders = Vec::new();
    // Valid but far too fast (6 tasks), forged (2), oversized (2); bounded in count.
    for task in 0..10u64 {
        let kind = match task % 5 {
            0..=2 => 0,
            3 => 1,
            _ => 2,
        };
        let (c, stop) = (flood_client.clone(), stop.clone());
        flooders.push(tokio::spawn(async move {
            let flood = signer("flood");
            let forger = Signer::new(agent("good"), KeyId::new(1), &secret("nope"));
            let mut codes = std::collections::HashMap::<Code, u64>::new();
            for i in 0..20_000u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let env = match kind {
                    0 => push_env(&flood, i + 1),
                    1 => push_env(&forger, i + 1),
                    _ => flood.sign(
                        Method::Push,
                        Seq::new(i + 1).unwrap(),
                        UnixMillis::now(),
                        Nonce::random(),
                        vec![1u8; 32 * 1024].into(),
                    ),
                };
                let code = match c.push(env).await {
                    Ok(_) => Code::Ok,
                    Err(e) => e.code().unwrap_or(Code::Unknown),
                };
                *codes.entry(code).or_default() += 1;
            }
            codes
        }));
    }

    // The well-behaved agent: one push every 10 ms for ~3 s, with the default retry policy.
    let good = tls_client(&pki, addr).build().unwrap();
    let s = signer("good");
    let (mut ok, mut total) = (0u32, 0u32);
    let t0 = Instant::now();
    let mut seq = 0;
    while t0.elapsed() < Duration::from_secs(3) {
        seq += 1;
        total += 1;
        if matches!(good.push(push_env(&s, seq)).await, Ok(a) if a.status() == AckStatus::Accepted)
        {
            ok += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut flood_codes = std::collections::HashMap::<Code, u64>::new();
    for f in flooders {
        for (k, v) in f.await.unwrap() {
            *flood_codes.entry(k).or_default() += v;
        }
    }
    let rate = f64::from(ok) / f64::from(total);
    eprintln!(
        "good agent: {ok}/{total} ({:.2} %); flood: {flood_codes:?}",
        rate * 100.0
    );
    assert!(total >= 20, "good agent managed only {total} pushes");
    assert!(rate >= 0.99, "good agent success {ok}/{total}");
    let rejected: u64 = [
        Code::ResourceExhausted,
        Code::Unauthenticated,
        Code::OutOfRange,
    ]
    .iter()
    .map(|c| flood_codes.get(c).copied().unwrap_or(0))
    .sum();
    assert!(
        flood_codes
            .get(&Code::ResourceExhausted)
            .copied()
            .unwrap_or(0)
            > 0
    );
    assert!(
        flood_codes
            .get(&Code::Unauthenticated)
            .copied()
            .unwrap_or(0)
            > 0
    );
    assert!(flood_codes.get(&Code::OutOfRange).copied().unwrap_or(0) > 0);
    assert!(rejected > 100, "{flood_codes:?}");
}

// ---------------------------------------------------------------------------------------
// Send + Sync of public services and futures

#[test]
fn public_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    type Inner = BoxCloneSyncService<Verified, Ack, BoxError>;
    type Outer = sentra_transport::CallService<Ack>;
    send_sync::<Client>();
    send_sync::<Server>();
    send_sync::<sentra_transport::InProcess>();
    send_sync::<sentra_transport::Error>();
    send_sync::<sentra_transport::auth::Auth<Inner, MemoryKeyring>>();
    send_sync::<sentra_transport::rate_limit::RateLimit<Inner>>();
    send_sync::<sentra_transport::concurrency::ConcurrencyLimit<Outer>>();
    send_sync::<sentra_transport::size_limit::RequestSizeLimit<Outer>>();
    send_sync::<sentra_transport::timeout::Timeout<Outer>>();
    send_sync::<sentra_transport::metrics::MetricsService<Outer>>();
    fn send<T: Send>() {}
    type F = std::pin::Pin<Box<dyn Future<Output = Result<Ack, BoxError>> + Send>>;
    send::<sentra_transport::auth::future::ResponseFuture<F>>();
    send::<sentra_transport::rate_limit::future::ResponseFuture<F>>();
    send::<sentra_transport::concurrency::future::ResponseFuture<F>>();
    send::<sentra_transport::size_limit::future::ResponseFuture<F>>();
    send::<sentra_transport::timeout::future::ResponseFuture<F>>();
    send::<sentra_transport::metrics::future::ResponseFuture<F>>();
}
