//! A real local HTTP receiver (axum on 127.0.0.1:0) that records every request and answers
//! from a script (status and delay per request; 200 at once when the script runs out), and
//! the batch the engine tests feed: one peer whose last handshake is a given age.
#![allow(dead_code, unreachable_pub)]

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};

#[derive(Clone, Debug)]
pub struct Recorded {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

#[derive(Default)]
struct Inner {
    script: VecDeque<(u16, Duration)>,
    log: Vec<Recorded>,
}

#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let (status, delay) = {
        let mut i = inner.lock().unwrap();
        i.log.push(Recorded {
            headers,
            body,
            at: Instant::now(),
        });
        i.script.pop_front().unwrap_or((200, Duration::ZERO))
    };
    tokio::time::sleep(delay).await;
    (
        StatusCode::from_u16(status).unwrap(),
        format!("answer {status}"),
    )
}

impl Receiver {
    /// Starts a receiver that answers `script` in order, then 200.
    pub async fn start(script: &[(u16, Duration)]) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            script: script.iter().copied().collect(),
            log: Vec::new(),
        }));
        let app = Router::new()
            .route("/hook/{token}", post(handle))
            .with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            addr,
            inner,
            task: Arc::new(task),
        }
    }

    /// The URL (with a path "token", as real webhook URLs have).
    pub fn url(&self) -> String {
        format!("http://{}/hook/s3cr3t-path-token", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().log.clone()
    }

    pub fn count(&self) -> usize {
        self.inner.lock().unwrap().log.len()
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

/// A URL where nothing listens (a port bound, then released).
pub fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}/hook/s3cr3t-path-token")
}

/// Batch `seq` of agent `gw-1`: interface wg0 with one peer (keepalive 25 s) whose last
/// handshake is `handshake_age_s` before `now`.
pub fn peer_batch(
    seq: u64,
    now: sentra_core::UnixMillis,
    handshake_age_s: i64,
) -> sentra_core::Batch {
    use sentra_core::{AgentId, Batch, Seq, UnixMillis, WgDevice, WgPeer, WgPublicKey};
    let peer = WgPeer::new(WgPublicKey::from_bytes([7; 32]))
        .with_last_handshake(UnixMillis::from_millis(
            now.as_millis() - handshake_age_s * 1000,
        ))
        .with_persistent_keepalive_s(25);
    Batch::new(AgentId::new("gw-1").unwrap(), Seq::new(seq).unwrap(), now).with_wg_devices(vec![
        WgDevice::new("wg0", 4)
            .with_listen_port(51820)
            .with_peers(vec![peer]),
    ])
}

/// Feeds `peer_batch(seq, now, age_s)` for each seq to an engine, 60 ms apart.
pub async fn feed(
    tx: &tokio::sync::mpsc::Sender<sentra_alerts::engine::Feed>,
    seqs: std::ops::RangeInclusive<u64>,
    age_s: i64,
) {
    for seq in seqs {
        let now = sentra_core::UnixMillis::now();
        tx.send(sentra_alerts::engine::Feed::Batch(
            Arc::new(peer_batch(seq, now, age_s)),
            now,
        ))
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
}

/// Waits up to 10 s (500 × 20 ms) for `cond`.
pub async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The `status` of every notification the receiver got, in order.
pub fn statuses(rx: &Receiver) -> Vec<String> {
    rx.requests()
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            v["status"].as_str().unwrap().to_owned()
        })
        .collect()
}
