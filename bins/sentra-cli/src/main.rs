//! `sentra`: the Sentra admin CLI.
//!
//! Each command group lives in its own module; `main` only parses and dispatches.

use std::io::Write as _;

use clap::{CommandFactory, Parser, Subcommand};

mod admin;
mod alerts;
mod client;
mod doctor;
mod fleet;
mod peer;
mod plugin;
mod safe;
mod table;
mod wal;
mod wg;

/// Sentra admin CLI: inspect write-ahead logs, show WireGuard state, manage agents.
#[derive(Debug, Parser)]
#[command(name = "sentra", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print shell completions for bash, zsh, fish, elvish or powershell.
    Completions {
        /// The shell to generate completions for.
        shell: clap_complete::Shell,
    },
    /// WireGuard state straight from the kernel (`sentra wg show`).
    Wg(wg::WgArgs),
    /// Create the first admin user on a server's data directory.
    Init(admin::InitArgs),
    /// Log in to a server; the token is saved for the other commands.
    Login(admin::LoginArgs),
    /// Bootstrap tokens for agent enrolment.
    Token(admin::TokenArgs),
    /// Enrol, list, rotate keys of, revoke and delete agents.
    Agent(admin::AgentArgs),
    /// Agents, presence, WireGuard interfaces and peers.
    Status(fleet::StatusArgs),
    /// Query stored metrics: names, latest, history, export.
    Metrics(fleet::MetricsArgs),
    /// Check connectivity, credentials, WireGuard access and disk.
    Doctor(doctor::DoctorArgs),
    /// Built-in alerting: active alerts, rules, silences, receiver tests.
    Alerts(alerts::AlertsArgs),
    /// Write-ahead log tools (`sentra wal inspect <dir>`).
    Wal(wal::WalArgs),
    /// WASM plugin collectors of an agent: check, install, list, inspect, remove.
    Plugin(plugin::PluginArgs),
    /// Onboard WireGuard clients: address pools, add (wg-quick file and QR code), list,
    /// show, remove, config, qr.
    Peer(peer::PeerArgs),
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Like anyhow's report, with every message made terminal-safe (errors quote
            // server messages and user input).
            eprintln!("Error: {}", safe::display_safe(&e.to_string()));
            let causes: Vec<String> = e.chain().skip(1).map(ToString::to_string).collect();
            if !causes.is_empty() {
                eprintln!("\nCaused by:");
                for (i, c) in causes.iter().enumerate() {
                    if causes.len() == 1 {
                        eprintln!("    {}", safe::display_safe(c));
                    } else {
                        eprintln!("    {i}: {}", safe::display_safe(c));
                    }
                }
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Completions { shell } => {
            let mut out = std::io::stdout().lock();
            clap_complete::generate(shell, &mut Cli::command(), "sentra", &mut out);
            out.flush()?;
        }
        Command::Wg(args) => wg::run(args)?,
        Command::Init(args) => admin::init(args)?,
        Command::Login(args) => admin::login(args)?,
        Command::Token(args) => admin::token(args)?,
        Command::Agent(args) => admin::agent(args)?,
        Command::Doctor(args) => doctor::run(args)?,
        Command::Alerts(args) => alerts::run(args)?,
        Command::Status(args) => fleet::status(args)?,
        Command::Metrics(args) => fleet::metrics(args)?,
        Command::Wal(args) => wal::run(args)?,
        Command::Plugin(args) => plugin::run(args)?,
        Command::Peer(args) => peer::run(args)?,
    }
    Ok(())
}
