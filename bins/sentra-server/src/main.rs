//! `sentra-server`: the reference server.
//!
//! Composes `sentra-ingest` (pipeline, storage, status cache), `sentra-api` (REST API and
//! control plane) and `sentra-transport` (gRPC ingest), and optionally runs a
//! `sentra-agent` inside the process (`--local-agent`). All logic lives in the libraries;
//! this file only wires them together.

use std::{net::SocketAddr, path::Path, process::ExitCode, sync::Arc, time::Duration};

use anyhow::{Context as _, anyhow};
use clap::Parser as _;
use sentra_ingest::{IngestHealth, StorageHealth};
use tokio::{sync::watch, task::JoinHandle};
use tracing::{error, info, warn};

mod alerts;
mod config;
mod local_agent;
mod observe;
mod status_line;

use config::{Cli, Config, LogFormat, Role};

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Resolves when SIGINT or SIGTERM arrives.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sentra-server: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    init_tracing(config.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(config));
    // A task stuck in a blocking call must not keep a failed server alive.
    rt.shutdown_timeout(Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Non-zero: a service manager restarts the server.
            error!("sentra-server stopped: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn wait(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn run(config: Config) -> anyhow::Result<()> {
    match config.role {
        Role::Worker => return run_worker(config).await,
        Role::Ingest => return run_ingest(config).await,
        Role::Api => return run_api(config).await,
        Role::All => {}
    }
    sentra_transport::tls::install_crypto_provider();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    restrict_dir(&config.data_dir)?;
    // A second server on the same directory is refused by the stores' own locks, naming the
    // holder's pid: `ingest.lock` (embedded metric store) and `control.lock` (SQLite control
    // store, `lock_data_dir` below).

    let mut ingest_config = sentra_ingest::Config::default();
    ingest_config.retention = config.retention;
    let ingest = match &config.database_url {
        None => sentra_ingest::Ingest::open(&config.data_dir, ingest_config)
            .await
            .with_context(|| {
                format!("opening the metrics store in {}", config.data_dir.display())
            })?,
        // The error names host, port, database and user, never the URL (it may carry a
        // password).
        Some(url) => sentra_ingest::Ingest::open_with(
            sentra_ingest::Backend::postgres(url.expose_secret()),
            ingest_config,
        )
        .await
        .context("opening the PostgreSQL metric store")?,
    };
    let ingest = Arc::new(ingest);
    let mut api_config = sentra_api::ApiConfig::default();
    api_config.store.lock_data_dir = true;
    api_config.metrics_token = config.metrics_token.clone();
    api_config.metrics_peer_endpoints = config.metrics_peer_endpoints;
    let api = match &config.control_database_url {
        None => {
            sentra_api::Api::open_with_ingest(&config.data_dir, api_config, Some(ingest.clone()))
                .await
                .with_context(|| {
                    format!("opening the control store in {}", config.data_dir.display())
                })?
        }
        Some(url) => {
            // The error names what failed, never the URL (it may carry a password).
            let store = sentra_control::ControlStore::open_postgres(
                url.expose_secret(),
                api_config.store.clone(),
            )
            .await
            .context("opening the PostgreSQL control database")?;
            info!(
                "control plane: PostgreSQL (changes made through other servers sharing it apply within 250 ms)"
            );
            sentra_api::Api::open_with_store(
                &config.data_dir,
                store,
                api_config,
                Some(ingest.clone()),
            )
            .await
            .with_context(|| format!("opening the API in {}", config.data_dir.display()))?
        }
    };

    let readiness = api.readiness().clone();
    let (stop_tx, stop_rx) = watch::channel(false);
    // Before gRPC accepts batches, so the engine sees every stored one.
    let alert_engine = alerts::start(
        &config.alerts,
        &config.data_dir,
        &api,
        &ingest,
        config
            .control_database_url
            .as_ref()
            .map(|u| u.expose_secret()),
    )?;

    // gRPC ingest.
    let grpc_listener = tokio::net::TcpListener::bind(config.grpc_listen)
        .await
        .with_context(|| format!("binding gRPC to {}", config.grpc_listen))?;
    let grpc_addr = grpc_listener.local_addr()?;
    // One registry: the transport's series join the API's and the ingest's on /metrics.
    let transport_metrics = sentra_transport::metrics::Metrics::new();
    api.register_metrics(|r| transport_metrics.register(r));
    let mut builder = sentra_transport::Server::builder(api.keyring(), ingest.service())
        .desired_state(api.desired_state_service())
        .limits(config.grpc_limits.clone())
        .metrics(transport_metrics);
    if let Some((cert, key)) = &config.tls {
        builder = builder.tls(
            sentra_transport::tls::ServerTls::from_files(cert, key, None)
                .context("loading the gRPC TLS certificate and key")?,
        );
    }
    let mut grpc = tokio::spawn(
        builder
            .build()
            .serve_with_shutdown(grpc_listener, wait(stop_rx.clone())),
    );
    readiness.set_ready(GRPC);

    // REST API.
    let (api_addr, api_scheme, mut rest) = serve_rest(&config, &api, stop_rx.clone()).await?;
    readiness.set_ready(REST);

    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    info!(
        data_dir = %config.data_dir.display(),
        grpc = %format!("{scheme}://{grpc_addr}"),
        api = %format!("{api_scheme}://{api_addr}"),
        "sentra-server ready"
    );
    let storage = match (&config.database_url, &config.control_database_url) {
        (None, None) => format!("embedded storage in {}", config.data_dir.display()),
        (None, Some(_)) => format!(
            "embedded metric storage in {}, control plane in PostgreSQL",
            config.data_dir.display()
        ),
        (Some(_), _) => format!(
            "PostgreSQL storage, data directory {}",
            config.data_dir.display()
        ),
    };
    eprintln!(
        "sentra-server {} — {storage}\n  gRPC ingest  {scheme}://{grpc_addr}\n  REST API     {api_scheme}://{api_addr}   (OpenAPI: /api/v1/openapi.json, Prometheus: /metrics)\n",
        env!("CARGO_PKG_VERSION"),
    );
    if api.store().list_users().await.is_ok_and(|u| u.is_empty()) {
        if config.control_database_url.is_none() {
            eprintln!(
                "No users yet. Create the first admin:  sentra init --data-dir {}\n",
                config.data_dir.display()
            );
        } else {
            eprintln!(
                "No users yet. Create the first admin in the PostgreSQL control plane:  sentra init --control-database-url-file FILE  (FILE: the file holding this server's database URL)\n"
            );
        }
    }

    let mut agent = if config.local_agent {
        let handle = local_agent::start(
            &config,
            &api,
            format!("{scheme}://{grpc_addr}"),
            stop_rx.clone(),
        )
        .await
        .context("starting the local agent")?;
        readiness.set_ready(LOCAL_AGENT);
        Some(handle)
    } else {
        None
    };
    let status = config
        .status_interval
        .map(|every| tokio::spawn(status_line::run(ingest.clone(), every, stop_rx.clone())));

    // Supervision: every long-lived task must run until we stop it. One that ends (error,
    // panic or plain return) is logged with its error, fails /readyz, and stops the process
    // with a non-zero exit: a service manager restarts it whole rather than half-alive.
    let died: Option<(&str, anyhow::Error)> = tokio::select! {
        () = shutdown_signal() => {
            info!("shutdown requested");
            None
        }
        e = task_end(GRPC, &mut grpc) => Some((GRPC, e)),
        e = task_end(REST, &mut rest) => Some((REST, e)),
        e = optional_task_end(LOCAL_AGENT, agent.as_mut()) => Some((LOCAL_AGENT, e)),
        e = watch_ingest(ingest.watch_health()) => Some((INGEST, e)),
    };
    if let Some((task, e)) = &died {
        let message = format!("{e:#}");
        error!(task, error = %message, "server task ended unexpectedly; stopping the server");
        readiness.set_failing(task, message);
    }
    let _ = stop_tx.send(true);
    // Bounded waits: a server stopping after a failure must not hang on a stuck task.
    if let Some(agent) = agent.filter(|_| !matches!(died, Some((LOCAL_AGENT, _)))) {
        match tokio::time::timeout(Duration::from_secs(10), agent).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => warn!(error = %format!("{e:#}"), "local agent stopped with an error"),
            Ok(Err(e)) => warn!(error = %e, "local agent task failed"),
            Err(_) => warn!("local agent did not stop within 10 s"),
        }
    }
    if let Some(status) = status {
        status.abort();
    }
    if !matches!(died, Some((REST, _))) {
        stopped_within_10s(REST, rest).await;
    }
    // Evaluates what arrived, lets receivers finish, saves the alert state.
    alerts::shutdown(alert_engine).await;
    drop(api);
    // Commits what is queued and applies staged samples, so a graceful stop leaves every
    // acknowledged batch queryable (a crash leaves them staged; the next start applies them).
    let flushed = tokio::time::timeout(Duration::from_secs(30), ingest.shutdown()).await;
    if let Some((task, e)) = died {
        if let Ok(Err(f)) = flushed {
            warn!(error = %f, "flushing the metrics store failed too");
        }
        return Err(e.context(format!("{task} ended unexpectedly")));
    }
    flushed
        .map_err(|_| anyhow!("flushing the metrics store did not finish within 30 s"))?
        .context("flushing the metrics store")?;
    info!("stopped");
    Ok(())
}

