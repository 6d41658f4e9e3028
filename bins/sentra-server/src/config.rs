//! Server configuration: defaults < TOML file < environment < flags.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};
use clap::Parser;
use serde::Deserialize;

/// Sentra server: gRPC ingest for agents, storage, REST API and Prometheus metrics for a
/// WireGuard fleet.
///
/// With no configuration it runs the embedded default: SQLite under ./sentra-data, an
/// in-process bus, gRPC on 127.0.0.1:7443 and REST on 127.0.0.1:8080, both plaintext on
/// loopback. Add --local-agent to monitor this host too.
///
/// Every flag can also be set with an environment variable (shown in brackets) or in the
/// TOML file given with --config; flags win over the environment, which wins over the file.
#[derive(Debug, Parser)]
#[command(name = "sentra-server", version, about, long_about, after_help = AFTER_HELP)]
pub(crate) struct Cli {
    /// TOML configuration file.
    #[arg(long, short, env = "SENTRA_SERVER_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Data directory (metrics.db and control.db with the sqlite backend, local agent
    /// state, the lock that keeps a second server off it).
    #[arg(long, env = "SENTRA_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// gRPC ingest listen address.
    #[arg(long, env = "SENTRA_GRPC_LISTEN")]
    pub(crate) grpc_listen: Option<SocketAddr>,
    /// REST API listen address.
    #[arg(long, env = "SENTRA_API_LISTEN")]
    pub(crate) api_listen: Option<SocketAddr>,
    /// TLS certificate chain (PEM) for gRPC ingest.
    #[arg(long, env = "SENTRA_TLS_CERT", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for gRPC ingest.
    #[arg(long, env = "SENTRA_TLS_KEY", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// TLS certificate chain (PEM) for the REST API; serves https instead of http.
    #[arg(long, env = "SENTRA_API_TLS_CERT", requires = "api_tls_key")]
    pub(crate) api_tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for the REST API.
    #[arg(long, env = "SENTRA_API_TLS_KEY", requires = "api_tls_cert")]
    pub(crate) api_tls_key: Option<PathBuf>,
    /// Allow plaintext listeners on non-loopback addresses (put TLS in front yourself).
    #[arg(long, env = "SENTRA_ALLOW_PLAINTEXT")]
    pub(crate) allow_plaintext: bool,
    /// Run an agent inside the server process that monitors this host.
    #[arg(long, env = "SENTRA_LOCAL_AGENT")]
    pub(crate) local_agent: bool,
    /// Print a status line every N seconds (0 = never; default 5 with --local-agent, else 0).
    #[arg(long, env = "SENTRA_STATUS_INTERVAL")]
    pub(crate) status_interval: Option<u64>,
    /// Keep raw samples this many days (rollups keep longer history).
    #[arg(long, env = "SENTRA_RETENTION_DAYS")]
    pub(crate) retention_days: Option<u64>,
    /// Log format.
    #[arg(long, env = "SENTRA_LOG_FORMAT", value_enum)]
    pub(crate) log_format: Option<LogFormat>,
    /// File holding the /metrics scrape token: /metrics then requires
    /// `Authorization: Bearer <token>` (Prometheus `authorization.credentials_file`).
    /// Default: no token (fine on loopback; set one when the API is reachable from elsewhere).
    #[arg(long, env = "SENTRA_METRICS_TOKEN_FILE")]
    pub(crate) metrics_token_file: Option<PathBuf>,
    /// Add wireguard_peer_endpoint_info{endpoint=...} 1 per peer to /metrics.
    #[arg(long, env = "SENTRA_METRICS_PEER_ENDPOINTS")]
    pub(crate) metrics_peer_endpoints: bool,
    /// Open gRPC connections at most per client address (IPv6: per /64); more are refused.
    /// Agents behind one NAT share it: raise it for large fleets behind one address.
    /// Default 256.
    #[arg(long, env = "SENTRA_GRPC_MAX_CONNECTIONS_PER_ADDRESS")]
    pub(crate) grpc_max_connections_per_address: Option<usize>,
    /// Failed gRPC authentications allowed per client address and second before that
    /// address is refused (burst 5x). 0 turns the budget off. Default 20.
    #[arg(long, env = "SENTRA_GRPC_AUTH_FAILURES_PER_SECOND")]
    pub(crate) grpc_auth_failures_per_second: Option<u32>,
    /// Where metrics and the control plane are stored: sqlite (metrics.db and control.db
    /// in the data directory; the default) or postgres (the database of
    /// --database-url-file / SENTRA_DATABASE_URL).
    #[arg(long, env = "SENTRA_STORAGE_BACKEND", value_enum)]
    pub(crate) storage_backend: Option<StorageBackend>,
    /// File holding the postgres:// URL of the database for --storage-backend postgres
    /// (metrics in its schema sentra_metrics, the control plane in public). The URL may
    /// also come from SENTRA_DATABASE_URL. It may hold a password: it never appears in
    /// logs or errors.
    #[arg(long, env = "SENTRA_DATABASE_URL_FILE")]
    pub(crate) database_url_file: Option<PathBuf>,
    /// File holding a postgres:// URL for the control plane alone (users, agents, keys,
    /// desired peers, audit), shared by several servers (changes reach the others within
    /// 250 ms); each server keeps its own metric store (SQLite, or its own PostgreSQL
    /// database: a metric database has one writer). Default: the control plane is where
    /// the metrics are. The URL may also come from SENTRA_CONTROL_DATABASE_URL.
    #[arg(long, env = "SENTRA_CONTROL_DATABASE_URL_FILE")]
    pub(crate) control_database_url_file: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) alerts: crate::alerts::AlertsArgs,
    /// What this process does: all (gRPC ingest, storage, REST API in one process; the
    /// default), ingest (gRPC only: verifies pushes and puts them on NATS JetStream, acks
    /// after the PubAck; keys from the PostgreSQL control database), worker (pulls batches
    /// from NATS JetStream into the PostgreSQL database) or api (REST API and dashboard on
    /// the PostgreSQL databases, live status followed from NATS JetStream). ingest, worker
    /// and api need `[bus] nats_urls` and a PostgreSQL database.
    #[arg(long, env = "SENTRA_ROLE", value_enum)]
    pub(crate) role: Option<Role>,
    /// Where an ingest or worker process serves GET /readyz, /healthz and /metrics
    /// (plaintext HTTP; the REST API's metrics token applies to /metrics). Default: off.
    /// A `--role all` server has them on its REST API.
    #[arg(long, env = "SENTRA_OBSERVE_LISTEN")]
    pub(crate) observe_listen: Option<SocketAddr>,
}

