//! Your own tower layers on both sides of the Sentra transport.
//!
//! * Client: `RequestIdLayer` stamps every attempt with an `x-request-id` header and counts
//!   attempts (it runs inside the client's retry layer, so retries are visible).
//! * Server: `AuditLayer` runs before the built-in stack, sees the header, the connection
//!   ([`PeerInfo`]) and the outcome of every call, including rejected ones.
//!
//! Runs in-process by default; `--loopback` serves on 127.0.0.1 (plaintext h2c) instead:
//!
//! ```text
//! cargo run -p sentra-examples --example custom_layer
//! cargo run -p sentra-examples --example custom_layer -- --loopback
//! ```

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use sentra_core::{
    AgentId, Batch, KeyId, MemoryKeyring, Nonce, SecretKey, Seq, Signer, UnixMillis, Validity,
    Verified,
    proto::{Ack, AckStatus, SignedBatch},
};
use sentra_transport::{BoxError, Client, PeerInfo, Server};
use tower::{Layer, Service, service_fn};

/// Client side: adds `x-request-id` to each attempt.
#[derive(Clone, Default)]
struct RequestIdLayer {
    next: Arc<AtomicU64>,
}

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestId<S>;
    fn layer(&self, inner: S) -> RequestId<S> {
        RequestId {
            inner,
            next: self.next.clone(),
        }
    }
}

#[derive(Clone)]
struct RequestId<S> {
    inner: S,
    next: Arc<AtomicU64>,
}

impl<S> Service<tonic::Request<SignedBatch>> for RequestId<S>
where
    S: Service<tonic::Request<SignedBatch>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: tonic::Request<SignedBatch>) -> S::Future {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        if let Ok(v) = format!("req-{id}").parse() {
            req.metadata_mut().insert("x-request-id", v);
        }
        self.inner.call(req)
    }
}

/// Server side: logs who called, with which request id, and how it ended.
#[derive(Clone)]
struct AuditLayer;

impl<S> Layer<S> for AuditLayer {
    type Service = Audit<S>;
    fn layer(&self, inner: S) -> Audit<S> {
        Audit { inner }
    }
}

#[derive(Clone)]
struct Audit<S> {
    inner: S,
}

impl<S, R> Service<tonic::Request<SignedBatch>> for Audit<S>
where
    S: Service<tonic::Request<SignedBatch>, Response = R, Error = BoxError>,
    S::Future: Send + 'static,
    R: 'static,
{
    type Response = R;
    type Error = BoxError;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<R, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: tonic::Request<SignedBatch>) -> Self::Future {
        let id = req
            .metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        let peer = req
            .extensions()
            .get::<PeerInfo>()
            .and_then(PeerInfo::remote_addr)
            .map_or_else(|| "in-process".to_owned(), |a| a.to_string());
        let (agent, seq) = (req.get_ref().agent_id.clone(), req.get_ref().seq);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let out = fut.await;
            let outcome = match &out {
                Ok(_) => "ok".to_owned(),
                Err(e) => format!("{:?}", sentra_transport::status::code_of(&**e)),
            };
            println!("[server audit] {id} from {peer}: agent={agent} seq={seq} -> {outcome}");
            out
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let loopback = std::env::args().any(|a| a == "--loopback");
    let agent = AgentId::new("edge-01")?;
    let secret = SecretKey::from_bytes([42; 32]);
    let mut keyring = MemoryKeyring::new();
    keyring.insert(agent.clone(), KeyId::new(1), &secret, Validity::always());

    // The inner service sees only authenticated envelopes.
    let pipeline = service_fn(|v: Verified| async move {
        let batch = v.decode_batch()?;
        Ok::<_, BoxError>(Ack {
            agent_id: batch.agent_id.to_string(),
            seq: v.seq().get(),
            status: AckStatus::Accepted.into(),
            server_time_ms: UnixMillis::now().as_millis(),
            ..Default::default()
        })
    });
    let server = Server::builder(keyring, pipeline).layer(AuditLayer).build();
    let request_ids = RequestIdLayer::default();

    let (client, _keep) = if loopback {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        println!("serving on http://{addr}");
        tokio::spawn(server.serve(listener));
        let client = Client::builder(format!("http://{addr}"))
            .layer(request_ids.clone())
            .build()?;
        (client, None)
    } else {
        let in_process = server.in_process();
        let client = in_process.client().layer(request_ids.clone()).build()?;
        (client, Some(in_process))
    };

    let signer = Signer::new(agent.clone(), KeyId::new(1), &secret);
    for seq in 1..=3 {
        let batch = Batch::new(agent.clone(), Seq::new(seq)?, UnixMillis::now());
        let ack = client
            .push(signer.sign_batch(&batch, UnixMillis::now(), Nonce::random()))
            .await?;
        println!("[agent] seq {seq}: {:?}", ack.status());
    }
    // A forged envelope: the audit layer sees it rejected as UNAUTHENTICATED.
    let forger = Signer::new(
        agent.clone(),
        KeyId::new(1),
        &SecretKey::from_bytes([0; 32]),
    );
    let batch = Batch::new(agent, Seq::new(4)?, UnixMillis::now());
    let err = client
        .push(forger.sign_batch(&batch, UnixMillis::now(), Nonce::random()))
        .await
        .unwrap_err();
    println!(
        "[agent] forged batch: {err} (retryable: {})",
        err.is_retryable()
    );
    println!(
        "[agent] attempts sent: {}",
        request_ids.next.load(Ordering::Relaxed)
    );
    Ok(())
}
