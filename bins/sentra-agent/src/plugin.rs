//! WASM plugin collectors: a [`sentra_plugin::Plugin`] adapted into a [`Collector`], and the
//! agent's plugin directory.
//!
//! # The plugin directory
//!
//! `plugins_dir` (TOML key, `SENTRA_AGENT_PLUGINS_DIR`, `--plugins-dir`) holds one
//! subdirectory per installed plugin, named after it (what `sentra plugin install` makes;
//! the layout is [`sentra_plugin::layout`], shared with the CLI):
//!
//! ```text
//! <plugins_dir>/<name>/manifest.toml   # sentra-plugin manifest, `name = "<name>"`
//! <plugins_dir>/<name>/<module>.wasm   # the manifest's `module`, a plain file name
//! <plugins_dir>/<name>/module.sig      # optional: the Ed25519 signature install verified
//! ```
//!
//! Every plugin is loaded (compiled, checked against the interface, grants opened) when the
//! agent starts. A plugin that cannot be loaded is refused with one `error` log line naming
//! the directory and the reason, and the agent starts without it: a broken plugin never
//! stops the agent.
//!
//! # How a plugin runs
//!
//! A plugin is the collector `plugin:<name>`: its manifest's `schedule` is the interval, and
//! the scheduler's timeout is the plugin's own deadline plus [`TIMEOUT_SLACK`] — the host's
//! epoch deadline interrupts a runaway first; the scheduler's timeout is only a backstop.
//! Each run happens on a blocking thread (a wasmtime call is synchronous). Its samples go
//! through the same WAL/sign/ship path as the built-in collectors'. After repeated failures
//! the host quarantines the plugin: it is no longer run, and its health shows
//! [`CollectorHealth::quarantined`](crate::health::CollectorHealth::quarantined) with the
//! reason (also the `sentra_agent_collector_quarantined` gauge).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sentra_plugin::{Host, Plugin, layout};

use crate::collector::{CollectContext, CollectError, Collection, Collector, Schedule};

pub use sentra_plugin::layout::{MANIFEST_FILE, SIGNATURE_FILE};
/// Prefix of a plugin collector's name (`plugin:<name>`), so a plugin can never take the
/// name of a built-in collector.
pub const NAME_PREFIX: &str = "plugin:";
/// How much longer than the plugin's own deadline the scheduler waits before it abandons a
/// run (the host's epoch interruption normally ends it first).
pub const TIMEOUT_SLACK: Duration = Duration::from_millis(500);

/// A loaded plugin run as a collector. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct PluginCollector {
    plugin: Arc<Plugin>,
    name: String,
}

impl PluginCollector {
    /// Wraps a loaded plugin.
    #[must_use]
    pub fn new(plugin: Plugin) -> Self {
        let name = format!("{NAME_PREFIX}{}", plugin.name());
        Self {
            plugin: Arc::new(plugin),
            name,
        }
    }

    /// The plugin (its stats, quarantine state, manifest).
    #[must_use]
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }
}

impl Collector for PluginCollector {
    fn name(&self) -> &str {
        &self.name
    }

    fn schedule(&self) -> Schedule {
        let m = self.plugin.manifest();
        Schedule::every(m.schedule).timeout(m.timeout.saturating_add(TIMEOUT_SLACK))
    }

    async fn collect(&mut self, _cx: &CollectContext) -> Result<Collection, CollectError> {
        let plugin = Arc::clone(&self.plugin);
        let run = tokio::task::spawn_blocking(move || plugin.collect())
            .await
            .map_err(|e| CollectError::new(format!("plugin run task failed: {e}")))?;
        match run {
            Ok(c) => Ok(Collection {
                samples: c.samples,
                ..Collection::default()
            }),
            Err(e @ sentra_plugin::Error::Quarantined { .. }) => {
                Err(CollectError::new(e.to_string()).quarantined())
            }
            Err(e) => {
                // The run that tipped the plugin into quarantine.
                if self.plugin.quarantine_reason().is_some() {
                    Err(CollectError::new(format!("{e}; now quarantined")).quarantined())
                } else {
                    Err(CollectError::new(e.to_string()))
                }
            }
        }
    }
}

/// Why an installed plugin was not loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Refused {
    /// The plugin's directory.
    pub dir: PathBuf,
    /// The reason (never a granted env value or file content).
    pub reason: String,
}

/// Loads every plugin installed under `dir` (see the [module docs](self)), in name order.
/// Plugins that cannot be loaded are returned in the second list, not loaded; a missing
/// `dir` is an empty one.
///
/// # Errors
///
/// Only if `dir` exists but cannot be listed.
pub fn load_dir(host: &Host, dir: &Path) -> std::io::Result<(Vec<PluginCollector>, Vec<Refused>)> {
    let mut loaded = Vec::new();
    let mut refused = Vec::new();
    for d in layout::installed_dirs(dir)? {
        match layout::read_installed(&d).and_then(|m| host.load_file(m)) {
            Ok(p) => loaded.push(PluginCollector::new(p)),
            Err(e) => refused.push(Refused {
                dir: d,
                reason: e.to_string(),
            }),
        }
    }
    Ok((loaded, refused))
}