/// What a `sentra-server` process does (issue 12: scale-out on NATS JetStream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    /// Everything in one process (gRPC ingest, storage, REST API): the default.
    All,
    /// gRPC ingest onto the JetStream bus (no storage, no REST API).
    Ingest,
    /// A storage worker: a durable JetStream consumer feeding the PostgreSQL store.
    Worker,
    /// The REST API, dashboard, `/metrics` and `/readyz` on the shared PostgreSQL stores (no
    /// gRPC ingest, no writer); its status cache, live stream and alert engine follow the
    /// JetStream bus.
    Api,
}

/// Where the server stores metrics and the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum StorageBackend {
    /// Embedded SQLite files in the data directory.
    Sqlite,
    /// A PostgreSQL database (URL from a file or the environment).
    Postgres,
}

const AFTER_HELP: &str = "\
First steps:
  sentra-server --local-agent            start with a local agent; status appears in seconds
  sentra init                            create the first admin user (no default credentials)
  sentra login && sentra status          see agents, interfaces and peers

PostgreSQL instead of the embedded SQLite files (URL in a file only the service reads):
  sentra-server --storage-backend postgres --database-url-file /etc/sentra/database-url
  (the file holds e.g. postgres://sentra:PASSWORD@db.internal:5432/sentra)

Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more detail.";

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The TOML file. Unknown keys are an error, so a typo never silently does nothing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    grpc_listen: Option<SocketAddr>,
    api_listen: Option<SocketAddr>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    api_tls_cert: Option<PathBuf>,
    api_tls_key: Option<PathBuf>,
    allow_plaintext: Option<bool>,
    local_agent: Option<bool>,
    status_interval: Option<u64>,
    retention_days: Option<u64>,
    log_format: Option<LogFormat>,
    api: Option<ApiSection>,
    grpc: Option<GrpcSection>,
    storage: Option<StorageSection>,
    alerts: Option<crate::alerts::AlertsSection>,
    role: Option<Role>,
    bus: Option<BusSection>,
    observe: Option<ObserveSection>,
}

/// `[observe]` in the TOML file: readiness and metrics of ingest and worker processes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ObserveSection {
    /// Address of the small HTTP listener (`/readyz`, `/healthz`, `/metrics`); off when unset.
    listen: Option<SocketAddr>,
}

/// `[bus]` in the TOML file: the NATS JetStream bus between ingest servers and workers.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BusSection {
    /// NATS server URLs (the client picks one and fails over to the others).
    nats_urls: Option<Vec<String>>,
    /// A NATS credentials file (`.creds`); never logged.
    credentials_file: Option<PathBuf>,
    /// Redelivery of a message no worker acked within this long ("30s").
    ack_wait: Option<String>,
    /// Stream replicas: 1, or 3 (or 5) on a NATS cluster of that many nodes.
    replicas: Option<usize>,
    /// The batch stream's name ("SENTRA_BATCHES"; the dead letters go to `<stream>_DEAD`).
    /// With `subject_prefix`, `dead_letter_prefix` and `consumer` it names one partition:
    /// a second set of ingest servers, workers and database with other names is an
    /// independent partition on the same NATS cluster.
    stream: Option<String>,
    /// Batches are published on `<subject_prefix>.<agent>` ("sentra.batch").
    subject_prefix: Option<String>,
    /// Dead letters on `<dead_letter_prefix>.<agent>` ("sentra.dead").
    dead_letter_prefix: Option<String>,
    /// The storage workers' durable consumer ("sentra-workers").
    consumer: Option<String>,
    /// Deliveries of one message before it is dead-lettered (10).
    max_deliver: Option<i64>,
    /// Unacked messages the consumer hands out at once (4096).
    max_ack_pending: Option<i64>,
    /// Messages one worker stores concurrently (256; feeds the store's group commit).
    worker_concurrency: Option<usize>,
    /// JetStream's duplicate window on the message id ("2m"): a batch resent within it
    /// is stored once even if the ingest server's ack was lost.
    duplicate_window: Option<String>,
    /// How long a publish waits for JetStream's ack, and the connect timeout ("5s").
    publish_timeout: Option<String>,
    /// Delay before a message whose store commit failed is redelivered ("1s").
    nak_delay: Option<String>,
}

/// A stream or consumer name: 1-64 of `A-Z a-z 0-9 _ -` (NATS refuses `.`, `*`, `>`,
/// whitespace and path separators in names; the rest keeps names portable).
fn check_name(key: &str, name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        bail!("[bus] {key} {name:?}: use 1-64 characters of A-Z a-z 0-9 _ -");
    }
    Ok(())
}

