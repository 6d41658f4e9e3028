//! Connections: the accept loop with its connection caps (global and per address), the
//! handshake timeout (TLS handshake and first HTTP/2 request), the idle read timeout, and
//! the per-connection [`PeerInfo`].

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use rustls_pki_types::CertificateDer;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpListener,
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
    time::{Instant, Sleep},
};
use tonic::transport::server::Connected;

use super::Limits;
use crate::{
    metrics::{Metrics, close_reason},
    rate_limit::{ConnState, source_key},
    tls::ServerTls,
};

/// What the server knows about the connection a request came on; available to layers as a
/// request extension (`req.extensions().get::<PeerInfo>()`).
#[derive(Clone, Debug, Default)]
pub struct PeerInfo {
    pub(crate) remote_addr: Option<SocketAddr>,
    pub(crate) client_cert: Option<CertificateDer<'static>>,
    /// Source-limit state of the connection (`None` in-process).
    pub(crate) conn: Option<Arc<ConnState>>,
}

impl PeerInfo {
    /// The peer's address (`None` in-process).
    #[must_use]
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote_addr
    }

    /// The client's leaf certificate, verified by rustls against the client CA (mutual TLS).
    #[must_use]
    pub fn client_cert(&self) -> Option<&CertificateDer<'static>> {
        self.client_cert.as_ref()
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// One accepted connection, holding its slot of the connection cap until dropped.
pub(crate) struct Conn {
    io: Box<dyn Io>,
    info: PeerInfo,
    _permit: Option<OwnedSemaphorePermit>,
    _address_slot: Option<AddressSlot>,
}

impl Conn {
    #[cfg(feature = "client")]
    pub(crate) fn in_process(io: tokio::io::DuplexStream) -> Self {
        Self {
            io: Box::new(io),
            info: PeerInfo::default(),
            _permit: None,
            _address_slot: None,
        }
    }
}

/// Open connections per client address ([`source_key`]); entries exist only while a
/// connection from the address is open, so the map is bounded by the connection cap.
#[derive(Default)]
struct AddressCounts(Mutex<HashMap<IpAddr, usize>>);

/// One connection's slot of its address's cap; released on drop.
struct AddressSlot {
    counts: Arc<AddressCounts>,
    key: IpAddr,
}

impl AddressSlot {
    fn take(counts: &Arc<AddressCounts>, key: IpAddr, max: usize) -> Option<Self> {
        let mut map = counts
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(key).or_default();
        if *n >= max {
            if *n == 0 {
                map.remove(&key);
            }
            return None;
        }
        *n += 1;
        Some(Self {
            counts: counts.clone(),
            key,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = self
            .counts
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Fails reads after `timeout` without a byte from the peer: closes silent connections
/// (slowloris before the TLS or h2 preface, dead peers). HTTP/2 keepalive pings, which the
/// peer must answer, count as traffic, so idle but healthy connections stay up.
struct IdleTimeout<T> {
    inner: T,
    timeout: Duration,
    metrics: Metrics,
    /// Last time a byte arrived. The timer is only re-armed when it fires (not on every
    /// read), so reads cost no timer-wheel work.
    last_read: Instant,
    sleep: Pin<Box<Sleep>>,
}

impl<T> IdleTimeout<T> {
    fn new(inner: T, timeout: Duration, metrics: Metrics) -> Self {
        Self {
            inner,
            timeout,
            metrics,
            last_read: Instant::now(),
            sleep: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.last_read = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => loop {
                if this.sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let deadline = this.last_read + this.timeout;
                if deadline <= Instant::now() {
                    this.metrics
                        .record_connection_closed(close_reason::IDLE_TIMEOUT);
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection idle for too long",
                    )));
                }
                // Bytes arrived since the timer was armed: re-arm for the real deadline.
                this.sleep.as_mut().reset(deadline);
            },
        }
    }
}

/// Implements `AsyncWrite` for a read-side wrapper `$wrapper<T>` by forwarding every
/// method (vectored writes included) to its `inner: T`.
macro_rules! forward_async_write {
    ($wrapper:ident) => {
        impl<T: AsyncWrite + Unpin> AsyncWrite for $wrapper<T> {
            fn poll_write(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.inner).poll_write(cx, buf)
            }

            fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Pin::new(&mut self.inner).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<io::Result<()>> {
                Pin::new(&mut self.inner).poll_shutdown(cx)
            }

            fn poll_write_vectored(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }
        }
    };
}

