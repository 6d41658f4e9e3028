//! Enrolment and key rotation against the real REST API (`sentra-api` on a loopback socket)
//! and the real gRPC server (`sentra-transport`) verifying with the API's own keyring.
//!
//! An administrator's bootstrap token enrols the agent (credentials written 0600); the agent
//! ships; an administrator rotates the key; the agent collects the new key, persists it and
//! only then signs with it — batches keep flowing, now signed with key 2, and the
//! credentials file holds key 2.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sentra_agent::api::ApiClient;
use sentra_agent::{Agent, Config, Credentials};
use sentra_api::{Actor, Api, ApiConfig};
use sentra_core::Verified;
use sentra_core::proto::{Ack, AckStatus};
use sentra_transport::{BoxError, Server};
use tokio::net::TcpListener;

type Seen = Arc<Mutex<BTreeMap<u64, u32>>>;

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrol_then_rotate_keys_while_shipping() {
    let dir = tempfile::tempdir().expect("tmp");
    let api = Api::open(&dir.path().join("server"), ApiConfig::default())
        .await
        .expect("api");

    // REST API on loopback.
    let rest = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let rest_addr = rest.local_addr().expect("addr");
    let router = api.router();
    tokio::spawn(async move {
        let _ = axum::serve(
            rest,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });

    // gRPC ingest on loopback, verifying with the API's keyring.
    let seen: Seen = Arc::default();
    let seen2 = seen.clone();
    let svc = tower::service_fn(move |v: Verified| {
        let seen = seen2.clone();
        async move {
            let batch = v.decode_batch()?;
            seen.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(v.seq().get(), v.key_id().get());
            Ok::<_, BoxError>(Ack {
                agent_id: batch.agent_id.to_string(),
                seq: v.seq().get(),
                status: AckStatus::Accepted.into(),
                ..Default::default()
            })
        }
    });
    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let grpc_addr = grpc.local_addr().expect("addr");
    let server = Server::builder(api.keyring(), svc).build();
    tokio::spawn(async move {
        let _ = server.serve(grpc).await;
    });

    // Enrolment with a bootstrap token.
    let issued = api
        .store()
        .issue_bootstrap_token(&Actor::local(), Duration::from_secs(600), "test")
        .await
        .expect("token");
    let state = dir.path().join("agent");
    let mut cfg = Config::new(&state);
    cfg.server = Some(format!("http://{grpc_addr}"));
    cfg.api = Some(format!("http://{rest_addr}"));
    cfg.host_interval = Duration::from_millis(50);
    cfg.key_check_interval = Duration::from_millis(200);
    cfg.backoff_initial = Duration::from_millis(20);
    cfg.backoff_max = Duration::from_millis(200);
    cfg.collect_filesystems = false;
    let client = ApiClient::new(cfg.api.as_deref().expect("api"), None).expect("client");
    let creds = client
        .enroll(issued.token.expose_secret(), "edge")
        .await
        .expect("enrol");
    creds.save(&cfg.credentials_file).expect("save");
    let mode = std::fs::metadata(&cfg.credentials_file)
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(creds.key_id().get(), 1);
    // The token is single use.
    assert!(
        client
            .enroll(issued.token.expose_secret(), "edge")
            .await
            .is_err()
    );

    let agent = Agent::new(cfg.clone())
        .expect("agent")
        .without_wireguard()
        .spawn();
    let count = |key: u32| {
        seen.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .filter(|k| **k == key)
            .count()
    };
    wait_for("batches signed with key 1", || count(1) >= 3).await;

    // Rotation by an administrator.
    let rotation = api
        .store()
        .rotate_key(&Actor::local(), creds.agent_id(), Duration::from_secs(120))
        .await
        .expect("rotate");
    assert_eq!(rotation.new_key_id, 2);
    wait_for("batches signed with key 2", || count(2) >= 3).await;
    assert_eq!(agent.health().snapshot().key_rotations, 1);
    let on_disk = Credentials::load(&cfg.credentials_file).expect("load");
    assert_eq!(on_disk.key_id().get(), 2, "the new key is persisted");
    assert_ne!(
        on_disk.secret().expose_secret(),
        creds.secret().expose_secret()
    );
    // Once switched, the agent never goes back to key 1.
    let last_key1 = {
        let s = seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.iter()
            .filter(|(_, k)| **k == 1)
            .map(|(seq, _)| *seq)
            .max()
    };
    let first_key2 = {
        let s = seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.iter()
            .filter(|(_, k)| **k == 2)
            .map(|(seq, _)| *seq)
            .min()
    };
    assert!(last_key1 < first_key2, "{last_key1:?} < {first_key2:?}");
    agent.shutdown().await.expect("stop");
}
