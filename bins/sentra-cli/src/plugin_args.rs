//! The `sentra plugin …` command line, shared by `sentra` (which parses it, so help, errors
//! and completions are unchanged, then execs `sentra-plugin-host` with the same arguments)
//! and `sentra-plugin-host` (which runs it: `plugin.rs`).

use std::path::PathBuf;

/// Default plugin directory of a packaged agent.
const DEFAULT_DIR: &str = "/var/lib/sentra-agent/plugins";

/// WASM plugin commands.
#[derive(Debug, clap::Args)]
pub(crate) struct PluginArgs {
    #[command(subcommand)]
    pub(crate) command: PluginCommand,
}

/// The agent's plugin directory.
#[derive(Debug, clap::Args)]
pub(crate) struct DirArg {
    /// The agent's plugin directory (its `plugins_dir`).
    #[arg(long, env = "SENTRA_AGENT_PLUGINS_DIR", default_value = DEFAULT_DIR, value_name = "DIR")]
    pub(crate) dir: PathBuf,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum PluginCommand {
    /// Validate a plugin against the interface and run it once under the limits, printing
    /// what it emitted.
    Check {
        /// The plugin's manifest (TOML); its `module` is read next to it.
        manifest: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify (optionally), check and copy a plugin into the agent's plugin directory.
    Install {
        /// The plugin's manifest (TOML); its `module` must be a file name next to it.
        manifest: PathBuf,
        #[command(flatten)]
        dir: DirArg,
        /// Ed25519 signature over the module bytes (64 raw bytes or base64).
        #[arg(long, value_name = "FILE", requires = "public_key")]
        signature: Option<PathBuf>,
        /// The trusted Ed25519 public key the signature must verify with (32 raw bytes or
        /// base64).
        #[arg(long, value_name = "FILE", requires = "signature")]
        public_key: Option<PathBuf>,
        /// Accept the directories and environment variables the manifest grants (refused
        /// otherwise; they are listed in the error).
        #[arg(long)]
        allow_capabilities: bool,
        /// Do not run the plugin once before installing (e.g. its granted file appears
        /// later); it is still loaded and checked against the interface.
        #[arg(long)]
        no_run: bool,
        /// Replace an installed plugin of the same name.
        #[arg(long)]
        force: bool,
    },
    /// List installed plugins.
    List {
        #[command(flatten)]
        dir: DirArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show an installed plugin: manifest, grants, module digest, imports, signature.
    Inspect {
        /// Plugin name.
        name: String,
        #[command(flatten)]
        dir: DirArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove an installed plugin (the agent drops it at its next start).
    Remove {
        /// Plugin name.
        name: String,
        #[command(flatten)]
        dir: DirArg,
    },
}
