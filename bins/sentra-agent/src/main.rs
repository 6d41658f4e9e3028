//! `sentra-agent`: the reference edge agent.
//!
//! It will run the collectors (WireGuard via `sentra-wg`, host metrics), append every
//! collection to `sentra-wal`, and ship signed batches through `sentra-transport`.
//! Until that lands (issue 7) the binary only explains itself.

use clap::Parser;

/// Sentra edge agent: collects WireGuard and host metrics and ships them to a sentra-server.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!("sentra-agent has no runtime yet: the collectors and shipper arrive with the end-to-end milestone (see README)")
}
