//! Configuration: a TOML file, `SENTRA_AGENT_*` environment variables and command-line
//! flags, with the precedence **flags > environment > file > defaults**.
//!
//! Every key of the file has a flag and an environment variable of the same name
//! (`wireguard_interval` ↔ `--wireguard-interval` ↔ `SENTRA_AGENT_WIREGUARD_INTERVAL`):
//!
//! ```toml
//! state_dir = "/var/lib/sentra-agent"   # WAL + credentials (default ./sentra-agent-data)
//! server = "https://sentra.example:7443" # gRPC ingest endpoint
//! api = "https://sentra.example:8443"    # REST API (enrolment, key rotation)
//! ca_file = "/etc/sentra/ca.pem"         # extra CA for both, PEM
//! credentials_file = "/var/lib/sentra-agent/credentials.toml"
//! log_format = "text"                    # or "json"
//! log_level = "info"                     # a tracing filter; RUST_LOG overrides it
//! wireguard_interval = "10s"
//! host_interval = "15s"
//! key_check_interval = "5m"              # 0s disables key rotation checks
//! desired_state_interval = "30s"         # 0s disables the peer applier
//! observe_only = ["wg1"]                 # declared interfaces whose drift is only reported
//! push_timeout = "10s"
//! backoff_initial = "500ms"
//! backoff_max = "60s"
//! wal_max_bytes = 1073741824             # disk cap of the WAL
//! wal_full_policy = "drop-newest"        # or "drop-oldest"; either way drops are counted
//! no_wireguard = false                   # true: no WireGuard collector, no peer applier
//! plugins_dir = "/var/lib/sentra-agent/plugins" # WASM plugin collectors (none by default)
//! ```
//!
//! Durations are written as a number with a unit: `ms`, `s`, `m` or `h`.
//!
//! The default state directory is `./sentra-agent-data` — relative, like the server's
//! `./sentra-data`, so the agent runs unprivileged from any directory during a first try.
//! Packaged installs (the systemd unit) pass `--state-dir /var/lib/sentra-agent`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::credentials::{CREDENTIALS_FILE, Credentials};
use crate::{Error, Result};

/// Default state directory (relative to the working directory).
pub const DEFAULT_STATE_DIR: &str = "sentra-agent-data";

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// What happens to a new collection when the WAL is at its disk cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum WalFullPolicy {
    /// Drop the new collection (the WAL refuses it); counted in
    /// `sentra_agent_collections_dropped_total`.
    #[default]
    DropNewest,
    /// Drop the oldest unshipped segments to make room; counted in
    /// `sentra_agent_wal_lost_records_total`.
    DropOldest,
}

/// The resolved agent configuration.
///
/// Build it with [`Config::new`] and adjust the public fields (embedding), or with
/// [`Config::resolve`] from a file and overrides (the binary).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Directory holding the WAL (`wal/`) and, by default, the credentials file.
    pub state_dir: PathBuf,
    /// gRPC ingest endpoint, e.g. `http://127.0.0.1:7000`. Required to ship.
    pub server: Option<String>,
    /// REST API base URL, e.g. `http://127.0.0.1:8080`. Needed for enrolment and key
    /// rotation; rotation checks are skipped without it.
    pub api: Option<String>,
    /// Extra CA certificate (PEM) trusted for `server` and `api`.
    pub ca_file: Option<PathBuf>,
    /// Credentials file (default `<state_dir>/credentials.toml`).
    pub credentials_file: PathBuf,
    /// Credentials given directly (embedding). When set, the file is neither read nor
    /// written and key rotation over the REST API is off: the embedding process owns the key.
    pub credentials: Option<Credentials>,
    /// Log format (used by the binary's subscriber).
    pub log_format: LogFormat,
    /// Log filter (used by the binary's subscriber).
    pub log_level: String,
    /// Interval of the WireGuard collector.
    pub wireguard_interval: Duration,
    /// Interval of the host collector.
    pub host_interval: Duration,
    /// How often to ask the REST API for a newer key; zero disables. Default 5 minutes:
    /// every check writes a server audit entry, and the server's overlap window (24 h by
    /// default) leaves ample time; an authentication failure triggers an immediate check.
    pub key_check_interval: Duration,
    /// How often to fetch desired peers; zero disables the peer applier.
    pub desired_state_interval: Duration,
    /// Declared interfaces the peer applier only observes: it compares them with the
    /// declaration and reports the difference as drift, and never changes them.
    pub observe_only: Vec<String>,
    /// Deadline of one push.
    pub push_timeout: Duration,
    /// First retry delay after a failed push.
    pub backoff_initial: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Disk cap of the WAL in bytes.
    pub wal_max_bytes: u64,
    /// What to drop when the WAL is full.
    pub wal_full_policy: WalFullPolicy,
    /// Whether host metrics include file systems (`statvfs`); on by default.
    pub collect_filesystems: bool,
    /// Whether the WireGuard collector and peer applier run; on by default.
    pub wireguard: bool,
    /// `/proc` root of the host collector (tests point it at captured files).
    pub proc_root: PathBuf,
    /// Directory of installed WASM plugin collectors, loaded at start (see
    /// [`plugin`](crate::plugin)); none when unset.
    pub plugins_dir: Option<PathBuf>,
}

