//! Blocking convenience wrapper around [`crate::Client`] for programs without a tokio runtime.
//!
//! It owns a current-thread runtime; do not call it from inside an async context.

use std::net::IpAddr;

use crate::client::{ApplyReport, Interface, Stats};
use crate::error::Result;
use crate::key::Key;
use crate::model::{Device, DeviceConfig, DeviceRef, DeviceUpdate, PeerConfig};

/// Blocking WireGuard client: the same operations as [`crate::Client`].
#[derive(Debug)]
pub struct Client {
    rt: tokio::runtime::Runtime,
    inner: crate::Client,
}

impl Client {
    /// Opens the sockets.
    pub fn connect() -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        let inner = rt.block_on(crate::Client::connect())?;
        Ok(Self { rt, inner })
    }
    /// See [`crate::Client::probe`].
    pub fn probe(&self) -> Result<()> {
        self.rt.block_on(self.inner.probe())
    }
    /// See [`crate::Client::stats`].
    pub fn stats(&self) -> Stats {
        self.rt.block_on(self.inner.stats())
    }
    /// See [`crate::Client::get_device`].
    pub fn get_device(&self, device: impl Into<DeviceRef>) -> Result<Device> {
        self.rt.block_on(self.inner.get_device(device))
    }
    /// See [`crate::Client::get_device_raw`].
    pub fn get_device_raw(&self, device: impl Into<DeviceRef>) -> Result<Vec<u8>> {
        self.rt.block_on(self.inner.get_device_raw(device))
    }
    /// See [`crate::Client::list_interfaces`].
    pub fn list_interfaces(&self) -> Result<Vec<Interface>> {
        self.rt.block_on(self.inner.list_interfaces())
    }
    /// See [`crate::Client::link_names`].
    pub fn link_names(&self) -> Result<crate::show::ScopeNames> {
        self.rt.block_on(self.inner.link_names())
    }
    /// See [`crate::Client::devices`].
    pub fn devices(&self) -> Result<Vec<Device>> {
        self.rt.block_on(self.inner.devices())
    }
    /// See [`crate::Client::set`].
    pub fn set(&self, device: impl Into<DeviceRef>, update: &DeviceUpdate) -> Result<usize> {
        self.rt.block_on(self.inner.set(device, update))
    }
    /// See [`crate::Client::upsert_peers`].
    pub fn upsert_peers(
        &self,
        device: impl Into<DeviceRef>,
        peers: &[PeerConfig],
    ) -> Result<usize> {
        self.rt.block_on(self.inner.upsert_peers(device, peers))
    }
    /// See [`crate::Client::remove_peers`].
    pub fn remove_peers(&self, device: impl Into<DeviceRef>, keys: &[Key]) -> Result<usize> {
        self.rt.block_on(self.inner.remove_peers(device, keys))
    }
    /// See [`crate::Client::configure_device`].
    pub fn configure_device(
        &self,
        device: impl Into<DeviceRef>,
        config: &DeviceConfig,
    ) -> Result<usize> {
        self.rt
            .block_on(self.inner.configure_device(device, config))
    }
    /// See [`crate::Client::apply`].
    pub fn apply(
        &self,
        device: impl Into<DeviceRef>,
        desired: &DeviceConfig,
    ) -> Result<ApplyReport> {
        self.rt.block_on(self.inner.apply(device, desired))
    }
    /// See [`crate::Client::create_link`].
    pub fn create_link(&self, name: &str) -> Result<u32> {
        self.rt.block_on(self.inner.create_link(name))
    }
    /// See [`crate::Client::delete_link`].
    pub fn delete_link(&self, device: impl Into<DeviceRef>) -> Result<()> {
        self.rt.block_on(self.inner.delete_link(device))
    }
    /// See [`crate::Client::set_link_up`].
    pub fn set_link_up(&self, device: impl Into<DeviceRef>, up: bool) -> Result<()> {
        self.rt.block_on(self.inner.set_link_up(device, up))
    }
    /// See [`crate::Client::set_mtu`].
    pub fn set_mtu(&self, device: impl Into<DeviceRef>, mtu: u32) -> Result<()> {
        self.rt.block_on(self.inner.set_mtu(device, mtu))
    }
    /// See [`crate::Client::add_address`].
    pub fn add_address(
        &self,
        device: impl Into<DeviceRef>,
        addr: IpAddr,
        prefix_len: u8,
    ) -> Result<()> {
        self.rt
            .block_on(self.inner.add_address(device, addr, prefix_len))
    }
}
