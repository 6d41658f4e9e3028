//! The alerting engine as a server runs it: a feed of stored batches drives the
//! [`Evaluator`], a timer ticks it, the [`Dispatcher`] routes and delivers, and the
//! evaluator and router state are saved atomically to one file (periodically and on
//! shutdown) and restored at start, so a restart neither re-notifies firing alerts nor
//! loses pending ones.
//!
//! The feed is expressed in core types ([`Feed`]): a server adapts its own stream of stored
//! batches (for example `sentra_ingest::Ingest::subscribe`) into an `mpsc` channel.
//!
//! ```no_run
//! # #[allow(dead_code)]
//! # async fn run() -> sentra_alerts::Result<()> {
//! use sentra_alerts::engine::{Engine, EngineConfig};
//! let (tx, rx) = tokio::sync::mpsc::channel(1024);
//! let mut config = EngineConfig::new(sentra_alerts::builtin_wireguard_rules());
//! config.state_file = Some("./sentra-data/alerts-state.json".into());
//! let engine = Engine::start(config, Vec::new(), rx)?;
//! // tx.send(Feed::Batch(batch, received)).await ...
//! # drop(tx);
//! engine.shutdown().await?;
//! # Ok(()) }
//! ```

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use sentra_core::{Batch, UnixMillis};
use serde::{Deserialize, Serialize};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use crate::{
    Config, Error, Evaluator, Result, Rule, Transition,
    dispatch::{DeadLetter, DispatchStats, Dispatcher, DispatcherConfig},
    eval::State,
    notify::{Delivery, Notifier},
    route::{Router, RouterConfig, RouterState, RouterStats, Silence, SilenceId},
};

/// One item of the engine's input feed.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Feed {
    /// A stored batch and its server arrival time.
    Batch(Arc<Batch>, UnixMillis),
    /// The producer dropped this many batches for the engine (it fell behind). The
    /// evaluator heals with each agent's next batch, which carries its full WireGuard status.
    Lagged(u64),
}

/// Engine settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EngineConfig {
    /// The rules to evaluate.
    pub rules: Vec<Rule>,
    /// Evaluator settings.
    pub eval: Config,
    /// Routing, grouping and inhibition.
    pub routing: RouterConfig,
    /// Dispatcher queue sizes.
    pub dispatcher: DispatcherConfig,
    /// Evaluation interval (default 5 s).
    pub tick: Duration,
    /// Where the state is saved (`None`: not persisted).
    pub state_file: Option<PathBuf>,
    /// How often the state is saved while running (default 30 s; also on shutdown).
    pub save_every: Duration,
    /// Grace for receivers to finish their queues on shutdown (default 5 s).
    pub shutdown_grace: Duration,
    /// A shared store the state is also saved to, on the same schedule as the file (for
    /// example a row in a control database several servers share).
    pub state_store: Option<Arc<dyn StateStore>>,
    /// A saved state to start from (as written to [`StateStore::save`]); when set, the
    /// state file is not read.
    pub restore: Option<Vec<u8>>,
}

/// A store for the engine's serialized state besides the state file, written on the same
/// schedule (periodically and on shutdown). Each call replaces the previous state.
pub trait StateStore: Send + Sync + std::fmt::Debug + 'static {
    /// Replaces the stored state with `state` (atomically). The error text is logged and
    /// counted as a failed save.
    fn save(
        &self,
        state: Vec<u8>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = std::result::Result<(), String>> + Send + '_>,
    >;
}

impl EngineConfig {
    /// Defaults around `rules`: no routes (nothing is sent), no state file.
    #[must_use]
    pub fn new(rules: Vec<Rule>) -> Self {
        Self {
            rules,
            eval: Config::default(),
            routing: RouterConfig::new(Vec::new()),
            dispatcher: DispatcherConfig::default(),
            tick: Duration::from_secs(5),
            state_file: None,
            save_every: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            state_store: None,
            restore: None,
        }
    }
}

/// Engine counters (besides [`RouterStats`] and [`DispatchStats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineStats {
    /// Batches observed.
    pub batches: u64,
    /// Batches the feed dropped for the engine.
    pub lagged: u64,
    /// Evaluation ticks run.
    pub ticks: u64,
    /// Transitions produced (pending, firing, resolved).
    pub transitions: u64,
    /// Successful state saves.
    pub saves: u64,
    /// Failed state saves.
    pub save_errors: u64,
    /// Alerts firing after the last tick.
    pub firing: u64,
    /// Alerts pending after the last tick.
    pub pending: u64,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    version: u32,
    saved_at: i64,
    evaluator: State,
    router: RouterState,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    lagged: AtomicU64,
    ticks: AtomicU64,
    transitions: AtomicU64,
    saves: AtomicU64,
    save_errors: AtomicU64,
    firing: AtomicU64,
    pending: AtomicU64,
}