impl Config {
    /// Defaults with the given state directory.
    #[must_use]
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        let state_dir = state_dir.into();
        Self {
            credentials_file: state_dir.join(CREDENTIALS_FILE),
            state_dir,
            server: None,
            api: None,
            ca_file: None,
            credentials: None,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            wireguard_interval: Duration::from_secs(10),
            host_interval: Duration::from_secs(15),
            key_check_interval: Duration::from_secs(300),
            desired_state_interval: Duration::from_secs(30),
            observe_only: Vec::new(),
            push_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            wal_max_bytes: 1 << 30,
            wal_full_policy: WalFullPolicy::DropNewest,
            collect_filesystems: true,
            wireguard: true,
            proc_root: PathBuf::from("/proc"),
            plugins_dir: None,
        }
    }

    /// The WAL directory, `<state_dir>/wal`.
    #[must_use]
    pub fn wal_dir(&self) -> PathBuf {
        self.state_dir.join("wal")
    }

    /// Builds the configuration from an optional file plus overrides (flags and environment,
    /// already merged by clap: a flag wins over its variable).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an unreadable or invalid file or value.
    pub fn resolve(file: Option<&Path>, overrides: &Overrides) -> Result<Self> {
        let file_cfg = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    Error::Config(format!("cannot read config file {}: {e}", p.display()))
                })?;
                FileConfig::parse(&text)
                    .map_err(|e| Error::Config(format!("{}: {e}", p.display())))?
            }
            None => FileConfig::default(),
        };
        let merged = overrides.clone().or(file_cfg);
        merged.into_config()
    }

    /// Checks values that would make the runtime misbehave.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the key.
    pub fn validate(&self) -> Result<()> {
        for (name, d) in [
            ("wireguard_interval", self.wireguard_interval),
            ("host_interval", self.host_interval),
            ("push_timeout", self.push_timeout),
            ("backoff_initial", self.backoff_initial),
        ] {
            if d.is_zero() {
                return Err(Error::Config(format!("{name} must be greater than zero")));
            }
        }
        if self.backoff_max < self.backoff_initial {
            return Err(Error::Config(
                "backoff_max must be at least backoff_initial".into(),
            ));
        }
        if self.wal_max_bytes < 1 << 20 {
            return Err(Error::Config("wal_max_bytes must be at least 1 MiB".into()));
        }
        Ok(())
    }
}

/// The duration syntax of every Sentra tool: `"500ms"`, `"10s"`, `"5m"`, `"1h 30m"`, `"2d"`; a
/// bare number means seconds (as before humantime, so existing files keep working).
pub use sentra_core::parse_duration;

