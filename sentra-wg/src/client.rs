//! The I/O shell: two netlink sockets owned by this crate, one generic-netlink socket for
//! WireGuard and one rtnetlink socket for links and addresses, each either blocking or
//! registered with tokio ([`Sock`]).
//!
//! Every request is written once, as an `async fn` over [`Core`]: the tokio [`Client`]
//! awaits it on non-blocking sockets, and [`blocking::Client`](crate::blocking::Client) runs
//! the same code on blocking sockets with [`block_on`], where no await ever pends (each
//! send and receive completes in its system call). So the sync API needs no runtime, and
//! builds without the `tokio` feature.

use std::future::Future;
use std::net::IpAddr;
#[cfg(feature = "tokio")]
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage, Parseable as _,
};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage},
    link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
};
use netlink_sys::{
    Socket,
    protocols::{NETLINK_GENERIC, NETLINK_ROUTE},
};
#[cfg(feature = "tokio")]
use tokio::io::unix::AsyncFd;
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
/// How long a request waits for each reply datagram from the kernel before it fails with
/// [`Error::NoReply`] (change it with `set_reply_timeout`). rtnetlink and generic netlink
/// handle a request inside the `send` system call, and each next part of a dump inside the
/// `recv` that asks for it, so a reply is normally queued before the wait even starts: a
/// wait this long means the reply was lost or will never match. (A slow kernel operation
/// blocks in `send` instead, which no receive timeout covers.)
pub const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// A WireGuard interface as listed by rtnetlink.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Interface {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
}

/// Counters of a client, see [`Client::stats`](crate::blocking::Client::stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Dumps repeated because of `NLM_F_DUMP_INTR`.
    pub dump_retries: u64,
    /// Successful resolutions of the `wireguard` family id.
    pub family_resolutions: u64,
}

/// What `apply` did (of [`Client`](crate::blocking::Client::apply) or the blocking client).
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

/// `RTM_NEWLINK`.
const RTM_NEWLINK: u16 = 16;

enum Fd {
    Blocking(Socket),
    #[cfg(feature = "tokio")]
    Async(AsyncFd<Socket>),
}

/// One netlink socket, its receive buffer and its reply timeout.
pub(crate) struct Sock {
    fd: Fd,
    buf: Vec<u8>,
    timeout: Option<Duration>,
}

impl Sock {
    fn socket(protocol: isize) -> Result<Socket> {
        let mut sock = Socket::new(protocol)?;
        sock.bind_auto()?;
        // Best effort: do not echo whole requests in error replies (a failed 64 KiB SET would
        // otherwise produce an error message larger than the receive buffer); extended acks.
        let _ = sock.set_cap_ack(true);
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_rx_buf_sz(1 << 20);
        Ok(sock)
    }

    fn with(fd: Fd) -> Result<Self> {
        let mut s = Self {
            fd,
            buf: Vec::with_capacity(RECV_BUF),
            timeout: None,
        };
        s.set_timeout(Some(DEFAULT_REPLY_TIMEOUT))?;
        Ok(s)
    }

    /// A blocking socket: `send` and `recv` complete in their system call.
    pub(crate) fn blocking(protocol: isize) -> Result<Self> {
        Self::with(Fd::Blocking(Self::socket(protocol)?))
    }

    /// Sets how long [`Sock::recv`] waits for a datagram (`None`: forever).
    pub(crate) fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<()> {
        let timeout = timeout.filter(|t| !t.is_zero());
        match &self.fd {
            Fd::Blocking(s) => socket2::SockRef::from(s).set_read_timeout(timeout)?,
            // tokio's timer enforces it in `recv`
            #[cfg(feature = "tokio")]
            Fd::Async(_) => {}
        }
        self.timeout = timeout;
        Ok(())
    }

