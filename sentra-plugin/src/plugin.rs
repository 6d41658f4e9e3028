//! A loaded plugin: pre-instantiated module, grants, health and counters.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sentra_core::Sample;
use wasmtime::{Engine, ExternType, InstancePre, Module, Store, Trap};

use crate::abi::{
    HOST_FUNCTIONS, IMPORT_MODULE, Limiter, LogLine, OutputBounds, RunState, Violation,
};
use crate::error::{Error, FailureKind, Result};
use crate::grants::Grants;
use crate::host::Host;
use crate::manifest::Manifest;

/// Export the host calls once per run: `() -> i32`, 0 = success.
pub const COLLECT_EXPORT: &str = "collect";
/// Optional export called after instantiation (WASI reactor / C constructors): `() -> ()`.
pub const INITIALIZE_EXPORT: &str = "_initialize";

/// What one successful run produced.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Collection {
    /// Samples, in emit order.
    pub samples: Vec<Sample>,
    /// Log lines kept (also emitted through `tracing` with a `plugin` field).
    pub logs: Vec<LogLine>,
    /// Log lines dropped over the per-run bound.
    pub logs_dropped: u32,
    /// Wall time of instantiation plus the `collect` call.
    pub elapsed: Duration,
}

/// A snapshot of a plugin's counters (monotonic except `quarantined` and
/// `consecutive_failures`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Runs attempted while not quarantined.
    pub runs: u64,
    /// Runs that succeeded.
    pub successes: u64,
    /// Failed runs by [`FailureKind`], indexed like [`FailureKind::ALL`].
    pub failures: [u64; FailureKind::ALL.len()],
    /// Runs refused because the plugin is quarantined.
    pub refused: u64,
    /// Samples emitted by successful runs.
    pub samples: u64,
    /// Log lines dropped over the bound.
    pub logs_dropped: u64,
    /// Total wall time of all runs, in nanoseconds.
    pub run_nanos: u64,
    /// Failures in a row right now.
    pub consecutive_failures: u32,
    /// Whether the plugin is quarantined.
    pub quarantined: bool,
}

impl Stats {
    /// Failed runs of kind `kind`.
    #[must_use]
    pub const fn failures(&self, kind: FailureKind) -> u64 {
        self.failures[kind.index()]
    }

    /// All failed runs.
    #[must_use]
    pub fn failures_total(&self) -> u64 {
        self.failures.iter().sum()
    }
}

#[derive(Debug, Default)]
struct Counters {
    runs: AtomicU64,
    successes: AtomicU64,
    failures: [AtomicU64; FailureKind::ALL.len()],
    refused: AtomicU64,
    samples: AtomicU64,
    logs_dropped: AtomicU64,
    run_nanos: AtomicU64,
    quarantined: AtomicBool,
}

#[derive(Debug, Default)]
struct Health {
    consecutive: u32,
    quarantine: Option<(u32, String)>,
}

