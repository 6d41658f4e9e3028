//! Signed-batch round trips over loopback TLS: the full Sentra stack (client middleware,
//! accept loop, every server layer, HMAC verification) against a bare tonic echo service on
//! tonic's own TLS with the same certificate and the same HTTP/2 and TCP settings, carrying
//! the same envelope bytes, in the same run. Plain timing loop (not criterion): each case
//! runs a fixed time with C concurrent callers on one HTTP/2 connection; besides round
//! trips per second it reports the process's CPU time per call (client and server
//! together), which a loaded machine disturbs less than the rate.
//!
//! ```text
//! cargo bench -p sentra-transport --bench transport            # 3 s per case
//! SENTRA_BENCH_SECS=1 cargo bench -p sentra-transport --bench transport
//! SENTRA_BENCH_PAYLOADS=65536 SENTRA_BENCH_STREAMS=1 cargo bench ...  # one size, one C
//! SENTRA_BENCH_CASES="full stack,bare+HMAC" cargo bench ...  # only these setups (bare,
//!                                                  # bare+HMAC, server stack, full stack)
//! cargo test -p sentra-transport --bench transport              # 50 ms smoke run per case
//! ```
#![allow(missing_docs)]

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sentra_core::{
    AgentId, KeyId, MemoryKeyring, Method, Nonce, SecretKey, Seq, Signer, UnixMillis, Validity,
    Verified, Verifier,
    proto::{Ack, AckStatus, DesiredState, SignedBatch},
};
use sentra_transport::{
    BoxError, Client, ClientConfig, Limits, Server,
    pb::{
        ingest_client::IngestClient,
        ingest_server::{Ingest, IngestServer},
    },
    rate_limit::Quota,
    tls::ServerTls,
};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};
use tower::service_fn;

