//! The async shell: a generic-netlink socket owned by this crate plus an rtnetlink handle.

use std::net::IpAddr;
use std::sync::Arc;

use futures_util::TryStreamExt as _;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use netlink_sys::{Socket, protocols::NETLINK_GENERIC};
use tokio::io::unix::AsyncFd;
use tokio::sync::Mutex;
use zeroize::Zeroize as _;

use crate::diff::diff;
use crate::error::{ENOENT, Error, Op, Result};
use crate::key::Key;
use crate::model::{Device, DeviceConfig, DeviceRef, DeviceUpdate, PeerConfig, PeerUpdate};
use crate::proto::{
    self, DumpParser, DumpStatus, GENL_ID_CTRL, NLMSG_DONE, NLMSG_ERROR, build_set, messages,
    payload_errno, peers_nest_budget,
};

/// Receive buffer: the kernel sizes dump messages up to 32 KiB after seeing a large recv
/// buffer, so 64 KiB never truncates (truncation is still detected with `MSG_TRUNC`).
const RECV_BUF: usize = 64 * 1024;
const MSG_TRUNC: i32 = 0x20;
/// How often a dump interrupted by concurrent changes (`NLM_F_DUMP_INTR`) is repeated.
pub const MAX_DUMP_ATTEMPTS: u32 = 8;

/// A WireGuard interface as listed by rtnetlink.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Interface {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
}

/// Counters of a [`Client`], see [`Client::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Dumps repeated because of `NLM_F_DUMP_INTR`.
    pub dump_retries: u64,
    /// Successful resolutions of the `wireguard` family id.
    pub family_resolutions: u64,
}

/// What [`Client::apply`] (or [`Client::set`]) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ApplyReport {
    /// Peers created.
    pub added: usize,
    /// Existing peers changed.
    pub updated: usize,
    /// Peers removed.
    pub removed: usize,
    /// Whether device attributes (key, port, fwmark) changed.
    pub device_changed: bool,
    /// SET messages sent (0 when already in sync).
    pub messages: usize,
}

struct Genl {
    fd: AsyncFd<Socket>,
    seq: u32,
    family: Option<u16>,
    buf: Vec<u8>,
    dump_retries: u64,
    family_resolutions: u64,
}

