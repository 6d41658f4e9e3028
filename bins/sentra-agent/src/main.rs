//! `sentra-agent`: the reference edge agent (a thin shell over the `sentra_agent` library).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use sentra_agent::{Config, Overrides, collect_once};

/// Sentra edge agent: collects WireGuard and host metrics, keeps them in a crash-safe
/// write-ahead log and ships them, signed, to a sentra-server.
///
/// Settings come from (highest first) flags, SENTRA_AGENT_* environment variables, the
/// --config TOML file (same key names, with underscores), and defaults.
///
/// First run: `sentra-agent enroll --server-api URL --token TOKEN`, then
/// `sentra-agent --server URL --api URL`. Try the collectors without a server:
/// `sentra-agent --once --output json`.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// TOML configuration file.
    #[arg(
        long,
        short,
        env = "SENTRA_AGENT_CONFIG",
        value_name = "FILE",
        global = true
    )]
    config: Option<PathBuf>,
    /// Run every collector once, print the result and exit (no WAL, no server needed).
    #[arg(long)]
    once: bool,
    /// Output format of --once.
    #[arg(long, value_enum, default_value_t = Output::Text, requires = "once")]
    output: Output,
    #[command(flatten)]
    settings: Overrides,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enrol this agent with a bootstrap token and write the credentials file.
    Enroll {
        /// REST API base URL of the server, e.g. http://127.0.0.1:8080.
        #[arg(long, env = "SENTRA_AGENT_API")]
        server_api: String,
        /// Single-use bootstrap token issued by an administrator (`sentra token issue`).
        #[arg(long, env = "SENTRA_AGENT_TOKEN", hide_env_values = true)]
        token: String,
        /// Name to register the agent under (default: the host name).
        #[arg(long)]
        name: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::resolve(cli.config.as_deref(), &cli.settings)?;
    init_tracing(&config);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        if let Some(Command::Enroll {
            server_api,
            token,
            name,
        }) = cli.command
        {
            return enroll(&config, &server_api, &token, name).await;
        }
        if cli.once {
            let host = sentra_agent::host::HostCollector::new(&config.proc_root)
                .filesystems(config.collect_filesystems);
            let mut wg = sentra_agent::wireguard::WgCollector::new();
            let snap = collect_once(&host, &mut wg).await;
            let agent_id = sentra_agent::Credentials::load(&config.credentials_file)
                .ok()
                .map(|c| c.agent_id().clone());
            let text = match cli.output {
                Output::Json => sentra_agent::output::to_json(&snap, agent_id.as_ref()) + "\n",
                Output::Text => sentra_agent::output::to_text(&snap),
            };
            return write_stdout(&text);
        }
        let agent = sentra_agent::Agent::new(config)?;
        agent.run(shutdown_signal()).await?;
        Ok(())
    })
}

async fn enroll(
    config: &Config,
    server_api: &str,
    token: &str,
    name: Option<String>,
) -> anyhow::Result<()> {
    let path = &config.credentials_file;
    if path.exists() {
        anyhow::bail!(
            "{} already exists: this agent is enrolled (delete the file to enrol again)",
            path.display()
        );
    }
    let name = match name {
        Some(n) => n,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "agent".to_owned()),
    };
    let api = sentra_agent::api::ApiClient::new(server_api, config.ca_file.as_deref())?;
    let creds = api.enroll(token, &name).await?;
    let (c, p) = (creds.clone(), path.clone());
    tokio::task::spawn_blocking(move || c.save(&p)).await??;
    tracing::info!(agent_id = %creds.agent_id(), key_id = %creds.key_id(), path = %path.display(), "enrolled; credentials written (mode 0600)");
    println!(
        "enrolled as {} (credentials in {})",
        creds.agent_id(),
        path.display()
    );
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the agent");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping (signal received)");
}

fn init_tracing(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        sentra_agent::LogFormat::Json => builder.json().init(),
        _ => builder.init(),
    }
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
