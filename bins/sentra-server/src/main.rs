//! `sentra-server`: the reference server.
//!
//! Composes `sentra-ingest` (pipeline, storage, status cache), `sentra-api` (REST API and
//! control plane) and `sentra-transport` (gRPC ingest), and optionally runs a
//! `sentra-agent` inside the process (`--local-agent`). All logic lives in the libraries;
//! this file only wires them together.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::Parser as _;
use tokio::sync::watch;
use tracing::{error, info, warn};

mod config;
mod local_agent;
mod status_line;

use config::{Cli, Config, LogFormat};

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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(&cli)?;
    init_tracing(config.log_format);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(config))
}

async fn wait(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn run(config: Config) -> anyhow::Result<()> {
    sentra_transport::tls::install_crypto_provider();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    restrict_dir(&config.data_dir)?;

    let mut ingest_config = sentra_ingest::Config::default();
    ingest_config.retention = config.retention;
    let ingest = Arc::new(
        sentra_ingest::Ingest::open(&config.data_dir, ingest_config)
            .await
            .with_context(|| {
                format!("opening the metrics store in {}", config.data_dir.display())
            })?,
    );
    let api = sentra_api::Api::open_with_ingest(
        &config.data_dir,
        sentra_api::ApiConfig::default(),
        Some(ingest.clone()),
    )
    .await
    .with_context(|| format!("opening the control store in {}", config.data_dir.display()))?;

    let (stop_tx, stop_rx) = watch::channel(false);

    // gRPC ingest.
    let grpc_listener = tokio::net::TcpListener::bind(config.grpc_listen)
        .await
        .with_context(|| format!("binding gRPC to {}", config.grpc_listen))?;
    let grpc_addr = grpc_listener.local_addr()?;
    let mut builder = sentra_transport::Server::builder(api.keyring(), ingest.service())
        .desired_state(api.desired_state_service());
    if let Some((cert, key)) = &config.tls {
        builder = builder.tls(
            sentra_transport::tls::ServerTls::from_files(cert, key, None)
                .context("loading the gRPC TLS certificate and key")?,
        );
    }
    let grpc = tokio::spawn(
        builder
            .build()
            .serve_with_shutdown(grpc_listener, wait(stop_rx.clone())),
    );

    // REST API.
    let api_listener = tokio::net::TcpListener::bind(config.api_listen)
        .await
        .with_context(|| format!("binding the REST API to {}", config.api_listen))?;
    let api_addr = api_listener.local_addr()?;
    let router = api.router();
    let rest = tokio::spawn(
        axum::serve(
            api_listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(wait(stop_rx.clone()))
        .into_future(),
    );

    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    info!(
        data_dir = %config.data_dir.display(),
        grpc = %format!("{scheme}://{grpc_addr}"),
        api = %format!("http://{api_addr}"),
        "sentra-server ready"
    );
    eprintln!(
        "sentra-server {} — embedded storage in {}\n  gRPC ingest  {scheme}://{grpc_addr}\n  REST API     http://{api_addr}   (OpenAPI: /api/v1/openapi.json, Prometheus: /metrics)\n",
        env!("CARGO_PKG_VERSION"),
        config.data_dir.display()
    );
    if api.store().list_users().await.is_ok_and(|u| u.is_empty()) {
        eprintln!(
            "No users yet. Create the first admin:  sentra init --data-dir {}\n",
            config.data_dir.display()
        );
    }

    let agent = if config.local_agent {
        Some(
            local_agent::start(
                &config,
                &api,
                format!("{scheme}://{grpc_addr}"),
                stop_rx.clone(),
            )
            .await
            .context("starting the local agent")?,
        )
    } else {
        None
    };
    let status = config
        .status_interval
        .map(|every| tokio::spawn(status_line::run(ingest.clone(), every, stop_rx.clone())));

    tokio::select! {
        () = shutdown_signal() => info!("shutdown requested"),
        r = &mut Box::pin(wait_task("gRPC server", grpc)) => r?,
    }
    let _ = stop_tx.send(true);
    if let Some(agent) = agent
        && let Err(e) = agent.await
    {
        warn!(error = %e, "local agent task ended abnormally");
    }
    if let Some(status) = status {
        status.abort();
    }
    match tokio::time::timeout(Duration::from_secs(10), rest).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => error!(error = %e, "REST server failed"),
        Ok(Err(e)) => error!(error = %e, "REST server task failed"),
        Err(_) => warn!("REST server did not stop within 10 s"),
    }
    drop(api);
    // Commits what is queued and applies staged samples, so a graceful stop leaves every
    // acknowledged batch queryable (a crash leaves them staged; the next start applies them).
    ingest
        .shutdown()
        .await
        .context("flushing the metrics store")?;
    info!("stopped");
    Ok(())
}

/// Waits for a server task; returning means it stopped on its own, which is an error.
async fn wait_task(
    what: &str,
    task: tokio::task::JoinHandle<Result<(), sentra_transport::Error>>,
) -> anyhow::Result<()> {
    match task.await {
        Ok(Ok(())) => anyhow::bail!("{what} stopped unexpectedly"),
        Ok(Err(e)) => Err(anyhow::Error::new(e).context(format!("{what} failed"))),
        Err(e) => Err(anyhow::Error::new(e).context(format!("{what} panicked"))),
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
