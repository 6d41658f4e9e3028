//! The plugin host: one engine, one epoch ticker, one pooling allocator for all plugins.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, Linker, Module, PoolingAllocationConfig,
};

use crate::abi::{self, OutputBounds, RunState};
use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::plugin::Plugin;

/// Limits shared by every plugin of a [`Host`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HostConfig {
    /// Epoch tick: the resolution of deadlines. A run is interrupted between
    /// `timeout - epoch_tick` and `timeout` after it starts, plus the ticker thread's
    /// wake-up latency.
    pub epoch_tick: Duration,
    /// Max linear memory of one plugin instance, in bytes (a manifest may ask for less).
    pub max_memory: usize,
    /// Max elements of a plugin's table.
    pub max_table_elements: usize,
    /// Max wasm stack of one run, in bytes (deep recursion traps beyond it).
    pub max_stack: usize,
    /// Instances that may run at the same time (pooling allocator slots).
    pub pool_slots: u32,
    /// Consecutive failed runs after which a plugin is quarantined.
    pub quarantine_after: u32,
    /// Per-run output bounds.
    pub output: OutputBounds,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            epoch_tick: Duration::from_millis(10),
            max_memory: 16 << 20,
            max_table_elements: 10_000,
            max_stack: 512 << 10,
            pool_slots: 64,
            quarantine_after: 5,
            output: OutputBounds::default(),
        }
    }
}

/// Runs plugins: owns the wasmtime engine (Cranelift, pooling allocator, epoch
/// interruption, no threads/GC/reference types/component model), the linker with the
/// `sentra_v1` host functions and the epoch ticker thread. The ticker runs until the host
/// and every plugin loaded from it are dropped, so deadlines hold for as long as a plugin
/// can run.
#[derive(Debug)]
pub struct Host {
    engine: Engine,
    linker: Arc<Linker<RunState>>,
    config: HostConfig,
    ticker: Arc<Ticker>,
}

/// The epoch ticker thread; stopped and joined when the last holder drops it.
#[derive(Debug)]
pub(crate) struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Host {
    /// Builds the engine and starts the epoch ticker.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a zero tick, slot count or memory, or if wasmtime rejects the
    /// configuration (e.g. the pooling allocator cannot reserve its address space).
    pub fn new(config: HostConfig) -> Result<Self> {
        if config.epoch_tick.is_zero() || config.pool_slots == 0 || config.max_memory == 0 {
            return Err(Error::Config(
                "epoch_tick, pool_slots and max_memory must be positive".to_owned(),
            ));
        }
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(config.pool_slots)
            .total_memories(config.pool_slots)
            .total_tables(config.pool_slots)
            .max_memories_per_module(1)
            .max_tables_per_module(1)
            .max_memory_size(config.max_memory)
            .table_elements(config.max_table_elements);
        let mut cfg = Config::new();
        cfg.epoch_interruption(true)
            .max_wasm_stack(config.max_stack)
            .wasm_multi_memory(false)
            .wasm_memory64(false)
            .wasm_tail_call(false)
            .memory_init_cow(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&cfg).map_err(|e| Error::Config(format!("wasmtime: {e}")))?;
        let mut linker = Linker::new(&engine);
        abi::link(&mut linker).map_err(|e| Error::Config(format!("linker: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let engine = engine.clone();
            let stop = Arc::clone(&stop);
            let tick = config.epoch_tick;
            std::thread::Builder::new()
                .name("sentra-plugin-epoch".to_owned())
                .spawn(move || {
                    // Ticks on an absolute schedule so sleep overshoot does not accumulate
                    // (a late tick is followed by a short sleep, not a full one).
                    let mut next = Instant::now() + tick;
                    while !stop.load(Ordering::Relaxed) {
                        let now = Instant::now();
                        if now < next {
                            std::thread::park_timeout(next - now);
                            continue;
                        }
                        engine.increment_epoch();
                        next += tick;
                        if next + tick < now {
                            next = now + tick; // far behind (suspended): resynchronise
                        }
                    }
                })
                .map_err(|e| Error::Config(format!("cannot start the epoch ticker: {e}")))?
        };
        Ok(Self {
            engine,
            linker: Arc::new(linker),
            config,
            ticker: Arc::new(Ticker {
                stop,
                thread: Some(ticker),
            }),
        })
    }

    /// The host's limits.
    #[must_use]
    pub const fn config(&self) -> &HostConfig {
        &self.config
    }

    /// Compiles `wasm` (binary module bytes), checks it against the plugin interface,
    /// resolves the manifest's grants and pre-instantiates it.
    ///
    /// # Errors
    ///
    /// [`Error::Compile`], [`Error::Interface`] or [`Error::Capability`].
    pub fn load(&self, manifest: Manifest, wasm: &[u8]) -> Result<Plugin> {
        let module = Module::from_binary(&self.engine, wasm).map_err(|e| Error::Compile {
            plugin: manifest.name.clone(),
            message: format!("{e}{}", source_chain(&e)),
        })?;
        Plugin::new(self, manifest, &module)
    }

    /// Loads the plugin and runs it once under its limits: what `sentra plugin check`
    /// prints; the loaded plugin is returned for `inspect`-style output.
    ///
    /// # Errors
    ///
    /// As [`load`](Self::load), then the run's [`Error::Run`].
    pub fn check(&self, manifest: Manifest, wasm: &[u8]) -> Result<(Plugin, crate::Collection)> {
        let plugin = self.load(manifest, wasm)?;
        let collection = plugin.collect()?;
        Ok((plugin, collection))
    }

    /// Reads the manifest's module file and [`load`](Self::load)s it.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the module cannot be read, else as [`load`](Self::load).
    pub fn load_file(&self, manifest: Manifest) -> Result<Plugin> {
        let wasm = std::fs::read(&manifest.module).map_err(|source| Error::Io {
            path: manifest.module.display().to_string(),
            source,
        })?;
        self.load(manifest, &wasm)
    }

    pub(crate) const fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn ticker(&self) -> Arc<Ticker> {
        Arc::clone(&self.ticker)
    }

    pub(crate) fn linker(&self) -> &Linker<RunState> {
        &self.linker
    }
}

fn source_chain(e: &wasmtime::Error) -> String {
    let mut out = String::new();
    for c in e.chain().skip(1) {
        out.push_str(": ");
        out.push_str(&c.to_string());
    }
    out
}
