//! The Sentra edge agent as a library.
//!
//! The agent collects WireGuard status (via `sentra-wg`) and host metrics on schedules,
//! appends every collection to a crash-safe write-ahead log (`sentra-wal`), and ships the
//! log, signed (`sentra-core`), to a `sentra-server` over gRPC, trimming the log only after
//! the server acknowledged each batch as durable. It also keeps its signing key current
//! (rotation over the REST API) and applies the WireGuard peers an operator declared.
//!
//! The `sentra-agent` binary is a thin shell over this crate; `sentra-server --local-agent`
//! embeds it with [`Agent`] and credentials given in-process.
//!
//! # Guarantees
//!
//! * **One collection = one WAL record = one batch.** A record is an encoded
//!   `proto::MetricBatch` whose `seq` is `seq_base + LSN` (see [`store`]), so a sequence
//!   number always denotes the same bytes and sequence numbers grow in WAL order.
//! * **At least once, deduplicated.** The WAL is trimmed only after an `ACCEPTED` or
//!   `DUPLICATE` ack. A restart re-sends what was not acknowledged; the server answers
//!   `DUPLICATE` for what it already had.
//! * **One batch in flight.** The server deduplicates with a per-agent high-water mark, so
//!   a batch overtaken by a later one would be misread as a duplicate: the shipper therefore
//!   sends strictly in order, one at a time.
//! * **Nothing is dropped silently.** Every drop is logged and counted (see [`health`]).
//!
//! # Collectors
//!
//! Host metrics, WireGuard status and any collector added with
//! [`Agent::with_collector`] implement one trait, [`Collector`], and run under one
//! scheduler: a collector that fails, panics or hangs is isolated, backed off and visible in
//! per-collector health, and never stops the others (see [`collector`]). WASM plugins from
//! [`Config::plugins_dir`] are collectors too, sandboxed by `sentra-plugin` (see [`plugin`]).
#![allow(
    clippy::exhaustive_structs,
    clippy::exhaustive_enums,
    reason = "the library half of the agent binary, not a published API (publish = false); \
              the binary and its tests build its types with struct literals"
)]
#![forbid(unsafe_code)]

pub mod api;
pub mod apply;
mod atomic_file;
mod collect;
pub mod collector;
pub mod config;
pub mod credentials;
mod error;
pub mod health;
pub mod host;
pub mod output;
pub mod plugin;
mod runtime;
pub mod samples;
mod scheduler;
pub mod ship;
pub mod store;
pub mod wireguard;

pub use collect::collect_once;
pub use collector::{CollectContext, CollectError, Collection, Collector, Schedule};
pub use config::{Config, LogFormat, Overrides, WalFullPolicy};
pub use credentials::Credentials;
pub use error::{Error, Result};
pub use runtime::{Agent, AgentHandle};
pub use ship::{Ingest, IngestError};
