//! The blocking WireGuard client, for programs without an async runtime: blocking netlink
//! sockets, no tokio (it builds without the `tokio` feature). It runs the very code of the
//! async client, whose awaits never pend on blocking sockets.
//!
//! Calls block the calling thread for the duration of the kernel request; inside an async
//! runtime use the async `Client` (feature `tokio`) instead.

use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};

#[cfg(doc)]
use crate::Error;
use crate::client::{ApplyReport, Core, Interface, Stats, block_on};
use crate::error::Result;
use crate::key::Key;
use crate::model::{Device, DeviceConfig, DeviceRef, DeviceUpdate, PeerConfig};

/// Blocking WireGuard client: the same operations as the async `Client`. Requests from
/// several threads are serialised on its two sockets.
pub struct Client {
    core: Mutex<Core>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// Opens the sockets. Does not fail when WireGuard is missing: that shows up as
    /// [`Error::NotAvailable`] on the first WireGuard request.
    pub fn connect() -> Result<Self> {
        Ok(Self {
            core: Mutex::new(Core::blocking()?),
        })
    }

    fn core(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock leaves the sockets usable: every request starts
        // with a fresh sequence number and skips replies that are not its own.
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }
    /// Resolves the `wireguard` family now (it is otherwise resolved lazily): a cheap way to
    /// learn up front whether WireGuard is usable ([`Error::is_unavailable`]).
    pub fn probe(&self) -> Result<()> {
        block_on(self.core().probe())
    }
    /// Sets how long a request waits for each reply from the kernel before it fails with
    /// [`Error::NoReply`] (default [`DEFAULT_REPLY_TIMEOUT`](crate::DEFAULT_REPLY_TIMEOUT);
    /// `None` or zero: forever).
    pub fn set_reply_timeout(&self, timeout: Option<std::time::Duration>) -> Result<()> {
        self.core().set_reply_timeout(timeout)
    }
    /// Counters since [`Client::connect`]: dumps repeated because a concurrent change
    /// interrupted them (`NLM_F_DUMP_INTR`), and family-id resolutions (more than one means
    /// the module was reloaded and the id re-resolved).
    pub fn stats(&self) -> Stats {
        self.core().stats()
    }
    /// Reads a device with all its peers (one dump, repeated if a concurrent change
    /// interrupted it, up to [`MAX_DUMP_ATTEMPTS`](crate::MAX_DUMP_ATTEMPTS) times).
    pub fn get_device(&self, device: impl Into<DeviceRef>) -> Result<Device> {
        block_on(self.core().get_device(device.into()))
    }
    /// The raw reply datagrams of one `WG_CMD_GET_DEVICE` dump, concatenated, exactly as the
    /// kernel sent them (for captures and debugging; parse with [`crate::proto::parse_dump`]).
    /// The bytes contain the device's private key.
    pub fn get_device_raw(&self, device: impl Into<DeviceRef>) -> Result<Vec<u8>> {
        block_on(self.core().get_device_raw(device.into()))
    }
    /// Lists WireGuard interfaces (rtnetlink link dump filtered by kind).
    pub fn list_interfaces(&self) -> Result<Vec<Interface>> {
        block_on(self.core().list_interfaces())
    }
    /// Every link's index and name (rtnetlink link dump, all kinds): what
    /// [`show::endpoint_named`](crate::show::endpoint_named) needs to print a scoped link-local
    /// endpoint the way `wg` does (`[fe80::1%eth0]:51820`).
    pub fn link_names(&self) -> Result<crate::show::ScopeNames> {
        block_on(self.core().link_names())
    }
    /// Every WireGuard device with all peers: what a collector polls. A device deleted
    /// between listing and reading is skipped.
    pub fn devices(&self) -> Result<Vec<Device>> {
        block_on(self.core().devices())
    }
    /// Sends an update, split into as few messages as the 64 KiB limit allows. Returns the
    /// number of messages. On failure after the first message, [`Error::Partial`] says how far
    /// it got.
    pub fn set(&self, device: impl Into<DeviceRef>, update: &DeviceUpdate) -> Result<usize> {
        block_on(self.core().set(device.into(), update))
    }
    /// Adds peers, or updates them to exactly these settings if they exist (allowed IPs
    /// replaced). Other peers are untouched.
    pub fn upsert_peers(
        &self,
        device: impl Into<DeviceRef>,
        peers: &[PeerConfig],
    ) -> Result<usize> {
        block_on(self.core().upsert_peers(device.into(), peers))
    }
    /// Removes peers (absent ones are ignored by the kernel).
    pub fn remove_peers(&self, device: impl Into<DeviceRef>, keys: &[Key]) -> Result<usize> {
        block_on(self.core().remove_peers(device.into(), keys))
    }
    /// Sets device attributes (private key, listen port, fwmark) from `config`, leaving peers
    /// alone.
    pub fn configure_device(
        &self,
        device: impl Into<DeviceRef>,
        config: &DeviceConfig,
    ) -> Result<usize> {
        block_on(self.core().configure_device(device.into(), config))
    }
    /// Makes the device match `desired`: reads it, computes the minimal diff
    /// ([`crate::diff()`]) and sends only that. Sends nothing when already in sync.
    pub fn apply(
        &self,
        device: impl Into<DeviceRef>,
        desired: &DeviceConfig,
    ) -> Result<ApplyReport> {
        block_on(self.core().apply(device.into(), desired))
    }
    /// Creates a WireGuard link (fails with [`Error::Kernel`] `EEXIST` if the name is taken)
    /// and returns its index.
    pub fn create_link(&self, name: &str) -> Result<u32> {
        block_on(self.core().create_link(name))
    }
    /// Deletes a link. A WireGuard link is emptied first with one `REPLACE_PEERS` SET: the
    /// kernel then frees the peers under the RTNL lock with expedited RCU grace periods
    /// instead of one normal grace period per peer after the delete (1 000 peers: 0.1 s
    /// instead of 17 s under emulation; 20 000 peers took 345 s).
    pub fn delete_link(&self, device: impl Into<DeviceRef>) -> Result<()> {
        block_on(self.core().delete_link(device.into()))
    }
    /// Brings a link up (`up = true`) or down.
    pub fn set_link_up(&self, device: impl Into<DeviceRef>, up: bool) -> Result<()> {
        block_on(self.core().set_link_up(device.into(), up))
    }
    /// Sets a link's MTU.
    pub fn set_mtu(&self, device: impl Into<DeviceRef>, mtu: u32) -> Result<()> {
        block_on(self.core().set_mtu(device.into(), mtu))
    }
    /// Adds an address (`addr/prefix_len`) to a link.
    pub fn add_address(
        &self,
        device: impl Into<DeviceRef>,
        addr: IpAddr,
        prefix_len: u8,
    ) -> Result<()> {
        block_on(self.core().add_address(device.into(), addr, prefix_len))
    }
}