struct Shared {
    evaluator: Mutex<Evaluator>,
    counters: Counters,
    rules: Vec<Rule>,
}

/// A running engine. See the [module documentation](self).
pub struct Engine {
    shared: Arc<Shared>,
    dispatcher: std::sync::RwLock<Option<Arc<Dispatcher>>>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<()>>>,
    persist: Persist,
    grace: Duration,
    routing: RouterConfig,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("rules", &self.shared.rules.len())
            .field("state_file", &self.persist.file)
            .finish_non_exhaustive()
    }
}

/// Reads a saved state file; `Ok(None)` when it does not exist.
fn load(path: &Path) -> Result<Option<Saved>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::State(format!("reading {}: {e}", path.display()))),
    };
    decode(&bytes, &path.display().to_string()).map(Some)
}

/// Decodes a saved state; errors name `origin`.
fn decode(bytes: &[u8], origin: &str) -> Result<Saved> {
    let saved: Saved =
        serde_json::from_slice(bytes).map_err(|e| Error::State(format!("{origin}: {e}")))?;
    if saved.version != 1 {
        return Err(Error::State(format!(
            "{origin}: unknown format version {}",
            saved.version
        )));
    }
    Ok(saved)
}

/// Writes `saved` to `path` atomically: a temporary file in the same directory, fsync,
/// rename, fsync of the directory.
fn save(path: &Path, body: &[u8]) -> Result<()> {
    let err = |what: &str, e: &dyn std::fmt::Display| {
        Error::State(format!("saving to {}: {what}: {e}", path.display()))
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = fs::File::create(&tmp).map_err(|e| err("creating the temporary file", &e))?;
        f.write_all(body).map_err(|e| err("writing", &e))?;
        f.sync_all().map_err(|e| err("fsync", &e))?;
    }
    fs::rename(&tmp, path).map_err(|e| err("rename", &e))?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

impl Engine {
    /// Restores the saved state (if `config.state_file` names an existing file), spawns
    /// the dispatcher with `notifiers` and the engine task reading `feed` on the current
    /// tokio runtime.
    ///
    /// # Errors
    ///
    /// [`Error::State`] for a state file that cannot be read or decoded (it is not
    /// overwritten: move it away to start empty); the errors of [`Evaluator::new`],
    /// [`Router::new`] and [`Dispatcher::spawn`].
    pub fn start(
        config: EngineConfig,
        notifiers: Vec<Arc<dyn Notifier>>,
        feed: mpsc::Receiver<Feed>,
    ) -> Result<Self> {
        let saved = match (&config.restore, &config.state_file) {
            (Some(bytes), _) => Some(decode(bytes, "the restored alert state")?),
            (None, Some(p)) => load(p)?,
            (None, None) => None,
        };
        let (evaluator, router) = match saved {
            Some(s) => {
                tracing::info!(
                    saved_at = s.saved_at,
                    "alert state restored (evaluator and router)"
                );
                (
                    Evaluator::restore(config.rules.clone(), config.eval, s.evaluator)?,
                    Router::restore(config.routing.clone(), s.router)?,
                )
            }
            None => (
                Evaluator::new(config.rules.clone(), config.eval)?,
                Router::new(config.routing.clone())?,
            ),
        };
        let dispatcher = Arc::new(Dispatcher::spawn(router, notifiers, config.dispatcher)?);
        let shared = Arc::new(Shared {
            evaluator: Mutex::new(evaluator),
            counters: Counters::default(),
            rules: config.rules.clone(),
        });
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(
            Arc::clone(&shared),
            Arc::clone(&dispatcher),
            feed,
            stopped,
            config.tick,
            config.save_every,
            Persist {
                file: config.state_file.clone(),
                store: config.state_store.clone(),
            },
        ));
        Ok(Self {
            shared,
            dispatcher: std::sync::RwLock::new(Some(dispatcher)),
            stop: Mutex::new(Some(stop)),
            task: Mutex::new(Some(task)),
            persist: Persist {
                file: config.state_file,
                store: config.state_store,
            },
            grace: config.shutdown_grace,
            routing: config.routing,
        })
    }

    /// The configured rules.
    #[must_use]
    pub fn rules(&self) -> &[Rule] {
        &self.shared.rules
    }

    /// Firing alerts (status firing) and pending ones (status pending), as of the last tick.
    #[must_use]
    pub fn alerts(&self) -> Vec<Transition> {
        self.shared
            .evaluator
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .active()
    }

    /// Engine counters.
    #[must_use]
    pub fn stats(&self) -> EngineStats {
        let c = &self.shared.counters;
        EngineStats {
            batches: c.batches.load(Ordering::Relaxed),
            lagged: c.lagged.load(Ordering::Relaxed),
            ticks: c.ticks.load(Ordering::Relaxed),
            transitions: c.transitions.load(Ordering::Relaxed),
            saves: c.saves.load(Ordering::Relaxed),
            save_errors: c.save_errors.load(Ordering::Relaxed),
            firing: c.firing.load(Ordering::Relaxed),
            pending: c.pending.load(Ordering::Relaxed),
        }
    }

    fn dispatcher(&self) -> Result<Arc<Dispatcher>> {
        self.dispatcher
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(Error::Closed)
    }

    /// Delivery counters of the dispatcher (zero after shutdown).
    #[must_use]
    pub fn dispatch_stats(&self) -> DispatchStats {
        self.dispatcher().map(|d| d.stats()).unwrap_or_default()
    }

    /// Router counters.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after shutdown.
    pub async fn router_stats(&self) -> Result<RouterStats> {
        self.dispatcher()?.router_stats().await
    }

    /// The router's counters as of its last step, without waiting (zero after shutdown).
    #[must_use]
    pub fn last_router_stats(&self) -> RouterStats {
        self.dispatcher()
            .map(|d| d.last_router_stats())
            .unwrap_or_default()
    }

    /// Adds a silence.
    ///
    /// # Errors
    ///
    /// As [`Dispatcher::add_silence`].
    pub async fn add_silence(&self, silence: Silence) -> Result<SilenceId> {
        self.dispatcher()?.add_silence(silence).await
    }

    /// Expires a silence now.
    ///
    /// # Errors
    ///
    /// As [`Dispatcher::expire_silence`].
    pub async fn expire_silence(&self, id: SilenceId) -> Result<()> {
        self.dispatcher()?.expire_silence(id).await
    }

    /// The router's silences (from a snapshot).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after shutdown.
    pub async fn silences(&self) -> Result<Vec<(SilenceId, Silence)>> {
        let state = self.dispatcher()?.snapshot().await?;
        let router = Router::restore(self.routing.clone(), state)?;
        Ok(router.silences().map(|(id, s)| (id, s.clone())).collect())
    }

    /// Notifications that could not be delivered (none after shutdown).
    #[must_use]
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.dispatcher()
            .map(|d| d.dead_letters())
            .unwrap_or_default()
    }

    /// Sends a dead letter again.
    ///
    /// # Errors
    ///
    /// As [`Dispatcher::resend`].
    pub async fn resend(&self, id: u64) -> Result<Delivery> {
        self.dispatcher()?.resend(id).await
    }

    /// Sends a test notification to `receiver` and returns its answer.
    ///
    /// # Errors
    ///
    /// As [`Dispatcher::test`].
    pub async fn test(&self, receiver: &str) -> Result<Delivery> {
        self.dispatcher()?.test(receiver).await
    }

    /// Saves the state now (also done periodically and on shutdown).
    ///
    /// # Errors
    ///
    /// [`Error::State`] naming the file when it cannot be written.
    pub async fn save(&self) -> Result<()> {
        if !self.persist.is_on() {
            return Ok(());
        }
        let router = self.dispatcher()?.snapshot().await?;
        save_now(&self.shared, &self.persist, router).await
    }

    /// Stops the engine: evaluates what is queued, stops routing, gives receivers the
    /// shutdown grace, and saves the final state. Later calls answer [`Error::Closed`].
    ///
    /// # Errors
    ///
    /// [`Error::State`] when the final save fails; [`Error::Closed`] if a task panicked.
    pub async fn shutdown(&self) -> Result<()> {
        let stop = self
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            task.await.map_err(|_| Error::Closed)?;
        }
        let Some(mut dispatcher) = self
            .dispatcher
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return Err(Error::Closed);
        };
        // a request in flight (silence, test) may hold the dispatcher for a moment
        let deadline = tokio::time::Instant::now() + self.grace;
        let dispatcher = loop {
            match Arc::try_unwrap(dispatcher) {
                Ok(d) => break d,
                Err(d) if tokio::time::Instant::now() < deadline => {
                    dispatcher = d;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(_) => return Err(Error::Closed),
            }
        };
        let router = dispatcher.shutdown(self.grace).await?;
        if self.persist.is_on() {
            save_now(&self.shared, &self.persist, router).await?;
            tracing::info!(path = ?self.persist.file, "alert state saved");
        }
        Ok(())
    }
}

