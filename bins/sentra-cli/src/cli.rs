//! The `sentra` command line, parsed by both `sentra` (src/main.rs), which runs `wg` and
//! `completions` itself, and `sentra-admin` (src/admin_main.rs), which runs the rest: the
//! same definition, so help, errors and completions do not depend on which one runs.

use std::io::Write as _;

use clap::{CommandFactory as _, Parser, Subcommand};

/// Sentra admin CLI: inspect write-ahead logs, show WireGuard state, manage agents.
#[derive(Debug, Parser)]
#[command(name = "sentra", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Print shell completions for bash, zsh, fish, elvish or powershell.
    Completions {
        /// The shell to generate completions for.
        shell: clap_complete::Shell,
    },
    /// WireGuard state straight from the kernel (`sentra wg show`).
    Wg(crate::wg::WgArgs),
    /// Create the first admin user on a server's data directory.
    Init(crate::admin::InitArgs),
    /// Log in to a server; the token is saved for the other commands.
    Login(crate::admin::LoginArgs),
    /// Bootstrap tokens for agent enrolment.
    Token(crate::admin::TokenArgs),
    /// Enrol, list, rotate keys of, revoke and delete agents.
    Agent(crate::admin::AgentArgs),
    /// Agents, presence, WireGuard interfaces and peers.
    Status(crate::fleet::StatusArgs),
    /// Query stored metrics: names, latest, history, export.
    Metrics(crate::fleet::MetricsArgs),
    /// Check connectivity, credentials, WireGuard access and disk.
    Doctor(crate::doctor::DoctorArgs),
    /// Built-in alerting: active alerts, rules, silences, receiver tests.
    Alerts(crate::alerts::AlertsArgs),
    /// Write-ahead log tools (`sentra wal inspect <dir>`).
    Wal(crate::wal::WalArgs),
    /// WASM plugin collectors of an agent: check, install, list, inspect, remove.
    Plugin(crate::plugin_args::PluginArgs),
    /// Onboard WireGuard clients: address pools, add (wg-quick file and QR code), list,
    /// show, remove, config, qr.
    Peer(crate::peer::PeerArgs),
}

/// Prints shell completions for `shell`.
pub(crate) fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, &mut Cli::command(), "sentra", &mut out);
    out.flush()?;
    Ok(())
}
