//! The crate's error type.

use std::fmt;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why one plugin run failed. Each kind has its own counter in [`crate::Stats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// The run exceeded its deadline and was interrupted (epoch deadline).
    Timeout,
    /// A memory, table or instance limit refused a grow or an instantiation.
    ResourceLimit,
    /// The wasm stack was exhausted (deep recursion).
    StackOverflow,
    /// Any other wasm trap (`unreachable`, division by zero, out-of-bounds access, ...).
    Trap,
    /// The plugin broke an output bound (too many samples or logs bytes, bad names, labels
    /// or values) or an ABI rule (bad pointer, non-UTF-8 string).
    Output,
    /// `collect` returned a non-zero status.
    Status,
    /// The host panicked while running the plugin (caught; a wasmtime bug class).
    HostPanic,
}

impl FailureKind {
    /// A short stable name, used as a metric label value.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::ResourceLimit => "resource_limit",
            Self::StackOverflow => "stack_overflow",
            Self::Trap => "trap",
            Self::Output => "output",
            Self::Status => "status",
            Self::HostPanic => "host_panic",
        }
    }

    /// Every kind, in counter order.
    pub const ALL: [Self; 7] = [
        Self::Timeout,
        Self::ResourceLimit,
        Self::StackOverflow,
        Self::Trap,
        Self::Output,
        Self::Status,
        Self::HostPanic,
    ];

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors of the plugin host.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The manifest could not be read or is invalid.
    #[error("plugin manifest {origin}: {message}")]
    Manifest {
        /// Where the manifest came from (a path or `<inline>`).
        origin: String,
        /// What is wrong, with the TOML position where known.
        message: String,
    },
    /// The host configuration is invalid, or the engine could not be built.
    #[error("plugin host configuration: {0}")]
    Config(String),
    /// The module is not valid WebAssembly or could not be compiled.
    #[error("plugin {plugin}: module does not compile: {message}")]
    Compile {
        /// Plugin name.
        plugin: String,
        /// Compiler / validator message.
        message: String,
    },
    /// The module does not implement the plugin interface (missing or mistyped export,
    /// unknown import).
    #[error("plugin {plugin}: interface: {message}")]
    Interface {
        /// Plugin name.
        plugin: String,
        /// What does not match.
        message: String,
    },
    /// A capability granted in the manifest cannot be provided (e.g. a granted directory
    /// cannot be opened).
    #[error("plugin {plugin}: capability {capability}: {message}")]
    Capability {
        /// Plugin name.
        plugin: String,
        /// The capability (`dir:<guest path>` or `env:<NAME>`).
        capability: String,
        /// Why it cannot be provided.
        message: String,
    },
    /// One run failed; counted, and repeated failures quarantine the plugin.
    #[error("plugin {plugin}: run failed ({kind}): {detail}")]
    Run {
        /// Plugin name.
        plugin: String,
        /// Failure class.
        kind: FailureKind,
        /// Human-readable detail (never contains granted env values or file contents).
        detail: String,
    },
    /// The plugin is quarantined after repeated failures and is not run.
    #[error("plugin {plugin}: quarantined after {failures} consecutive failures; last: {reason}")]
    Quarantined {
        /// Plugin name.
        plugin: String,
        /// Consecutive failures that triggered the quarantine.
        failures: u32,
        /// The failure that triggered it.
        reason: String,
    },
    /// A module signature is malformed or does not verify.
    #[error("plugin {plugin}: signature: {message}")]
    Signature {
        /// Plugin name.
        plugin: String,
        /// What is wrong.
        message: String,
    },
    /// Reading a manifest or module file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The failure class when this is a [`Error::Run`].
    #[must_use]
    pub const fn failure_kind(&self) -> Option<FailureKind> {
        match self {
            Self::Run { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}
