//! Connections: the accept loop with its connection cap and TLS handshake timeout, the idle
//! read timeout, and the per-connection [`PeerInfo`].

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
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
use crate::tls::ServerTls;

/// What the server knows about the connection a request came on; available to layers as a
/// request extension (`req.extensions().get::<PeerInfo>()`).
#[derive(Clone, Debug, Default)]
pub struct PeerInfo {
    pub(crate) remote_addr: Option<SocketAddr>,
    pub(crate) client_cert: Option<CertificateDer<'static>>,
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
}

impl Conn {
    pub(crate) fn in_process(io: tokio::io::DuplexStream) -> Self {
        Self {
            io: Box::new(io),
            info: PeerInfo::default(),
            _permit: None,
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
    /// Last time a byte arrived. The timer is only re-armed when it fires (not on every
    /// read), so reads cost no timer-wheel work.
    last_read: Instant,
    sleep: Pin<Box<Sleep>>,
}

impl<T> IdleTimeout<T> {
    fn new(inner: T, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
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

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
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

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

use std::future::Future as _;

/// Accepts TCP connections while fewer than `max_connections` are open, completes the TLS
/// handshake (bounded by `tls_handshake_timeout`) on its own task, and hands finished
/// connections to tonic.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    tls: Option<ServerTls>,
    limits: Limits,
    tx: mpsc::Sender<Conn>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
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
        let _ = tcp.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new().with_time(limits.tcp_keepalive);
        let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive);
        let io = IdleTimeout::new(tcp, limits.idle_timeout);
        let tx = tx.clone();
        let acceptor = acceptor.clone();
        let handshake_timeout = limits.tls_handshake_timeout;
        tokio::spawn(async move {
            let conn = match acceptor {
                None => Conn {
                    io: Box::new(io),
                    info: PeerInfo {
                        remote_addr: Some(addr),
                        client_cert: None,
                    },
                    _permit: Some(permit),
                },
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(io)).await {
                        Ok(Ok(stream)) => {
                            let client_cert = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .map(|c| c.clone().into_owned());
                            Conn {
                                io: Box::new(stream),
                                info: PeerInfo {
                                    remote_addr: Some(addr),
                                    client_cert,
                                },
                                _permit: Some(permit),
                            }
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%addr, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%addr, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            let _ = tx.send(conn).await;
        });
    }
}