/// Settings from flags and the environment; `None` means "not given here".
///
/// It doubles as the file's schema: the same keys, all optional.
#[derive(Clone, Debug, Default, serde::Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Overrides {
    /// Directory for the WAL and credentials [default: ./sentra-agent-data].
    #[arg(long, env = "SENTRA_AGENT_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// gRPC ingest endpoint of the server, e.g. http://127.0.0.1:7000.
    #[arg(long, env = "SENTRA_AGENT_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// REST API base URL of the server (enrolment, key rotation), e.g. http://127.0.0.1:8080.
    #[arg(long, env = "SENTRA_AGENT_API", value_name = "URL")]
    pub api: Option<String>,
    /// Extra CA certificate (PEM) to trust for the server.
    #[arg(long, env = "SENTRA_AGENT_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Credentials file [default: credentials.toml in the state directory].
    #[arg(long, env = "SENTRA_AGENT_CREDENTIALS_FILE", value_name = "FILE")]
    pub credentials_file: Option<PathBuf>,
    /// Log format [default: text].
    #[arg(long, env = "SENTRA_AGENT_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. info or sentra_agent=debug [default: info; RUST_LOG wins].
    #[arg(long, env = "SENTRA_AGENT_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,
    /// WireGuard collection interval [default: 10s].
    #[arg(long, env = "SENTRA_AGENT_WIREGUARD_INTERVAL", value_name = "DURATION")]
    pub wireguard_interval: Option<String>,
    /// Host metrics collection interval [default: 15s].
    #[arg(long, env = "SENTRA_AGENT_HOST_INTERVAL", value_name = "DURATION")]
    pub host_interval: Option<String>,
    /// How often to check for a rotated key; 0s disables [default: 5m].
    #[arg(long, env = "SENTRA_AGENT_KEY_CHECK_INTERVAL", value_name = "DURATION")]
    pub key_check_interval: Option<String>,
    /// How often to fetch desired peers; 0s disables the peer applier [default: 30s].
    #[arg(
        long,
        env = "SENTRA_AGENT_DESIRED_STATE_INTERVAL",
        value_name = "DURATION"
    )]
    pub desired_state_interval: Option<String>,
    /// Declared interfaces to observe only: drift is reported, never corrected
    /// (comma-separated or repeated) [default: none].
    #[arg(
        long,
        env = "SENTRA_AGENT_OBSERVE_ONLY",
        value_name = "IFACE",
        value_delimiter = ','
    )]
    pub observe_only: Option<Vec<String>>,
    /// Deadline of one push to the server [default: 10s].
    #[arg(long, env = "SENTRA_AGENT_PUSH_TIMEOUT", value_name = "DURATION")]
    pub push_timeout: Option<String>,
    /// First retry delay after a failed push [default: 500ms].
    #[arg(long, env = "SENTRA_AGENT_BACKOFF_INITIAL", value_name = "DURATION")]
    pub backoff_initial: Option<String>,
    /// Longest retry delay [default: 60s].
    #[arg(long, env = "SENTRA_AGENT_BACKOFF_MAX", value_name = "DURATION")]
    pub backoff_max: Option<String>,
    /// Disk cap of the write-ahead log in bytes [default: 1073741824].
    #[arg(long, env = "SENTRA_AGENT_WAL_MAX_BYTES", value_name = "BYTES")]
    pub wal_max_bytes: Option<u64>,
    /// What to drop when the WAL is full [default: drop-newest].
    #[arg(long, env = "SENTRA_AGENT_WAL_FULL_POLICY", value_name = "POLICY")]
    pub wal_full_policy: Option<WalFullPolicy>,
    /// Do not collect WireGuard status or apply peers (hosts that must not touch netlink).
    #[arg(long, env = "SENTRA_AGENT_NO_WIREGUARD", action = clap::ArgAction::SetTrue)]
    pub no_wireguard: Option<bool>,
    /// Directory of installed WASM plugin collectors (`sentra plugin install --dir`),
    /// loaded at start; a plugin that fails to load is refused and logged [default: none].
    #[arg(long, env = "SENTRA_AGENT_PLUGINS_DIR", value_name = "DIR")]
    pub plugins_dir: Option<PathBuf>,
}

type FileConfig = Overrides;

impl Overrides {
    fn parse(text: &str) -> std::result::Result<Self, String> {
        toml::from_str(text).map_err(|e| e.message().to_owned())
    }

    /// Field by field, `self` where set, else `lower`.
    #[must_use]
    fn or(self, lower: Self) -> Self {
        Self {
            state_dir: self.state_dir.or(lower.state_dir),
            server: self.server.or(lower.server),
            api: self.api.or(lower.api),
            ca_file: self.ca_file.or(lower.ca_file),
            credentials_file: self.credentials_file.or(lower.credentials_file),
            log_format: self.log_format.or(lower.log_format),
            log_level: self.log_level.or(lower.log_level),
            wireguard_interval: self.wireguard_interval.or(lower.wireguard_interval),
            host_interval: self.host_interval.or(lower.host_interval),
            key_check_interval: self.key_check_interval.or(lower.key_check_interval),
            desired_state_interval: self.desired_state_interval.or(lower.desired_state_interval),
            observe_only: self.observe_only.or(lower.observe_only),
            push_timeout: self.push_timeout.or(lower.push_timeout),
            backoff_initial: self.backoff_initial.or(lower.backoff_initial),
            backoff_max: self.backoff_max.or(lower.backoff_max),
            wal_max_bytes: self.wal_max_bytes.or(lower.wal_max_bytes),
            wal_full_policy: self.wal_full_policy.or(lower.wal_full_policy),
            // An absent flag parses as `Some(false)`: only `true` overrides the file.
            no_wireguard: self.no_wireguard.filter(|b| *b).or(lower.no_wireguard),
            plugins_dir: self.plugins_dir.or(lower.plugins_dir),
        }
    }

