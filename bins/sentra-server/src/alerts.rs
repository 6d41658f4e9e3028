//! The built-in alert engine in the server: configuration (`[alerts]`, flags, environment),
//! loading the rule and routing files, starting `sentra_alerts::engine::Engine` on the
//! ingest's stream of stored batches, attaching it to the REST API (`/api/v1/alerts`),
//! its counters on `/metrics`, and its shutdown (the state is saved before the process
//! exits).
//!
//! Defaults, decided here: the engine is **on**, with the built-in WireGuard rules
//! (`WgHandshakeStale` > 180 s aware of idle peers, `WgEndpointChanged`,
//! `WgTransferStalled`, `WgInterfaceGone`, `AgentOffline` after 5 min) plus the rules of
//! `rules_file`, and the inhibition "an offline agent mutes its other alerts". Without a
//! routing file every notification goes to the server log (receiver `log`, which a
//! routing file may name too); alerts also show in the API, the CLI and on `/metrics`. The
//! state (evaluator and router: what fired, what was notified, silences) lives in
//! `alerts-state.json` in the data directory, so a restart neither repeats nor loses a
//! notification.
//!
//! **One evaluator per fleet.** With the SQLite control store (one server per data
//! directory) the engine simply runs. With a shared PostgreSQL control database and
//! `[alerts] lease = true` (`--alerts-lease`), servers hold an election by **lease**: a
//! session advisory lock
//! (`sentra_control::alert_lease`, `pg_try_advisory_lock` on a dedicated connection).
//! Only the holder runs the engine (evaluates and notifies) and saves its state to the
//! row `sentra_alert_state` of that database (same schedule as the file, through the
//! lease's connection; no state file then), so a new holder resumes without re-notifying
//! or losing pending alerts. The others retry every 2 s; when the holder dies its session
//! ends, the lock is released and one of them takes over. A holder that loses its session
//! (the database restarted, the network broke) exits at once with an error, since another
//! server may already evaluate (restart it to rejoin; as Kubernetes controllers do on a lost
//! leader election). On a server that does not hold the lease `/api/v1/alerts` answers
//! 503 (ask the holder: the log of each server says whether it holds it) and
//! `sentra_alerts_leader` on `/metrics` is 0; the engine's other series appear on the
//! holder only. The holder evaluates the batches its own ingest stores: agents reporting
//! to another server are evaluated only by a holder that sees their batches.
//!
//! The lease is **off by default**, decided here: servers that share a control database
//! keep their own metric stores today, so each sees only the agents that report to it, and
//! a single holder would silently miss the others' alerts — a missed alert is worse than a
//! duplicate one. Without the lease each server evaluates its own agents (no duplicates
//! while every agent reports to one server). Turn it on when every server sees every
//! agent's batches (e.g. agents behind a load balancer that sends each to all servers, or
//! once the engine is fed from the JetStream bus).

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, bail};
use sentra_alerts::{
    engine::{Engine, EngineConfig, Feed},
    notify::{Log, Notifier, Webhook},
    route::{InhibitRule, Route, RouterConfig},
};
use serde::Deserialize;
use tracing::{error, info, warn};

/// Alerting flags (each also an environment variable or an `[alerts]` key).
#[derive(Debug, Default, clap::Args)]
pub(crate) struct AlertsArgs {
    /// Run the built-in alert engine (default true). `--alerts false` turns it off.
    #[arg(
        long = "alerts",
        env = "SENTRA_ALERTS",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub(crate) alerts: Option<bool>,
    /// Evaluate the built-in WireGuard rules (default true; false e.g. to redefine them in
    /// the rules file).
    #[arg(
        long,
        env = "SENTRA_ALERTS_BUILTIN_RULES",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub(crate) alerts_builtin_rules: Option<bool>,
    /// Alert rule file (TOML `[[rule]]` tables), added to the built-in rules.
    #[arg(long, env = "SENTRA_ALERTS_RULES_FILE")]
    pub(crate) alerts_rules_file: Option<PathBuf>,
    /// Routing file (TOML `[[receiver]]`, `[[route]]`, `[[inhibit]]`): where notifications
    /// go. Without one they go to the server log.
    #[arg(long, env = "SENTRA_ALERTS_ROUTING_FILE")]
    pub(crate) alerts_routing_file: Option<PathBuf>,
    /// Evaluation interval (humantime, e.g. "5s"; default 5s).
    #[arg(long, env = "SENTRA_ALERTS_TICK")]
    pub(crate) alerts_tick: Option<String>,
    /// How often the alert state is saved while running (humantime; default 30s; also
    /// on shutdown).
    #[arg(long, env = "SENTRA_ALERTS_STATE_SAVE_EVERY")]
    pub(crate) alerts_state_save_every: Option<String>,
    /// With a shared PostgreSQL control database: only the holder of the alert lease
    /// evaluates and notifies (default false: each server evaluates the agents that report
    /// to it; see the README).
    #[arg(
        long,
        env = "SENTRA_ALERTS_LEASE",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub(crate) alerts_lease: Option<bool>,
}