/// A loaded, pre-instantiated plugin. Every [`collect`](Self::collect) gets a fresh
/// instance from the pooling allocator (no state survives between runs) under the
/// manifest's deadline and the host's limits. `Send + Sync`: runs may overlap on several
/// threads.
pub struct Plugin {
    name: Arc<str>,
    manifest: Manifest,
    engine: Engine,
    pre: InstancePre<RunState>,
    grants: Arc<Grants>,
    deadline_ticks: u64,
    memory: usize,
    table_elements: usize,
    bounds: OutputBounds,
    quarantine_after: u32,
    has_initialize: bool,
    imports: Vec<String>,
    counters: Counters,
    health: Mutex<Health>,
    /// Keeps the epoch ticker running while this plugin exists.
    _ticker: Arc<crate::host::Ticker>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("version", &self.manifest.version)
            .field("deadline_ticks", &self.deadline_ticks)
            .field("memory", &self.memory)
            .field("imports", &self.imports)
            .field("quarantined", &self.counters.quarantined)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    pub(crate) fn new(host: &Host, manifest: Manifest, module: &Module) -> Result<Self> {
        let name = manifest.name.clone();
        let iface = |message: String| Error::Interface {
            plugin: name.clone(),
            message,
        };
        let known: Vec<&str> = HOST_FUNCTIONS.iter().map(|(n, _)| *n).collect();
        let mut imports = Vec::new();
        for imp in module.imports() {
            let what = format!("{}.{}", imp.module(), imp.name());
            if imp.module() != IMPORT_MODULE || !known.contains(&imp.name()) {
                return Err(iface(format!(
                    "import {what} is not part of the plugin interface (module {IMPORT_MODULE}: {})",
                    known.join(", ")
                )));
            }
            imports.push(what);
        }
        let mut has_memory = false;
        let mut has_collect = false;
        let mut has_initialize = false;
        for exp in module.exports() {
            match (exp.name(), exp.ty()) {
                ("memory", ExternType::Memory(m)) => {
                    if m.is_shared() || m.is_64() {
                        return Err(iface(
                            "export memory must be a 32-bit unshared memory".into(),
                        ));
                    }
                    has_memory = true;
                }
                (COLLECT_EXPORT, ExternType::Func(f)) => {
                    let ok = f.params().len() == 0
                        && f.results().len() == 1
                        && f.results().all(|r| r.is_i32());
                    if !ok {
                        return Err(iface(format!(
                            "export {COLLECT_EXPORT} must have type () -> i32, found {f}"
                        )));
                    }
                    has_collect = true;
                }
                (INITIALIZE_EXPORT, ExternType::Func(f)) => {
                    if f.params().len() != 0 || f.results().len() != 0 {
                        return Err(iface(format!(
                            "export {INITIALIZE_EXPORT} must have type () -> (), found {f}"
                        )));
                    }
                    has_initialize = true;
                }
                _ => {}
            }
        }
        if !has_collect {
            return Err(iface(format!(
                "no exported function {COLLECT_EXPORT}: () -> i32"
            )));
        }
        if !has_memory {
            return Err(iface("no exported memory named \"memory\"".into()));
        }
        let pre = host
            .linker()
            .instantiate_pre(module)
            .map_err(|e| iface(format!("{e}")))?;
        let grants = Arc::new(Grants::resolve(&name, &manifest.capabilities)?);
        let cfg = host.config();
        let tick = cfg.epoch_tick.as_nanos().max(1);
        let deadline_ticks = u64::try_from(manifest.timeout.as_nanos().div_ceil(tick))
            .unwrap_or(u64::MAX)
            .max(1);
        let memory = manifest
            .memory
            .map_or(cfg.max_memory, |m| m.min(cfg.max_memory));
        Ok(Self {
            name: Arc::from(name.as_str()),
            engine: host.engine().clone(),
            pre,
            grants,
            deadline_ticks,
            memory,
            table_elements: cfg.max_table_elements,
            bounds: cfg.output,
            quarantine_after: cfg.quarantine_after.max(1),
            has_initialize,
            imports,
            counters: Counters::default(),
            health: Mutex::new(Health::default()),
            _ticker: host.ticker(),
            manifest,
        })
    }

    /// The manifest.
    #[must_use]
    pub const fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The plugin's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Host functions the module imports (`sentra_v1.<name>`).
    #[must_use]
    pub fn imports(&self) -> &[String] {
        &self.imports
    }

    /// Why the plugin is quarantined, if it is.
    #[must_use]
    pub fn quarantine_reason(&self) -> Option<String> {
        self.health().quarantine.as_ref().map(|(_, r)| r.clone())
    }

    /// Lifts a quarantine (an operator action, e.g. after replacing the module's grants).
    pub fn release(&self) {
        let mut h = self.health();
        h.quarantine = None;
        h.consecutive = 0;
        self.counters.quarantined.store(false, Ordering::Relaxed);
    }

