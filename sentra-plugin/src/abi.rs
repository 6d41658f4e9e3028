//! The core-module ABI: host functions in import module [`IMPORT_MODULE`].

use std::fmt;
use std::sync::Arc;

use sentra_core::{Labels, MetricName, Sample, UnixMillis, Value};
use wasmtime::{Caller, Linker, Memory};

use crate::grants::Grants;

/// Import module name of the plugin ABI, version 1.
pub const IMPORT_MODULE: &str = "sentra_v1";
/// Host functions a plugin may import from [`IMPORT_MODULE`], with their wasm signatures.
pub const HOST_FUNCTIONS: &[(&str, &str)] = &[
    (
        "emit_gauge",
        "(name_ptr i32, name_len i32, labels_ptr i32, labels_len i32, value f64)",
    ),
    (
        "emit_counter",
        "(name_ptr i32, name_len i32, labels_ptr i32, labels_len i32, value i64)",
    ),
    ("log", "(level i32, msg_ptr i32, msg_len i32)"),
    (
        "read_file",
        "(path_ptr i32, path_len i32, buf_ptr i32, buf_cap i32) -> i32",
    ),
    (
        "env_get",
        "(name_ptr i32, name_len i32, buf_ptr i32, buf_cap i32) -> i32",
    ),
    ("now_ms", "() -> i64"),
];

/// Most bytes of a log message kept; the rest is cut.
pub const MAX_LOG_BYTES: usize = 1024;
/// Most bytes of a labels string (`name=value` lines).
pub const MAX_LABELS_BYTES: usize = 16 * 1024;
/// Longest path a plugin may pass to `read_file`.
pub const MAX_PATH_BYTES: usize = 4096;

/// Per-run output bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutputBounds {
    /// Most samples one run may emit; one more fails the run.
    pub max_samples: usize,
    /// Most log lines kept per run; further lines are dropped and counted.
    pub max_logs: usize,
}

impl Default for OutputBounds {
    fn default() -> Self {
        Self {
            max_samples: 10_000,
            max_logs: 100,
        }
    }
}

/// Level of a plugin log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum LogLevel {
    /// 0
    Error,
    /// 1
    Warn,
    /// 2
    Info,
    /// 3
    Debug,
    /// 4 and above
    Trace,
}

impl LogLevel {
    fn from_abi(level: i32) -> Self {
        match level {
            i32::MIN..=0 => Self::Error,
            1 => Self::Warn,
            2 => Self::Info,
            3 => Self::Debug,
            _ => Self::Trace,
        }
    }
}

/// One log line from a plugin (cut at [`MAX_LOG_BYTES`], lossily decoded as UTF-8).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogLine {
    /// Level.
    pub level: LogLevel,
    /// Message.
    pub message: String,
}

/// A plugin broke an ABI or output rule; returned from a host function, it traps the run.
#[derive(Debug)]
pub(crate) struct Violation(pub(crate) String);

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Violation {}

fn violation(msg: impl Into<String>) -> wasmtime::Error {
    wasmtime::Error::new(Violation(msg.into()))
}

/// Memory and table caps of one store, recording what was refused.
#[derive(Debug)]
pub(crate) struct Limiter {
    pub(crate) memory: usize,
    pub(crate) table_elements: usize,
    pub(crate) hit: Option<String>,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory {
            let msg = format!(
                "memory grow from {current} to {desired} bytes refused (limit {} bytes)",
                self.memory
            );
            self.hit = Some(msg.clone());
            // trap on grow failure: a plugin that ignores memory.grow's -1 cannot go on.
            return Err(wasmtime::Error::msg(msg));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            let msg = format!(
                "table grow from {current} to {desired} elements refused (limit {})",
                self.table_elements
            );
            self.hit = Some(msg.clone());
            return Err(wasmtime::Error::msg(msg));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }
}

/// State of one store (one run).
pub(crate) struct RunState {
    pub(crate) plugin: Arc<str>,
    pub(crate) limiter: Limiter,
    pub(crate) grants: Arc<Grants>,
    pub(crate) bounds: OutputBounds,
    pub(crate) samples: Vec<Sample>,
    pub(crate) logs: Vec<LogLine>,
    pub(crate) logs_dropped: u32,
}

fn memory(caller: &mut Caller<'_, RunState>) -> wasmtime::Result<Memory> {
    caller
        .get_export("memory")
        .and_then(wasmtime::Extern::into_memory)
        .ok_or_else(|| violation("the module exports no memory named \"memory\""))
}

fn span(ptr: i32, len: i32, max: usize, what: &str) -> wasmtime::Result<(usize, usize)> {
    let ptr = u32::try_from(ptr).map_err(|_| violation(format!("{what}: negative pointer")))?;
    let len = u32::try_from(len).map_err(|_| violation(format!("{what}: negative length")))?;
    let len = len as usize;
    if len > max {
        return Err(violation(format!("{what}: {len} bytes, at most {max}")));
    }
    Ok((ptr as usize, len))
}

fn read_bytes(
    caller: &mut Caller<'_, RunState>,
    ptr: i32,
    len: i32,
    max: usize,
    what: &str,
) -> wasmtime::Result<Vec<u8>> {
    let (ptr, len) = span(ptr, len, max, what)?;
    let mem = memory(caller)?;
    let mut buf = vec![0; len];
    mem.read(&*caller, ptr, &mut buf)
        .map_err(|_| violation(format!("{what}: out of bounds of linear memory")))?;
    Ok(buf)
}

