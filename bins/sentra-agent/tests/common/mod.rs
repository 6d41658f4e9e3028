//! The in-test gRPC server harness shared by `ship.rs` and `disk_full.rs`: a real
//! sentra-transport server (HMAC verification included) on a loopback socket, stopped and
//! restarted on the same address, plus the agent credentials and configuration both use.
//! Each test file keeps its own push service (what the server stores and answers).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sentra_agent::{Config, Credentials};
use sentra_core::proto::Ack;
use sentra_core::{AgentId, KeyId, MemoryKeyring, SecretKey, Validity, Verified};
use sentra_transport::{BoxError, Server};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower::Service;

/// A loopback address with a port chosen by the system.
pub(crate) fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

/// Locks a test pipeline, ignoring poisoning (a failed assertion inside the service).
pub(crate) fn lock<T>(p: &Mutex<T>) -> MutexGuard<'_, T> {
    p.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) struct RunningServer {
    pub(crate) addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// Serves `svc` on `addr`, retrying the bind for up to 10 s (a restart on the address a
/// stopped server just released).
pub(crate) async fn start_server<S>(
    addr: SocketAddr,
    keyring: MemoryKeyring,
    svc: S,
) -> RunningServer
where
    S: Service<Verified, Response = Ack> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let listener = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("bind {addr}: {e}"),
            }
        }
    };
    let addr = listener.local_addr().expect("addr");
    let server = Server::builder(keyring, svc).build();
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = server
            .serve_with_shutdown(listener, async {
                let _ = rx.await;
            })
            .await;
    });
    RunningServer { addr, stop, task }
}

pub(crate) async fn stop_server(s: RunningServer) {
    let _ = s.stop.send(());
    let mut task = s.task;
    if tokio::time::timeout(Duration::from_secs(2), &mut task)
        .await
        .is_err()
    {
        task.abort();
        let _ = task.await;
    }
}

/// Credentials for agent `agent` (key 1, every byte of the secret `secret`) and a server
/// keyring that knows them.
pub(crate) fn creds(agent: &str, secret: u8) -> (Credentials, MemoryKeyring) {
    let agent = AgentId::new(agent).expect("id");
    let secret = SecretKey::from_bytes([secret; 32]);
    let mut keyring = MemoryKeyring::new();
    keyring.insert(agent.clone(), KeyId::new(1), &secret, Validity::always());
    (Credentials::new(agent, KeyId::new(1), secret), keyring)
}

/// An agent configuration shipping to `server`, collecting host metrics every
/// `host_interval` (no file systems), with short timeouts and backoff.
pub(crate) fn config(
    state: &Path,
    server: SocketAddr,
    creds: &Credentials,
    host_interval: Duration,
) -> Config {
    let mut c = Config::new(state);
    c.server = Some(format!("http://{server}"));
    c.credentials = Some(creds.clone());
    c.host_interval = host_interval;
    c.push_timeout = Duration::from_secs(2);
    c.backoff_initial = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c.collect_filesystems = false;
    c
}
