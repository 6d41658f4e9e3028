//! The notification dispatcher: a [`Router`] and [`Notifier`]s on tokio, with bounded
//! queues so that a dead or slow receiver never blocks evaluation.
//!
//! ```text
//! evaluator ──push()──▶ [input queue] ──▶ router task ──tick()──▶ [queue per receiver] ──▶ worker ──▶ Notifier
//!             try_send, drop+count         (owns the Router)      try_send, drop+count      (retries)
//! ```
//!
//! - [`Dispatcher::push`] never waits: when the input queue is full the transitions are
//!   dropped and counted ([`DispatchStats::transitions_dropped`]).
//! - The router task owns the [`Router`], applies transitions and silence commands, and
//!   ticks at [`Router::next_deadline`] on the system clock.
//! - Each receiver has its own queue and worker: a receiver that times out only delays its
//!   own notifications. When its queue is full, a notification is dropped, counted, and
//!   kept as a [`DeadLetter`].
//! - A notification the notifier gave up on becomes a [`DeadLetter`] (bounded list, oldest
//!   dropped first): list them with [`Dispatcher::dead_letters`], send one again with
//!   [`Dispatcher::resend`].
//!
//! ```no_run
//! # async fn run() -> Result<(), sentra_alerts::Error> {
//! use std::sync::Arc;
//! use sentra_alerts::{
//!     dispatch::{Dispatcher, DispatcherConfig},
//!     notify::{Notifier, Webhook, WebhookConfig},
//!     route::{Route, Router, RouterConfig},
//! };
//!
//! let router = Router::new(RouterConfig::new(vec![Route::new("ops")]))?;
//! let ops: Arc<dyn Notifier> =
//!     Arc::new(Webhook::new(WebhookConfig::new("ops", "https://hooks.example.net/sentra"))?);
//! let dispatcher = Dispatcher::spawn(router, vec![ops], DispatcherConfig::default())?;
//! // in the evaluation loop: dispatcher.push(evaluator.tick(now));
//! let state = dispatcher.shutdown(std::time::Duration::from_secs(5)).await?;
//! # drop(state); Ok(()) }
//! # let _ = run;
//! ```

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use sentra_core::UnixMillis;
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use crate::{
    error::{Error, Result},
    eval::{Fingerprint, Status, Transition},
    notify::{Delivery, Notifier},
    route::{Notification, NotifiedAlert, Router, RouterState, RouterStats, Silence, SilenceId},
};

/// Queue sizes.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct DispatcherConfig {
    /// Pending [`Dispatcher::push`] calls (default 1024).
    pub queue: usize,
    /// Pending notifications per receiver (default 256).
    pub receiver_queue: usize,
    /// Dead letters kept (default 1000; the oldest go first).
    pub dead_letters: usize,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            queue: 1024,
            receiver_queue: 256,
            dead_letters: 1000,
        }
    }
}

/// A notification that was not delivered.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DeadLetter {
    /// Identity, for [`Dispatcher::resend`].
    pub id: u64,
    /// The notification.
    pub notification: Notification,
    /// Why it was not delivered.
    pub error: String,
    /// When it was given up.
    pub at: UnixMillis,
}

/// Counters, for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DispatchStats {
    /// [`Dispatcher::push`] calls dropped because the input queue was full.
    pub transitions_dropped: u64,
    /// Notifications dropped because their receiver's queue was full.
    pub notifications_dropped: u64,
    /// Notifications delivered.
    pub delivered: u64,
    /// Notifications the notifier gave up on.
    pub failed: u64,
    /// Dead letters held now.
    pub dead_letters: usize,
    /// Dead letters dropped to keep the list bounded.
    pub dead_letters_dropped: u64,
}

enum Command {
    Transitions(Vec<Transition>),
    AddSilence(Silence, oneshot::Sender<Result<SilenceId>>),
    ExpireSilence(SilenceId, oneshot::Sender<Result<()>>),
    Stats(oneshot::Sender<RouterStats>),
    Snapshot(oneshot::Sender<RouterState>),
}

#[derive(Default)]
struct Dead {
    next_id: u64,
    items: VecDeque<DeadLetter>,
}

struct Shared {
    notifiers: HashMap<String, Arc<dyn Notifier>>,
    transitions_dropped: AtomicU64,
    notifications_dropped: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    dead_dropped: AtomicU64,
    dead_cap: usize,
    dead: Mutex<Dead>,
    /// The router's counters as of its last step (for synchronous readers: `/metrics`).
    router_stats: Mutex<RouterStats>,
}