/// `[alerts]` in the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlertsSection {
    enabled: Option<bool>,
    builtin_rules: Option<bool>,
    rules_file: Option<PathBuf>,
    routing_file: Option<PathBuf>,
    tick: Option<String>,
    /// Default: `alerts-state.json` in the data directory.
    state_file: Option<PathBuf>,
    state_save_every: Option<String>,
    lease: Option<bool>,
}

/// The effective alerting configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AlertsConfig {
    pub(crate) enabled: bool,
    pub(crate) builtin_rules: bool,
    pub(crate) rules_file: Option<PathBuf>,
    pub(crate) routing_file: Option<PathBuf>,
    pub(crate) tick: Duration,
    /// `None`: `alerts-state.json` in the data directory.
    pub(crate) state_file: Option<PathBuf>,
    /// How often the state is saved while running.
    pub(crate) save_every: Duration,
    /// Elect one evaluator by lease on a shared PostgreSQL control database.
    pub(crate) lease: bool,
}

impl AlertsConfig {
    /// Flags and environment win over the file.
    pub(crate) fn resolve(args: &AlertsArgs, file: Option<AlertsSection>) -> anyhow::Result<Self> {
        let file = file.unwrap_or_default();
        let tick_text = args.alerts_tick.clone().or(file.tick);
        let tick = match &tick_text {
            None => Duration::from_secs(5),
            Some(t) => humantime::parse_duration(t)
                .with_context(|| format!("alerts tick {t:?} is not a duration like \"5s\""))?,
        };
        if tick < Duration::from_millis(100) || tick > Duration::from_secs(3600) {
            bail!("alerts tick must be between 100ms and 1h, got {tick:?}");
        }
        let save_every = match args
            .alerts_state_save_every
            .clone()
            .or(file.state_save_every)
        {
            None => Duration::from_secs(30),
            Some(t) => humantime::parse_duration(&t).with_context(|| {
                format!("alerts state_save_every {t:?} is not a duration like \"30s\"")
            })?,
        };
        if save_every < Duration::from_millis(100) || save_every > Duration::from_secs(3600) {
            bail!("alerts state_save_every must be between 100ms and 1h, got {save_every:?}");
        }
        Ok(Self {
            save_every,
            lease: args.alerts_lease.or(file.lease).unwrap_or(false),
            enabled: args.alerts.or(file.enabled).unwrap_or(true),
            builtin_rules: args
                .alerts_builtin_rules
                .or(file.builtin_rules)
                .unwrap_or(true),
            rules_file: args.alerts_rules_file.clone().or(file.rules_file),
            routing_file: args.alerts_routing_file.clone().or(file.routing_file),
            tick,
            state_file: file.state_file,
        })
    }

    /// Where the engine state is saved.
    pub(crate) fn state_file(&self, data_dir: &Path) -> PathBuf {
        self.state_file
            .clone()
            .unwrap_or_else(|| data_dir.join("alerts-state.json"))
    }
}

/// The built-in receiver writing notifications to the server log.
const LOG: &str = "log";

/// Largest rule or routing file accepted.
const MAX_FILE: u64 = 4 * 1024 * 1024;

fn read(path: &Path, what: &str) -> anyhow::Result<String> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("reading the alert {what} file {}", path.display()))?;
    if meta.len() > MAX_FILE {
        bail!(
            "the alert {what} file {} is {} bytes; the limit is {MAX_FILE}",
            path.display(),
            meta.len()
        );
    }
    std::fs::read_to_string(path)
        .with_context(|| format!("reading the alert {what} file {}", path.display()))
}

/// What [`load`] read: the engine's settings and the receivers' notifiers.
pub(crate) struct Loaded {
    pub(crate) engine: EngineConfig,
    pub(crate) notifiers: Vec<Arc<dyn Notifier>>,
    pub(crate) receivers: Vec<String>,
}