/// A subject prefix: dot-separated tokens of `A-Z a-z 0-9 _ -`, no wildcards.
fn check_subject_prefix(key: &str, prefix: &str) -> anyhow::Result<()> {
    if prefix.len() > 128
        || prefix.split('.').any(|t| {
            t.is_empty()
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
    {
        bail!(
            "[bus] {key} {prefix:?}: use dot-separated tokens of A-Z a-z 0-9 _ - (no wildcards, \
             no empty token, at most 128 characters)"
        );
    }
    Ok(())
}

/// A duration key of `[bus]` within `min..=max`.
fn bus_duration(key: &str, text: &str, min: Duration, max: Duration) -> anyhow::Result<Duration> {
    let d = humantime::parse_duration(text).with_context(|| format!("[bus] {key} {text:?}"))?;
    if !(min..=max).contains(&d) {
        bail!(
            "[bus] {key} {text:?} is outside {}..={}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        );
    }
    Ok(d)
}

/// `[storage]` in the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StorageSection {
    /// "sqlite" (default) or "postgres".
    backend: Option<StorageBackend>,
    /// A file holding the postgres:// URL (never the URL itself: keep secrets out of
    /// configuration files that are readable by more than the service).
    database_url_file: Option<PathBuf>,
    /// A file holding the postgres:// URL of a control database shared by several servers.
    control_database_url_file: Option<PathBuf>,
}

/// `[grpc]` in the TOML file: the ingest listener's limits (sentra_transport::Limits).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrpcSection {
    /// Open connections at most (beyond, they wait in the listen backlog).
    max_connections: Option<usize>,
    max_connections_per_address: Option<usize>,
    /// Requests per agent and second, and the burst above it.
    per_agent_requests_per_second: Option<u32>,
    per_agent_burst: Option<u32>,
    /// Failed authentications per client address and second (0: off), and the burst.
    auth_failures_per_second: Option<u32>,
    auth_failure_burst: Option<u32>,
}

/// `[api]` in the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiSection {
    /// The /metrics scrape token itself (keep the file 0600), or:
    metrics_token: Option<String>,
    /// a file holding it.
    metrics_token_file: Option<PathBuf>,
    metrics_peer_endpoints: Option<bool>,
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) data_dir: PathBuf,
    pub(crate) grpc_listen: SocketAddr,
    pub(crate) api_listen: SocketAddr,
    pub(crate) tls: Option<(PathBuf, PathBuf)>,
    /// REST API certificate chain and key: https when set.
    pub(crate) api_tls: Option<(PathBuf, PathBuf)>,
    pub(crate) allow_plaintext: bool,
    pub(crate) local_agent: bool,
    pub(crate) status_interval: Option<Duration>,
    pub(crate) retention: Duration,
    pub(crate) log_format: LogFormat,
    /// `/metrics` requires `Authorization: Bearer <this>` when set.
    pub(crate) metrics_token: Option<sentra_api::SecretString>,
    pub(crate) metrics_peer_endpoints: bool,
    /// The gRPC ingest listener's limits.
    pub(crate) grpc_limits: sentra_transport::Limits,
    /// The PostgreSQL metric database (`None`: `metrics.db` in the data directory).
    /// Carries a password: never log it.
    pub(crate) database_url: Option<sentra_api::SecretString>,
    /// The PostgreSQL control database: the separate shared one, else the metric database
    /// (`None`: `control.db` in the data directory). Carries a password: never log it.
    pub(crate) control_database_url: Option<sentra_api::SecretString>,
    /// The built-in alert engine (`[alerts]`).
    pub(crate) alerts: crate::alerts::AlertsConfig,
    /// What this process does (`--role`).
    pub(crate) role: Role,
    /// The JetStream bus (`[bus]`), `None` without `nats_urls`.
    pub(crate) bus: Option<sentra_ingest::bus::jetstream::BusConfig>,
    /// `/readyz` and `/metrics` of an ingest or worker process (`[observe] listen`).
    pub(crate) observe_listen: Option<SocketAddr>,
}

/// `[bus]` as the bus client's configuration (`None` without URLs).
fn bus_config(bus: BusSection) -> anyhow::Result<Option<sentra_ingest::bus::jetstream::BusConfig>> {
    let urls = bus.nats_urls.unwrap_or_default();
    if urls.is_empty() {
        if bus.credentials_file.is_some() {
            bail!("[bus] credentials_file is set but nats_urls is empty");
        }
        return Ok(None);
    }
    for (i, u) in urls.iter().enumerate() {
        // Never echo the URL: it may carry user:password.
        if u.trim().is_empty() || u.contains(',') {
            bail!(
                "[bus] nats_urls entry {} is empty or holds a comma (one URL per entry)",
                i + 1
            );
        }
    }
    let mut cfg = sentra_ingest::bus::jetstream::BusConfig::new(urls.join(","));
    cfg.credentials_file = bus.credentials_file;
    if let Some(text) = bus.ack_wait {
        cfg.ack_wait =
            humantime::parse_duration(&text).with_context(|| format!("[bus] ack_wait {text:?}"))?;
        if cfg.ack_wait < Duration::from_secs(1) {
            bail!("[bus] ack_wait must be at least 1s");
        }
    }
    if let Some(r) = bus.replicas {
        if !(1..=5).contains(&r) {
            bail!("[bus] replicas {r}: JetStream keeps 1 to 5 replicas of a stream");
        }
        cfg.replicas = r;
    }
    if let Some(name) = bus.stream {
        check_name("stream", &name)?;
        cfg.stream = name;
    }
    if let Some(name) = bus.consumer {
        check_name("consumer", &name)?;
        cfg.consumer = name;
    }
    if let Some(p) = bus.subject_prefix {
        check_subject_prefix("subject_prefix", &p)?;
        cfg.subject_prefix = p;
    }
    if let Some(p) = bus.dead_letter_prefix {
        check_subject_prefix("dead_letter_prefix", &p)?;
        cfg.dead_letter_prefix = p;
    }
    // Each stream takes `<prefix>.>`: overlapping prefixes would put batches in both.
    let overlaps = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}."));
    if overlaps(&cfg.subject_prefix, &cfg.dead_letter_prefix)
        || overlaps(&cfg.dead_letter_prefix, &cfg.subject_prefix)
    {
        bail!(
            "[bus] subject_prefix {:?} and dead_letter_prefix {:?} overlap: each stream takes \
             every subject under its prefix",
            cfg.subject_prefix,
            cfg.dead_letter_prefix
        );
    }
    if let Some(n) = bus.max_deliver {
        if !(1..=1000).contains(&n) {
            bail!("[bus] max_deliver {n} is outside 1..=1000");
        }
        cfg.max_deliver = n;
    }
    if let Some(n) = bus.max_ack_pending {
        if !(1..=1_000_000).contains(&n) {
            bail!("[bus] max_ack_pending {n} is outside 1..=1000000");
        }
        cfg.max_ack_pending = n;
    }
    if let Some(n) = bus.worker_concurrency {
        if !(1..=65_536).contains(&n) {
            bail!("[bus] worker_concurrency {n} is outside 1..=65536");
        }
        cfg.worker_concurrency = n;
    }
    if let Some(text) = bus.duplicate_window {
        cfg.duplicate_window = bus_duration(
            "duplicate_window",
            &text,
            Duration::from_secs(1),
            Duration::from_secs(24 * 3600),
        )?;
    }
    if let Some(text) = bus.publish_timeout {
        cfg.timeout = bus_duration(
            "publish_timeout",
            &text,
            Duration::from_millis(100),
            Duration::from_secs(300),
        )?;
    }
    if let Some(text) = bus.nak_delay {
        cfg.nak_delay = bus_duration(
            "nak_delay",
            &text,
            Duration::ZERO,
            Duration::from_secs(3600),
        )?;
    }
    Ok(Some(cfg))
}