impl Genl {
    fn open() -> Result<Self> {
        let mut sock = Socket::new(NETLINK_GENERIC)?;
        sock.bind_auto()?;
        sock.set_non_blocking(true)?;
        // Best effort: do not echo whole requests in error replies (a failed 64 KiB SET would
        // otherwise produce an error message larger than the receive buffer); extended acks.
        let _ = sock.set_cap_ack(true);
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_rx_buf_sz(1 << 20);
        // `AsyncFd::new` is deprecated in favour of the `unsafe` `register` because a caller
        // could close the descriptor behind tokio's back. Here the socket is moved into the
        // `AsyncFd` and only closed when it is dropped (after deregistration), so the safe
        // constructor is sound and the crate stays `forbid(unsafe_code)`.
        #[allow(deprecated)]
        let fd = AsyncFd::new(sock)?;
        Ok(Self {
            fd,
            seq: 0,
            family: None,
            buf: Vec::with_capacity(RECV_BUF),
            dump_retries: 0,
            family_resolutions: 0,
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    async fn send(&self, bytes: &[u8]) -> Result<()> {
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|s| s.get_ref().send(bytes, 0)) {
                Ok(Ok(n)) if n == bytes.len() => return Ok(()),
                Ok(Ok(n)) => {
                    return Err(Error::Malformed(format!(
                        "short netlink send: {n} of {}",
                        bytes.len()
                    )));
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_would_block) => continue,
            }
        }
    }

    /// Receives one datagram into `self.buf`.
    async fn recv(&mut self) -> Result<()> {
        let Self { fd, buf, .. } = self;
        buf.clear();
        loop {
            let mut guard = fd.readable().await?;
            match guard.try_io(|s| s.get_ref().recv(&mut *buf, MSG_TRUNC)) {
                Ok(Ok(n)) if n > buf.capacity() => {
                    return Err(Error::Malformed(format!(
                        "netlink datagram of {n} bytes truncated to {}",
                        buf.capacity()
                    )));
                }
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => return Err(e.into()),
                Err(_would_block) => continue,
            }
        }
    }

    async fn family(&mut self) -> Result<u16> {
        if let Some(f) = self.family {
            return Ok(f);
        }
        let seq = self.next_seq();
        self.send(&proto::resolve_family_request(seq)).await?;
        let mut family = None;
        loop {
            self.recv().await?;
            for m in messages(&self.buf) {
                let m = m?;
                if m.seq != seq {
                    continue;
                }
                match m.ty {
                    NLMSG_ERROR => {
                        let errno = payload_errno(m.payload)?;
                        if errno != 0 {
                            return Err(Error::from_errno(errno, Op::ResolveFamily, "wireguard"));
                        }
                        let f = family.ok_or_else(|| {
                            Error::Malformed("no CTRL_ATTR_FAMILY_ID in reply".into())
                        })?;
                        self.family = Some(f);
                        self.family_resolutions += 1;
                        return Ok(f);
                    }
                    GENL_ID_CTRL => family = proto::parse_family_id(m.payload)?.or(family),
                    NLMSG_DONE => return Err(Error::Malformed("unexpected NLMSG_DONE".into())),
                    _ => {}
                }
            }
        }
    }

    /// One dump; `Ok(None)` if it was interrupted by a concurrent change.
    async fn dump_once(&mut self, family: u16, device: &DeviceRef) -> Result<Option<Device>> {
        let seq = self.next_seq();
        self.send(&proto::get_device_request(family, seq, device)?)
            .await?;
        let mut parser = DumpParser::with_seq(seq);
        let name = device.to_string();
        let result = loop {
            if let Err(e) = self.recv().await {
                break Err(e);
            }
            match parser.feed_for(&self.buf, &name) {
                Ok(DumpStatus::Done) => break Ok(()),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
        };
        // The replies contain the private key.
        self.buf.zeroize();
        result?;
        if parser.interrupted() {
            return Ok(None);
        }
        parser.finish().map(Some)
    }

    /// One dump, returning the raw reply datagrams concatenated.
    async fn dump_raw(&mut self, device: &DeviceRef) -> Result<Vec<u8>> {
        let family = self.family().await?;
        let seq = self.next_seq();
        self.send(&proto::get_device_request(family, seq, device)?)
            .await?;
        let mut parser = DumpParser::with_seq(seq);
        let mut out = Vec::new();
        loop {
            self.recv().await?;
            out.extend_from_slice(&self.buf);
            if parser.feed_for(&self.buf, &device.to_string())? == DumpStatus::Done {
                self.buf.zeroize();
                return Ok(out);
            }
        }
    }

    async fn get(&mut self, device: &DeviceRef) -> Result<Device> {
        device.validate()?;
        let mut reresolved = false;
        let mut attempts = 0;
        while attempts < MAX_DUMP_ATTEMPTS {
            let family = self.family().await?;
            match self.dump_once(family, device).await {
                Ok(Some(d)) => return Ok(d),
                Ok(None) => {
                    attempts += 1;
                    self.dump_retries += 1;
                }
                Err(e) if !reresolved && e.raw_os_error() == Some(ENOENT) => {
                    // The module was reloaded and the family id changed.
                    self.family = None;
                    reresolved = true;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Interrupted { attempts })
    }

    async fn set(&mut self, device: &DeviceRef, update: &DeviceUpdate) -> Result<usize> {
        match self.set_once(device, update).await {
            // The module was reloaded and the family id changed: nothing was applied.
            Err(e) if !matches!(e, Error::Partial { .. }) && e.raw_os_error() == Some(ENOENT) => {
                self.family = None;
                self.set_once(device, update).await
            }
            other => other,
        }
    }

    async fn set_once(&mut self, device: &DeviceRef, update: &DeviceUpdate) -> Result<usize> {
        let family = self.family().await?;
        let mut msgs = build_set(device, update, family, peers_nest_budget())?;
        let total = msgs.len();
        let name = device.to_string();
        for (i, m) in msgs.iter_mut().enumerate() {
            let seq = self.next_seq();
            proto::set_seq(m.bytes_mut(), seq);
            let res = match self.send(m.bytes()).await {
                Ok(()) => self.ack(seq, &name).await,
                Err(e) => Err(e),
            };
            match res {
                Ok(()) => {}
                Err(e) if i == 0 => return Err(e),
                Err(e) => {
                    return Err(Error::Partial {
                        applied: i,
                        total,
                        failed_at: m.first_peer(),
                        source: Box::new(e),
                    });
                }
            }
        }
        Ok(total)
    }

    async fn ack(&mut self, seq: u32, device: &str) -> Result<()> {
        loop {
            self.recv().await?;
            for m in messages(&self.buf) {
                let m = m?;
                if m.seq == seq && m.ty == NLMSG_ERROR {
                    return match payload_errno(m.payload)? {
                        0 => Ok(()),
                        errno => Err(Error::from_errno(errno, Op::SetDevice, device)),
                    };
                }
            }
        }
    }
}

/// An async WireGuard client on tokio.
///
/// It owns one generic-netlink socket (requests are serialised on it; clone the client to
/// share it) and one rtnetlink connection for links, both created by [`Client::connect`]
/// inside a tokio runtime. All WireGuard requests need `CAP_NET_ADMIN`, even reads.
#[derive(Clone)]
pub struct Client {
    genl: Arc<Mutex<Genl>>,
    rt: rtnetlink::Handle,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

fn link_err(e: rtnetlink::Error, device: &str) -> Error {
    match e {
        rtnetlink::Error::NetlinkError(m) => match m.code {
            Some(code) => Error::from_errno(code.get().saturating_neg(), Op::Link, device),
            None => Error::Malformed("rtnetlink NACK without code".into()),
        },
        other => Error::Malformed(format!("rtnetlink: {other}")),
    }
}

fn is_wireguard(link: &LinkMessage) -> bool {
    link.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos
            .iter()
            .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Wireguard))),
        _ => false,
    })
}