/// Reads the rule and routing files. Errors name the file and every problem in it (never
/// a secret or a URL).
pub(crate) fn load(config: &AlertsConfig, data_dir: &Path) -> anyhow::Result<Loaded> {
    let mut rules = if config.builtin_rules {
        sentra_alerts::builtin_wireguard_rules()
    } else {
        Vec::new()
    };
    if let Some(path) = &config.rules_file {
        let text = read(path, "rules")?;
        let (more, warnings) = sentra_alerts::parse_rules(&text, None)
            .with_context(|| format!("in the alert rules file {}", path.display()))?;
        for w in warnings {
            warn!(file = %path.display(), warning = %w, "alert rules file");
        }
        for r in &more {
            if rules.iter().any(|b| b.name == r.name) {
                bail!(
                    "in the alert rules file {}: rule {:?} has the name of a built-in rule \
                     (rename it, or set [alerts] builtin_rules = false)",
                    path.display(),
                    r.name
                );
            }
        }
        rules.extend(more);
    }
    let (mut routing, webhooks) = match &config.routing_file {
        // everything to the log
        None => (RouterConfig::new(vec![Route::new(LOG)]), Vec::new()),
        Some(path) => {
            let text = read(path, "routing")?;
            let webhooks = sentra_alerts::notify::parse_receivers(&text)
                .with_context(|| format!("in the alert routing file {}", path.display()))?;
            let routing = sentra_alerts::route::parse_routing(&text)
                .with_context(|| format!("in the alert routing file {}", path.display()))?;
            (routing, webhooks)
        }
    };
    if config.builtin_rules && routing.inhibit.is_empty() {
        // an offline agent mutes its peers' and interfaces' alerts
        routing
            .inhibit
            .push(InhibitRule::agent_offline("AgentOffline").context("the built-in inhibition")?);
    }
    let mut notifiers: Vec<Arc<dyn Notifier>> = Vec::new();
    let mut receivers = Vec::new();
    if routing.routes.iter().any(|r| r.receiver == LOG) && !webhooks.iter().any(|w| w.name == LOG) {
        receivers.push(LOG.to_owned());
        notifiers.push(Arc::new(Log::new(LOG)));
    }
    for w in webhooks {
        receivers.push(w.name.clone());
        notifiers.push(Arc::new(Webhook::new(w).with_context(|| {
            format!(
                "in the alert routing file {}",
                config
                    .routing_file
                    .as_deref()
                    .unwrap_or(Path::new(""))
                    .display()
            )
        })?));
    }
    let mut engine = EngineConfig::new(rules);
    engine.routing = routing;
    engine.tick = config.tick;
    engine.state_file = Some(config.state_file(data_dir));
    engine.save_every = config.save_every;
    Ok(Loaded {
        engine,
        notifiers,
        receivers,
    })
}

/// How often a server without the alert lease tries to take it.
const LEASE_RETRY: Duration = Duration::from_secs(2);
/// How often the lease holder checks that its session is alive.
const LEASE_CHECK: Duration = Duration::from_secs(1);

/// The engine once this server runs it, and whether it holds the lease.
#[derive(Debug, Default)]
struct Slot {
    engine: OnceLock<Arc<Engine>>,
    leader: AtomicBool,
}

/// The alerting of this server: the engine (at once, or once it holds the lease) and the
/// election task on a shared PostgreSQL control database.
#[derive(Debug)]
pub(crate) struct Alerting {
    slot: Arc<Slot>,
    election: Option<tokio::task::JoinHandle<()>>,
}

