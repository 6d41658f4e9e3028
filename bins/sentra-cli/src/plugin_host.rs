//! `sentra-plugin-host`: runs the `sentra plugin …` commands (the WASM plugin sandbox).
//!
//! `sentra` (and `sentra-admin`) parse `sentra plugin …` themselves (help, errors and
//! completions are theirs) and then replace themselves with this executable, same arguments
//! and `argv[0]`, found next to them or on `PATH` (src/exec.rs). Only this executable links
//! wasmtime and cranelift: in `sentra` they cost every command (`sentra wg show` included)
//! their load-time relocations and page faults (bins/sentra-cli/README.md). It can be run
//! directly as `sentra-plugin-host plugin …`.

use clap::{Parser, Subcommand};

mod plugin;
mod plugin_args;
mod report;
#[allow(
    dead_code,
    reason = "shared with the sentra binary, which uses all of it"
)]
mod safe;
#[allow(
    dead_code,
    reason = "shared with the sentra binary, which uses all of it"
)]
mod table;

/// The `sentra plugin` commands (WASM plugin collectors of an agent), run by `sentra`.
#[derive(Debug, Parser)]
#[command(name = "sentra", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// WASM plugin collectors of an agent: check, install, list, inspect, remove.
    Plugin(plugin_args::PluginArgs),
}

fn main() -> std::process::ExitCode {
    let Command::Plugin(args) = Cli::parse().command;
    report::exit_code(plugin::run(args))
}
