//! WireGuard over raw generic netlink: a typed model, dump coalescing, chunked SET and a diff
//! engine that applies desired state with the fewest possible messages.
//!
//! * [`Client`] (async, tokio) and [`blocking::Client`] talk to the kernel: read devices
//!   ([`Client::get_device`], [`Client::devices`]), configure them ([`Client::apply`],
//!   [`Client::set`], [`Client::upsert_peers`], [`Client::remove_peers`]) and manage links
//!   ([`Client::create_link`], [`Client::set_link_up`], [`Client::set_mtu`],
//!   [`Client::add_address`], [`Client::delete_link`]).
//! * [`proto`] is the sans-IO layer (dump parsing with coalescing and `NLM_F_DUMP_INTR`
//!   detection, SET messages split below the 64 KiB attribute limit); [`diff()`] computes the
//!   minimal update; [`show`] formats like `wg show`.
//! * [`Error`] is typed: [`Error::is_unavailable`] tells a collector that WireGuard cannot be
//!   used here (no kernel support, or no `CAP_NET_ADMIN`) so it can say so once and go on.
//!
//! It depends on no other sentra crate. Reading needs `CAP_NET_ADMIN`, so the example does not
//! run in doctests:
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> sentra_wg::Result<()> {
//! use sentra_wg::{AllowedIp, Client, DeviceConfig, Key, PeerConfig};
//!
//! let client = Client::connect().await?;
//! // Collector: every WireGuard device with all peers, one dump each.
//! match client.devices().await {
//!     Ok(devices) => {
//!         for d in &devices {
//!             println!("{}: {} peers", d.name, d.peers.len());
//!         }
//!     }
//!     Err(e) if e.is_unavailable() => eprintln!("WireGuard unavailable: {e}"),
//!     Err(e) => return Err(e),
//! }
//! // Applier: make wg0 have exactly these peers; sends nothing if already in sync.
//! let mut want = DeviceConfig::new();
//! want.peers.push(
//!     PeerConfig::new("Aj2HHAutB2U0O56jJBdkZ/xgb9pnmUPJ0IeiuACLLmI=".parse::<Key>()?)
//!         .with_allowed_ip("10.0.0.2/32".parse::<AllowedIp>()?),
//! );
//! let report = client.apply("wg0", &want).await?;
//! println!("+{} ~{} -{} in {} messages", report.added, report.updated, report.removed, report.messages);
//! # Ok(()) }
//! ```
//!
//! The sans-IO parts run anywhere:
//!
//! ```
//! use sentra_wg::{proto, show, Device, Key, Peer};
//!
//! let mut device = Device::default();
//! device.name = "wg0".into();
//! let mut peer = Peer::new(Key::from_bytes([1; 32]));
//! peer.allowed_ips.push("10.0.0.1/32".parse()?);
//! device.peers.push(peer);
//! // What the kernel would send for it, parsed back.
//! let bytes = proto::emit_dump(&device, 30, 1, 4096);
//! let parsed = proto::parse_dump(&bytes)?;
//! assert_eq!(parsed, device);
//! assert!(show::dump(&parsed, false, show::Secrets::Hide).ends_with("10.0.0.1/32\t0\t0\t0\toff\n"));
//! # Ok::<(), sentra_wg::Error>(())
//! ```
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
pub use client::{ApplyReport, Client, Interface, MAX_DUMP_ATTEMPTS, Stats};
