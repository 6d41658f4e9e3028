//! A real local HTTP receiver (axum on 127.0.0.1:0) that records every request and answers
//! from a script (status and delay per request; 200 at once when the script runs out).
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
