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
    BoxError, Client, Limits, PeerInfo, RetryConfig, Server, ServerBuilder,
    metrics::{Metrics, close_reason},
    rate_limit::Quota,
    status,
    tls::ServerTls,
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

    // Failed authentications are charged to the source: past its budget, the forger's
    // connection is refused before verification, and valid requests are never charged.
    let mut limits = Limits::default();
    limits.per_ip_failure_quota = Some(Quota::per_second(0.01).burst(2));
    let server =
        Server::builder(keyring(&["a", "b"]), Pipeline::default().service()).limits(limits);
    let (addr, _task) = spawn(server).await;
    let valid = no_retry(Client::builder(format!("http://{addr}")));
    for seq in 1..=5 {
        assert!(valid.push(push_env(&signer("a"), seq)).await.is_ok());
    }
    let forger = no_retry(Client::builder(format!("http://{addr}")));
    for seq in 1..=2 {
        let forged = push_env(&Signer::new(agent("a"), KeyId::new(1), &secret("x")), seq);
        assert_eq!(
            forger.push(forged).await.unwrap_err().code(),
            Some(Code::Unauthenticated)
        );
    }
    let forged = push_env(&Signer::new(agent("a"), KeyId::new(1), &secret("x")), 3);
    let err = forger.push(forged).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::ResourceExhausted));
    assert_eq!(err.reject_reason(), Some(RejectReason::RateLimited));
    assert!(err.retry_after().unwrap() > Duration::from_secs(10));
    assert!(
        err.status()
            .unwrap()
            .message()
            .contains("failed authentications")
    );
    // The authenticated connection from the same address keeps working.
    assert!(valid.push(push_env(&signer("a"), 6)).await.is_ok());
    assert!(valid.push(push_env(&signer("b"), 1)).await.is_ok());
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

/// When the peer closed `s` (time since `since`) and how (`Ok` for a clean EOF, the error
/// kind otherwise); `None` if it is still open `within` after `since`.
async fn close_of(
    mut s: TcpStream,
    since: Instant,
    within: Duration,
) -> Option<(Duration, Result<(), std::io::ErrorKind>)> {
    let mut buf = [0u8; 256];
    loop {
        let left = (since + within).saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) => return Some((since.elapsed(), Ok(()))),
            Ok(Err(e)) => return Some((since.elapsed(), Err(e.kind()))),
            Ok(Ok(_)) => {}
        }
    }
}

/// A TCP connection to `to` from the local address `ip` (any of 127.0.0.0/8 on Linux), so
/// one test can play several client addresses.
async fn connect_from(ip: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    sock.connect(to).await
}