/// Largest config file accepted; anything bigger is a mistake, not a config.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

impl Config {
    pub(crate) fn load(cli: &Cli) -> anyhow::Result<Self> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let tls = match (
            cli.tls_cert.clone().or(file.tls_cert),
            cli.tls_key.clone().or(file.tls_key),
        ) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => bail!("tls_cert and tls_key must be given together"),
        };
        let api_tls = match (
            cli.api_tls_cert.clone().or(file.api_tls_cert),
            cli.api_tls_key.clone().or(file.api_tls_key),
        ) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => bail!("api_tls_cert and api_tls_key must be given together"),
        };
        let api = file.api.unwrap_or_default();
        let metrics_token = match (
            cli.metrics_token_file.as_ref(),
            api.metrics_token_file,
            api.metrics_token,
        ) {
            (Some(path), _, _) => Some(read_token(path)?),
            (None, Some(path), _) => Some(read_token(&path)?),
            (None, None, Some(t)) if !t.trim().is_empty() => {
                Some(sentra_api::SecretString::new(t.trim()))
            }
            (None, None, Some(_)) => bail!("[api] metrics_token is empty"),
            (None, None, None) => None,
        };
        let metrics_peer_endpoints =
            cli.metrics_peer_endpoints || api.metrics_peer_endpoints.unwrap_or(false);
        let local_agent = cli.local_agent || file.local_agent.unwrap_or(false);
        let status_secs = cli
            .status_interval
            .or(file.status_interval)
            .unwrap_or(if local_agent { 5 } else { 0 });
        let retention_days = cli.retention_days.or(file.retention_days).unwrap_or(30);
        if retention_days == 0 || retention_days > 36_500 {
            bail!("retention_days must be between 1 and 36500, got {retention_days}");
        }
        let grpc_limits = grpc_limits(cli, file.grpc.unwrap_or_default())?;
        let storage = file.storage.unwrap_or_default();
        let backend = cli
            .storage_backend
            .or(storage.backend)
            .unwrap_or(StorageBackend::Sqlite);
        let database_url = postgres_url(
            cli.database_url_file.as_deref(),
            "SENTRA_DATABASE_URL",
            storage.database_url_file.as_deref(),
            "database URL",
        )?;
        let database_url = match (backend, database_url) {
            (StorageBackend::Postgres, Some((url, _))) => Some(url),
            (StorageBackend::Postgres, None) => bail!(
                "storage backend postgres needs a database URL: --database-url-file, \
                 SENTRA_DATABASE_URL or [storage] database_url_file"
            ),
            (StorageBackend::Sqlite, Some((_, from))) => bail!(
                "a database URL is set ({from}) but the storage backend is sqlite: add \
                 --storage-backend postgres (or [storage] backend = \"postgres\"), or remove it"
            ),
            (StorageBackend::Sqlite, None) => None,
        };
        let control_database_url = postgres_url(
            cli.control_database_url_file.as_deref(),
            "SENTRA_CONTROL_DATABASE_URL",
            storage.control_database_url_file.as_deref(),
            "control database URL",
        )?
        .map(|(url, _)| url)
        .or_else(|| database_url.clone());
        let alerts = crate::alerts::AlertsConfig::resolve(&cli.alerts, file.alerts)?;
        let role = cli.role.or(file.role).unwrap_or(Role::All);
        let bus = bus_config(file.bus.unwrap_or_default())?;
        if role == Role::Ingest {
            if bus.is_none() {
                bail!("--role ingest needs the NATS bus: [bus] nats_urls in the config file");
            }
            if control_database_url.is_none() {
                bail!(
                    "--role ingest reads agent keys from the PostgreSQL control database: \
                     --control-database-url-file or --storage-backend postgres with a \
                     database URL"
                );
            }
        }
        if role == Role::Worker {
            if bus.is_none() {
                bail!("--role worker needs the NATS bus: [bus] nats_urls in the config file");
            }
            if database_url.is_none() {
                bail!(
                    "--role worker stores into PostgreSQL: add --storage-backend postgres and \
                     a database URL (--database-url-file, SENTRA_DATABASE_URL or [storage] \
                     database_url_file)"
                );
            }
        }
        if role == Role::Api {
            if bus.is_none() {
                bail!(
                    "--role api follows the fleet on the NATS bus: [bus] nats_urls in the \
                     config file"
                );
            }
            if database_url.is_none() || control_database_url.is_none() {
                bail!(
                    "--role api serves the shared PostgreSQL stores: add --storage-backend \
                     postgres and a database URL (--database-url-file, SENTRA_DATABASE_URL or \
                     [storage] database_url_file)"
                );
            }
        }
        let config = Self {
            data_dir: cli
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./sentra-data")),
            grpc_listen: cli
                .grpc_listen
                .or(file.grpc_listen)
                .unwrap_or_else(|| "127.0.0.1:7443".parse().expect("valid default")),
            api_listen: cli
                .api_listen
                .or(file.api_listen)
                .unwrap_or_else(|| "127.0.0.1:8080".parse().expect("valid default")),
            tls,
            api_tls,
            allow_plaintext: cli.allow_plaintext || file.allow_plaintext.unwrap_or(false),
            local_agent,
            status_interval: (status_secs > 0).then(|| Duration::from_secs(status_secs)),
            retention: Duration::from_secs(retention_days * 86_400),
            log_format: cli
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Text),
            metrics_token,
            metrics_peer_endpoints,
            grpc_limits,
            database_url,
            control_database_url,
            alerts,
            role,
            bus,
            observe_listen: cli.observe_listen.or(file.observe.and_then(|o| o.listen)),
        };
        config.check()?;
        Ok(config)
    }

    /// Refuses plaintext on a non-loopback address unless explicitly allowed.
    fn check(&self) -> anyhow::Result<()> {
        if self.tls.is_none() && !self.grpc_listen.ip().is_loopback() && !self.allow_plaintext {
            bail!(
                "refusing plaintext gRPC on non-loopback address {}: give --tls-cert/--tls-key, or --allow-plaintext if TLS terminates in front of the server",
                self.grpc_listen
            );
        }
        if self.api_tls.is_none() && !self.api_listen.ip().is_loopback() && !self.allow_plaintext {
            bail!(
                "refusing the plaintext REST API on non-loopback address {}: give --api-tls-cert/--api-tls-key, or --allow-plaintext if TLS terminates in front of the server",
                self.api_listen
            );
        }
        if let Some(addr) = self.observe_listen {
            if matches!(self.role, Role::All | Role::Api) {
                bail!(
                    "[observe] listen / --observe-listen is for --role ingest and worker; a \
                     --role all or api server serves /readyz and /metrics on its REST API"
                );
            }
            if !addr.ip().is_loopback() && !self.allow_plaintext {
                bail!(
                    "refusing plaintext /readyz and /metrics on non-loopback address {addr}: \
                     add --allow-plaintext (the listener has no TLS; put it behind a proxy or \
                     a private network)"
                );
            }
        }
        Ok(())
    }
}