    /// A non-blocking socket registered with the current tokio runtime.
    #[cfg(feature = "tokio")]
    pub(crate) fn tokio(protocol: isize) -> Result<Self> {
        let sock = Self::socket(protocol)?;
        sock.set_non_blocking(true)?;
        // `AsyncFd::new` is deprecated in favour of the `unsafe` `register` because a caller
        // could close the descriptor behind tokio's back. Here the socket is moved into the
        // `AsyncFd` and only closed when it is dropped (after deregistration), so the safe
        // constructor is sound and the crate stays `forbid(unsafe_code)`.
        #[allow(
            deprecated,
            reason = "see the comment above: the constructor is sound here"
        )]
        let fd = AsyncFd::new(sock)?;
        Self::with(Fd::Async(fd))
    }

    async fn send(&self, bytes: &[u8]) -> Result<()> {
        let n = match &self.fd {
            Fd::Blocking(s) => loop {
                match s.send(bytes, 0) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    other => break other?,
                }
            },
            #[cfg(feature = "tokio")]
            Fd::Async(fd) => loop {
                let mut guard = fd.writable().await?;
                match guard.try_io(|s| s.get_ref().send(bytes, 0)) {
                    Ok(res) => break res?,
                    Err(_would_block) => {}
                }
            },
        };
        if n != bytes.len() {
            return Err(Error::Malformed(format!(
                "short netlink send: {n} of {}",
                bytes.len()
            )));
        }
        Ok(())
    }

    /// Receives one datagram into `self.buf`, waiting at most the reply timeout
    /// ([`Error::NoReply`] for `op` after that).
    async fn recv(&mut self, op: Op) -> Result<()> {
        let Self { fd, buf, timeout } = self;
        buf.clear();
        let no_reply = |after: Duration| Error::NoReply { op, after };
        let n = match fd {
            Fd::Blocking(s) => loop {
                match s.recv(&mut *buf, MSG_TRUNC) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // SO_RCVTIMEO expired.
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) && timeout.is_some() =>
                    {
                        return Err(no_reply(timeout.unwrap_or_default()));
                    }
                    other => break other?,
                }
            },
            #[cfg(feature = "tokio")]
            Fd::Async(fd) => {
                let read = async {
                    loop {
                        let mut guard = fd.readable().await?;
                        match guard.try_io(|s| s.get_ref().recv(&mut *buf, MSG_TRUNC)) {
                            Ok(res) => break res,
                            Err(_would_block) => {}
                        }
                    }
                };
                match timeout {
                    Some(t) => tokio::time::timeout(*t, read)
                        .await
                        .map_err(|_elapsed| no_reply(*t))??,
                    None => read.await?,
                }
            }
        };
        if n > buf.capacity() {
            return Err(Error::Malformed(format!(
                "netlink datagram of {n} bytes truncated to {}",
                buf.capacity()
            )));
        }
        Ok(())
    }
}

/// Runs a future of [`Core`] over blocking sockets to completion on this thread.
///
/// Such a future never returns `Pending`: its only await points are [`Sock`]'s `send` and
/// `recv`, which on a blocking socket finish inside the system call. The loop is there only
/// so that this stays correct (if slow) should that ever change.
pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::yield_now();
    }
}

struct Genl {
    sock: Sock,
    seq: u32,
    family: Option<u16>,
    dump_retries: u64,
    family_resolutions: u64,
}