/// Where the state is saved: the file, the store, both or neither.
#[derive(Clone, Debug)]
struct Persist {
    file: Option<PathBuf>,
    store: Option<Arc<dyn StateStore>>,
}

impl Persist {
    fn is_on(&self) -> bool {
        self.file.is_some() || self.store.is_some()
    }
}

async fn save_now(shared: &Shared, persist: &Persist, router: RouterState) -> Result<()> {
    let evaluator = shared
        .evaluator
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .snapshot();
    let saved = Saved {
        version: 1,
        saved_at: UnixMillis::now().as_millis(),
        evaluator,
        router,
    };
    let r = async {
        let body = serde_json::to_vec(&saved)
            .map_err(|e| Error::State(format!("encoding the alert state: {e}")))?;
        if let Some(path) = &persist.file {
            save(path, &body)?;
        }
        if let Some(store) = &persist.store {
            store
                .save(body)
                .await
                .map_err(|e| Error::State(format!("saving to the state store: {e}")))?;
        }
        Ok(())
    }
    .await;
    match &r {
        Ok(()) => shared.counters.saves.fetch_add(1, Ordering::Relaxed),
        Err(_) => shared.counters.save_errors.fetch_add(1, Ordering::Relaxed),
    };
    r
}

fn tick(shared: &Shared, dispatcher: &Dispatcher) {
    let now = UnixMillis::now();
    let transitions = {
        let mut e = shared
            .evaluator
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        e.tick(now)
    };
    let c = &shared.counters;
    c.ticks.fetch_add(1, Ordering::Relaxed);
    c.transitions
        .fetch_add(transitions.len() as u64, Ordering::Relaxed);
    let (firing, pending) = shared
        .evaluator
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .counts();
    c.firing.store(firing as u64, Ordering::Relaxed);
    c.pending.store(pending as u64, Ordering::Relaxed);
    let notify: Vec<Transition> = transitions
        .into_iter()
        .filter(Transition::is_notification)
        .collect();
    if !notify.is_empty() {
        dispatcher.push(notify);
    }
}