/// Loads the configuration and starts alerting: without `control_url` (SQLite control
/// store) or without `[alerts] lease` the engine runs at once; with both, an election task
/// runs the engine once this
/// server holds the alert lease (see the module documentation). The engine reads
/// `ingest`'s stored batches, is served under `/api/v1/alerts` and counted on `/metrics`.
/// `Ok(None)` when alerting is off.
pub(crate) fn start(
    config: &AlertsConfig,
    data_dir: &Path,
    api: &sentra_api::Api,
    ingest: &sentra_ingest::Ingest,
    control_url: Option<&str>,
) -> anyhow::Result<Option<Alerting>> {
    if !config.enabled {
        info!("alerting is off ([alerts] enabled = false)");
        return Ok(None);
    }
    let loaded = load(config, data_dir)?;
    let slot = Arc::new(Slot::default());
    let collector = AlertsCollector(Arc::clone(&slot));
    api.register_metrics(|r| r.register_collector(Box::new(collector)));
    let Some(url) = control_url.filter(|_| config.lease) else {
        let state_file = config.state_file(data_dir);
        let feed = sentra_api::Api::alert_feed(ingest, 4096);
        let engine = run_engine(loaded, api, feed).with_context(|| {
            format!(
                "starting the alert engine (state file {})",
                state_file.display()
            )
        })?;
        let _ = slot.engine.set(engine);
        slot.leader.store(true, Ordering::Relaxed);
        return Ok(Some(Alerting {
            slot,
            election: None,
        }));
    };
    // Until this server holds the lease, /api/v1/alerts says the holder serves alerts.
    api.alerts_standby();
    let election = tokio::spawn(elect(
        url.to_owned(),
        loaded,
        api.clone(),
        sentra_api::Api::alert_feed(ingest, 4096),
        Arc::clone(&slot),
    ));
    Ok(Some(Alerting {
        slot,
        election: Some(election),
    }))
}

/// Starts the engine on `feed` (the ingest's stored batches) and serves it under
/// `/api/v1/alerts`.
fn run_engine(
    loaded: Loaded,
    api: &sentra_api::Api,
    feed: tokio::sync::mpsc::Receiver<Feed>,
) -> anyhow::Result<Arc<Engine>> {
    let rules = loaded.engine.rules.len();
    let routes = loaded.engine.routing.routes.len();
    let state = match (&loaded.engine.state_store, &loaded.engine.state_file) {
        (Some(_), _) => "the control database (sentra_alert_state)".to_owned(),
        (None, Some(f)) => f.display().to_string(),
        (None, None) => "none".to_owned(),
    };
    let engine = Arc::new(Engine::start(loaded.engine, loaded.notifiers, feed)?);
    api.attach_alerts(Arc::clone(&engine));
    info!(
        rules,
        routes,
        receivers = %loaded.receivers.join(","),
        state = %state,
        "alert engine started"
    );
    Ok(engine)
}

/// The engine state's row in the control database, written through the lease's session.
#[derive(Debug)]
struct LeaseStore(Arc<sentra_control::alert_lease::AlertLease>);

impl sentra_alerts::engine::StateStore for LeaseStore {
    fn save(
        &self,
        state: Vec<u8>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = std::result::Result<(), String>> + Send + '_>,
    > {
        Box::pin(async move { self.0.save_state(&state).await.map_err(|e| e.to_string()) })
    }
}

/// Waits `d`, discarding the batches a standby server stores meanwhile (the holder
/// evaluates; a standby starts from the saved state and the batches after it).
async fn idle(feed: &mut tokio::sync::mpsc::Receiver<Feed>, d: Duration) {
    let until = tokio::time::Instant::now() + d;
    loop {
        match tokio::time::timeout_at(until, feed.recv()).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                tokio::time::sleep_until(until).await;
                return;
            }
            Err(_) => return,
        }
    }
}

/// The election on the shared control database: takes the lease (retrying), runs the
/// engine from the saved state, then watches the lease; exits the process if it is lost.
async fn elect(
    url: String,
    mut loaded: Loaded,
    api: sentra_api::Api,
    mut feed: tokio::sync::mpsc::Receiver<Feed>,
    slot: Arc<Slot>,
) {
    let mut said = false;
    let (lease, restore) = loop {
        match sentra_control::alert_lease::AlertLease::try_acquire(&url).await {
            Ok(Some(lease)) => match lease.load_state().await {
                Ok(state) => break (Arc::new(lease), state),
                Err(e) => warn!(error = %e, "cannot read the saved alert state; retrying"),
            },
            Ok(None) => {
                if !said {
                    info!(
                        retry_s = LEASE_RETRY.as_secs(),
                        "alert engine on standby: another server holds the alert lease \
                         (PostgreSQL advisory lock); this server takes over when it ends"
                    );
                    said = true;
                }
            }
            Err(e) => warn!(error = %e, "cannot try the alert lease; retrying"),
        }
        idle(&mut feed, LEASE_RETRY).await;
    };
    let restored = restore.is_some();
    loaded.engine.state_file = None;
    loaded.engine.restore = restore;
    loaded.engine.state_store = Some(Arc::new(LeaseStore(Arc::clone(&lease))));
    let engine = match run_engine(loaded, &api, feed) {
        Ok(e) => e,
        Err(e) => {
            error!(
                error = %format!("{e:#}"),
                "this server holds the alert lease but cannot start the alert engine \
                 (a saved state that does not decode: delete the row of sentra_alert_state \
                 to start empty); exiting"
            );
            std::process::exit(1);
        }
    };
    let _ = slot.engine.set(engine);
    slot.leader.store(true, Ordering::Relaxed);
    info!(
        restored,
        "this server holds the alert lease and evaluates the alerts"
    );
    loop {
        tokio::time::sleep(LEASE_CHECK).await;
        if let Err(e) = lease.check().await {
            slot.leader.store(false, Ordering::Relaxed);
            error!(
                error = %e,
                "lost the alert lease (its database session ended); exiting so that only \
                 one server evaluates the alerts; restart this server to rejoin"
            );
            std::process::exit(1);
        }
    }
}

