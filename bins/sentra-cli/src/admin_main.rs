//! `sentra-admin`: runs the `sentra` commands that `sentra` itself does not (everything but
//! `wg`, `completions` and `plugin`): the server's HTTP API client (login, token, agent,
//! status, metrics, alerts, peer, doctor), `init` on the control database and the WAL
//! tools. `sentra` parses the command line, then replaces itself with this executable,
//! same arguments and `argv[0]`, found next to it (src/exec.rs); it parses the same command
//! line (src/cli.rs) again. Run directly, it behaves like `sentra`.

use clap::Parser as _;

mod admin;
mod alerts;
mod cli;
mod client;
mod doctor;
mod exec;
mod fleet;
mod peer;
mod plugin_args;
mod report;
mod safe;
mod table;
mod wal;
mod wg;

use cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    report::exit_code(run())
}

fn run() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Completions { shell } => cli::completions(shell)?,
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
        Command::Plugin(_) => exec::plugin_host()?,
        Command::Peer(args) => peer::run(args)?,
    }
    Ok(())
}