async fn run(
    shared: Arc<Shared>,
    dispatcher: Arc<Dispatcher>,
    mut feed: mpsc::Receiver<Feed>,
    mut stop: oneshot::Receiver<()>,
    every: Duration,
    save_every: Duration,
    persist: Persist,
) {
    let mut ticker = tokio::time::interval(every.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut saver = tokio::time::interval(save_every.max(Duration::from_millis(100)));
    saver.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    saver.tick().await; // the first tick is immediate
    let mut feed_open = true;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            item = feed.recv(), if feed_open => match item {
                Some(Feed::Batch(batch, received)) => {
                    shared.evaluator.lock().unwrap_or_else(PoisonError::into_inner)
                        .observe(&batch, received);
                    shared.counters.batches.fetch_add(1, Ordering::Relaxed);
                }
                Some(Feed::Lagged(n)) => {
                    shared.counters.lagged.fetch_add(n, Ordering::Relaxed);
                    tracing::warn!(dropped = n, "alert engine fell behind the batch feed; agents resync with their next batch");
                }
                None => feed_open = false,
            },
            _ = ticker.tick() => tick(&shared, &dispatcher),
            _ = saver.tick() => {
                if persist.is_on() {
                    match dispatcher.snapshot().await {
                        Ok(router) => {
                            if let Err(e) = save_now(&shared, &persist, router).await {
                                tracing::error!(error = %e, "cannot save the alert state");
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "cannot snapshot the router"),
                    }
                }
            }
        }
    }
    // what arrived before the stop is evaluated once more
    while let Ok(item) = feed.try_recv() {
        if let Feed::Batch(batch, received) = item {
            shared
                .evaluator
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .observe(&batch, received);
        }
    }
    tick(&shared, &dispatcher);
}
