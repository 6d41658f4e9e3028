//! Plugin manifests (TOML).
//!
//! ```toml
//! name = "netsnmp"
//! version = "0.1.0"
//! module = "netsnmp.wasm"      # optional, relative to the manifest; default "<name>.wasm"
//! schedule = "15s"             # how often the agent runs the plugin
//! timeout = "200ms"            # optional per-run deadline (default 500ms)
//! memory = 8388608             # optional max linear memory in bytes (capped by the host)
//!
//! [capabilities]               # optional; nothing is granted by default
//! dirs = [{ guest = "/proc/net", host = "/proc/net" }]   # read-only
//! env = ["SNMP_SITE"]          # named variables only
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};

/// Default per-run deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);
/// Shortest schedule a manifest may ask for.
pub const MIN_SCHEDULE: Duration = Duration::from_secs(1);
/// Longest plugin name.
pub const MAX_NAME_LEN: usize = 64;

/// A parsed, validated plugin manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Manifest {
    /// Plugin name: `[a-z0-9_-]{1,64}`, starting with a letter. Used in logs, metrics and
    /// as the `plugin` label.
    pub name: String,
    /// Plugin version (free text, e.g. semver), shown by `inspect`.
    pub version: String,
    /// The module file, relative to the manifest's directory.
    pub module: PathBuf,
    /// How often the plugin is run.
    pub schedule: Duration,
    /// Per-run deadline.
    pub timeout: Duration,
    /// Max linear memory in bytes, if the manifest asks for less than the host maximum.
    pub memory: Option<usize>,
    /// Capabilities granted to the plugin.
    pub capabilities: Capabilities,
}

/// What a plugin may read. Empty by default: no files, no environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Read-only directories.
    pub dirs: Vec<DirGrant>,
    /// Names of environment variables the plugin may read.
    pub env: Vec<String>,
}

impl Capabilities {
    /// Grants read-only access to host directory `host`, seen by the plugin as `guest`.
    #[must_use]
    pub fn with_dir(mut self, guest: impl Into<String>, host: impl Into<PathBuf>) -> Self {
        self.dirs.push(DirGrant::new(guest, host));
        self
    }

    /// Grants reading environment variable `name` (its value is captured at load).
    #[must_use]
    pub fn with_env(mut self, name: impl Into<String>) -> Self {
        self.env.push(name.into());
        self
    }
}

/// One read-only directory: the plugin reads `guest/<rel>`, the host opens `host/<rel>`
/// beneath `host` (no `..`, no symlink escape).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DirGrant {
    /// Absolute path the plugin uses.
    pub guest: String,
    /// Host directory it maps to.
    pub host: PathBuf,
}