struct Pki {
    ca: String,
    cert: String,
    key: String,
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = p.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    Pki {
        ca: ca.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// The bare baselines: answer every push at once, with no verification, or after the same
/// HMAC verification the Sentra server does (`sentra_core::Verifier` against the same
/// keyring), so the stack's own cost shows apart from the MAC.
struct Echo {
    verify: Option<(Verifier, MemoryKeyring)>,
}

#[tonic::async_trait]
impl Ingest for Echo {
    async fn push(
        &self,
        req: tonic::Request<SignedBatch>,
    ) -> Result<tonic::Response<Ack>, tonic::Status> {
        let env = req.into_inner();
        if let Some((verifier, keyring)) = &self.verify {
            verifier
                .verify(&env, Method::Push, UnixMillis::now(), keyring)
                .map_err(|e| tonic::Status::unauthenticated(e.to_string()))?;
        }
        Ok(tonic::Response::new(ack(&env.agent_id, env.seq)))
    }

    async fn fetch_desired_state(
        &self,
        _req: tonic::Request<SignedBatch>,
    ) -> Result<tonic::Response<DesiredState>, tonic::Status> {
        Err(tonic::Status::unimplemented(""))
    }
}

fn ack(agent: &str, seq: u64) -> Ack {
    Ack {
        agent_id: agent.to_owned(),
        seq,
        status: AckStatus::Accepted.into(),
        ..Default::default()
    }
}

fn envelopes(payload: usize) -> Arc<Vec<SignedBatch>> {
    let agent = AgentId::new("bench").unwrap();
    let signer = Signer::new(agent, KeyId::new(1), &SecretKey::from_bytes([9; 32]));
    let body: bytes::Bytes = vec![0x5a; payload].into();
    Arc::new(
        (1..=256)
            .map(|i| {
                signer.sign(
                    Method::Push,
                    Seq::new(i).unwrap(),
                    UnixMillis::now(),
                    Nonce::random(),
                    body.clone(),
                )
            })
            .collect(),
    )
}

/// One call; `Err` carries the failure's text (status code and message), so a failed run
/// says why instead of only that it failed.
type Caller = Arc<
    dyn Fn(SignedBatch) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>
        + Send
        + Sync,
>;

/// CPU time of this process so far (user + system, all threads), from `/proc/self/stat`
/// (clock ticks of 10 ms: a 0.5 s round on two busy cores is ~100 ticks).
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

/// Calls/s, CPU per call (client and server together), failed calls, the first failure.
struct Run {
    rate: f64,
    cpu_per_call: Duration,
    failed: u64,
    first_error: Option<String>,
}

async fn run(call: Caller, envs: Arc<Vec<SignedBatch>>, streams: usize, secs: f64) -> Run {
    // Warm up the connection.
    for e in envs.iter().take(8) {
        if let Err(e) = call(e.clone()).await {
            panic!("warm-up call failed: {e}");
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None));
    let cpu0 = process_cpu();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..streams {
        let (call, envs, stop, done, failed, first_error) = (
            call.clone(),
            envs.clone(),
            stop.clone(),
            done.clone(),
            failed.clone(),
            first_error.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                match call(envs[i % envs.len()].clone()).await {
                    Ok(()) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        first_error.lock().unwrap().get_or_insert(e);
                    }
                }
                i += streams;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = process_cpu().saturating_sub(cpu0);
    let first_error = first_error.lock().unwrap().take();
    let calls = done.load(Ordering::Relaxed);
    Run {
        rate: calls as f64 / elapsed,
        cpu_per_call: cpu / u32::try_from(calls.max(1)).unwrap_or(u32::MAX),
        failed: failed.load(Ordering::Relaxed),
        first_error,
    }
}

fn keyring() -> MemoryKeyring {
    let mut keyring = MemoryKeyring::new();
    keyring.insert(
        AgentId::new("bench").unwrap(),
        KeyId::new(1),
        &SecretKey::from_bytes([9; 32]),
        Validity::always(),
    );
    keyring
}

async fn sentra_server(pki: &Pki) -> SocketAddr {
    let keyring = keyring();
    let mut limits = Limits::default();
    // One agent sends everything here: lift its quota, and allow more than 64 streams on
    // the connection (defaults: 20/s per agent, 32 per connection; the headroom avoids a
    // race where a response reaches the client before the server releases its slot, which
    // would shed a raw client's next call).
    // A burst tolerance of ~1 s (10^6 at 10^6/s), not 1 ms (10^6 at 10^9/s): a request
    // whose handler was preempted on the loaded machine must not look early.
    limits.per_agent_quota = Quota::per_second(1e6).burst(1_000_000);
    limits.concurrency_limit_per_connection = 128;
    limits.per_ip_failure_quota = None;
    let pipeline = service_fn(|v: Verified| async move {
        Ok::<_, BoxError>(ack(v.agent_id().as_str(), v.seq().get()))
    });
    let server = Server::builder(keyring, pipeline)
        .tls(ServerTls::from_pem(pki.cert.as_bytes(), pki.key.as_bytes(), None).unwrap())
        .limits(limits)
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server.serve(listener));
    addr
}

async fn bare_server(pki: &Pki, verify: bool) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = ServerTlsConfig::new().identity(Identity::from_pem(&pki.cert, &pki.key));
    // Same transport and HTTP/2 settings as the Sentra server (nodelay, TCP and h2
    // keepalive, h2 windows, frame and header list sizes, stream cap), no middleware: no
    // concurrency limit, load shedding or timeouts (those are the stack's own cost).
    let l = Limits::default();
    let server = tonic::transport::Server::builder()
        .tls_config(tls)
        .unwrap()
        .tcp_nodelay(true)
        .tcp_keepalive(Some(l.tcp_keepalive))
        .http2_keepalive_interval(Some(l.http2_keepalive_interval))
        .http2_keepalive_timeout(Some(l.http2_keepalive_timeout))
        .max_concurrent_streams(l.max_concurrent_streams)
        .initial_stream_window_size(l.initial_stream_window_size)
        .initial_connection_window_size(l.initial_connection_window_size)
        .http2_adaptive_window(Some(false))
        .http2_max_header_list_size(l.http2_max_header_list_size)
        .max_frame_size(l.max_frame_size)
        .add_service(IngestServer::new(Echo {
            verify: verify.then(|| (Verifier::new(), keyring())),
        }));
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(server.serve_with_incoming(incoming));
    addr
}

async fn raw_caller(pki: &Pki, addr: SocketAddr) -> Caller {
    // The channel settings of the Sentra `Client` (its defaults), without its middleware.
    let c = ClientConfig::default();
    let channel = Endpoint::from_shared(format!("https://localhost:{}", addr.port()))
        .unwrap()
        .tcp_nodelay(true)
        .tcp_keepalive(Some(c.tcp_keepalive))
        .http2_keep_alive_interval(c.http2_keepalive_interval)
        .keep_alive_timeout(c.http2_keepalive_timeout)
        .keep_alive_while_idle(false)
        .initial_stream_window_size(c.initial_stream_window_size)
        .initial_connection_window_size(c.initial_connection_window_size)
        .http2_adaptive_window(false)
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&pki.ca)))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let raw = IngestClient::new(channel);
    Arc::new(move |e| {
        let mut c = raw.clone();
        Box::pin(async move {
            c.push(e)
                .await
                .map(drop)
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
        })
    })
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // as a short smoke test (every call must succeed).
    let benching = std::env::args().any(|a| a == "--bench");
    let secs: f64 = std::env::var("SENTRA_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if benching { 3.0 } else { 0.05 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pki = pki();
        let sentra_addr = sentra_server(&pki).await;
        let bare_addr = bare_server(&pki, false).await;
        let hmac_addr = bare_server(&pki, true).await;
        println!(
            "| payload | streams | bare tonic rt/s | bare MB/s | bare + HMAC verify rt/s (/ bare) | server stack only rt/s (/ bare+HMAC) | full stack rt/s | full MB/s | full / bare | full / bare+HMAC | CPU µs/call: bare / +HMAC / server stack / full | CPU bare+HMAC / full |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
        let only = |var: &str, all: Vec<usize>| -> Vec<usize> {
            std::env::var(var).ok().map_or(all, |v| {
                v.split(',').filter_map(|x| x.trim().parse().ok()).collect()
            })
        };
        for payload in only("SENTRA_BENCH_PAYLOADS", vec![1024, 64 * 1024]) {
            let envs = envelopes(payload);
            for &streams in &only("SENTRA_BENCH_STREAMS", vec![1, 64]) {
                // Fresh connections per case. `bare`: raw tonic client -> bare echo server.
                // `server`: raw tonic client -> Sentra server (server-side stack only).
                // `full`: Sentra client -> Sentra server.
                let client = Client::builder(format!("https://localhost:{}", sentra_addr.port()))
                    .ca_pem(pki.ca.clone())
                    .concurrency_limit(64)
                    .build()
                    .unwrap();
                let full: Caller = Arc::new(move |e| {
                    let c = client.clone();
                    Box::pin(async move { c.push(e).await.map(drop).map_err(|e| e.to_string()) })
                });
                let bare = raw_caller(&pki, bare_addr).await;
                let hmac = raw_caller(&pki, hmac_addr).await;
                let server = raw_caller(&pki, sentra_addr).await;
                // Interleave short rounds so all four see the same background load.
                let rounds = 4;
                let slice = secs / f64::from(rounds);
                let mut rates = [0.0f64; 4];
                let mut cpu = [Duration::ZERO; 4];
                let mut failures = Vec::new();
                // SENTRA_BENCH_CASES="full stack,bare+HMAC" runs only those setups (to profile
                // one of them: `perf record` around a run of a single setup).
                let cases = std::env::var("SENTRA_BENCH_CASES").ok();
                let wanted = |name: &str| {
                    cases
                        .as_deref()
                        .is_none_or(|c| c.split(',').any(|x| x.trim() == name))
                };
                let setups = [
                    ("bare", &bare),
                    ("bare+HMAC", &hmac),
                    ("server stack", &server),
                    ("full stack", &full),
                ];
                for round in 0..rounds {
                    // Each round starts with the next setup, so none always runs first or
                    // right after the same neighbour.
                    for k in (0..setups.len()).map(|j| (j + round as usize) % setups.len()) {
                        let (name, caller) = setups[k];
                        if !wanted(name) {
                            continue;
                        }
                        let r = run(caller.clone(), envs.clone(), streams, slice).await;
                        rates[k] += r.rate / f64::from(rounds);
                        cpu[k] += r.cpu_per_call / rounds;
                        if r.failed > 0 {
                            failures.push(format!(
                                "{name}: {} failed, first: {}",
                                r.failed,
                                r.first_error.unwrap_or_default()
                            ));
                        }
                    }
                }
                let [b, h, sv, f] = rates;
                let mb = |rt: f64| rt * payload as f64 / 1e6;
                let us = |d: Duration| d.as_secs_f64() * 1e6;
                println!(
                    "| {} KiB | {streams} | {b:.0} | {:.1} | {h:.0} ({:.2}) | {sv:.0} ({:.2}) | {f:.0} | {:.1} | {:.2} | {:.2} | {:.1} / {:.1} / {:.1} / {:.1} | {:.2} |",
                    payload / 1024,
                    mb(b),
                    h / b,
                    sv / h,
                    mb(f),
                    f / b,
                    f / h,
                    us(cpu[0]),
                    us(cpu[1]),
                    us(cpu[2]),
                    us(cpu[3]),
                    us(cpu[1]) / us(cpu[3]),
                );
                assert!(failures.is_empty(), "failed calls: {failures:?}");
            }
        }
    });
}