    /// A snapshot of the counters.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            runs: ld(&c.runs),
            successes: ld(&c.successes),
            failures: std::array::from_fn(|i| ld(&c.failures[i])),
            refused: ld(&c.refused),
            samples: ld(&c.samples),
            logs_dropped: ld(&c.logs_dropped),
            run_nanos: ld(&c.run_nanos),
            consecutive_failures: self.health().consecutive,
            quarantined: c.quarantined.load(Ordering::Relaxed),
        }
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs the plugin once: fresh instance, `_initialize` if exported, then `collect`.
    ///
    /// # Errors
    ///
    /// [`Error::Quarantined`] without running if the plugin is quarantined;
    /// [`Error::Run`] for a failed run (deadline, limit, trap, output bound, non-zero
    /// status, or a caught host panic). After
    /// [`HostConfig::quarantine_after`](crate::HostConfig::quarantine_after) failures in a
    /// row the plugin is quarantined, logged at `warn` with the reason.
    pub fn collect(&self) -> Result<Collection> {
        if let Some((failures, reason)) = &self.health().quarantine {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Error::Quarantined {
                plugin: self.name.to_string(),
                failures: *failures,
                reason: reason.clone(),
            });
        }
        self.counters.runs.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        let result =
            std::panic::catch_unwind(AssertUnwindSafe(|| self.run())).unwrap_or_else(|p| {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".to_owned());
                Err((FailureKind::HostPanic, format!("host panicked: {msg}")))
            });
        let elapsed = start.elapsed();
        self.counters.run_nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        match result {
            Ok(mut c) => {
                c.elapsed = elapsed;
                self.counters.successes.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .samples
                    .fetch_add(c.samples.len() as u64, Ordering::Relaxed);
                self.counters
                    .logs_dropped
                    .fetch_add(u64::from(c.logs_dropped), Ordering::Relaxed);
                self.health().consecutive = 0;
                Ok(c)
            }
            Err((kind, detail)) => {
                self.counters.failures[kind.index()].fetch_add(1, Ordering::Relaxed);
                let mut h = self.health();
                h.consecutive = h.consecutive.saturating_add(1);
                if h.consecutive >= self.quarantine_after && h.quarantine.is_none() {
                    let reason = format!("{kind}: {detail}");
                    tracing::warn!(
                        plugin = &*self.name,
                        failures = h.consecutive,
                        %reason,
                        "plugin quarantined"
                    );
                    h.quarantine = Some((h.consecutive, reason));
                    self.counters.quarantined.store(true, Ordering::Relaxed);
                } else {
                    tracing::debug!(plugin = &*self.name, %kind, %detail, "plugin run failed");
                }
                Err(Error::Run {
                    plugin: self.name.to_string(),
                    kind,
                    detail,
                })
            }
        }
    }

    fn run(&self) -> std::result::Result<Collection, (FailureKind, String)> {
        let state = RunState {
            plugin: Arc::clone(&self.name),
            limiter: Limiter {
                memory: self.memory,
                table_elements: self.table_elements,
                hit: None,
            },
            grants: Arc::clone(&self.grants),
            bounds: self.bounds,
            samples: Vec::new(),
            logs: Vec::new(),
            logs_dropped: 0,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        // Before instantiation: a start function may loop.
        store.set_epoch_deadline(self.deadline_ticks);
        store.epoch_deadline_trap();
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| classify(&e, store.data()))?;
        if self.has_initialize {
            let init = instance
                .get_typed_func::<(), ()>(&mut store, INITIALIZE_EXPORT)
                .map_err(|e| (FailureKind::Trap, e.to_string()))?;
            init.call(&mut store, ())
                .map_err(|e| classify(&e, store.data()))?;
        }
        let collect = instance
            .get_typed_func::<(), i32>(&mut store, COLLECT_EXPORT)
            .map_err(|e| (FailureKind::Trap, e.to_string()))?;
        let status = collect
            .call(&mut store, ())
            .map_err(|e| classify(&e, store.data()))?;
        let state = store.into_data();
        if status != 0 {
            let last = state
                .logs
                .last()
                .map(|l| format!("; last log: {}", l.message))
                .unwrap_or_default();
            return Err((
                FailureKind::Status,
                format!("collect returned {status}{last}"),
            ));
        }
        Ok(Collection {
            samples: state.samples,
            logs: state.logs,
            logs_dropped: state.logs_dropped,
            elapsed: Duration::ZERO,
        })
    }
}

fn classify(e: &wasmtime::Error, state: &RunState) -> (FailureKind, String) {
    if let Some(v) = e.downcast_ref::<Violation>() {
        return (FailureKind::Output, v.0.clone());
    }
    if let Some(hit) = &state.limiter.hit {
        return (FailureKind::ResourceLimit, hit.clone());
    }
    if let Some(t) = e.downcast_ref::<Trap>() {
        let kind = match t {
            Trap::Interrupt => FailureKind::Timeout,
            Trap::StackOverflow => FailureKind::StackOverflow,
            _ => FailureKind::Trap,
        };
        let detail = match kind {
            FailureKind::Timeout => "deadline exceeded; interrupted".to_owned(),
            _ => t.to_string(),
        };
        return (kind, detail);
    }
    if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return (
            FailureKind::ResourceLimit,
            "all plugin instance slots are busy".to_owned(),
        );
    }
    // Instantiation refused by the pooling allocator's per-slot caps and other errors.
    let mut msg = e.to_string();
    for c in e.chain().skip(1) {
        msg.push_str(": ");
        msg.push_str(&c.to_string());
    }
    let kind = if msg.contains("exceeds") || msg.contains("limit") || msg.contains("maximum") {
        FailureKind::ResourceLimit
    } else {
        FailureKind::Trap
    };
    (kind, msg)
}
