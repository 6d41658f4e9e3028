//! The running agent: collector schedules, the shipper, key rotation and the peer applier.

use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};

use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::api::{ApiClient, KeyCheck, check_key};
use crate::apply::Applier;
use crate::collect::{HostSource, WireGuardSource};
use crate::collector::Collector;
use crate::credentials::Credentials;
use crate::health::Health;
use crate::host::HostCollector;
use crate::output::Snapshot;
use crate::scheduler::Entry;
use crate::ship::{Backoff, Ingest, KeyState, Shipper};
use crate::store::{Appended, Store};
use crate::wireguard::WgCollector;
use crate::{Config, Error, Result};

/// The agent runtime.
///
/// ```no_run
/// # async fn demo() -> sentra_agent::Result<()> {
/// use sentra_agent::{Agent, Config};
/// let mut config = Config::new("/var/lib/sentra-agent");
/// config.server = Some("http://127.0.0.1:7000".into());
/// let agent = Agent::new(config)?;
/// agent.run(async { let _ = tokio::signal::ctrl_c().await; }).await
/// # }
/// ```
pub struct Agent {
    config: Config,
    ingest: Option<Arc<dyn Ingest>>,
    health: Arc<Health>,
    wireguard: bool,
    collectors: Vec<Entry>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("config", &self.config)
            .field("custom_ingest", &self.ingest.is_some())
            .field("collectors", &self.collectors)
            .finish_non_exhaustive()
    }
}

/// A running agent started with [`Agent::spawn`].
#[derive(Debug)]
pub struct AgentHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<()>>,
    health: Arc<Health>,
}