impl Shared {
    fn bury(&self, notification: Notification, error: String) {
        let mut dead = self.dead.lock().unwrap_or_else(PoisonError::into_inner);
        dead.next_id += 1;
        let id = dead.next_id;
        dead.items.push_back(DeadLetter {
            id,
            notification,
            error,
            at: UnixMillis::now(),
        });
        while dead.items.len() > self.dead_cap {
            dead.items.pop_front();
            self.dead_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn deliver(&self, notifier: &dyn Notifier, n: Notification) -> Result<Delivery> {
        match notifier.notify(&n).await {
            Ok(d) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                Ok(d)
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(receiver = notifier.name(), error = %e, "notification not delivered; kept as a dead letter");
                self.bury(n, e.to_string());
                Err(e)
            }
        }
    }
}

/// The dispatcher. See the [module documentation](self).
pub struct Dispatcher {
    input: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    router: JoinHandle<Router>,
    workers: Vec<JoinHandle<()>>,
}

impl fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatcher")
            .field(
                "receivers",
                &self.shared.notifiers.keys().collect::<Vec<_>>(),
            )
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// Starts the router task and one worker per notifier on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when a route names a receiver without a notifier, two notifiers
    /// share a name, or a queue size is zero.
    pub fn spawn(
        router: Router,
        notifiers: Vec<Arc<dyn Notifier>>,
        config: DispatcherConfig,
    ) -> Result<Self> {
        if config.queue == 0 || config.receiver_queue == 0 {
            return Err(Error::Config(
                "dispatcher queue sizes must be positive".into(),
            ));
        }
        let mut by_name = HashMap::new();
        for n in notifiers {
            let name = n.name().to_owned();
            if by_name.insert(name.clone(), n).is_some() {
                return Err(Error::Config(format!("two notifiers named {name:?}")));
            }
        }
        for r in &router.config().routes {
            if !by_name.contains_key(&r.receiver) {
                return Err(Error::Config(format!(
                    "route to receiver {:?}, which has no notifier",
                    r.receiver
                )));
            }
        }
        let shared = Arc::new(Shared {
            notifiers: by_name,
            transitions_dropped: AtomicU64::new(0),
            notifications_dropped: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dead_dropped: AtomicU64::new(0),
            dead_cap: config.dead_letters,
            dead: Mutex::new(Dead::default()),
            router_stats: Mutex::new(router.stats()),
        });
        let mut queues = HashMap::new();
        let mut workers = Vec::new();
        for (name, notifier) in &shared.notifiers {
            let (tx, mut rx) = mpsc::channel::<Notification>(config.receiver_queue);
            queues.insert(name.clone(), tx);
            let notifier = Arc::clone(notifier);
            let shared = Arc::clone(&shared);
            workers.push(tokio::spawn(async move {
                while let Some(n) = rx.recv().await {
                    let _ = shared.deliver(notifier.as_ref(), n).await;
                }
            }));
        }
        let (input, rx) = mpsc::channel(config.queue);
        let router = tokio::spawn(run_router(router, rx, queues, Arc::clone(&shared)));
        Ok(Self {
            input,
            shared,
            router,
            workers,
        })
    }

    /// Hands transitions to the router without waiting. Returns `false` (and counts the
    /// drop) when the input queue is full or the dispatcher is gone.
    pub fn push(&self, transitions: Vec<Transition>) -> bool {
        if transitions.is_empty() {
            return true;
        }
        if self
            .input
            .try_send(Command::Transitions(transitions))
            .is_ok()
        {
            true
        } else {
            self.shared
                .transitions_dropped
                .fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.input.send(make(tx)).await.map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)
    }

    /// Adds a silence (see [`Router::add_silence`]).
    ///
    /// # Errors
    ///
    /// As [`Router::add_silence`]; [`Error::Closed`] after shutdown.
    pub async fn add_silence(&self, silence: Silence) -> Result<SilenceId> {
        self.ask(|tx| Command::AddSilence(silence, tx)).await?
    }

    /// Ends a silence now (see [`Router::expire_silence`]).
    ///
    /// # Errors
    ///
    /// As [`Router::expire_silence`]; [`Error::Closed`] after shutdown.
    pub async fn expire_silence(&self, id: SilenceId) -> Result<()> {
        self.ask(|tx| Command::ExpireSilence(id, tx)).await?
    }

    /// The router's sizes and counters.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after shutdown.
    pub async fn router_stats(&self) -> Result<RouterStats> {
        self.ask(Command::Stats).await
    }

    /// The router's counters as of its last step (routing, silence change or flush),
    /// without waiting for it: for synchronous readers such as a metrics scrape.
    #[must_use]
    pub fn last_router_stats(&self) -> RouterStats {
        *self
            .shared
            .router_stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The router's state, to persist.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after shutdown.
    pub async fn snapshot(&self) -> Result<RouterState> {
        self.ask(Command::Snapshot).await
    }

    /// Delivery counters.
    #[must_use]
    pub fn stats(&self) -> DispatchStats {
        let s = &self.shared;
        DispatchStats {
            transitions_dropped: s.transitions_dropped.load(Ordering::Relaxed),
            notifications_dropped: s.notifications_dropped.load(Ordering::Relaxed),
            delivered: s.delivered.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            dead_letters: s
                .dead
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .items
                .len(),
            dead_letters_dropped: s.dead_dropped.load(Ordering::Relaxed),
        }
    }

    /// The dead letters, oldest first.
    #[must_use]
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        let dead = self
            .shared
            .dead
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        dead.items.iter().cloned().collect()
    }