forward_async_write!(IdleTimeout);

use std::future::Future as _;

/// The HTTP/2 client connection preface's fixed part (RFC 9113 §3.4).
const H2_MAGIC_LEN: usize = 24;
/// HTTP/2 frame header length.
const H2_FRAME_HEADER_LEN: usize = 9;
/// HTTP/2 HEADERS frame type.
const H2_HEADERS: u8 = 0x1;

/// Closes a connection on which no HTTP/2 request started by `deadline`: it follows the
/// frame headers of the bytes the server reads (the 24-byte preface magic, then 9-byte
/// frame headers, skipping payloads) until the first HEADERS frame, then gets out of the
/// way. Passive: the server answers the preface as usual, so clients that wait for the
/// server's SETTINGS before their first request work.
struct FirstRequest<T> {
    inner: T,
    state: Watch,
    metrics: Metrics,
}

enum Watch {
    Waiting {
        sleep: Pin<Box<Sleep>>,
        /// Bytes still to skip (preface magic or a frame payload).
        skip: usize,
        header: [u8; H2_FRAME_HEADER_LEN],
        have: usize,
    },
    Seen,
    TimedOut,
}

impl<T> FirstRequest<T> {
    fn new(inner: T, deadline: Instant, metrics: Metrics) -> Self {
        Self {
            inner,
            state: Watch::Waiting {
                sleep: Box::pin(tokio::time::sleep_until(deadline)),
                skip: H2_MAGIC_LEN,
                header: [0; H2_FRAME_HEADER_LEN],
                have: 0,
            },
            metrics,
        }
    }
}

impl Watch {
    /// Follows `data`; switches to `Seen` at the first HEADERS frame.
    fn feed(&mut self, mut data: &[u8]) {
        while let Self::Waiting {
            skip, header, have, ..
        } = self
        {
            if data.is_empty() {
                return;
            }
            if *skip > 0 {
                let n = (*skip).min(data.len());
                *skip -= n;
                data = &data[n..];
                continue;
            }
            let n = (H2_FRAME_HEADER_LEN - *have).min(data.len());
            header[*have..*have + n].copy_from_slice(&data[..n]);
            *have += n;
            data = &data[n..];
            if *have == H2_FRAME_HEADER_LEN {
                if header[3] == H2_HEADERS {
                    *self = Self::Seen;
                    return;
                }
                *skip = usize::from(header[0]) << 16
                    | usize::from(header[1]) << 8
                    | usize::from(header[2]);
                *have = 0;
            }
        }
    }
}

fn first_request_timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "no HTTP/2 request within the handshake timeout",
    )
}

impl<T: AsyncRead + Unpin> AsyncRead for FirstRequest<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if matches!(this.state, Watch::TimedOut) {
            return Poll::Ready(Err(first_request_timed_out()));
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            this.state.feed(&buf.filled()[before..]);
        } else if res.is_pending()
            && let Watch::Waiting { sleep, .. } = &mut this.state
            && sleep.as_mut().poll(cx).is_ready()
        {
            this.state = Watch::TimedOut;
            this.metrics
                .record_connection_closed(close_reason::FIRST_REQUEST_TIMEOUT);
            return Poll::Ready(Err(first_request_timed_out()));
        }
        res
    }
}

forward_async_write!(FirstRequest);

