//! WireGuard over raw generic netlink: a typed model, dump coalescing, chunked SET and a diff
//! engine that applies desired state with the fewest possible messages.
//!
//! It depends on no other sentra crate.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

pub mod diff;
mod error;
mod key;
mod model;
pub mod proto;
pub mod show;

pub use diff::diff;
pub use error::{Error, Op, Result};
pub use key::{KEY_LEN, Key, PresharedKey, PrivateKey};
pub use model::{
    AllowedIp, Device, DeviceConfig, DeviceRef, DeviceUpdate, Peer, PeerConfig, PeerUpdate,
};

#[cfg(target_os = "linux")]
pub mod blocking;
#[cfg(target_os = "linux")]
mod client;
#[cfg(target_os = "linux")]
pub use client::{ApplyReport, Client, Interface, MAX_DUMP_ATTEMPTS};