impl AgentHandle {
    /// The agent's counters.
    #[must_use]
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// Whether the agent stopped on its own (an error).
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Drops the running agent without a graceful stop — its tasks are cancelled where they
    /// are, the shipper does not persist its cursor — and waits until they are gone. This
    /// is what a crash looks like to the WAL (short of losing the page cache), for tests of
    /// restart behaviour.
    pub async fn abort(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Stops the agent gracefully (the shipper persists its cursor, the WAL is closed) and
    /// waits for it.
    ///
    /// # Errors
    ///
    /// The error that stopped the agent, if any.
    pub async fn shutdown(self) -> Result<()> {
        let _ = self.stop.send(true);
        self.task.await.map_err(|e| Error::Task(e.to_string()))?
    }
}

impl Agent {
    /// An agent with this configuration; nothing is opened yet.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for invalid settings.
    pub fn new(config: Config) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            ingest: None,
            health: Arc::new(Health::default()),
            wireguard: true,
            collectors: Vec::new(),
        })
    }

    /// Adds a collector, run by the same scheduler as the built-in `host` and `wireguard`
    /// collectors; its collections are stored, signed and shipped like theirs. See
    /// [`collector`](crate::collector) for the contract.
    ///
    /// Its name and schedule are read now; a name used twice (or `host`, `wireguard`) or a
    /// zero interval or timeout makes the agent refuse to start ([`Error::Config`]).
    #[must_use]
    pub fn with_collector(mut self, collector: impl Collector) -> Self {
        self.collectors.push(Entry::new(collector));
        self
    }

    /// Ships through `ingest` instead of a gRPC client built from `config.server` (an
    /// embedding process can hand in an in-process client).
    #[must_use]
    pub fn with_ingest(mut self, ingest: Arc<dyn Ingest>) -> Self {
        self.ingest = Some(ingest);
        self
    }

    /// Turns the WireGuard collector and peer applier off (hosts that must not touch
    /// netlink; tests).
    #[must_use]
    pub fn without_wireguard(mut self) -> Self {
        self.wireguard = false;
        self
    }

    /// The agent's counters (also reported as `sentra_agent_*` samples).
    #[must_use]
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// Starts the agent on the current tokio runtime.
    #[must_use]
    pub fn spawn(self) -> AgentHandle {
        let (stop, rx) = watch::channel(false);
        let health = self.health.clone();
        let task = tokio::spawn(self.run_until(rx));
        AgentHandle { stop, task, health }
    }

    /// Runs until `shutdown` completes (then stops gracefully) or a fatal error occurs
    /// (the WAL failed: the process should restart, recovery repairs the log).
    ///
    /// # Errors
    ///
    /// [`Error::NotEnrolled`], [`Error::Wal`], [`Error::Transport`], [`Error::Config`].
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let (stop, rx) = watch::channel(false);
        let run = self.run_until(rx);
        tokio::pin!(run);
        tokio::select! {
            r = &mut run => r,
            () = shutdown => {
                let _ = stop.send(true);
                run.await
            }
        }
    }

    async fn run_until(self, stop: watch::Receiver<bool>) -> Result<()> {
        check_collectors(&self.collectors)?;
        let cfg = self.config;
        let (creds, from_file) = match &cfg.credentials {
            Some(c) => (c.clone(), false),
            None => {
                let p = cfg.credentials_file.clone();
                let c = tokio::task::spawn_blocking(move || Credentials::load(&p))
                    .await
                    .map_err(|e| Error::Task(e.to_string()))??;
                (c, true)
            }
        };
        let agent_id = creds.agent_id().clone();
        let ingest: Arc<dyn Ingest> = match self.ingest {
            Some(i) => i,
            None => {
                let server = cfg.server.clone().ok_or_else(|| {
                    Error::Config("no server: set --server / SENTRA_AGENT_SERVER / server".into())
                })?;
                // One retry owner: the shipper. It re-signs every attempt (fresh nonce and
                // time) and backs off with jitter, forever; a client retry underneath would
                // re-send the same envelope inside the same push timeout. So the client
                // makes exactly one attempt, bounded by the push timeout.
                let mut b = sentra_transport::Client::builder(server.clone())
                    .retry(sentra_transport::RetryConfig::disabled())
                    .deadline(cfg.push_timeout)
                    .attempt_timeout(cfg.push_timeout);
                if let Some(ca) = &cfg.ca_file {
                    b = b.ca_file(ca).map_err(|e| Error::Transport(e.to_string()))?;
                }
                let client = b
                    .build()
                    .map_err(|e| Error::Transport(format!("{server}: {e}")))?;
                Arc::new(client)
            }
        };
        let (store, report) = open_store(&cfg).await?;
        log_recovery(&report);
        tracing::info!(
            agent_id = %agent_id,
            key_id = %creds.key_id(),
            state_dir = %cfg.state_dir.display(),
            unshipped = report.unacked_records,
            next_lsn = report.next_lsn,
            seq_base = store.seq_base(),
            "agent started"
        );
        let creds: KeyState = Arc::new(RwLock::new(creds));
        let wake = Arc::new(Notify::new());
        let key_check = Arc::new(Notify::new());
        let health = self.health;
        let mut tasks: JoinSet<(String, Result<()>)> = JoinSet::new();

        // Shipper.
        let shipper = Shipper {
            store: store.clone(),
            ingest: ingest.clone(),
            creds: creds.clone(),
            health: health.clone(),
            push_timeout: cfg.push_timeout,
            backoff: Backoff::new(cfg.backoff_initial, cfg.backoff_max),
            wake: wake.clone(),
            key_check: key_check.clone(),
        };
        // The shipper watches the stop signal itself, to persist its cursor before it ends.
        let shipper_stop = stop.clone();
        tasks.spawn(async move { ("shipper".to_owned(), shipper.run(shipper_stop).await) });

        // Collectors: the built-in ones first, then those added with `with_collector`, all
        // under the one scheduler. The WireGuard collector and the peer applier share one
        // netlink client.
        let mut collectors = vec![Entry::new(HostSource {
            host: HostCollector::new(&cfg.proc_root).filesystems(cfg.collect_filesystems),
            every: cfg.host_interval,
            health: health.clone(),
            store: store.clone(),
        })];
        let wg = (self.wireguard && cfg.wireguard)
            .then(|| Arc::new(tokio::sync::Mutex::new(WgCollector::new())));
        // The applier's latest per-interface reports, shipped with the next WireGuard batch.
        let apply_reports = crate::apply::Reports::default();
        if let Some(wg) = &wg {
            collectors.push(Entry::new(WireGuardSource {
                wg: wg.clone(),
                every: cfg.wireguard_interval,
                health: health.clone(),
                apply_reports: apply_reports.clone(),
            }));
        }
        let taken: std::collections::BTreeSet<String> =
            self.collectors.iter().map(|c| c.name.clone()).collect();
        collectors.extend(self.collectors);
        if let Some(dir) = &cfg.plugins_dir {
            collectors.extend(load_plugins(dir.clone(), &taken).await);
        }
        let pipeline = Arc::new(Pipeline {
            store: store.clone(),
            health: health.clone(),
            agent_id: agent_id.clone(),
            wake: wake.clone(),
            episode: FullEpisode::default(),
        });
        for c in collectors {
            tasks.spawn(with_stop(c.start(pipeline.clone()), stop.clone()));
        }
        drop(pipeline);

        // Peer applier.
        if let Some(wg) = wg
            && !cfg.desired_state_interval.is_zero()
        {
            let every = cfg.desired_state_interval;
            let (ingest, creds) = (ingest.clone(), creds.clone());
            let observe_only = cfg.observe_only.iter().cloned().collect();
            tasks.spawn(with_stop(
                async move {
                    let mut applier = Applier::new(observe_only, apply_reports);
                    let mut tick = tokio::time::interval(every);
                    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                    loop {
                        tick.tick().await;
                        applier.round(&*ingest, &creds, &wg).await;
                    }
                },
                stop.clone(),
            ));
        }

        // Key rotation.
        if from_file && !cfg.key_check_interval.is_zero() {
            match &cfg.api {
                Some(base) => {
                    let api = ApiClient::new(base, cfg.ca_file.as_deref())?;
                    let (creds, health, path) =
                        (creds.clone(), health.clone(), cfg.credentials_file.clone());
                    let every = cfg.key_check_interval;
                    let key_check = key_check.clone();
                    tasks.spawn(with_stop(
                        async move {
                            let mut tick = tokio::time::interval(every);
                            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                            let mut failing = false;
                            loop {
                                tokio::select! {
                                    _ = tick.tick() => {}
                                    () = key_check.notified() => {}
                                }
                                match check_key(&api, &creds, &path).await {
                                    Ok(KeyCheck::Rotated { from, to }) => {
                                        health.key_rotations.fetch_add(1, Relaxed);
                                        tracing::info!(%from, %to, "new signing key persisted and in use");
                                        failing = false;
                                    }
                                    Ok(_) => failing = false,
                                    Err(e) if !failing => {
                                        tracing::warn!(error = %e, "key rotation check failed; the current key stays in use");
                                        failing = true;
                                    }
                                    Err(e) => tracing::debug!(error = %e, "key rotation check failed again"),
                                }
                                // Rate-limit checks triggered by authentication failures.
                                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                            }
                        },
                        stop.clone(),
                    ));
                }
                None => tracing::info!("no api URL configured: key rotation checks are off"),
            }
        }

        // Wait for the stop signal (all tasks end with it) or the first task failure.
        let mut result = Ok(());
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((_, Ok(()))) => {}
                Ok((name, Err(e))) => {
                    tracing::error!(task = %name, error = %e, "agent task failed; stopping");
                    if result.is_ok() {
                        result = Err(e);
                    }
                    tasks.abort_all();
                }
                Err(e) if e.is_cancelled() => {}
                Err(e) => {
                    if result.is_ok() {
                        result = Err(Error::Task(e.to_string()));
                    }
                    tasks.abort_all();
                }
            }
        }
        drop(tasks);
        // Every clone of the store is gone with the tasks: close the WAL (final sync).
        match Arc::try_unwrap(store.into_wal()) {
            Ok(wal) => {
                let r = tokio::task::spawn_blocking(move || wal.close()).await;
                if let Ok(Err(e)) = r {
                    tracing::warn!(error = %e, "closing the WAL failed");
                }
            }
            Err(_) => tracing::debug!("WAL still shared at shutdown; it closes when dropped"),
        }
        tracing::info!("agent stopped");
        result
    }
}