/// The transport's defaults with the `[grpc]` section and the flags applied (flags win).
fn grpc_limits(cli: &Cli, file: GrpcSection) -> anyhow::Result<sentra_transport::Limits> {
    let mut limits = sentra_transport::Limits::default();
    let positive = |name: &str, v: Option<usize>| -> anyhow::Result<Option<usize>> {
        match v {
            Some(0) => bail!("[grpc] {name} must be at least 1"),
            v => Ok(v),
        }
    };
    if let Some(n) = positive("max_connections", file.max_connections)? {
        limits.max_connections = n;
    }
    if let Some(n) = positive(
        "max_connections_per_address",
        cli.grpc_max_connections_per_address
            .or(file.max_connections_per_address),
    )? {
        limits.max_connections_per_address = n;
    }
    if file.per_agent_requests_per_second.is_some() || file.per_agent_burst.is_some() {
        let rate = file.per_agent_requests_per_second.unwrap_or(20);
        if rate == 0 {
            bail!("[grpc] per_agent_requests_per_second must be at least 1");
        }
        let burst = file
            .per_agent_burst
            .unwrap_or(rate.saturating_mul(2))
            .max(1);
        limits.per_agent_quota =
            sentra_transport::rate_limit::Quota::per_second(f64::from(rate)).burst(burst);
    }
    let failures = cli
        .grpc_auth_failures_per_second
        .or(file.auth_failures_per_second);
    if failures.is_some() || file.auth_failure_burst.is_some() {
        let rate = failures.unwrap_or(20);
        limits.per_ip_failure_quota = (rate > 0).then(|| {
            let burst = file
                .auth_failure_burst
                .unwrap_or(rate.saturating_mul(5))
                .max(1);
            sentra_transport::rate_limit::Quota::per_second(f64::from(rate)).burst(burst)
        });
    }
    Ok(limits)
}

/// A PostgreSQL URL from the flag's file, else the environment variable `env`, else the
/// TOML file's file, with where it came from. Errors name the source, never the URL.
fn postgres_url(
    flag_file: Option<&Path>,
    env: &'static str,
    toml_file: Option<&Path>,
    what: &str,
) -> anyhow::Result<Option<(sentra_api::SecretString, String)>> {
    let found = match (flag_file, std::env::var(env).ok(), toml_file) {
        (Some(path), _, _) => Some((read_secret(path, what)?, format!("file {}", path.display()))),
        (None, Some(url), _) if !url.trim().is_empty() => Some((
            sentra_api::SecretString::new(url.trim()),
            format!("environment variable {env}"),
        )),
        (None, _, Some(path)) => {
            Some((read_secret(path, what)?, format!("file {}", path.display())))
        }
        (None, _, None) => None,
    };
    if let Some((url, from)) = &found {
        let url = url.expose_secret();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            bail!(
                "the {what} from {from} does not start with postgres:// or postgresql:// \
                 (not shown: it may hold a password)"
            );
        }
    }
    Ok(found)
}

/// Reads a scrape token file (surrounding whitespace trimmed; empty is an error).
fn read_token(path: &Path) -> anyhow::Result<sentra_api::SecretString> {
    read_secret(path, "metrics token")
}

