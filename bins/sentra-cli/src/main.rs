//! `sentra`: the Sentra admin CLI.
//!
//! Each command group lives in its own module; `main` only parses and dispatches.

use std::io::Write as _;

use clap::{CommandFactory, Parser, Subcommand};

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
    /// Write-ahead log tools (`sentra wal inspect <dir>`).
    Wal(wal::WalArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Completions { shell } => {
            let mut out = std::io::stdout().lock();
            clap_complete::generate(shell, &mut Cli::command(), "sentra", &mut out);
            out.flush()?;
        }
        Command::Wg(args) => wg::run(args)?,
        Command::Wal(args) => wal::run(args)?,
    }
    Ok(())
}