/// Opens the WAL. A lock held by another instance is waited for up to 10 s: inside one
/// process (an embedding server restarting its local agent, tests) the previous instance's
/// last tasks may still be releasing it; a second agent process on the same directory still
/// fails with a clear error.
async fn open_store(cfg: &Config) -> Result<(Store, sentra_wal::RecoveryReport)> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (dir, max, policy) = (
            cfg.state_dir.clone(),
            cfg.wal_max_bytes,
            cfg.wal_full_policy,
        );
        let r = tokio::task::spawn_blocking(move || Store::open(&dir, max, policy))
            .await
            .map_err(|e| Error::Task(e.to_string()))?;
        match r {
            Err(Error::Wal(sentra_wal::Error::Locked(_)))
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// Logs what WAL recovery found, each thing once: losses no earlier start reported (error,
/// with their LSN ranges), losses already reported but not yet shipped past (info), a reset
/// cursor (warn), other damage repaired (warn).
fn log_recovery(report: &sentra_wal::RecoveryReport) {
    let ranges = |l: &[sentra_wal::Loss]| {
        l.iter()
            .map(|l| format!("{}..={} ({})", l.first, l.last, l.cause))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !report.new_losses.is_empty() {
        let lost: u64 = report
            .new_losses
            .iter()
            .map(sentra_wal::Loss::records)
            .sum();
        tracing::error!(
            lost,
            lsns = %ranges(&report.new_losses),
            damage = ?report.damage,
            "WAL recovery found lost records"
        );
    }
    let old: Vec<sentra_wal::Loss> = report
        .losses
        .iter()
        .filter(|l| !report.new_losses.contains(l))
        .copied()
        .collect();
    if !old.is_empty() {
        tracing::info!(
            lsns = %ranges(&old),
            "WAL losses reported before are still ahead of the shipper"
        );
    }
    if report.cursor_reset {
        tracing::warn!(
            acked_lsn = report.acked_lsn,
            "WAL cursor was damaged (both slots) and reset: records after it may be shipped again (the server deduplicates them)"
        );
    }
    if report.new_losses.is_empty() && !report.damage.is_empty() {
        tracing::warn!(damage = ?report.damage, "WAL recovery repaired damage without losing records");
    }
}

/// Refuses duplicate collector names (the built-in ones included) and unusable schedules.
/// Loads the plugins installed in `dir` on a blocking thread (compilation is synchronous).
/// Nothing here stops the agent: a plugin that cannot be loaded, a host that cannot be
/// built or a directory that cannot be read is logged at error level and skipped.
async fn load_plugins(
    dir: std::path::PathBuf,
    taken: &std::collections::BTreeSet<String>,
) -> Vec<Entry> {
    let shown = dir.display().to_string();
    let loaded = tokio::task::spawn_blocking(move || {
        let host = sentra_plugin::Host::new(sentra_plugin::HostConfig::default())
            .map_err(|e| e.to_string())?;
        crate::plugin::load_dir(&host, &dir).map_err(|e| format!("{}: {e}", dir.display()))
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    let (plugins, refused) = match loaded {
        Ok(l) => l,
        Err(reason) => {
            tracing::error!(plugins_dir = %shown, reason = %reason, "no plugin loaded: the plugin directory or host is unusable; the agent runs without plugins");
            return Vec::new();
        }
    };
    for r in &refused {
        tracing::error!(plugin_dir = %r.dir.display(), reason = %r.reason, "plugin refused: not loaded; the agent runs without it");
    }
    let mut out = Vec::new();
    for p in plugins {
        if taken.contains(p.name()) {
            tracing::error!(collector = %p.name(), "plugin refused: a collector added in-process has its name");
            continue;
        }
        let m = p.plugin().manifest();
        tracing::info!(
            collector = %p.name(),
            version = %m.version,
            schedule = %humantime::format_duration(m.schedule),
            timeout = %humantime::format_duration(m.timeout),
            dirs = m.capabilities.dirs.len(),
            env = m.capabilities.env.len(),
            "plugin loaded"
        );
        out.push(Entry::new(p));
    }
    out
}

fn check_collectors(collectors: &[Entry]) -> Result<()> {
    let mut seen =
        std::collections::BTreeSet::from([crate::collect::HOST, crate::collect::WIREGUARD]);
    for c in collectors {
        if c.name.is_empty() {
            return Err(Error::Config("a collector has an empty name".into()));
        }
        if !seen.insert(c.name.as_str()) {
            return Err(Error::Config(format!(
                "two collectors are named {:?}: names must be unique (host and wireguard are taken)",
                c.name
            )));
        }
        c.schedule.validate(&c.name)?;
    }
    Ok(())
}

/// Where every collector's collections go: the WAL (then the shipper, woken).
#[derive(Debug)]
pub(crate) struct Pipeline {
    store: Store,
    health: Arc<Health>,
    agent_id: sentra_core::AgentId,
    wake: Arc<Notify>,
    episode: FullEpisode,
}

impl Pipeline {
    pub(crate) fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// Stores one collection (see [`append`]).
    pub(crate) async fn deliver(&self, snap: &Snapshot) -> Result<()> {
        append(
            &self.store,
            &self.health,
            &self.agent_id,
            snap,
            &self.wake,
            &self.episode,
        )
        .await
    }
}

/// One "no space" episode (the WAL cap reached, or the file system full before the cap):
/// logged once when it starts and once when it ends, not per dropped collection.
#[derive(Debug, Default)]
struct FullEpisode {
    active: std::sync::atomic::AtomicBool,
    /// `dropped_collections` when the episode started.
    dropped_before: std::sync::atomic::AtomicU64,
}

/// Appends one collection. A WAL that refuses it for lack of space — its cap
/// ([`sentra_wal::Error::Full`], reported as [`Appended::Full`]) or a full file system
/// ([`sentra_wal::Error::DiskFull`], ENOSPC before the cap) — drops and counts the
/// collection (`sentra_agent_collections_dropped_total`): the agent keeps running and
/// shipping what it holds, and stores collections again by itself once space returns. Any
/// other WAL error is fatal.
async fn append(
    store: &Store,
    health: &Health,
    agent_id: &sentra_core::AgentId,
    snap: &Snapshot,
    wake: &Notify,
    episode: &FullEpisode,
) -> Result<()> {
    let refused = match store.append(agent_id, snap).await {
        Ok(Appended::Stored(lsn)) => {
            tracing::trace!(lsn, "collection stored");
            wake.notify_one();
            if episode.active.swap(false, Relaxed) {
                let dropped = health
                    .dropped_collections
                    .load(Relaxed)
                    .saturating_sub(episode.dropped_before.load(Relaxed));
                tracing::info!(
                    dropped,
                    lsn,
                    "space is available again: collections are stored again"
                );
            }
            return Ok(());
        }
        Ok(_) => {
            "the WAL reached its size cap (wal_max_bytes; server unreachable for long?)".to_owned()
        }
        Err(Error::Wal(e)) if e.is_disk_full() => e.to_string(),
        Err(e) => return Err(e),
    };
    let n = health.dropped_collections.fetch_add(1, Relaxed) + 1;
    if !episode.active.swap(true, Relaxed) {
        episode.dropped_before.store(n - 1, Relaxed);
        tracing::warn!(
            reason = %refused,
            dropped_total = n,
            "no space for new collections: dropping them (counted in sentra_agent_collections_dropped_total) and still shipping what the WAL holds; collection resumes by itself when space returns"
        );
    } else {
        tracing::debug!(reason = %refused, dropped_total = n, "collection dropped: no space");
    }
    Ok(())
}

/// Makes a task end (successfully) when the stop signal is raised.
async fn with_stop<F>(task: F, mut stop: watch::Receiver<bool>) -> (String, Result<()>)
where
    F: Future<Output = (String, Result<()>)> + Send,
{
    tokio::pin!(task);
    loop {
        if *stop.borrow() {
            return (String::new(), Ok(()));
        }
        tokio::select! {
            r = &mut task => return r,
            changed = stop.changed() => {
                if changed.is_err() {
                    return (String::new(), Ok(()));
                }
            }
        }
    }
}
