//! `sentra-server`: the reference server.
//!
//! It will compose `sentra-transport` (gRPC ingest), `sentra-ingest` (pipeline, storage, REST
//! API) and optionally an in-process agent. Until that lands (issue 7) the binary only explains
//! itself.

use clap::Parser;

/// Sentra server: gRPC ingest, storage, REST API and metrics for a WireGuard fleet.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!("sentra-server has no runtime yet: the pipeline arrives with the end-to-end milestone (see README)")
}
