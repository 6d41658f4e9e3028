#![doc = include_str!("../README.md")]
#![doc(test(attr(deny(warnings))))]

mod abi;
mod error;
mod grants;
mod host;
pub mod layout;
pub mod manifest;
mod plugin;
pub mod signature;

pub use abi::{
    HOST_FUNCTIONS, IMPORT_MODULE, LogLevel, LogLine, MAX_LABELS_BYTES, MAX_LOG_BYTES,
    MAX_PATH_BYTES, OutputBounds,
};
pub use error::{Error, FailureKind, Result};
pub use grants::MAX_READ;
pub use host::{Host, HostConfig};
pub use manifest::{Capabilities, DirGrant, Manifest};
pub use plugin::{COLLECT_EXPORT, Collection, INITIALIZE_EXPORT, Plugin, Stats};
pub use signature::verify_module;