impl DirGrant {
    /// A grant of host directory `host` seen by the plugin as `guest`.
    #[must_use]
    pub fn new(guest: impl Into<String>, host: impl Into<PathBuf>) -> Self {
        Self {
            guest: guest.into(),
            host: host.into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: String,
    version: String,
    module: Option<PathBuf>,
    schedule: String,
    timeout: Option<String>,
    memory: Option<usize>,
    #[serde(default)]
    capabilities: RawCaps,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCaps {
    #[serde(default)]
    dirs: Vec<RawDir>,
    #[serde(default)]
    env: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDir {
    guest: String,
    host: PathBuf,
}

impl Manifest {
    /// A manifest with no capabilities, the default deadline and module `<name>.wasm`.
    ///
    /// # Errors
    ///
    /// [`Error::Manifest`] for an invalid name or a schedule under [`MIN_SCHEDULE`].
    pub fn new(name: &str, version: &str, schedule: Duration) -> Result<Self> {
        let m = Self {
            name: name.to_owned(),
            version: version.to_owned(),
            module: PathBuf::from(format!("{name}.wasm")),
            schedule,
            timeout: DEFAULT_TIMEOUT,
            memory: None,
            capabilities: Capabilities::default(),
        };
        m.validate("<inline>")?;
        Ok(m)
    }

    /// Sets the per-run deadline.
    #[must_use]
    pub const fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the capabilities.
    #[must_use]
    pub fn with_capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = capabilities;
        self
    }

    /// Parses a manifest from TOML text; `origin` names it in errors.
    ///
    /// # Errors
    ///
    /// [`Error::Manifest`] with the TOML position, or the field and rule that was broken.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let err = |message: String| Error::Manifest {
            origin: origin.to_owned(),
            message,
        };
        let raw: Raw = toml::from_str(text).map_err(|e| err(e.to_string().trim().to_owned()))?;
        let dur = |field: &str, s: &str| {
            humantime::parse_duration(s).map_err(|e| {
                err(format!(
                    "{field} = {s:?}: {e} (use e.g. \"15s\", \"200ms\")"
                ))
            })
        };
        let schedule = dur("schedule", &raw.schedule)?;
        let timeout = match &raw.timeout {
            Some(t) => dur("timeout", t)?,
            None => DEFAULT_TIMEOUT,
        };
        let module = raw
            .module
            .unwrap_or_else(|| PathBuf::from(format!("{}.wasm", raw.name)));
        let m = Self {
            name: raw.name,
            version: raw.version,
            module,
            schedule,
            timeout,
            memory: raw.memory,
            capabilities: Capabilities {
                dirs: raw
                    .capabilities
                    .dirs
                    .into_iter()
                    .map(|d| DirGrant {
                        guest: d.guest,
                        host: d.host,
                    })
                    .collect(),
                env: raw.capabilities.env,
            },
        };
        m.validate(origin)?;
        Ok(m)
    }

    /// Reads and parses a manifest file. A relative `module` is resolved against the
    /// manifest's directory.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the file cannot be read, [`Error::Manifest`] if it is invalid.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut m = Self::parse(&text, &path.display().to_string())?;
        if let Some(dir) = path.parent().filter(|_| m.module.is_relative()) {
            m.module = dir.join(&m.module);
        }
        Ok(m)
    }

    fn validate(&self, origin: &str) -> Result<()> {
        let err = |message: String| {
            Err(Error::Manifest {
                origin: origin.to_owned(),
                message,
            })
        };
        let n = &self.name;
        let name_ok = !n.is_empty()
            && n.len() <= MAX_NAME_LEN
            && n.starts_with(|c: char| c.is_ascii_lowercase())
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !name_ok {
            return err(format!(
                "name = {n:?}: must be 1-{MAX_NAME_LEN} characters of [a-z0-9_-] starting with a letter"
            ));
        }
        if self.version.trim().is_empty() || self.version.len() > 64 {
            return err(format!(
                "version = {:?}: must be 1-64 characters",
                self.version
            ));
        }
        if self.schedule < MIN_SCHEDULE {
            return err(format!(
                "schedule = {:?}: at least {:?}",
                self.schedule, MIN_SCHEDULE
            ));
        }
        if self.timeout.is_zero() || self.timeout > self.schedule {
            return err(format!(
                "timeout = {:?}: must be positive and at most the schedule ({:?})",
                self.timeout, self.schedule
            ));
        }
        if self.memory == Some(0) {
            return err("memory = 0: must be positive".to_owned());
        }
        for (i, d) in self.capabilities.dirs.iter().enumerate() {
            let g = &d.guest;
            if !g.starts_with('/')
                || g.split('/').any(|c| c == ".." || c == ".")
                || g.contains('\0')
            {
                return err(format!(
                    "capabilities.dirs[{i}].guest = {g:?}: must be an absolute path without . or .."
                ));
            }
            if !d.host.is_absolute() {
                return err(format!(
                    "capabilities.dirs[{i}].host = {:?}: must be an absolute path",
                    d.host
                ));
            }
        }
        for (i, e) in self.capabilities.env.iter().enumerate() {
            let ok = !e.is_empty()
                && e.len() <= 128
                && e.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return err(format!(
                    "capabilities.env[{i}] = {e:?}: must be a variable name of [A-Za-z0-9_]"
                ));
            }
        }
        Ok(())
    }
}