/// The engine's counters on `/metrics` (read at scrape time from the engine's atomics).
#[derive(Debug)]
struct AlertsCollector(Arc<Slot>);

impl prometheus_client::collector::Collector for AlertsCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        use prometheus_client::{
            encoding::EncodeMetric as _,
            metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
        };
        ConstGauge::new(i64::from(self.0.leader.load(Ordering::Relaxed))).encode(
            encoder.encode_descriptor(
                "sentra_alerts_leader",
                "1 on the server that evaluates the alerts (it holds the alert lease, or the \
                 control store is SQLite), else 0.",
                None,
                MetricType::Gauge,
            )?,
        )?;
        let Some(engine) = self.0.engine.get() else {
            return Ok(());
        };
        let e = engine.stats();
        let d = engine.dispatch_stats();
        let r = engine.last_router_stats();
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let counters: [(&str, &str, u64); 12] = [
            (
                "sentra_alerts_batches",
                "Stored batches the alert engine evaluated.",
                e.batches,
            ),
            (
                "sentra_alerts_batches_lagged",
                "Stored batches the alert engine missed (it fell behind the feed).",
                e.lagged,
            ),
            ("sentra_alerts_ticks", "Alert evaluation ticks.", e.ticks),
            (
                "sentra_alerts_transitions",
                "Alert transitions (pending, firing, resolved).",
                e.transitions,
            ),
            ("sentra_alerts_state_saves", "Alert state saves.", e.saves),
            (
                "sentra_alerts_state_save_errors",
                "Alert state saves that failed.",
                e.save_errors,
            ),
            (
                "sentra_alerts_notifications",
                "Notifications the router produced.",
                r.notifications,
            ),
            (
                "sentra_alerts_unrouted",
                "Firing alerts no route took.",
                r.unrouted,
            ),
            (
                "sentra_alerts_notifications_delivered",
                "Notifications receivers accepted.",
                d.delivered,
            ),
            (
                "sentra_alerts_notifications_failed",
                "Notifications given up after every retry (dead letters).",
                d.failed,
            ),
            (
                "sentra_alerts_notifications_dropped",
                "Notifications dropped because their receiver's queue was full.",
                d.notifications_dropped,
            ),
            (
                "sentra_alerts_transitions_dropped",
                "Transition batches dropped because the router's queue was full.",
                d.transitions_dropped,
            ),
        ];
        for (name, help, v) in counters {
            ConstCounter::new(v).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Counter,
            )?)?;
        }
        let gauges: [(&str, &str, i64); 6] = [
            (
                "sentra_alerts_firing",
                "Alerts firing after the last evaluation tick.",
                i64::try_from(e.firing).unwrap_or(i64::MAX),
            ),
            (
                "sentra_alerts_pending",
                "Alerts pending (condition true, `for` not yet over) after the last tick.",
                i64::try_from(e.pending).unwrap_or(i64::MAX),
            ),
            (
                "sentra_alerts_rules",
                "Alert rules evaluated.",
                gauge(engine.rules().len()),
            ),
            (
                "sentra_alerts_silences",
                "Silences kept (pending, active or expired not yet purged).",
                gauge(r.silences),
            ),
            (
                "sentra_alerts_groups",
                "Notification groups the router tracks.",
                gauge(r.groups),
            ),
            (
                "sentra_alerts_dead_letters",
                "Undelivered notifications kept for re-sending.",
                gauge(d.dead_letters),
            ),
        ];
        for (name, help, v) in gauges {
            ConstGauge::new(v).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Gauge,
            )?)?;
        }
        Ok(())
    }
}