/// Reads a one-line secret (trimmed) from `path`; errors name the file, never its content.
fn read_secret(path: &Path, what: &str) -> anyhow::Result<sentra_api::SecretString> {
    let mut text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the {what} file {}", path.display()))?;
    // Trim in place: the one copy of the secret ends up in the (zeroing) SecretString.
    let end = text.trim_end().len();
    text.truncate(end);
    let start = text.len() - text.trim_start().len();
    text.drain(..start);
    if text.is_empty() {
        bail!("the {what} file {} is empty", path.display());
    }
    Ok(sentra_api::SecretString::new(text))
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("reading config {}", path.display()))?;
    if meta.len() > MAX_CONFIG_BYTES {
        bail!(
            "config {} is {} bytes; the limit is {MAX_CONFIG_BYTES}",
            path.display(),
            meta.len()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    parse_file(&text).with_context(|| format!("in config {}", path.display()))
}

fn parse_file(text: &str) -> anyhow::Result<FileConfig> {
    Ok(toml::from_str(text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("sentra-server").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn api_role_needs_the_bus_and_postgres_and_serves_its_own_readyz() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("db-url");
        std::fs::write(&url, "postgres://u:s3cret@127.0.0.1:5432/db\n").unwrap();
        let write = |text: &str| {
            let path = dir.path().join("a.toml");
            std::fs::write(&path, text).unwrap();
            path.to_str().unwrap().to_owned()
        };
        let err = format!("{:#}", Config::load(&cli(&["--role", "api"])).unwrap_err());
        assert!(
            err.contains("--role api") && err.contains("[bus] nats_urls"),
            "{err}"
        );
        let bus = "[bus]\nnats_urls = [\"nats://10.0.0.1:4222\"]\n";
        let path = write(bus);
        let err = format!(
            "{:#}",
            Config::load(&cli(&["--role", "api", "--config", &path])).unwrap_err()
        );
        assert!(err.contains("PostgreSQL"), "{err}");
        let path = write(&format!(
            "role = \"api\"\n[storage]\nbackend = \"postgres\"\ndatabase_url_file = \"{}\"\n{bus}",
            url.display()
        ));
        let c = Config::load(&cli(&["--config", &path])).unwrap();
        assert_eq!(c.role, Role::Api);
        assert!(c.bus.is_some() && c.control_database_url.is_some());
        let err = format!(
            "{:#}",
            Config::load(&cli(&[
                "--config",
                &path,
                "--observe-listen",
                "127.0.0.1:9464"
            ]))
            .unwrap_err()
        );
        assert!(
            err.contains("serves /readyz and /metrics on its REST API"),
            "{err}"
        );
    }

    #[test]
    fn worker_role_needs_the_bus_and_postgres_and_hides_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("db-url");
        std::fs::write(&url, "postgres://u:s3cret@127.0.0.1:5432/db\n").unwrap();
        let write = |text: &str| {
            let path = dir.path().join("s.toml");
            std::fs::write(&path, text).unwrap();
            path.to_str().unwrap().to_owned()
        };
        let c = Config::load(&cli(&[])).unwrap();
        assert_eq!(c.role, Role::All);
        assert!(c.bus.is_none());
        let err = format!(
            "{:#}",
            Config::load(&cli(&["--role", "worker"])).unwrap_err()
        );
        assert!(err.contains("[bus] nats_urls"), "{err}");
        let bus =
            "[bus]\nnats_urls = [\"nats://n:pw-9@10.0.0.1:4222\", \"nats://10.0.0.2:4222\"]\n";
        let path = write(bus);
        let err = format!(
            "{:#}",
            Config::load(&cli(&["--role", "worker", "--config", &path])).unwrap_err()
        );
        assert!(err.contains("PostgreSQL"), "{err}");
        let path = write(&format!(
            "role = \"worker\"\n[storage]\nbackend = \"postgres\"\ndatabase_url_file = \"{}\"\n{bus}ack_wait = \"5s\"\n",
            url.display()
        ));
        let c = Config::load(&cli(&["--config", &path])).unwrap();
        assert_eq!(c.role, Role::Worker);
        let b = c.bus.as_ref().unwrap();
        assert_eq!(b.url, "nats://n:pw-9@10.0.0.1:4222,nats://10.0.0.2:4222");
        assert_eq!(b.ack_wait, Duration::from_secs(5));
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("pw-9") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert_eq!(
            c.observe_listen, None,
            "the observe listener is off by default"
        );
        let observed = write(&format!(
            "role = \"worker\"\n[storage]\nbackend = \"postgres\"\ndatabase_url_file = \"{}\"\n{bus}[observe]\nlisten = \"127.0.0.1:9464\"\n",
            url.display()
        ));
        let c = Config::load(&cli(&["--config", &observed])).unwrap();
        assert_eq!(c.observe_listen, Some("127.0.0.1:9464".parse().unwrap()));
        let c = Config::load(&cli(&[
            "--config",
            &observed,
            "--observe-listen",
            "127.0.0.1:9500",
        ]))
        .unwrap();
        assert_eq!(c.observe_listen, Some("127.0.0.1:9500".parse().unwrap()));
        let err = format!(
            "{:#}",
            Config::load(&cli(&[
                "--config",
                &observed,
                "--observe-listen",
                "0.0.0.0:9464"
            ]))
            .unwrap_err()
        );
        assert!(err.contains("--allow-plaintext"), "{err}");
        let err = format!(
            "{:#}",
            Config::load(&cli(&["--observe-listen", "127.0.0.1:9464"])).unwrap_err()
        );
        assert!(err.contains("REST API"), "{err}");
        for (text, want) in [
            ("[bus]\nnats_urls = [\"\"]\n", "entry 1 is empty"),
            (
                "[bus]\nnats_urls = [\"nats://a:1,nats://b:2\"]\n",
                "one URL per entry",
            ),
            (
                "[bus]\ncredentials_file = \"/x.creds\"\n",
                "nats_urls is empty",
            ),
            (
                "[bus]\nnats_urls = [\"nats://a:1\"]\nack_wait = \"10ms\"\n",
                "at least 1s",
            ),
            ("replicas = 0", "1 to 5 replicas"),
            ("replicas = 7", "1 to 5 replicas"),
            ("stream = \"a.b\"", "stream \"a.b\""),
            ("stream = \"\"", "A-Z a-z 0-9 _ -"),
            ("consumer = \"w *\"", "consumer \"w *\""),
            ("subject_prefix = \"sentra.>\"", "no wildcards"),
            ("subject_prefix = \"a..b\"", "no empty token"),
            ("dead_letter_prefix = \"sentra.batch.dead\"", "overlap"),
            ("subject_prefix = \"sentra.dead\"", "overlap"),
            ("max_deliver = 0", "max_deliver 0"),
            ("max_ack_pending = -1", "max_ack_pending -1"),
            ("worker_concurrency = 0", "worker_concurrency 0"),
            ("duplicate_window = \"2 days\"", "outside 1s..=1day"),
            (
                "publish_timeout = \"1ms\"",
                "publish_timeout \"1ms\" is outside",
            ),
            ("nak_delay = \"soon\"", "[bus] nak_delay \"soon\""),
            ("replicas = \"three\"", "replicas"),
        ]
        .map(|(t, w)| {
            let t = if t.starts_with("[bus]") {
                t.to_owned()
            } else {
                format!("[bus]\nnats_urls = [\"nats://a:1\"]\n{t}\n")
            };
            (t, w)
        }) {
            let text = text.as_str();
            let err = format!(
                "{:#}",
                Config::load(&cli(&["--config", &write(text)])).unwrap_err()
            );
            assert!(err.contains(want), "{text:?} -> {err}");
        }
    }

    #[test]
    fn bus_partition_keys_reach_the_bus_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            "[bus]\nnats_urls = [\"nats://10.0.0.1:4222\"]\nreplicas = 3\n\
             stream = \"EU_BATCHES\"\nsubject_prefix = \"sentra.eu.batch\"\n\
             dead_letter_prefix = \"sentra.eu.dead\"\nconsumer = \"eu-workers\"\n\
             max_deliver = 20\nmax_ack_pending = 8192\nworker_concurrency = 512\n\
             duplicate_window = \"10m\"\npublish_timeout = \"3s\"\nnak_delay = \"250ms\"\n",
        )
        .unwrap();
        let c = Config::load(&cli(&["--config", path.to_str().unwrap()])).unwrap();
        let b = c.bus.unwrap();
        assert_eq!(
            (
                b.replicas,
                b.stream.as_str(),
                b.subject_prefix.as_str(),
                b.dead_letter_prefix.as_str(),
                b.consumer.as_str()
            ),
            (
                3,
                "EU_BATCHES",
                "sentra.eu.batch",
                "sentra.eu.dead",
                "eu-workers"
            )
        );
        assert_eq!(
            (b.max_deliver, b.max_ack_pending, b.worker_concurrency),
            (20, 8192, 512)
        );
        assert_eq!(
            (b.duplicate_window, b.timeout, b.nak_delay),
            (
                Duration::from_secs(600),
                Duration::from_secs(3),
                Duration::from_millis(250)
            )
        );
    }

    #[test]
    fn defaults_are_the_embedded_loopback_setup() {
        let c = Config::load(&cli(&[])).unwrap();
        assert_eq!(c.grpc_listen.to_string(), "127.0.0.1:7443");
        assert_eq!(c.api_listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./sentra-data"));
        assert!(c.status_interval.is_none());
        assert_eq!(c.retention, Duration::from_secs(30 * 86_400));
    }

    #[test]
    fn flags_override_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(
            &path,
            "data_dir = \"/from-file\"\nretention_days = 7\nlocal_agent = true\n",
        )
        .unwrap();
        let c = Config::load(&cli(&[
            "--config",
            path.to_str().unwrap(),
            "--data-dir",
            "/from-flag",
        ]))
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from-flag"));
        assert_eq!(c.retention, Duration::from_secs(7 * 86_400));
        assert!(c.local_agent);
        assert_eq!(c.status_interval, Some(Duration::from_secs(5)));
    }

    #[test]
    fn hostile_files_are_rejected_clearly() {
        for (text, want) in [
            ("data_dri = \"x\"", "unknown field"),
            ("grpc_listen = \"not an address\"", "grpc_listen"),
            ("retention_days = -1", "retention_days"),
            ("[[[", "TOML"),
            ("data_dir = \"unterminated", ""),
        ] {
            let err = format!("{:#}", parse_file(text).unwrap_err());
            assert!(err.contains(want) || want.is_empty(), "{text:?} -> {err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; (MAX_CONFIG_BYTES + 1) as usize]).unwrap();
        let err = Config::load(&cli(&["--config", big.to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("limit"), "{err}");
        let err = Config::load(&cli(&["--config", "/nonexistent/x.toml"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/x.toml"), "{err}");
    }

    #[test]
    fn plaintext_off_loopback_needs_consent() {
        let err = Config::load(&cli(&["--grpc-listen", "0.0.0.0:7443"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("refusing plaintext"), "{err}");
        assert!(
            Config::load(&cli(&[
                "--grpc-listen",
                "0.0.0.0:7443",
                "--allow-plaintext"
            ]))
            .is_ok()
        );
        assert!(Config::load(&cli(&["--retention-days", "0"])).is_err());
    }

    #[test]
    fn grpc_limits_from_file_and_flags() {
        let c = Config::load(&cli(&[])).unwrap();
        assert_eq!(c.grpc_limits.max_connections_per_address, 256);
        assert!(c.grpc_limits.per_ip_failure_quota.is_some());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(
            &path,
            "[grpc]\nmax_connections = 4096\nmax_connections_per_address = 2000\n\
             auth_failures_per_second = 0\nper_agent_requests_per_second = 50\n",
        )
        .unwrap();
        let file = path.to_str().unwrap();
        let c = Config::load(&cli(&["--config", file])).unwrap();
        assert_eq!(c.grpc_limits.max_connections, 4096);
        assert_eq!(c.grpc_limits.max_connections_per_address, 2000);
        assert!(
            c.grpc_limits.per_ip_failure_quota.is_none(),
            "0 turns it off"
        );
        let c = Config::load(&cli(&[
            "--config",
            file,
            "--grpc-max-connections-per-address",
            "3",
            "--grpc-auth-failures-per-second",
            "7",
        ]))
        .unwrap();
        assert_eq!(c.grpc_limits.max_connections_per_address, 3, "flag wins");
        assert!(c.grpc_limits.per_ip_failure_quota.is_some());
        for (text, want) in [
            ("[grpc]\nmax_connections_per_address = 0\n", "at least 1"),
            ("[grpc]\nper_agent_requests_per_second = 0\n", "at least 1"),
            ("[grpc]\nmax_conections = 5\n", "unknown field"),
            ("[grpc]\nmax_connections = -5\n", "max_connections"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = format!("{:#}", Config::load(&cli(&["--config", file])).unwrap_err());
            assert!(err.contains(want), "{text:?} -> {err}");
        }
    }

    #[test]
    fn storage_from_file_and_flags() {
        let c = Config::load(&cli(&[])).unwrap();
        assert!(c.database_url.is_none() && c.control_database_url.is_none());
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("url");
        let control = dir.path().join("control-url");
        std::fs::write(&url, "  postgres://u:pw@db:5432/metrics \n").unwrap();
        std::fs::write(&control, "postgresql://u:pw@db:5432/control").unwrap();
        let toml = dir.path().join("s.toml");
        std::fs::write(
            &toml,
            format!(
                "[storage]\nbackend = \"postgres\"\ndatabase_url_file = \"{}\"\n",
                url.display()
            ),
        )
        .unwrap();
        let toml = toml.to_str().unwrap();
        // One URL for both stores, trimmed.
        let c = Config::load(&cli(&["--config", toml])).unwrap();
        let got =
            |s: &Option<sentra_api::SecretString>| s.as_ref().unwrap().expose_secret().to_owned();
        assert_eq!(got(&c.database_url), "postgres://u:pw@db:5432/metrics");
        assert_eq!(
            got(&c.control_database_url),
            "postgres://u:pw@db:5432/metrics"
        );
        // A separate shared control database.
        let c = Config::load(&cli(&[
            "--config",
            toml,
            "--control-database-url-file",
            control.to_str().unwrap(),
        ]))
        .unwrap();
        assert_eq!(got(&c.database_url), "postgres://u:pw@db:5432/metrics");
        assert_eq!(
            got(&c.control_database_url),
            "postgresql://u:pw@db:5432/control"
        );
        // The flag wins over the file: back to SQLite, which a URL contradicts.
        let err = format!(
            "{:#}",
            Config::load(&cli(&["--config", toml, "--storage-backend", "sqlite"])).unwrap_err()
        );
        assert!(err.contains("the storage backend is sqlite"), "{err}");
        assert!(!err.contains("pw@"), "{err}");
        // SQLite metrics with a shared PostgreSQL control plane.
        let c = Config::load(&cli(&[
            "--control-database-url-file",
            control.to_str().unwrap(),
        ]))
        .unwrap();
        assert!(c.database_url.is_none());
        assert_eq!(
            got(&c.control_database_url),
            "postgresql://u:pw@db:5432/control"
        );
        // Not a PostgreSQL URL, an empty file, a missing file: named, never shown.
        std::fs::write(&url, "mysql://u:pw@db/x").unwrap();
        let err = format!("{:#}", Config::load(&cli(&["--config", toml])).unwrap_err());
        assert!(err.contains("does not start with postgres://"), "{err}");
        assert!(
            err.contains(url.to_str().unwrap()) && !err.contains("pw@"),
            "{err}"
        );
        std::fs::write(&url, "\n").unwrap();
        let err = format!("{:#}", Config::load(&cli(&["--config", toml])).unwrap_err());
        assert!(err.contains("is empty"), "{err}");
        let err = format!(
            "{:#}",
            Config::load(&cli(&[
                "--storage-backend",
                "postgres",
                "--database-url-file",
                "/nonexistent/url"
            ]))
            .unwrap_err()
        );
        assert!(err.contains("/nonexistent/url"), "{err}");
        let err = format!(
            "{:#}",
            Config::load(&cli(&["--storage-backend", "postgres"])).unwrap_err()
        );
        assert!(err.contains("needs a database URL"), "{err}");
    }

    #[test]
    fn api_tls_allows_a_non_loopback_rest_listener() {
        let err = Config::load(&cli(&["--api-listen", "0.0.0.0:8443"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--api-tls-cert"), "{err}");
        let c = Config::load(&cli(&[
            "--api-listen",
            "0.0.0.0:8443",
            "--api-tls-cert",
            "/c.pem",
            "--api-tls-key",
            "/k.pem",
        ]))
        .unwrap();
        assert_eq!(
            c.api_tls,
            Some((PathBuf::from("/c.pem"), PathBuf::from("/k.pem")))
        );
        // Only one of the pair is an error, from the file as from flags.
        assert!(Cli::try_parse_from(["sentra-server", "--api-tls-cert", "/c.pem"]).is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(&path, "api_tls_key = \"/k.pem\"\n").unwrap();
        let err = Config::load(&cli(&["--config", path.to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("api_tls_cert and api_tls_key"), "{err}");
    }
}