fn tls_connector(pki: &Pki) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in sentra_transport::tls::certs_from_pem(pki.ca_pem.as_bytes()).unwrap() {
        roots.add(c).unwrap();
    }
    let config =
        rustls::ClientConfig::builder_with_provider(sentra_transport::tls::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn silent_connections_are_closed_and_the_cap_frees_up() {
    let pki = Pki::new();
    let metrics = Metrics::new();
    let timeout = Duration::from_millis(600);
    let mut limits = Limits::default();
    limits.max_connections = 2;
    limits.handshake_timeout = timeout;
    let builder = Server::builder(keyring(&["a"]), Pipeline::default().service())
        .tls(pki.server_tls(false))
        .limits(limits)
        .metrics(metrics.clone());
    let (addr, _task) = spawn(builder).await;

    let t0 = Instant::now();
    // Slot 1: connects and never sends a byte.
    let silent = TcpStream::connect(addr).await.unwrap();
    // Slot 2: starts a ClientHello (a record header announcing 512 bytes, then the first 4
    // bytes of the handshake message) and stalls.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc])
        .await
        .unwrap();
    let closes = tokio::spawn(async move {
        tokio::join!(
            close_of(silent, t0, Duration::from_secs(5)),
            close_of(stalled, t0, Duration::from_secs(5))
        )
    });
    // A real TLS client while both slots are held: the cap is reached, so its connection
    // waits in the listen backlog and its handshake only completes once the timeout has
    // freed a slot.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let hs = tokio::time::timeout(
        Duration::from_secs(5),
        tls_connector(&pki).connect("localhost".try_into().unwrap(), tcp),
    )
    .await
    .expect("third handshake never completed: the slots were not freed")
    .expect("third handshake failed");
    let queued = t0.elapsed();
    assert!(
        queued >= timeout * 9 / 10,
        "third handshake completed after {queued:?}, before a slot was freed: the cap of 2 was not reached"
    );

    let (c1, c2) = closes.await.unwrap();
    for (what, c) in [("silent", c1), ("stalled handshake", c2)] {
        let (at, how) = c.unwrap_or_else(|| panic!("{what} connection still open after 5 s"));
        assert!(
            at >= timeout * 9 / 10 && at < timeout + Duration::from_secs(3),
            "{what} connection closed after {at:?}; the handshake timeout is {timeout:?}"
        );
        assert_eq!(
            how,
            Ok(()),
            "{what} connection: expected a clean close (EOF)"
        );
    }
    assert_eq!(
        metrics.connections_closed(close_reason::TLS_HANDSHAKE_TIMEOUT),
        2,
        "{}",
        metrics.render_prometheus()
    );
    drop(hs);

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

/// The HTTP/2 client connection preface's fixed 24 bytes.
const H2_MAGIC: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame (completes the client connection preface).
const H2_EMPTY_SETTINGS: &[u8] = &[0, 0, 0, 0x4, 0, 0, 0, 0, 0];

#[tokio::test]
async fn plaintext_slowloris_is_closed_after_the_handshake_timeout_and_capped_per_address() {
    let timeout = Duration::from_millis(1000);
    let mut limits = Limits::default();
    limits.handshake_timeout = timeout;
    limits.max_connections = 16;
    limits.max_connections_per_address = 8;
    let metrics = Metrics::new();
    let builder = Server::builder(keyring(&["a"]), Pipeline::default().service())
        .limits(limits)
        .metrics(metrics.clone());
    let (addr, _task) = spawn(builder).await;

    // 20 connections from 127.0.0.2 that send the HTTP/2 preface only (half of them the
    // bare magic, half the magic and the SETTINGS frame), then nothing.
    let t0 = Instant::now();
    let mut slow = Vec::new();
    for i in 0..20 {
        let mut s = match connect_from("127.0.0.2", addr).await {
            Ok(s) => s,
            // Refused so fast that the reset arrived before connect() returned.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                let at = t0.elapsed();
                slow.push(tokio::spawn(async move { Some((at, Err(e.kind()))) }));
                continue;
            }
            Err(e) => panic!("connect: {e}"),
        };
        let _ = s.write_all(H2_MAGIC).await;
        if i % 2 == 1 {
            let _ = s.write_all(H2_EMPTY_SETTINGS).await;
        }
        slow.push(tokio::spawn(close_of(
            s,
            t0,
            timeout + Duration::from_secs(3),
        )));
    }

    // Meanwhile a normal client from 127.0.0.1 is served.
    let client = no_retry(
        Client::builder(format!("http://{addr}"))
            .attempt_timeout(Duration::from_secs(2))
            .deadline(Duration::from_secs(2)),
    );
    let ack = client.push(push_env(&signer("a"), 1)).await;
    let served_at = t0.elapsed();
    assert!(
        matches!(&ack, Ok(a) if a.status() == AckStatus::Accepted),
        "normal client not served while the slowloris runs: {ack:?}"
    );
    assert!(
        served_at < timeout,
        "normal client only served after {served_at:?}"
    );

    let (mut refused, mut timed_out) = (0, 0);
    for (i, h) in slow.into_iter().enumerate() {
        let (at, _) = h.await.unwrap().unwrap_or_else(|| {
            panic!(
                "preface-only connection {i} still open after {:?}",
                timeout + Duration::from_secs(3)
            )
        });
        if at < timeout / 2 {
            refused += 1;
        } else {
            assert!(
                at >= timeout * 9 / 10,
                "connection {i} closed after {at:?}, neither refused at once nor at the {timeout:?} timeout"
            );
            timed_out += 1;
        }
    }
    assert_eq!(
        (timed_out, refused),
        (8, 12),
        "(closed by the timeout, refused by the per-address cap)"
    );
    assert_eq!(metrics.connections_closed(close_reason::ADDRESS_CAP), 12);
    assert_eq!(
        metrics.connections_closed(close_reason::FIRST_REQUEST_TIMEOUT),
        8
    );

    // The server still serves, also new connections from the same address.
    let ack = client.push(push_env(&signer("a"), 2)).await.unwrap();
    assert_eq!(ack.status(), AckStatus::Accepted);
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
    limits.per_ip_failure_quota = None;
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

/// Pushes forged envelopes (random key, claiming `claim`) until `stop`, bounded in count;
/// counts the outcomes by (code, reason).
async fn forge_until(
    c: Client,
    claim: &'static str,
    stop: Arc<AtomicBool>,
    limited: Arc<AtomicUsize>,
) -> std::collections::HashMap<(Code, Option<RejectReason>), u64> {
    let forger = Signer::new(
        agent(claim),
        KeyId::new(1),
        &SecretKey::from_bytes(rand_bytes()),
    );
    let mut out = std::collections::HashMap::new();
    for i in 0..20_000u64 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let key = match c.push(push_env(&forger, i + 1)).await {
            Ok(_) => (Code::Ok, None),
            Err(e) => (e.code().unwrap_or(Code::Unknown), e.reject_reason()),
        };
        if key.0 == Code::ResourceExhausted {
            limited.fetch_add(1, Ordering::Relaxed);
        }
        *out.entry(key).or_default() += 1;
    }
    out
}