fn link_name(link: &LinkMessage) -> String {
    link.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

impl Client {
    /// Opens the sockets. Must be called inside a tokio runtime (the rtnetlink connection
    /// task is spawned on it). Does not fail when WireGuard is missing: that shows up as
    /// [`Error::NotAvailable`] on the first WireGuard request.
    pub async fn connect() -> Result<Self> {
        let genl = Genl::open()?;
        let (conn, rt, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Self {
            genl: Arc::new(Mutex::new(genl)),
            rt,
        })
    }

    /// Resolves the `wireguard` family now (it is otherwise resolved lazily): a cheap way to
    /// learn up front whether WireGuard is usable ([`Error::is_unavailable`]).
    pub async fn probe(&self) -> Result<()> {
        self.genl.lock().await.family().await.map(drop)
    }

    /// Counters since [`Client::connect`]: dumps repeated because a concurrent change
    /// interrupted them (`NLM_F_DUMP_INTR`), and family-id resolutions (more than one means
    /// the module was reloaded and the id re-resolved).
    pub async fn stats(&self) -> Stats {
        let g = self.genl.lock().await;
        Stats {
            dump_retries: g.dump_retries,
            family_resolutions: g.family_resolutions,
        }
    }

    /// Reads a device with all its peers (one dump, repeated if a concurrent change
    /// interrupted it, up to [`MAX_DUMP_ATTEMPTS`] times).
    pub async fn get_device(&self, device: impl Into<DeviceRef>) -> Result<Device> {
        self.genl.lock().await.get(&device.into()).await
    }

    /// The raw reply datagrams of one `WG_CMD_GET_DEVICE` dump, concatenated, exactly as the
    /// kernel sent them (for captures and debugging; parse with [`crate::proto::parse_dump`]).
    /// The bytes contain the device's private key.
    pub async fn get_device_raw(&self, device: impl Into<DeviceRef>) -> Result<Vec<u8>> {
        self.genl.lock().await.dump_raw(&device.into()).await
    }

    /// Lists WireGuard interfaces (rtnetlink link dump filtered by kind).
    pub async fn list_interfaces(&self) -> Result<Vec<Interface>> {
        let mut links = self.rt.link().get().execute();
        let mut out = Vec::new();
        while let Some(link) = links.try_next().await.map_err(|e| link_err(e, "links"))? {
            if is_wireguard(&link) {
                out.push(Interface {
                    index: link.header.index,
                    name: link_name(&link),
                });
            }
        }
        Ok(out)
    }

    /// Every link's index and name (rtnetlink link dump, all kinds): what
    /// [`show::endpoint_named`](crate::show::endpoint_named) needs to print a scoped link-local
    /// endpoint the way `wg` does (`[fe80::1%eth0]:51820`).
    pub async fn link_names(&self) -> Result<crate::show::ScopeNames> {
        let mut links = self.rt.link().get().execute();
        let mut out = crate::show::ScopeNames::new();
        while let Some(link) = links.try_next().await.map_err(|e| link_err(e, "links"))? {
            out.insert(link.header.index, link_name(&link));
        }
        Ok(out)
    }

    /// Every WireGuard device with all peers: what a collector polls. A device deleted
    /// between listing and reading is skipped.
    pub async fn devices(&self) -> Result<Vec<Device>> {
        let mut out = Vec::new();
        for i in self.list_interfaces().await? {
            match self.get_device(DeviceRef::Index(i.index)).await {
                Ok(d) => out.push(d),
                Err(e) if e.is_no_device() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Sends an update, split into as few messages as the 64 KiB limit allows. Returns the
    /// number of messages. On failure after the first message, [`Error::Partial`] says how far
    /// it got.
    pub async fn set(&self, device: impl Into<DeviceRef>, update: &DeviceUpdate) -> Result<usize> {
        self.genl.lock().await.set(&device.into(), update).await
    }

    /// Adds peers, or updates them to exactly these settings if they exist (allowed IPs
    /// replaced). Other peers are untouched.
    pub async fn upsert_peers(
        &self,
        device: impl Into<DeviceRef>,
        peers: &[PeerConfig],
    ) -> Result<usize> {
        let mut u = DeviceUpdate::new();
        u.peers = peers.iter().map(PeerUpdate::from_config).collect();
        self.set(device, &u).await
    }

    /// Removes peers (absent ones are ignored by the kernel).
    pub async fn remove_peers(&self, device: impl Into<DeviceRef>, keys: &[Key]) -> Result<usize> {
        let mut u = DeviceUpdate::new();
        u.peers = keys.iter().copied().map(PeerUpdate::remove).collect();
        self.set(device, &u).await
    }

    /// Sets device attributes (private key, listen port, fwmark) from `config`, leaving peers
    /// alone.
    pub async fn configure_device(
        &self,
        device: impl Into<DeviceRef>,
        config: &DeviceConfig,
    ) -> Result<usize> {
        let mut u = DeviceUpdate::new();
        u.private_key = config.private_key.clone();
        u.listen_port = config.listen_port;
        u.fwmark = config.fwmark;
        self.set(device, &u).await
    }

    /// Makes the device match `desired`: reads it, computes the minimal diff
    /// ([`crate::diff()`]) and sends only that. Sends nothing when already in sync.
    pub async fn apply(
        &self,
        device: impl Into<DeviceRef>,
        desired: &DeviceConfig,
    ) -> Result<ApplyReport> {
        let device = device.into();
        let mut genl = self.genl.lock().await;
        let actual = genl.get(&device).await?;
        let update = diff(&actual, desired)?;
        let mut report = ApplyReport {
            device_changed: update.private_key.is_some()
                || update.listen_port.is_some()
                || update.fwmark.is_some(),
            ..ApplyReport::default()
        };
        for p in &update.peers {
            if p.remove {
                report.removed += 1;
            } else if p.update_only {
                report.updated += 1;
            } else {
                report.added += 1;
            }
        }
        report.messages = genl.set(&device, &update).await?;
        Ok(report)
    }

    async fn index_of(&self, device: &DeviceRef) -> Result<u32> {
        match device {
            DeviceRef::Index(i) => Ok(*i),
            DeviceRef::Name(n) => {
                device.validate()?;
                let mut links = self.rt.link().get().match_name(n.clone()).execute();
                match links.try_next().await {
                    Ok(Some(l)) => Ok(l.header.index),
                    Ok(None) => Err(Error::NoDevice { device: n.clone() }),
                    Err(e) => Err(link_err(e, n)),
                }
            }
        }
    }

    /// Creates a WireGuard link (fails with [`Error::Kernel`] `EEXIST` if the name is taken)
    /// and returns its index.
    pub async fn create_link(&self, name: &str) -> Result<u32> {
        let dev = DeviceRef::from(name);
        dev.validate()?;
        self.rt
            .link()
            .add(rtnetlink::LinkWireguard::new(name).build())
            .execute()
            .await
            .map_err(|e| link_err(e, name))?;
        self.index_of(&dev).await
    }

    /// Deletes a link.
    pub async fn delete_link(&self, device: impl Into<DeviceRef>) -> Result<()> {
        let device = device.into();
        let idx = self.index_of(&device).await?;
        self.rt
            .link()
            .del(idx)
            .execute()
            .await
            .map_err(|e| link_err(e, &device.to_string()))
    }

    /// Brings a link up (`up = true`) or down.
    pub async fn set_link_up(&self, device: impl Into<DeviceRef>, up: bool) -> Result<()> {
        let device = device.into();
        let idx = self.index_of(&device).await?;
        let b = rtnetlink::LinkUnspec::new_with_index(idx);
        let msg = if up { b.up() } else { b.down() }.build();
        self.rt
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| link_err(e, &device.to_string()))
    }

    /// Sets a link's MTU.
    pub async fn set_mtu(&self, device: impl Into<DeviceRef>, mtu: u32) -> Result<()> {
        let device = device.into();
        let idx = self.index_of(&device).await?;
        let msg = rtnetlink::LinkUnspec::new_with_index(idx).mtu(mtu).build();
        self.rt
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| link_err(e, &device.to_string()))
    }

    /// Adds an address (`addr/prefix_len`) to a link.
    pub async fn add_address(
        &self,
        device: impl Into<DeviceRef>,
        addr: IpAddr,
        prefix_len: u8,
    ) -> Result<()> {
        let device = device.into();
        let idx = self.index_of(&device).await?;
        self.rt
            .address()
            .add(idx, addr, prefix_len)
            .execute()
            .await
            .map_err(|e| link_err(e, &device.to_string()))
    }
}
