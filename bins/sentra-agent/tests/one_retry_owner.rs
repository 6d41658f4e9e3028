//! One retry owner (issue 13): the shipper retries failed pushes (re-signed, with backoff);
//! the gRPC client underneath makes exactly one attempt per push. Against a real
//! sentra-transport server on loopback whose backend fails the first pushes with a retryable
//! status (`UNAVAILABLE`): every failure the server gives is one failure the shipper sees.
//! With the client's own retry on (its default, 5 attempts), several server failures were
//! swallowed by one shipper attempt, with the same envelope and nonce re-sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use sentra_agent::{Agent, Config, Credentials};
use sentra_core::proto::{Ack, AckStatus};
use sentra_core::{AgentId, KeyId, MemoryKeyring, SecretKey, Validity, Verified};
use sentra_transport::{BoxError, Server};
use tokio::net::TcpListener;

/// Pushes the backend fails before it accepts.
const FAILURES: u64 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failed_push_is_one_rpc_retried_by_the_shipper_only() {
    let agent_id = AgentId::new("edge-retry").expect("id");
    let secret = SecretKey::from_bytes([7; 32]);
    let mut keyring = MemoryKeyring::new();
    keyring.insert(agent_id.clone(), KeyId::new(1), &secret, Validity::always());

    let calls = Arc::new(AtomicU64::new(0));
    let svc = {
        let calls = calls.clone();
        tower::service_fn(move |v: Verified| {
            let n = calls.fetch_add(1, SeqCst) + 1;
            async move {
                if n <= FAILURES {
                    return Err::<Ack, BoxError>("backend down".into());
                }
                Ok(Ack {
                    agent_id: v.agent_id().to_string(),
                    seq: v.seq().get(),
                    status: AckStatus::Accepted.into(),
                    ..Default::default()
                })
            }
        })
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = Server::builder(keyring, svc).build();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = server
            .serve_with_shutdown(listener, async {
                let _ = rx.await;
            })
            .await;
    });

    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = Config::new(dir.path().join("agent"));
    cfg.server = Some(format!("http://{addr}"));
    cfg.credentials = Some(Credentials::new(agent_id, KeyId::new(1), secret));
    cfg.host_interval = Duration::from_millis(200);
    cfg.push_timeout = Duration::from_secs(5);
    cfg.backoff_initial = Duration::from_millis(10);
    cfg.backoff_max = Duration::from_millis(50);
    cfg.collect_filesystems = false;
    let agent = Agent::new(cfg).expect("agent").without_wireguard().spawn();

    let deadline = Instant::now() + Duration::from_secs(30);
    while agent.health().snapshot().accepted == 0 {
        assert!(
            Instant::now() < deadline,
            "nothing accepted: {:?}, server calls {}",
            agent.health().snapshot(),
            calls.load(SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let h = agent.health().snapshot();
    agent.shutdown().await.expect("stop");
    let _ = stop.send(());
    let _ = task.await;

    assert_eq!(
        h.push_failures, FAILURES,
        "every UNAVAILABLE the server gave must reach the shipper as one failed push \
         (fewer: the client retried underneath the shipper): {h:?}"
    );
}