/// Stops the election and the engine and saves its state (bounded: 15 s).
pub(crate) async fn shutdown(alerting: Option<Alerting>) {
    let Some(alerting) = alerting else { return };
    if let Some(election) = alerting.election {
        election.abort();
        let _ = election.await;
    }
    let Some(engine) = alerting.slot.engine.get().cloned() else {
        return;
    };
    match tokio::time::timeout(Duration::from_secs(15), engine.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "alert engine shutdown failed"),
        Err(_) => warn!("alert engine did not stop within 15 s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> AlertsArgs {
        AlertsArgs::default()
    }

    #[test]
    fn defaults_run_the_builtin_rules_and_send_nothing() {
        let c = AlertsConfig::resolve(&args(), None).unwrap();
        assert!(c.enabled && c.builtin_rules);
        assert!(!c.lease, "the alert lease is opt-in");
        let section: AlertsSection = toml::from_str("lease = true").unwrap();
        assert!(AlertsConfig::resolve(&args(), Some(section)).unwrap().lease);
        assert_eq!(c.tick, Duration::from_secs(5));
        assert_eq!(
            c.state_file(Path::new("/d")),
            PathBuf::from("/d/alerts-state.json")
        );
        let l = load(&c, Path::new("/d")).unwrap();
        assert_eq!(l.engine.rules.len(), 5);
        assert_eq!(l.engine.routing.routes.len(), 1);
        assert_eq!(l.engine.routing.inhibit.len(), 1);
        assert_eq!(l.receivers, ["log"]);
    }

    #[test]
    fn files_flags_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules.toml");
        let routing = dir.path().join("routing.toml");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "hunter2-very-secret\n").unwrap();
        std::fs::write(
            &rules,
            "[[rule]]\nname = \"HighLoad\"\nkind = \"threshold\"\nmetric = \"load1\"\nop = \">\"\nvalue = 4.0\n",
        )
        .unwrap();
        std::fs::write(
            &routing,
            format!(
                "[[receiver]]\nname = \"ops\"\nurl = \"http://127.0.0.1:9/hook?token=abc\"\nsecret_file = \"{}\"\n\n[[route]]\nreceiver = \"ops\"\n",
                secret.display()
            ),
        )
        .unwrap();
        let file = AlertsSection {
            rules_file: Some(rules.clone()),
            routing_file: Some(routing.clone()),
            tick: Some("1s".into()),
            ..AlertsSection::default()
        };
        let mut a = args();
        a.alerts_tick = Some("250ms".into());
        let c = AlertsConfig::resolve(&a, Some(file)).unwrap();
        assert_eq!(c.tick, Duration::from_millis(250), "the flag wins");
        let l = load(&c, dir.path()).unwrap();
        assert_eq!(l.engine.rules.len(), 6);
        assert_eq!(l.receivers, ["ops"]);
        assert_eq!(l.engine.routing.routes.len(), 1);
        // the secret and the URL's token never show
        let dbg = format!("{:?}", l.notifiers);
        assert!(!dbg.contains("hunter2"), "{dbg}");

        // a route naming an unknown receiver, a bad duration: the file and the problem
        std::fs::write(
            &routing,
            "[[route]]\nreceiver = \"ops\"\ngroup_wait = \"soon\"\n",
        )
        .unwrap();
        let err = format!("{:#}", load(&c, dir.path()).err().unwrap());
        assert!(
            err.contains("routing.toml") && err.contains("group_wait"),
            "{err}"
        );
        std::fs::write(&routing, "[[receiver]]\nname = \"x y\"\n").unwrap();
        let err = format!("{:#}", load(&c, dir.path()).err().unwrap());
        assert!(
            err.contains("receiver name") && err.contains("url"),
            "{err}"
        );
        // a rule named like a built-in one
        std::fs::write(&routing, "").unwrap();
        std::fs::write(
            &rules,
            "[[rule]]\nname = \"AgentOffline\"\nkind = \"agent_offline\"\n",
        )
        .unwrap();
        let err = format!("{:#}", load(&c, dir.path()).err().unwrap());
        assert!(err.contains("built-in"), "{err}");
        // off
        a.alerts = Some(false);
        assert!(!AlertsConfig::resolve(&a, None).unwrap().enabled);
        a.alerts_tick = Some("often".into());
        assert!(AlertsConfig::resolve(&a, None).is_err());
    }
}