    /// Sends a dead letter again, now, and returns the receiver's answer. The letter leaves
    /// the list; if delivery fails again it comes back with a new id and the new error.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown id; the notifier's error when delivery fails.
    pub async fn resend(&self, id: u64) -> Result<Delivery> {
        let letter = {
            let mut dead = self
                .shared
                .dead
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let i = dead
                .items
                .iter()
                .position(|d| d.id == id)
                .ok_or_else(|| Error::NotFound(format!("dead letter {id}")))?;
            dead.items.remove(i).expect("index is in range")
        };
        let notifier = self
            .shared
            .notifiers
            .get(&letter.notification.receiver)
            .ok_or_else(|| {
                Error::NotFound(format!("receiver {:?}", letter.notification.receiver))
            })?;
        self.shared
            .deliver(notifier.as_ref(), letter.notification)
            .await
    }

    /// Sends a test notification (one firing alert `alertname="SentraTest"`) to `receiver`
    /// now and returns its answer. Not routed, not grouped, not kept on failure.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown receiver; the notifier's error.
    pub async fn test(&self, receiver: &str) -> Result<Delivery> {
        let notifier = self
            .shared
            .notifiers
            .get(receiver)
            .ok_or_else(|| Error::NotFound(format!("receiver {receiver:?}")))?;
        let now = UnixMillis::now();
        let labels = vec![
            ("alertname".to_owned(), "SentraTest".to_owned()),
            ("severity".to_owned(), "info".to_owned()),
        ];
        let n = Notification {
            receiver: receiver.to_owned(),
            group_key: format!("{receiver}/test:{{}}"),
            group_labels: Vec::new(),
            status: Status::Firing,
            alerts: vec![NotifiedAlert {
                fingerprint: Fingerprint::of("SentraTest", &labels),
                status: Status::Firing,
                labels,
                annotations: vec![(
                    "summary".to_owned(),
                    "Test notification from Sentra".to_owned(),
                )],
                starts_at: now,
                ends_at: None,
            }],
            at: now,
        };
        notifier.notify(&n).await
    }

    /// Stops taking transitions, lets the router apply what is queued, gives the workers
    /// `grace` to deliver their queues (then aborts them), and returns the router's final
    /// state to persist.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] if the router task panicked.
    pub async fn shutdown(self, grace: Duration) -> Result<RouterState> {
        drop(self.input);
        let router = self.router.await.map_err(|_| Error::Closed)?;
        let deadline = tokio::time::Instant::now() + grace;
        for w in self.workers {
            let abort = w.abort_handle();
            if tokio::time::timeout_at(deadline, w).await.is_err() {
                abort.abort();
            }
        }
        Ok(router.snapshot())
    }
}

fn dispatch(
    notifications: Vec<Notification>,
    queues: &HashMap<String, mpsc::Sender<Notification>>,
    shared: &Shared,
) {
    for n in notifications {
        let Some(q) = queues.get(&n.receiver) else {
            continue;
        };
        match q.try_send(n) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(n) | mpsc::error::TrySendError::Closed(n)) => {
                shared.notifications_dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(receiver = %n.receiver, "receiver queue full: notification dropped (kept as a dead letter)");
                shared.bury(n, "receiver queue full: dropped before sending".to_owned());
            }
        }
    }
}

async fn run_router(
    mut router: Router,
    mut rx: mpsc::Receiver<Command>,
    queues: HashMap<String, mpsc::Sender<Notification>>,
    shared: Arc<Shared>,
) -> Router {
    loop {
        let now = UnixMillis::now();
        let wait = match router.next_deadline() {
            // due: flush now rather than through a zero-length timer (1 ms resolution)
            Some(d) if d <= now => {
                dispatch(router.tick(now), &queues, &shared);
                continue;
            }
            Some(d) => Some(Duration::from_millis(
                u64::try_from(d.as_millis() - now.as_millis()).unwrap_or(0),
            )),
            None => None,
        };
        let tick = async {
            match wait {
                Some(w) => tokio::time::sleep(w).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            cmd = rx.recv() => match cmd {
                None => break,
                Some(Command::Transitions(ts)) => {
                    for t in &ts {
                        router.push(t);
                    }
                }
                Some(Command::AddSilence(s, reply)) => {
                    let _ = reply.send(router.add_silence(s));
                }
                Some(Command::ExpireSilence(id, reply)) => {
                    let _ = reply.send(router.expire_silence(id, UnixMillis::now()));
                }
                Some(Command::Stats(reply)) => {
                    let _ = reply.send(router.stats());
                }
                Some(Command::Snapshot(reply)) => {
                    let _ = reply.send(router.snapshot());
                }
            },
            () = tick => {}
        }
        *shared
            .router_stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = router.stats();
    }
    router
}
