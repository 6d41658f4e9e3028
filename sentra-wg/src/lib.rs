#![doc = include_str!("../README.md")]
//!
//! ## Crate overview
//!
//! * [`Client`] (async, tokio: feature `tokio`, on by default) and [`blocking::Client`] (no
//!   runtime; builds without tokio) talk to the kernel over netlink sockets of their own,
//!   with one implementation of every request: read devices
//!   ([`Client::get_device`], [`Client::devices`]), configure them ([`Client::apply`],
//!   [`Client::set`], [`Client::upsert_peers`], [`Client::remove_peers`]) and manage links
//!   ([`Client::create_link`], [`Client::set_link_up`], [`Client::set_mtu`],
//!   [`Client::add_address`], [`Client::delete_link`]).
//! * [`proto`] is the sans-IO layer (dump parsing with coalescing and `NLM_F_DUMP_INTR`
//!   detection, SET messages split below the 64 KiB attribute limit); [`diff()`] computes the
//!   minimal update; [`show`] formats like `wg show`.
//! * [`Error`] is typed: [`Error::is_unavailable`] tells a collector that WireGuard cannot be
//!   used here (no kernel support, or no `CAP_NET_ADMIN`) so it can say so once and go on.
#![cfg_attr(
    not(feature = "tokio"),
    allow(
        rustdoc::broken_intra_doc_links,
        reason = "without the `tokio` feature the crate docs still name the async `Client`"
    )
)]
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
#[cfg(all(target_os = "linux", feature = "tokio"))]
pub use client::Client;
#[cfg(target_os = "linux")]
pub use client::{ApplyReport, DEFAULT_REPLY_TIMEOUT, Interface, MAX_DUMP_ATTEMPTS, Stats};