    fn into_config(self) -> Result<Config> {
        let mut c = Config::new(
            self.state_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
        );
        if let Some(f) = self.credentials_file {
            c.credentials_file = f;
        }
        c.server = self.server.filter(|s| !s.is_empty());
        c.api = self.api.filter(|s| !s.is_empty());
        c.ca_file = self.ca_file;
        c.plugins_dir = self.plugins_dir.filter(|p| !p.as_os_str().is_empty());
        if let Some(f) = self.log_format {
            c.log_format = f;
        }
        if let Some(l) = self.log_level {
            c.log_level = l;
        }
        let dur = |name: &str, v: Option<String>, d: &mut Duration| -> Result<()> {
            if let Some(v) = v {
                *d = parse_duration(&v).map_err(|e| Error::Config(format!("{name}: {e}")))?;
            }
            Ok(())
        };
        dur(
            "wireguard_interval",
            self.wireguard_interval,
            &mut c.wireguard_interval,
        )?;
        dur("host_interval", self.host_interval, &mut c.host_interval)?;
        dur(
            "key_check_interval",
            self.key_check_interval,
            &mut c.key_check_interval,
        )?;
        dur(
            "desired_state_interval",
            self.desired_state_interval,
            &mut c.desired_state_interval,
        )?;
        dur("push_timeout", self.push_timeout, &mut c.push_timeout)?;
        dur(
            "backoff_initial",
            self.backoff_initial,
            &mut c.backoff_initial,
        )?;
        dur("backoff_max", self.backoff_max, &mut c.backoff_max)?;
        if let Some(b) = self.wal_max_bytes {
            c.wal_max_bytes = b;
        }
        c.wireguard = !self.no_wireguard.unwrap_or(false);
        if let Some(o) = self.observe_only {
            c.observe_only = o.into_iter().filter(|i| !i.is_empty()).collect();
        }
        if let Some(p) = self.wal_full_policy {
            c.wal_full_policy = p;
        }
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_flags_over_file_over_defaults() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("agent.toml");
        std::fs::write(
            &file,
            "state_dir = \"/from/file\"\nserver = \"http://file:1\"\nhost_interval = \"20s\"\nlog_format = \"json\"\nwal_full_policy = \"drop-oldest\"\n",
        )
        .expect("write");
        let flags = Overrides {
            server: Some("http://flag:2".into()),
            ..Overrides::default()
        };
        let c = Config::resolve(Some(&file), &flags).expect("resolve");
        assert_eq!(c.server.as_deref(), Some("http://flag:2"));
        assert_eq!(c.state_dir, PathBuf::from("/from/file"));
        assert_eq!(
            c.credentials_file,
            PathBuf::from("/from/file/credentials.toml")
        );
        assert_eq!(c.host_interval, Duration::from_secs(20));
        assert_eq!(c.wireguard_interval, Duration::from_secs(10), "default");
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.wal_full_policy, WalFullPolicy::DropOldest);
        let c = Config::resolve(None, &Overrides::default()).expect("defaults");
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert!(c.server.is_none());
        assert!(c.plugins_dir.is_none(), "no plugins by default");
    }

    #[test]
    fn plugins_dir_from_file_and_flag() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("agent.toml");
        std::fs::write(&file, "plugins_dir = \"/from/file/plugins\"\n").expect("write");
        let c = Config::resolve(Some(&file), &Overrides::default()).expect("resolve");
        assert_eq!(c.plugins_dir, Some(PathBuf::from("/from/file/plugins")));
        let flags = Overrides {
            plugins_dir: Some(PathBuf::from("/from/flag")),
            ..Overrides::default()
        };
        let c = Config::resolve(Some(&file), &flags).expect("resolve");
        assert_eq!(c.plugins_dir, Some(PathBuf::from("/from/flag")));
        let empty = Overrides {
            plugins_dir: Some(PathBuf::new()),
            ..Overrides::default()
        };
        let c = Config::resolve(None, &empty).expect("resolve");
        assert_eq!(c.plugins_dir, None, "an empty value disables plugins");
    }

    #[test]
    fn bad_files_and_values() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("agent.toml");
        std::fs::write(&file, "sever = \"typo\"\n").expect("write");
        let e = Config::resolve(Some(&file), &Overrides::default()).expect_err("unknown key");
        assert!(e.to_string().contains("sever"), "{e}");
        std::fs::write(&file, "host_interval = \"0s\"\n").expect("write");
        let e = Config::resolve(Some(&file), &Overrides::default()).expect_err("zero");
        assert!(e.to_string().contains("host_interval"), "{e}");
        let e = Config::resolve(
            Some(&dir.path().join("missing.toml")),
            &Overrides::default(),
        )
        .expect_err("missing");
        assert!(e.to_string().contains("missing.toml"), "{e}");
    }
}

#[cfg(test)]
mod no_wireguard_tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        o: Overrides,
    }

    #[test]
    fn flag_disables_wireguard_and_absence_keeps_the_file_value() {
        let on = Cli::parse_from(["a"])
            .o
            .or(Overrides::default())
            .into_config()
            .unwrap();
        assert!(on.wireguard);
        let off = Cli::parse_from(["a", "--no-wireguard"])
            .o
            .or(Overrides::default())
            .into_config()
            .unwrap();
        assert!(!off.wireguard);
        let file = Overrides::parse("no_wireguard = true").unwrap();
        let from_file = Cli::parse_from(["a"]).o.or(file).into_config().unwrap();
        assert!(!from_file.wireguard);
    }
}