/// Accepts TCP connections while fewer than `max_connections` are open (beyond, they wait
/// in the listen backlog), refuses connections beyond `max_connections_per_address`,
/// completes the TLS handshake on its own task, and hands connections to tonic; the TLS
/// handshake and the first HTTP/2 request must arrive within `handshake_timeout` of the
/// accept.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    tls: Option<ServerTls>,
    limits: Limits,
    metrics: Metrics,
    tx: mpsc::Sender<Conn>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = Arc::new(AddressCounts::default());
    let acceptor = tls.as_ref().map(ServerTls::acceptor);
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if tx.is_closed() {
            return;
        }
        let deadline = Instant::now() + limits.handshake_timeout;
        let Some(address_slot) = AddressSlot::take(
            &per_address,
            source_key(addr.ip()),
            limits.max_connections_per_address,
        ) else {
            tracing::debug!(%addr, "connection refused: per-address connection cap reached");
            metrics.record_connection_closed(close_reason::ADDRESS_CAP);
            // Reset rather than FIN: no TIME_WAIT state kept for a refused connection.
            let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new().with_time(limits.tcp_keepalive);
        let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive);
        let io = IdleTimeout::new(tcp, limits.idle_timeout, metrics.clone());
        let tx = tx.clone();
        let acceptor = acceptor.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let info = |client_cert| PeerInfo {
                remote_addr: Some(addr),
                client_cert,
                conn: Some(Arc::default()),
            };
            let conn = match acceptor {
                None => Conn {
                    io: Box::new(FirstRequest::new(io, deadline, metrics)),
                    info: info(None),
                    _permit: Some(permit),
                    _address_slot: Some(address_slot),
                },
                Some(acceptor) => {
                    match tokio::time::timeout_at(deadline, acceptor.accept(io)).await {
                        Ok(Ok(stream)) => {
                            let client_cert = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .map(|c| c.clone().into_owned());
                            Conn {
                                io: Box::new(FirstRequest::new(stream, deadline, metrics)),
                                info: info(client_cert),
                                _permit: Some(permit),
                                _address_slot: Some(address_slot),
                            }
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%addr, error = %e, "TLS handshake failed");
                            metrics.record_connection_closed(close_reason::TLS_HANDSHAKE_FAILED);
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%addr, "TLS handshake timed out");
                            metrics.record_connection_closed(close_reason::TLS_HANDSHAKE_TIMEOUT);
                            return;
                        }
                    }
                }
            };
            let _ = tx.send(conn).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            0,
            0,
            0,
            0,
            1,
        ];
        f.extend_from_slice(payload);
        f
    }

    fn waiting() -> Watch {
        Watch::Waiting {
            sleep: Box::pin(tokio::time::sleep(Duration::from_secs(60))),
            skip: H2_MAGIC_LEN,
            header: [0; H2_FRAME_HEADER_LEN],
            have: 0,
        }
    }

    #[tokio::test]
    async fn watch_finds_the_first_headers_frame_in_any_split() {
        let mut stream = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        stream.extend(frame(0x4, &[0, 3, 0, 0, 0, 100]));
        stream.extend(frame(0x8, &[0, 0, 1, 0]));
        // A PING whose payload looks like a HEADERS frame header must not count.
        stream.extend(frame(0x6, &[0, 0, 0, 1, 0, 0, 0, 0]));
        let before_headers = stream.len();
        stream.extend(frame(H2_HEADERS, &[0x82; 20]));
        for chunk in [1, 2, 5, 9, 13, stream.len()] {
            let mut w = waiting();
            for (i, part) in stream.chunks(chunk).enumerate() {
                w.feed(part);
                let end = (i + 1) * chunk;
                if end <= before_headers + 3 {
                    assert!(matches!(w, Watch::Waiting { .. }), "chunk {chunk}, {end}");
                }
            }
            assert!(matches!(w, Watch::Seen), "chunk size {chunk}");
        }
        // The preface alone, or with SETTINGS, is not a request.
        let mut w = waiting();
        w.feed(&stream[..before_headers]);
        assert!(matches!(w, Watch::Waiting { .. }));
    }
}