fn rand_bytes() -> [u8; 32] {
    let mut b = [0u8; 32];
    for (i, x) in Nonce::random()
        .as_bytes()
        .iter()
        .chain(Nonce::random().as_bytes())
        .enumerate()
    {
        b[i] = *x;
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_flood_from_one_address_does_not_limit_valid_agents_there() {
    let pki = Pki::new();
    let mut limits = Limits::default();
    // A per-agent quota that forged envelopes claiming "good" would use up at once if they
    // were charged to it, and a small failure budget for the source address.
    limits.per_agent_quota = Quota::per_second(30.0).burst(30);
    limits.per_ip_failure_quota = Some(Quota::per_second(20.0).burst(50));
    let builder = Server::builder(keyring(&["good"]), Pipeline::default().service())
        .tls(pki.server_tls(false))
        .limits(limits);
    let (addr, _task) = spawn(builder).await;
    let s = signer("good");
    let mut seq = 1;
    // The valid agent is connected (and has pushed) before the flood starts; everything
    // below comes from 127.0.0.1.
    let good = no_retry(tls_client(&pki, addr));
    assert_eq!(
        good.push(push_env(&s, seq)).await.unwrap().status(),
        AckStatus::Accepted
    );

    // The flood: 2 connections × 3 tasks of envelopes with a random tag claiming "good".
    let stop = Arc::new(AtomicBool::new(false));
    let limited = Arc::new(AtomicUsize::new(0));
    let flood_start = Instant::now();
    let mut flooders = Vec::new();
    for _ in 0..2 {
        let c = no_retry(tls_client(&pki, addr));
        for _ in 0..3 {
            flooders.push(tokio::spawn(forge_until(
                c.clone(),
                "good",
                stop.clone(),
                limited.clone(),
            )));
        }
    }
    // Wait until the source is being limited.
    while limited.load(Ordering::Relaxed) == 0 && flood_start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A valid agent connecting from the flooded address during the flood gets in.
    let late = no_retry(tls_client(&pki, addr));
    seq += 1;
    let late_ack = late.push(push_env(&s, seq)).await;
    assert!(
        matches!(&late_ack, Ok(a) if a.status() == AckStatus::Accepted),
        "a new connection of a valid agent during the flood: {late_ack:?}"
    );

    // The connected valid agent: one push every 50 ms (below its quota) for 3 s.
    let (mut ok, mut total, mut failures) = (0u32, 0u32, Vec::new());
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        seq += 1;
        total += 1;
        match good.push(push_env(&s, seq)).await {
            Ok(a) if a.status() == AckStatus::Accepted => ok += 1,
            other => failures.push(format!("{other:?}")),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let flood_secs = flood_start.elapsed().as_secs_f64();
    let mut codes = std::collections::HashMap::<(Code, Option<RejectReason>), u64>::new();
    for f in flooders {
        for (k, v) in f.await.unwrap() {
            *codes.entry(k).or_default() += v;
        }
    }
    let rate = f64::from(ok) / f64::from(total);
    eprintln!(
        "good agent: {ok}/{total} ({:.2} %); flood over {flood_secs:.1} s: {codes:?}",
        rate * 100.0
    );
    assert!(total >= 30, "good agent managed only {total} pushes");
    assert!(
        rate >= 0.99,
        "good agent success {ok}/{total}; failures: {:?}",
        &failures[..failures.len().min(3)]
    );
    let verified = codes
        .get(&(Code::Unauthenticated, Some(RejectReason::Unauthenticated)))
        .copied()
        .unwrap_or(0);
    let limited = codes
        .get(&(Code::ResourceExhausted, Some(RejectReason::RateLimited)))
        .copied()
        .unwrap_or(0);
    // Enough forged envelopes reached verification to have used up "good"'s burst of 30
    // had they been charged to it ...
    assert!(
        verified > 30,
        "only {verified} forged envelopes were verified"
    );
    // ... and the source was limited: beyond its failure budget (burst 50 + 20/s, and one
    // probation request per connection) forged envelopes were refused before verification.
    assert!(
        limited > 0,
        "the flooding source was never limited: {codes:?}"
    );
    let budget = 50.0 + 20.0 * flood_secs + 10.0;
    assert!(
        (verified as f64) <= budget,
        "{verified} forged envelopes verified in {flood_secs:.1} s, budget {budget:.0}"
    );
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