impl Genl {
    fn new(sock: Sock) -> Self {
        Self {
            sock,
            seq: 0,
            family: None,
            dump_retries: 0,
            family_resolutions: 0,
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    async fn family(&mut self) -> Result<u16> {
        if let Some(f) = self.family {
            return Ok(f);
        }
        let seq = self.next_seq();
        self.sock.send(&proto::resolve_family_request(seq)).await?;
        let mut family = None;
        loop {
            self.sock.recv(Op::ResolveFamily).await?;
            for m in messages(&self.sock.buf) {
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
        self.sock
            .send(&proto::get_device_request(family, seq, device)?)
            .await?;
        let mut parser = DumpParser::with_seq(seq);
        let name = device.to_string();
        let result = loop {
            if let Err(e) = self.sock.recv(Op::GetDevice).await {
                break Err(e);
            }
            match parser.feed_for(&self.sock.buf, &name) {
                Ok(DumpStatus::Done) => break Ok(()),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
        };
        // The replies contain the private key.
        self.sock.buf.zeroize();
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
        self.sock
            .send(&proto::get_device_request(family, seq, device)?)
            .await?;
        let mut parser = DumpParser::with_seq(seq);
        let mut out = Vec::new();
        loop {
            self.sock.recv(Op::GetDevice).await?;
            out.extend_from_slice(&self.sock.buf);
            if parser.feed_for(&self.sock.buf, &device.to_string())? == DumpStatus::Done {
                self.sock.buf.zeroize();
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
            let res = match self.sock.send(m.bytes()).await {
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
            self.sock.recv(Op::SetDevice).await?;
            for m in messages(&self.sock.buf) {
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

/// The rtnetlink side: links and addresses.
struct Route {
    sock: Sock,
    seq: u32,
}

impl Route {
    fn new(sock: Sock) -> Self {
        Self { sock, seq: 0 }
    }

    /// Sends one request and collects the `RTM_NEWLINK` messages answering it, up to its
    /// acknowledgement (`NLM_F_ACK`) or the end of the dump (`NLM_F_DUMP`).
    async fn exchange(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        device: &str,
    ) -> Result<Vec<LinkMessage>> {
        self.seq = self.seq.wrapping_add(1).max(1);
        let seq = self.seq;
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = flags;
        req.header.sequence_number = seq;
        self.sock.send(&proto::serialize(req)).await?;
        let mut links = Vec::new();
        loop {
            self.sock.recv(Op::Link).await?;
            for m in messages(&self.sock.buf) {
                let m = m?;
                if m.seq != seq {
                    continue;
                }
                match m.ty {
                    NLMSG_ERROR | NLMSG_DONE => {
                        // An ack is an error message with errno 0; a dump's DONE may carry
                        // an errno too.
                        let errno = if m.payload.len() >= 4 || m.ty == NLMSG_ERROR {
                            payload_errno(m.payload)?
                        } else {
                            0
                        };
                        if errno != 0 {
                            return Err(Error::from_errno(errno, Op::Link, device));
                        }
                        return Ok(links);
                    }
                    RTM_NEWLINK => {
                        links.push(LinkMessage::parse(m.payload).map_err(|e| {
                            Error::Malformed(format!("rtnetlink link message: {e}"))
                        })?)
                    }
                    _ => {}
                }
            }
        }
    }

    async fn dump_links(&mut self) -> Result<Vec<LinkMessage>> {
        let req = RouteNetlinkMessage::GetLink(LinkMessage::default());
        self.exchange(req, NLM_F_REQUEST | NLM_F_DUMP, "links")
            .await
    }

    /// Sends a change and waits for its acknowledgement.
    async fn change(&mut self, msg: RouteNetlinkMessage, flags: u16, device: &str) -> Result<()> {
        self.exchange(msg, NLM_F_REQUEST | NLM_F_ACK | flags, device)
            .await
            .map(drop)
    }

    async fn index_of(&mut self, device: &DeviceRef) -> Result<u32> {
        match device {
            DeviceRef::Index(i) => Ok(*i),
            DeviceRef::Name(n) => {
                device.validate()?;
                let mut get = LinkMessage::default();
                get.attributes.push(LinkAttribute::IfName(n.clone()));
                let links = self
                    .exchange(
                        RouteNetlinkMessage::GetLink(get),
                        NLM_F_REQUEST | NLM_F_ACK,
                        n,
                    )
                    .await?;
                links
                    .first()
                    .map(|l| l.header.index)
                    .ok_or_else(|| Error::NoDevice { device: n.clone() })
            }
        }
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

/// The address message `ip address add addr/prefix_len dev #index` sends.
fn address_message(index: u32, addr: IpAddr, prefix_len: u8) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.index = index;
    m.header.prefix_len = prefix_len;
    match addr {
        IpAddr::V4(a) => {
            m.header.family = AddressFamily::Inet;
            if !a.is_multicast() {
                m.attributes.push(AddressAttribute::Address(addr));
                m.attributes.push(AddressAttribute::Local(addr));
                if prefix_len < 31 {
                    let host_bits = u32::MAX.checked_shr(u32::from(prefix_len)).unwrap_or(0);
                    m.attributes.push(AddressAttribute::Broadcast(
                        (u32::from(a) | host_bits).into(),
                    ));
                }
            }
        }
        IpAddr::V6(a) => {
            m.header.family = AddressFamily::Inet6;
            if a.is_multicast() {
                m.attributes.push(AddressAttribute::Multicast(a));
            } else {
                m.attributes.push(AddressAttribute::Address(addr));
                m.attributes.push(AddressAttribute::Local(addr));
            }
        }
    }
    m
}

/// Both sockets and every operation, shared by the tokio and the blocking client.
pub(crate) struct Core {
    genl: Genl,
    route: Route,
}

impl Core {
    /// Opens both sockets blocking.
    pub(crate) fn blocking() -> Result<Self> {
        Ok(Self {
            genl: Genl::new(Sock::blocking(NETLINK_GENERIC)?),
            route: Route::new(Sock::blocking(NETLINK_ROUTE)?),
        })
    }

    /// Opens both sockets on the current tokio runtime.
    #[cfg(feature = "tokio")]
    fn tokio() -> Result<Self> {
        Ok(Self {
            genl: Genl::new(Sock::tokio(NETLINK_GENERIC)?),
            route: Route::new(Sock::tokio(NETLINK_ROUTE)?),
        })
    }

    pub(crate) async fn probe(&mut self) -> Result<()> {
        self.genl.family().await.map(drop)
    }

    pub(crate) fn set_reply_timeout(&mut self, timeout: Option<Duration>) -> Result<()> {
        self.genl.sock.set_timeout(timeout)?;
        self.route.sock.set_timeout(timeout)
    }

    pub(crate) fn stats(&self) -> Stats {
        Stats {
            dump_retries: self.genl.dump_retries,
            family_resolutions: self.genl.family_resolutions,
        }
    }

    pub(crate) async fn get_device(&mut self, device: DeviceRef) -> Result<Device> {
        self.genl.get(&device).await
    }

    pub(crate) async fn get_device_raw(&mut self, device: DeviceRef) -> Result<Vec<u8>> {
        self.genl.dump_raw(&device).await
    }

    pub(crate) async fn list_interfaces(&mut self) -> Result<Vec<Interface>> {
        Ok(self
            .route
            .dump_links()
            .await?
            .iter()
            .filter(|l| is_wireguard(l))
            .map(|l| Interface {
                index: l.header.index,
                name: link_name(l),
            })
            .collect())
    }

    pub(crate) async fn link_names(&mut self) -> Result<crate::show::ScopeNames> {
        let mut out = crate::show::ScopeNames::new();
        for l in self.route.dump_links().await? {
            out.insert(l.header.index, link_name(&l));
        }
        Ok(out)
    }

    pub(crate) async fn devices(&mut self) -> Result<Vec<Device>> {
        let mut out = Vec::new();
        for i in self.list_interfaces().await? {
            match self.genl.get(&DeviceRef::Index(i.index)).await {
                Ok(d) => out.push(d),
                Err(e) if e.is_no_device() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    pub(crate) async fn set(&mut self, device: DeviceRef, update: &DeviceUpdate) -> Result<usize> {
        self.genl.set(&device, update).await
    }

    pub(crate) async fn upsert_peers(
        &mut self,
        device: DeviceRef,
        peers: &[PeerConfig],
    ) -> Result<usize> {
        let mut u = DeviceUpdate::new();
        u.peers = peers.iter().map(PeerUpdate::from_config).collect();
        self.genl.set(&device, &u).await
    }

    pub(crate) async fn remove_peers(&mut self, device: DeviceRef, keys: &[Key]) -> Result<usize> {
        let mut u = DeviceUpdate::new();
        u.peers = keys.iter().copied().map(PeerUpdate::remove).collect();
        self.genl.set(&device, &u).await
    }

    pub(crate) async fn configure_device(
        &mut self,
        device: DeviceRef,
        config: &DeviceConfig,
    ) -> Result<usize> {
        let mut u = DeviceUpdate::new();
        u.private_key = config.private_key.clone();
        u.listen_port = config.listen_port;
        u.fwmark = config.fwmark;
        self.genl.set(&device, &u).await
    }

    pub(crate) async fn apply(
        &mut self,
        device: DeviceRef,
        desired: &DeviceConfig,
    ) -> Result<ApplyReport> {
        let actual = self.genl.get(&device).await?;
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
        report.messages = self.genl.set(&device, &update).await?;
        Ok(report)
    }

    pub(crate) async fn create_link(&mut self, name: &str) -> Result<u32> {
        let dev = DeviceRef::from(name);
        dev.validate()?;
        let mut link = LinkMessage::default();
        link.attributes.push(LinkAttribute::IfName(name.to_owned()));
        link.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Wireguard,
            )]));
        self.route
            .change(
                RouteNetlinkMessage::NewLink(link),
                NLM_F_EXCL | NLM_F_CREATE,
                name,
            )
            .await?;
        self.route.index_of(&dev).await
    }

    pub(crate) async fn delete_link(&mut self, device: DeviceRef) -> Result<()> {
        let mut link = LinkMessage::default();
        link.header.index = self.route.index_of(&device).await?;
        // A WireGuard device deleted with its peers frees them after RTM_DELLINK has dropped
        // the RTNL lock, one normal RCU grace period per peer (`synchronize_net` in
        // `peer_remove_after_dead`): 17 ms per peer under qemu's emulation, 345 s for 20 000
        // peers, the "hang" of issue 18. One REPLACE_PEERS SET first removes them under the
        // RTNL lock, where `synchronize_net` is expedited: 1 000 peers in 26 ms instead of
        // 16.8 s. A link that is not WireGuard (or a kernel without it) is deleted directly.
        let mut empty = DeviceUpdate::new();
        empty.replace_peers = true;
        match self
            .genl
            .set(&DeviceRef::Index(link.header.index), &empty)
            .await
        {
            Ok(_) => {}
            Err(e) if e.is_no_device() || matches!(e, Error::NotAvailable) => {}
            Err(e) => return Err(e),
        }
        self.route
            .change(RouteNetlinkMessage::DelLink(link), 0, &device.to_string())
            .await
    }

    async fn set_link(
        &mut self,
        device: &DeviceRef,
        edit: impl FnOnce(&mut LinkMessage),
    ) -> Result<()> {
        let mut link = LinkMessage::default();
        link.header.index = self.route.index_of(device).await?;
        edit(&mut link);
        self.route
            .change(
                RouteNetlinkMessage::SetLink(link),
                NLM_F_EXCL | NLM_F_CREATE,
                &device.to_string(),
            )
            .await
    }

    pub(crate) async fn set_link_up(&mut self, device: DeviceRef, up: bool) -> Result<()> {
        self.set_link(&device, |l| {
            l.header.flags.set(LinkFlags::Up, up);
            l.header.change_mask |= LinkFlags::Up;
        })
        .await
    }

    pub(crate) async fn set_mtu(&mut self, device: DeviceRef, mtu: u32) -> Result<()> {
        self.set_link(&device, |l| l.attributes.push(LinkAttribute::Mtu(mtu)))
            .await
    }

    pub(crate) async fn add_address(
        &mut self,
        device: DeviceRef,
        addr: IpAddr,
        prefix_len: u8,
    ) -> Result<()> {
        let index = self.route.index_of(&device).await?;
        self.route
            .change(
                RouteNetlinkMessage::NewAddress(address_message(index, addr, prefix_len)),
                NLM_F_EXCL | NLM_F_CREATE,
                &device.to_string(),
            )
            .await
    }
}

/// An async WireGuard client on tokio (feature `tokio`, on by default).
///
/// It owns one generic-netlink socket and one rtnetlink socket (requests are serialised on
/// them; clone the client to share it), created by [`Client::connect`] inside a tokio
/// runtime. All WireGuard requests need `CAP_NET_ADMIN`, even reads. Without a runtime, use
/// [`blocking::Client`](crate::blocking::Client): the same operations, the same code.
#[cfg(feature = "tokio")]
#[derive(Clone)]
pub struct Client {
    core: Arc<tokio::sync::Mutex<Core>>,
}

#[cfg(feature = "tokio")]
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

#[cfg(feature = "tokio")]
impl Client {
    /// Opens the sockets. Must be called inside a tokio runtime (they are registered with
    /// its reactor). Does not fail when WireGuard is missing: that shows up as
    /// [`Error::NotAvailable`] on the first WireGuard request.
    pub async fn connect() -> Result<Self> {
        Ok(Self {
            core: Arc::new(tokio::sync::Mutex::new(Core::tokio()?)),
        })
    }

    /// Resolves the `wireguard` family now (it is otherwise resolved lazily): a cheap way to
    /// learn up front whether WireGuard is usable ([`Error::is_unavailable`]).
    pub async fn probe(&self) -> Result<()> {
        self.core.lock().await.probe().await
    }

    /// Sets how long a request waits for each reply from the kernel before it fails with
    /// [`Error::NoReply`] (default [`DEFAULT_REPLY_TIMEOUT`]; `None` or zero: forever).
    /// The timeout runs on tokio's timer: the runtime needs it enabled (`enable_all`).
    pub async fn set_reply_timeout(&self, timeout: Option<Duration>) -> Result<()> {
        self.core.lock().await.set_reply_timeout(timeout)
    }

    /// Counters since [`Client::connect`]: dumps repeated because a concurrent change
    /// interrupted them (`NLM_F_DUMP_INTR`), and family-id resolutions (more than one means
    /// the module was reloaded and the id re-resolved).
    pub async fn stats(&self) -> Stats {
        self.core.lock().await.stats()
    }

    /// Reads a device with all its peers (one dump, repeated if a concurrent change
    /// interrupted it, up to [`MAX_DUMP_ATTEMPTS`] times).
    pub async fn get_device(&self, device: impl Into<DeviceRef>) -> Result<Device> {
        self.core.lock().await.get_device(device.into()).await
    }

    /// The raw reply datagrams of one `WG_CMD_GET_DEVICE` dump, concatenated, exactly as the
    /// kernel sent them (for captures and debugging; parse with [`crate::proto::parse_dump`]).
    /// The bytes contain the device's private key.
    pub async fn get_device_raw(&self, device: impl Into<DeviceRef>) -> Result<Vec<u8>> {
        self.core.lock().await.get_device_raw(device.into()).await
    }

    /// Lists WireGuard interfaces (rtnetlink link dump filtered by kind).
    pub async fn list_interfaces(&self) -> Result<Vec<Interface>> {
        self.core.lock().await.list_interfaces().await
    }

    /// Every link's index and name (rtnetlink link dump, all kinds): what
    /// [`show::endpoint_named`](crate::show::endpoint_named) needs to print a scoped link-local
    /// endpoint the way `wg` does (`[fe80::1%eth0]:51820`).
    pub async fn link_names(&self) -> Result<crate::show::ScopeNames> {
        self.core.lock().await.link_names().await
    }

    /// Every WireGuard device with all peers: what a collector polls. A device deleted
    /// between listing and reading is skipped.
    pub async fn devices(&self) -> Result<Vec<Device>> {
        self.core.lock().await.devices().await
    }

    /// Sends an update, split into as few messages as the 64 KiB limit allows. Returns the
    /// number of messages. On failure after the first message, [`Error::Partial`] says how far
    /// it got.
    pub async fn set(&self, device: impl Into<DeviceRef>, update: &DeviceUpdate) -> Result<usize> {
        self.core.lock().await.set(device.into(), update).await
    }

    /// Adds peers, or updates them to exactly these settings if they exist (allowed IPs
    /// replaced). Other peers are untouched.
    pub async fn upsert_peers(
        &self,
        device: impl Into<DeviceRef>,
        peers: &[PeerConfig],
    ) -> Result<usize> {
        self.core
            .lock()
            .await
            .upsert_peers(device.into(), peers)
            .await
    }

    /// Removes peers (absent ones are ignored by the kernel).
    pub async fn remove_peers(&self, device: impl Into<DeviceRef>, keys: &[Key]) -> Result<usize> {
        self.core
            .lock()
            .await
            .remove_peers(device.into(), keys)
            .await
    }

    /// Sets device attributes (private key, listen port, fwmark) from `config`, leaving peers
    /// alone.
    pub async fn configure_device(
        &self,
        device: impl Into<DeviceRef>,
        config: &DeviceConfig,
    ) -> Result<usize> {
        self.core
            .lock()
            .await
            .configure_device(device.into(), config)
            .await
    }

    /// Makes the device match `desired`: reads it, computes the minimal diff
    /// ([`crate::diff()`]) and sends only that. Sends nothing when already in sync.
    pub async fn apply(
        &self,
        device: impl Into<DeviceRef>,
        desired: &DeviceConfig,
    ) -> Result<ApplyReport> {
        self.core.lock().await.apply(device.into(), desired).await
    }

    /// Creates a WireGuard link (fails with [`Error::Kernel`] `EEXIST` if the name is taken)
    /// and returns its index.
    pub async fn create_link(&self, name: &str) -> Result<u32> {
        self.core.lock().await.create_link(name).await
    }

    /// Deletes a link. A WireGuard link is emptied first with one `REPLACE_PEERS` SET: the
    /// kernel then frees the peers under the RTNL lock with expedited RCU grace periods
    /// instead of one normal grace period per peer after the delete (1 000 peers: 0.1 s
    /// instead of 17 s under emulation; 20 000 peers took 345 s).
    pub async fn delete_link(&self, device: impl Into<DeviceRef>) -> Result<()> {
        self.core.lock().await.delete_link(device.into()).await
    }

    /// Brings a link up (`up = true`) or down.
    pub async fn set_link_up(&self, device: impl Into<DeviceRef>, up: bool) -> Result<()> {
        self.core.lock().await.set_link_up(device.into(), up).await
    }

    /// Sets a link's MTU.
    pub async fn set_mtu(&self, device: impl Into<DeviceRef>, mtu: u32) -> Result<()> {
        self.core.lock().await.set_mtu(device.into(), mtu).await
    }

    /// Adds an address (`addr/prefix_len`) to a link.
    pub async fn add_address(
        &self,
        device: impl Into<DeviceRef>,
        addr: IpAddr,
        prefix_len: u8,
    ) -> Result<()> {
        self.core
            .lock()
            .await
            .add_address(device.into(), addr, prefix_len)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `RTM_GETLINK` for `lo` sent without `NLM_F_ACK`: the kernel answers with one
    /// `RTM_NEWLINK` and never acknowledges — exactly what a request whose acknowledgement
    /// is lost looks like to the waiting side. Works on any Linux host, unprivileged.
    fn unacknowledged_getlink() -> RouteNetlinkMessage {
        let mut get = LinkMessage::default();
        get.attributes.push(LinkAttribute::IfName("lo".to_owned()));
        RouteNetlinkMessage::GetLink(get)
    }

    fn assert_no_reply(err: &Error, after: Duration) {
        match err {
            Error::NoReply { op, after: a } => assert_eq!((*op, *a), (Op::Link, after)),
            other => panic!("expected NoReply, got {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("no reply from the kernel within 0.3s while changing a network link"),
            "{text}"
        );
    }

    #[test]
    fn blocking_a_missing_acknowledgement_is_an_error_not_a_hang() {
        let after = Duration::from_millis(300);
        let mut route = Route::new(Sock::blocking(NETLINK_ROUTE).expect("rtnetlink socket"));
        route.sock.set_timeout(Some(after)).expect("SO_RCVTIMEO");
        let err = block_on(route.exchange(unacknowledged_getlink(), NLM_F_REQUEST, "lo"))
            .expect_err("no acknowledgement comes");
        assert_no_reply(&err, after);
        // The socket stays usable: the next request skips the stale reply by its sequence
        // number and gets its own answer.
        let lo = block_on(route.index_of(&DeviceRef::from("lo"))).expect("lookup of lo");
        assert_eq!(lo, 1);
    }

    #[cfg(feature = "tokio")]
    #[tokio::test(flavor = "current_thread")]
    async fn tokio_a_missing_acknowledgement_is_an_error_not_a_hang() {
        let after = Duration::from_millis(300);
        let mut route = Route::new(Sock::tokio(NETLINK_ROUTE).expect("rtnetlink socket"));
        route.sock.set_timeout(Some(after)).expect("timeout");
        let err = route
            .exchange(unacknowledged_getlink(), NLM_F_REQUEST, "lo")
            .await
            .expect_err("no acknowledgement comes");
        assert_no_reply(&err, after);
        let lo = route
            .index_of(&DeviceRef::from("lo"))
            .await
            .expect("lookup of lo");
        assert_eq!(lo, 1);
    }

    fn read_timeout(s: &Sock) -> Option<Duration> {
        match &s.fd {
            Fd::Blocking(sock) => socket2::SockRef::from(sock)
                .read_timeout()
                .expect("getsockopt SO_RCVTIMEO"),
            #[cfg(feature = "tokio")]
            Fd::Async(_) => unreachable!("a blocking socket"),
        }
    }

    #[test]
    fn the_default_reply_timeout_is_set_and_can_be_lifted() {
        let mut s = Sock::blocking(NETLINK_ROUTE).expect("socket");
        assert_eq!(s.timeout, Some(DEFAULT_REPLY_TIMEOUT));
        assert_eq!(read_timeout(&s), Some(DEFAULT_REPLY_TIMEOUT));
        s.set_timeout(None).expect("no timeout");
        assert_eq!((s.timeout, read_timeout(&s)), (None, None));
    }
}