/// Binds and serves the REST API (with TLS if configured) until `stop`: the address,
/// the scheme and the server task.
async fn serve_rest(
    config: &Config,
    api: &sentra_api::Api,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, &'static str, JoinHandle<std::io::Result<()>>)> {
    let api_listener = tokio::net::TcpListener::bind(config.api_listen)
        .await
        .with_context(|| format!("binding the REST API to {}", config.api_listen))?;
    let api_addr = api_listener.local_addr()?;
    let router = api.router();
    let rest = match &config.api_tls {
        Some((cert, key)) => {
            use axum::serve::ListenerExt as _;
            let tls = sentra_api::ApiTls::from_files(cert, key)
                .context("loading the REST API TLS certificate and key")?;
            // `tap_io` keeps `ConnectInfo<SocketAddr>` (the per-address login limit) working.
            let listener = sentra_api::TlsListener::new(api_listener, tls)?.tap_io(|_| {});
            tokio::spawn(
                axum::serve(
                    listener,
                    router.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(wait(stop))
                .into_future(),
            )
        }
        None => tokio::spawn(
            axum::serve(
                api_listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(wait(stop))
            .into_future(),
        ),
    };
    let scheme = if config.api_tls.is_some() {
        "https"
    } else {
        "http"
    };
    Ok((api_addr, scheme, rest))
}

/// `--role api`: the REST API, dashboard, `/metrics` and `/readyz` on the shared PostgreSQL
/// control and metric stores, with no gRPC ingest and no writer. Its status cache, live
/// stream (`/api/v1/status/stream`) and alert engine follow the JetStream bus (an ephemeral
/// ordered consumer, see `sentra_ingest::bus::jetstream::BusFollower`), warmed up from the
/// metric store at start. With NATS unreachable `/readyz` is 503 naming nats and the REST
/// API still serves what is stored; with the metric store unreachable it is 503 naming
/// postgres (probed every second).
async fn run_api(config: Config) -> anyhow::Result<()> {
    use sentra_ingest::bus::jetstream::{BusFollower, BusMetrics, open_follower_store};
    sentra_transport::tls::install_crypto_provider();
    let (Some(bus), Some(url), Some(control_url)) = (
        config.bus.clone(),
        config.database_url.clone(),
        config.control_database_url.clone(),
    ) else {
        anyhow::bail!("--role api needs [bus] nats_urls and the PostgreSQL databases");
    };
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    restrict_dir(&config.data_dir)?;
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let mut api_config = sentra_api::ApiConfig::default();
    api_config.store.lock_data_dir = true;
    api_config.metrics_token = config.metrics_token.clone();
    api_config.metrics_peer_endpoints = config.metrics_peer_endpoints;
    // PostgreSQL may still be starting: retry with backoff, as the other roles do.
    let mut backoff = Duration::from_millis(200);
    let (ingest, store) = loop {
        let attempt = async {
            let mut ingest_config = sentra_ingest::Config::default();
            ingest_config.retention = config.retention;
            // The errors name host, port, database and user, never the URL.
            let ingest = open_follower_store(url.expose_secret(), ingest_config)
                .await
                .context("opening the PostgreSQL metric store (read-only)")?;
            let store = sentra_control::ControlStore::open_postgres(
                control_url.expose_secret(),
                api_config.store.clone(),
            )
            .await
            .context("opening the PostgreSQL control database")?;
            anyhow::Ok((ingest, store))
        };
        match attempt.await {
            Ok(o) => break o,
            Err(e) => {
                warn!(error = %format!("{e:#}"), retry_in = ?backoff, "api server not started yet");
                tokio::select! {
                    () = &mut stop => {
                        info!("shutdown requested");
                        return Ok(());
                    }
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    };
    let ingest = Arc::new(ingest);
    let api =
        sentra_api::Api::open_with_store(&config.data_dir, store, api_config, Some(ingest.clone()))
            .await
            .with_context(|| format!("opening the API in {}", config.data_dir.display()))?;
    let readiness = api.readiness().clone();
    readiness.set_failing(observe::NATS, "connecting to NATS JetStream");
    let bus_metrics = BusMetrics::new();
    api.register_metrics(|r| bus_metrics.register(r));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Fed from the bus like the status cache; with `[alerts] lease = true` one API server
    // evaluates the whole fleet.
    let alert_engine = alerts::start(
        &config.alerts,
        &config.data_dir,
        &api,
        &ingest,
        Some(control_url.expose_secret()),
    )?;
    let (api_addr, api_scheme, mut rest) = serve_rest(&config, &api, stop_rx.clone()).await?;
    readiness.set_ready(REST);
    let follower: Arc<std::sync::OnceLock<Arc<BusFollower>>> = Arc::default();
    let mut follow = {
        let follower = Arc::clone(&follower);
        let ingest = Arc::clone(&ingest);
        let readiness = readiness.clone();
        let stop_rx = stop_rx.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            let f = loop {
                match BusFollower::connect_with(bus.clone(), bus_metrics.clone()).await {
                    Ok(f) => break Arc::new(f),
                    Err(e) => {
                        let why =
                            format!("NATS JetStream unreachable: {:#}", anyhow::Error::new(e));
                        warn!(error = %why, retry_in = ?backoff, "not following the bus yet");
                        readiness.set_failing(observe::NATS, why);
                        tokio::select! {
                            () = wait(stop_rx.clone()) => return Ok(()),
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            };
            readiness.set_ready(observe::NATS);
            let _ = follower.set(Arc::clone(&f));
            f.run(&ingest, wait(stop_rx)).await
        })
    };
    let probe = {
        let follower = Arc::clone(&follower);
        let readiness = readiness.clone();
        let ingest = Arc::clone(&ingest);
        tokio::spawn(observe::every_second(stop_rx.clone(), move || {
            let connected = follower.get().map(|f| f.is_connected());
            let readiness = readiness.clone();
            let ingest = Arc::clone(&ingest);
            async move {
                // The metric store: queries, history and warm-up read it.
                let failing = match tokio::time::timeout(
                    Duration::from_secs(2),
                    ingest.ping_store(),
                )
                .await
                {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(format!(
                        "PostgreSQL metric store unreachable: {:#}; stored metrics are not served",
                        anyhow::Error::new(e)
                    )),
                    Err(_) => Some("PostgreSQL metric store did not answer within 2 s".to_owned()),
                };
                observe::set_component(&readiness, observe::POSTGRES, failing);
                if let Some(connected) = connected {
                    observe::set_component(
                        &readiness,
                        observe::NATS,
                        (!connected).then(|| {
                            "not connected to NATS JetStream (reconnecting with backoff); the \
                             live status and alerts wait, stored data is served"
                                .to_owned()
                        }),
                    );
                }
            }
        }))
    };
    info!(api = %format!("{api_scheme}://{api_addr}"), "sentra-server api ready (REST API, live status from NATS JetStream)");
    eprintln!(
        "sentra-server {} — api: REST API on PostgreSQL, live status from NATS JetStream\n  REST API     {api_scheme}://{api_addr}   (OpenAPI: /api/v1/openapi.json, Prometheus: /metrics)\n",
        env!("CARGO_PKG_VERSION")
    );
    let died: Option<(&str, anyhow::Error)> = tokio::select! {
        () = &mut stop => {
            info!("shutdown requested");
            None
        }
        e = task_end(REST, &mut rest) => Some((REST, e)),
        e = task_end(FOLLOWER, &mut follow) => Some((FOLLOWER, e)),
    };
    if let Some((task, e)) = &died {
        let message = format!("{e:#}");
        error!(task, error = %message, "server task ended unexpectedly; stopping the server");
        readiness.set_failing(task, message);
    }
    let _ = stop_tx.send(true);
    probe.abort();
    if !matches!(died, Some((REST, _))) {
        stopped_within_10s(REST, rest).await;
    }
    alerts::shutdown(alert_engine).await;
    drop(api);
    if let Some((task, e)) = died {
        return Err(e.context(format!("{task} ended unexpectedly")));
    }
    info!("stopped");
    Ok(())
}

/// Starts the `[observe]` listener of an ingest or worker process, if configured.
async fn start_observer(
    config: &Config,
    observer: &observe::Observer,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<JoinHandle<std::io::Result<()>>>> {
    let Some(addr) = config.observe_listen else {
        return Ok(None);
    };
    let (local, task) = observer
        .serve(addr, config.metrics_token.clone(), stop)
        .await?;
    info!(observe = %format!("http://{local}"), "serving /readyz, /healthz and /metrics");
    eprintln!("  observe      http://{local}   (/readyz, /healthz, /metrics)");
    Ok(Some(task))
}

/// `--role ingest`: gRPC ingest onto the JetStream bus. Verifies each push against the
/// keys in the PostgreSQL control database and answers after JetStream's PubAck; with NATS
/// unreachable a push is answered `UNAVAILABLE` (the agent keeps it in its WAL) while the
/// client reconnects with backoff (logged, `/readyz` 503 naming NATS, `sentra_bus_connected`
/// 0). No metric store and no REST API here: workers store, `--role all` servers on the
/// same databases serve the API.
async fn run_ingest(config: Config) -> anyhow::Result<()> {
    use sentra_ingest::bus::jetstream::{BusMetrics, BusPublisher};
    sentra_transport::tls::install_crypto_provider();
    let (Some(bus), Some(url)) = (config.bus.clone(), config.control_database_url.clone()) else {
        anyhow::bail!("--role ingest needs [bus] nats_urls and a PostgreSQL control database");
    };
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    restrict_dir(&config.data_dir)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let observer = observe::Observer::new();
    observer.set(observe::POSTGRES, Some("connecting".to_owned()));
    observer.set(observe::NATS, Some("connecting".to_owned()));
    observer.set(GRPC, Some("not started".to_owned()));
    let bus_metrics = BusMetrics::new();
    let transport_metrics = sentra_transport::metrics::Metrics::new();
    observer.register(|r| {
        bus_metrics.register(r);
        transport_metrics.register(r);
    });
    let mut observed = start_observer(&config, &observer, stop_rx.clone()).await?;
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let mut backoff = Duration::from_millis(200);
    // PostgreSQL or NATS may be starting (or restarting): retry with backoff, logged and
    // shown on /readyz.
    let mut api = None;
    let mut publisher = None;
    let (api, publisher) = loop {
        if api.is_none() {
            let api_config = sentra_api::ApiConfig::default();
            // The error names what failed, never the URL (it may carry a password).
            let opened = async {
                let store = sentra_control::ControlStore::open_postgres(
                    url.expose_secret(),
                    api_config.store.clone(),
                )
                .await
                .context("opening the PostgreSQL control database")?;
                sentra_api::Api::open_with_store(&config.data_dir, store, api_config, None)
                    .await
                    .with_context(|| {
                        format!("opening the control plane in {}", config.data_dir.display())
                    })
            };
            match opened.await {
                Ok(a) => {
                    observer.database_probe(Ok(()));
                    api = Some(a);
                }
                Err(e) => {
                    let why = format!("{e:#}");
                    warn!(error = %why, retry_in = ?backoff, "ingest server not started yet");
                    observer.database_probe(Err(why));
                }
            }
        }
        if publisher.is_none() {
            match BusPublisher::connect_with(bus.clone(), bus_metrics.clone()).await {
                Ok(p) => {
                    observer.set(observe::NATS, None);
                    publisher = Some(p);
                }
                Err(e) => {
                    let why = format!("NATS JetStream unreachable: {e:#}");
                    warn!(error = %why, retry_in = ?backoff, "ingest server not started yet");
                    observer.set(observe::NATS, Some(why));
                }
            }
        }
        if let (Some(_), Some(_)) = (&api, &publisher) {
            break (api.take().expect("set"), publisher.take().expect("set"));
        }
        tokio::select! {
            () = &mut stop => {
                info!("shutdown requested");
                let _ = stop_tx.send(true);
                return Ok(());
            }
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    };
    let grpc_listener = tokio::net::TcpListener::bind(config.grpc_listen)
        .await
        .with_context(|| format!("binding gRPC to {}", config.grpc_listen))?;
    let grpc_addr = grpc_listener.local_addr()?;
    let mut builder = sentra_transport::Server::builder(api.keyring(), publisher.clone())
        .desired_state(api.desired_state_service())
        .limits(config.grpc_limits.clone())
        .metrics(transport_metrics);
    if let Some((cert, key)) = &config.tls {
        builder = builder.tls(
            sentra_transport::tls::ServerTls::from_files(cert, key, None)
                .context("loading the gRPC TLS certificate and key")?,
        );
    }
    let mut grpc = tokio::spawn(
        builder
            .build()
            .serve_with_shutdown(grpc_listener, wait(stop_rx.clone())),
    );
    observer.set(GRPC, None);
    let probe = {
        let observer = observer.clone();
        let api = api.clone();
        let publisher = publisher.clone();
        tokio::spawn(observe::every_second(stop_rx.clone(), move || {
            let observer = observer.clone();
            let api = api.clone();
            let publisher = publisher.clone();
            async move {
                observer.set(
                    observe::NATS,
                    (!publisher.is_connected()).then(|| {
                        "not connected to NATS JetStream (reconnecting with backoff); pushes \
                         are answered UNAVAILABLE"
                            .to_owned()
                    }),
                );
                let ping = tokio::time::timeout(Duration::from_secs(2), api.store().ping()).await;
                observer.database_probe(match ping {
                    Ok(true) => Ok(()),
                    Ok(false) => Err("PostgreSQL control database not reachable".to_owned()),
                    Err(_) => {
                        Err("PostgreSQL control database did not answer within 2 s".to_owned())
                    }
                });
            }
        }))
    };
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    info!(grpc = %format!("{scheme}://{grpc_addr}"), "sentra-server ingest ready (gRPC -> NATS JetStream)");
    eprintln!(
        "sentra-server {} — ingest: gRPC -> NATS JetStream\n  gRPC ingest  {scheme}://{grpc_addr}\n",
        env!("CARGO_PKG_VERSION")
    );
    let died: Option<(&str, anyhow::Error)> = tokio::select! {
        () = &mut stop => {
            info!("shutdown requested");
            None
        }
        e = task_end(GRPC, &mut grpc) => Some((GRPC, e)),
        e = optional_task_end(OBSERVE, observed.as_mut()) => Some((OBSERVE, e)),
    };
    let _ = stop_tx.send(true);
    probe.abort();
    if let Some((task, e)) = died {
        return Err(e.context(format!("{task} ended unexpectedly")));
    }
    stopped_within_10s(GRPC, grpc).await;
    info!("stopped");
    Ok(())
}

/// `--role worker`: a storage worker. Pulls verified batches from the JetStream bus and
/// applies them to the PostgreSQL metric store (acked after the commit; see
/// `sentra_ingest::bus::jetstream`). It needs no data directory. The store and the bus are
/// opened with backoff until they answer: PostgreSQL or NATS may still be starting, and a
/// second worker on the same database waits here as a hot standby until the writer lock
/// is free (the active worker died); its unacked messages are then redelivered.
async fn run_worker(config: Config) -> anyhow::Result<()> {
    use sentra_ingest::bus::jetstream::{BusMetrics, BusWorker};
    let (Some(bus), Some(url)) = (config.bus.clone(), config.database_url.clone()) else {
        anyhow::bail!("--role worker needs [bus] nats_urls and a PostgreSQL database URL");
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let observer = observe::Observer::new();
    observer.set(observe::POSTGRES, Some("connecting".to_owned()));
    observer.set(observe::NATS, Some("connecting".to_owned()));
    let bus_metrics = BusMetrics::new();
    observer.register(|r| bus_metrics.register(r));
    let mut observed = start_observer(&config, &observer, stop_rx.clone()).await?;
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let mut backoff = Duration::from_millis(200);
    let opened = loop {
        let attempt = async {
            let mut ingest_config = sentra_ingest::Config::default();
            ingest_config.retention = config.retention;
            // The error names host, port, database and user, never the URL.
            let ingest = match sentra_ingest::Ingest::open_with(
                sentra_ingest::Backend::postgres(url.expose_secret()),
                ingest_config,
            )
            .await
            {
                Ok(i) => {
                    observer.database_probe(Ok(()));
                    i
                }
                Err(e) => {
                    let e = anyhow::Error::new(e).context("opening the PostgreSQL metric store");
                    // Waiting for the writer lock is what a standby does: say so.
                    observer.database_probe(Err(format!("{e:#}")));
                    return Err(e);
                }
            };
            match BusWorker::connect_with(bus.clone(), &ingest, bus_metrics.clone()).await {
                Ok(w) => {
                    observer.set(observe::NATS, None);
                    Ok((ingest, w))
                }
                Err(e) => {
                    let _ = ingest.shutdown().await;
                    let e = anyhow::Error::new(e).context("connecting to the NATS JetStream bus");
                    observer.set(
                        observe::NATS,
                        Some(format!("NATS JetStream unreachable: {e:#}")),
                    );
                    Err(e)
                }
            }
        };
        match attempt.await {
            Ok(o) => break o,
            Err(e) => {
                warn!(error = %format!("{e:#}"), retry_in = ?backoff, "storage worker not started yet");
                tokio::select! {
                    () = &mut stop => {
                        info!("shutdown requested");
                        let _ = stop_tx.send(true);
                        return Ok(());
                    }
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    };
    let (ingest, worker) = opened;
    let ingest = Arc::new(ingest);
    observer
        .register(|r| ingest.register_metrics(r, sentra_ingest::FleetMetricsOptions::default()));
    info!("sentra-server storage worker ready (NATS JetStream -> PostgreSQL)");
    eprintln!(
        "sentra-server {} — storage worker: NATS JetStream -> PostgreSQL\n",
        env!("CARGO_PKG_VERSION")
    );
    let mut task = {
        let w = worker.clone();
        let stop_rx = stop_rx.clone();
        tokio::spawn(async move { w.run(wait(stop_rx)).await })
    };
    let probe = {
        let observer = observer.clone();
        let ingest = ingest.clone();
        let worker = worker.clone();
        let probe_agent = sentra_core::AgentId::new("sentra-readiness-probe")
            .context("the readiness probe's agent id")?;
        tokio::spawn(observe::every_second(stop_rx.clone(), move || {
            let observer = observer.clone();
            let ingest = ingest.clone();
            let worker = worker.clone();
            let probe_agent = probe_agent.clone();
            async move {
                let connected = worker.is_connected();
                observer.set(
                    observe::NATS,
                    (!connected).then(|| {
                        "not connected to NATS JetStream (reconnecting with backoff); nothing \
                         is pulled meanwhile"
                            .to_owned()
                    }),
                );
                if connected && let Err(e) = worker.refresh_pending().await {
                    tracing::debug!(error = %e, "consumer info not available");
                }
                let probe =
                    tokio::time::timeout(Duration::from_secs(2), ingest.high_water(&probe_agent))
                        .await;
                observer.database_probe(match probe {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("PostgreSQL metric store not reachable: {e}")),
                    Err(_) => Err("PostgreSQL metric store did not answer within 2 s".to_owned()),
                });
                observer.set(
                    observe::STORAGE,
                    match ingest.health().storage {
                        StorageHealth::Failing { error, .. } => {
                            Some(format!("metrics storage cannot commit: {error}"))
                        }
                        _ => None,
                    },
                );
            }
        }))
    };
    let died: Option<(&str, anyhow::Error)> = tokio::select! {
        () = &mut stop => {
            info!("shutdown requested");
            None
        }
        e = task_end(WORKER, &mut task) => Some((WORKER, e)),
        e = watch_ingest(ingest.watch_health()) => Some((INGEST, e)),
        e = optional_task_end(OBSERVE, observed.as_mut()) => Some((OBSERVE, e)),
    };
    let _ = stop_tx.send(true);
    probe.abort();
    if died.is_none() {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    let c = worker.counts();
    info!(
        accepted = c.accepted,
        duplicates = c.duplicates,
        rejected = c.rejected,
        redelivered = c.redelivered,
        failed = c.failed,
        dead_lettered = c.dead_lettered,
        "storage worker stopping"
    );
    let flushed = tokio::time::timeout(Duration::from_secs(30), ingest.shutdown()).await;
    if let Some((task, e)) = died {
        return Err(e.context(format!("{task} ended unexpectedly")));
    }
    flushed
        .map_err(|_| anyhow!("flushing the metrics store did not finish within 30 s"))?
        .context("flushing the metrics store")?;
    info!("stopped");
    Ok(())
}

/// Component names, as they appear in logs, `/readyz` and `sentra_component_ready`.
const GRPC: &str = "gRPC server";
const REST: &str = "REST API";
const LOCAL_AGENT: &str = "local agent";
const INGEST: &str = "ingest";
const WORKER: &str = "storage worker";
const OBSERVE: &str = "observe listener";
const FOLLOWER: &str = "bus follower";

/// Resolves when a supervised task ends, with why; a task's end is always an error here.
async fn task_end<E>(what: &str, task: &mut JoinHandle<Result<(), E>>) -> anyhow::Error
where
    E: Into<anyhow::Error>,
{
    match task.await {
        Ok(Ok(())) => anyhow!("{what} stopped on its own"),
        Ok(Err(e)) => e.into().context(format!("{what} failed")),
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic payload".to_owned());
            anyhow!("{what} panicked: {msg}")
        }
        Err(e) => anyhow!("{what} was cancelled: {e}"),
    }
}

/// Waits up to 10 s for a server task told to stop, and logs how it ended: a server
/// stopping after a failure must not hang on a stuck task.
async fn stopped_within_10s<E>(what: &str, task: JoinHandle<Result<(), E>>)
where
    E: std::fmt::Display,
{
    match tokio::time::timeout(Duration::from_secs(10), task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => error!(task = what, error = %e, "server task failed while stopping"),
        Ok(Err(e)) => error!(task = what, error = %e, "server task panicked or was cancelled"),
        Err(_) => warn!(task = what, "server task did not stop within 10 s"),
    }
}

/// As [`task_end`] for a task that may not exist (never resolves then).
async fn optional_task_end<E>(
    what: &str,
    task: Option<&mut JoinHandle<Result<(), E>>>,
) -> anyhow::Error
where
    E: Into<anyhow::Error>,
{
    match task {
        Some(t) => task_end(what, t).await,
        None => std::future::pending().await,
    }
}

/// Follows the ingest pipeline's health: logs each storage failure once when it starts and
/// once when it ends, and resolves when an internal ingest task died.
async fn watch_ingest(mut rx: watch::Receiver<IngestHealth>) -> anyhow::Error {
    let mut failing = false;
    loop {
        let health = rx.borrow_and_update().clone();
        if let Some(task) = health.dead_task {
            return anyhow!("ingest task died: {task}");
        }
        match (&health.storage, failing) {
            (StorageHealth::Failing { error, .. }, false) => {
                failing = true;
                error!(
                    error = %error,
                    "metrics storage cannot commit; nothing is acknowledged until it recovers \
                     (agents keep their data and retry)"
                );
            }
            (StorageHealth::Ok, true) => {
                failing = false;
                info!("metrics storage commits again");
            }
            _ => {}
        }
        if rx.changed().await.is_err() {
            // The pipeline is gone: only at shutdown, which the caller ends anyway.
            std::future::pending::<()>().await;
        }
    }
}

/// The data directory holds key material (control.db): owner-only.
fn restrict_dir(dir: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {} to its owner", dir.display()))?;
    }
    Ok(())
}