fn read_str(
    caller: &mut Caller<'_, RunState>,
    ptr: i32,
    len: i32,
    max: usize,
    what: &str,
) -> wasmtime::Result<String> {
    String::from_utf8(read_bytes(caller, ptr, len, max, what)?)
        .map_err(|_| violation(format!("{what}: not UTF-8")))
}

fn write_out(
    caller: &mut Caller<'_, RunState>,
    ptr: i32,
    cap: i32,
    data: &[u8],
    what: &str,
) -> wasmtime::Result<()> {
    let (ptr, cap) = span(ptr, cap, usize::MAX, what)?;
    let n = data.len().min(cap);
    let mem = memory(caller)?;
    mem.write(&mut *caller, ptr, &data[..n])
        .map_err(|_| violation(format!("{what}: buffer out of bounds of linear memory")))
}

fn parse_labels(text: &str) -> wasmtime::Result<Labels> {
    let pairs = text
        .split('\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split_once('=')
                .ok_or_else(|| violation(format!("label line {l:?} has no '='")))
        })
        .collect::<wasmtime::Result<Vec<_>>>()?;
    Labels::from_pairs(pairs).map_err(|e| violation(format!("labels: {e}")))
}

fn emit(
    caller: &mut Caller<'_, RunState>,
    (name_ptr, name_len, labels_ptr, labels_len): (i32, i32, i32, i32),
    value: Value,
) -> wasmtime::Result<()> {
    let max = caller.data().bounds.max_samples;
    if caller.data().samples.len() >= max {
        return Err(violation(format!("more than {max} samples in one run")));
    }
    let name = read_str(
        caller,
        name_ptr,
        name_len,
        sentra_core::batch::MAX_NAME_LEN,
        "metric name",
    )?;
    let name = MetricName::new(name).map_err(|e| violation(format!("metric name: {e}")))?;
    let labels = read_str(caller, labels_ptr, labels_len, MAX_LABELS_BYTES, "labels")?;
    let labels = parse_labels(&labels)?;
    caller
        .data_mut()
        .samples
        .push(Sample::new(name, labels, UnixMillis::now(), value));
    Ok(())
}

/// Registers the host functions.
pub(crate) fn link(linker: &mut Linker<RunState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        IMPORT_MODULE,
        "emit_gauge",
        |mut c: Caller<'_, RunState>, np: i32, nl: i32, lp: i32, ll: i32, v: f64| {
            emit(&mut c, (np, nl, lp, ll), Value::Gauge(v))
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        "emit_counter",
        |mut c: Caller<'_, RunState>, np: i32, nl: i32, lp: i32, ll: i32, v: i64| {
            let v = u64::try_from(v).map_err(|_| violation("counter value is negative"))?;
            emit(&mut c, (np, nl, lp, ll), Value::Counter(v))
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        "log",
        |mut c: Caller<'_, RunState>, level: i32, ptr: i32, len: i32| {
            if c.data().logs.len() >= c.data().bounds.max_logs {
                c.data_mut().logs_dropped = c.data().logs_dropped.saturating_add(1);
                return Ok(());
            }
            // Read at most MAX_LOG_BYTES: a longer message is cut, not copied whole.
            let len = len.clamp(0, MAX_LOG_BYTES as i32);
            let bytes = read_bytes(&mut c, ptr, len, MAX_LOG_BYTES, "log message")?;
            let message = String::from_utf8_lossy(&bytes).into_owned();
            let level = LogLevel::from_abi(level);
            let plugin = &*c.data().plugin;
            match level {
                LogLevel::Error => tracing::error!(plugin, "{message}"),
                LogLevel::Warn => tracing::warn!(plugin, "{message}"),
                LogLevel::Info => tracing::info!(plugin, "{message}"),
                LogLevel::Debug => tracing::debug!(plugin, "{message}"),
                LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            }
            c.data_mut().logs.push(LogLine { level, message });
            Ok(())
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        "read_file",
        |mut c: Caller<'_, RunState>, pp: i32, pl: i32, bp: i32, cap: i32| {
            let path = read_str(&mut c, pp, pl, MAX_PATH_BYTES, "path")?;
            let cap_n =
                usize::try_from(cap).map_err(|_| violation("read_file: negative capacity"))?;
            match c.data().grants.read(&path, cap_n) {
                Ok(data) => {
                    write_out(&mut c, bp, cap, &data, "read_file")?;
                    Ok(i32::try_from(data.len()).unwrap_or(i32::MAX))
                }
                Err(code) => {
                    tracing::debug!(plugin = &*c.data().plugin, code, "read_file refused");
                    Ok(code)
                }
            }
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        "env_get",
        |mut c: Caller<'_, RunState>, np: i32, nl: i32, bp: i32, cap: i32| {
            let name = read_str(&mut c, np, nl, 128, "env name")?;
            let grants = Arc::clone(&c.data().grants);
            match grants.env(&name) {
                Ok(v) => {
                    write_out(&mut c, bp, cap, v.as_bytes(), "env_get")?;
                    Ok(i32::try_from(v.len()).unwrap_or(i32::MAX))
                }
                Err(code) => Ok(code),
            }
        },
    )?;
    linker.func_wrap(IMPORT_MODULE, "now_ms", || UnixMillis::now().as_millis())?;
    Ok(())
}
