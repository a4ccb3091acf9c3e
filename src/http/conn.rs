//! One connection: opened (TCP, TLS where the scheme is https, HTTP/1.1 with `http1` or HTTP/2
//! with `http2` on top), and looked at before it is reused.

use super::activity::{Activity, Tracked};
use super::clock::{nanos, now};
use super::http1::Http1Conn;
use super::http2::{self, Counted, EndpointHttp, Http2Conn, KeepAlive};
use super::info::{ConnectionInfo, TlsInfo};
use super::socket::Socket;
use super::{HttpError, Timeouts};
use crate::pool::{Connection, Endpoint, Scheme};
use rustls::ClientConfig;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::task::AbortHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// How requests go out on a connection: the HTTP version the server agreed to.
pub enum Sender {
    /// Read and written by whoever holds the connection; nobody reads an idle one (its socket
    /// is looked at before it is reused: see `is_open`).
    Http1(Http1Conn),
    Http2(Http2Conn),
}

/// A pooled connection. Dropping it closes the socket at once.
pub struct HttpConn {
    pub sender: Sender,
    /// Its addresses and TLS session, as httpx's `trace` extension reports a new connection.
    pub info: Arc<ConnectionInfo>,
    pub activity: Arc<Activity>,
    /// HTTP/2's connection task, which reads and writes its socket for every stream.
    task: Option<AbortHandle>,
    /// HTTP/2 only: a second descriptor of the socket its task reads, so that a drop shuts it
    /// down at that moment, not whenever the runtime gets to the aborted task: the pool counts a
    /// connection until this is done, and a server never sees more than the limits. Also what
    /// the pool looks at before reusing the connection. An HTTP/1.1 connection holds its socket
    /// itself, closed when it is dropped: one descriptor, as httpx's.
    http2_socket: Option<std::net::TcpStream>,
    /// Which process made it: a forked child must not shut down its parent's sockets.
    fork_generation: usize,
    tls: bool,
    pub addressing: Addressing,
    /// Not to be reused from this moment on (monotonic nanoseconds; 0: no such moment): the
    /// server said when it closes idle connections (`Keep-Alive: timeout=N`).
    reuse_until: AtomicU64,
    /// Counted among its endpoint's open connections of its HTTP version while it lives.
    _counted: Counted,
}

impl HttpConn {
    /// What the last response said of the server's idle timeout (`Keep-Alive: timeout=N`):
    /// the connection is not reused from a little before then, so a request never races the
    /// server's close. `None`: the server gave no hint.
    pub fn set_server_idle_timeout(&self, idle: Option<Duration>) {
        let until = idle.map_or(0, |idle| {
            let margin = (idle / 2).min(Duration::from_secs(1));
            now().saturating_add(nanos(idle - margin)).max(1)
        });
        self.reuse_until.store(until, Relaxed);
    }

    fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        match (&self.sender, &self.http2_socket) {
            (Sender::Http1(conn), _) => conn.fd(),
            (Sender::Http2(_), socket) => socket.as_ref().map(|s| s.as_fd()),
        }
    }

    fn socket_is_idle_and_open(&self, unasked_bytes_allowed: bool) -> bool {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let Some(fd) = self.fd() else { return false };
        let mut fds = [PollFd::from_borrowed_fd(fd, PollFlags::IN | PollFlags::RDHUP)];
        if poll(&mut fds, Some(&Timespec { tv_sec: 0, tv_nsec: 0 })).is_err() {
            return false;
        }
        let seen = fds[0].revents();
        if seen.intersects(PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL) {
            // The peer closed it (its FIN is here, even behind a TLS close_notify), or it broke.
            return false;
        }
        // Bytes nobody asked for on an idle HTTP/1.1 connection: it cannot carry a request.
        // Over TLS they may be records for rustls (session tickets), read with the next response.
        !seen.contains(PollFlags::IN) || unasked_bytes_allowed
    }
}

impl Connection for HttpConn {
    type PerEndpoint = Arc<EndpointHttp>;

    /// Nobody reads an idle HTTP/1.1 connection (it is read only for a request), so the
    /// socket is looked at, as httpcore does before reusing a connection: a peer's close (its
    /// FIN), an error, or bytes nobody asked for make it unusable, and a request written on it
    /// would be lost.
    ///
    /// Over HTTP/2 the server may send frames at any time (PING, SETTINGS), read by the
    /// connection's task: only a close or GOAWAY makes it unusable.
    fn is_open(&self) -> bool {
        self.is_open_when_returned() && self.socket_is_idle_and_open(self.tls || matches!(self.sender, Sender::Http2(_)))
    }

    /// Without the look at the socket (a system call): the response just ended cleanly, and
    /// the socket is looked at before the connection is reused.
    fn is_open_when_returned(&self) -> bool {
        match &self.sender {
            Sender::Http1(conn) => {
                let until = self.reuse_until.load(Relaxed);
                conn.is_reusable() && (until == 0 || now() < until)
            }
            Sender::Http2(conn) => conn.is_open(),
        }
    }
}

impl Drop for HttpConn {
    fn drop(&mut self) {
        if let Sender::Http2(conn) = &self.sender {
            conn.end();
        }
        if let Some(socket) = self.http2_socket.as_ref().filter(|_| self.fork_generation == super::runtime::fork_generation()) {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The bytes' way: TCP, or TLS over a stream (over TCP, or over TLS to an https proxy whose
/// tunnel carries the origin's TLS).
pub(super) enum Io {
    Plain(Socket),
    Tls(Box<TlsStream<Io>>),
}

impl Io {
    /// The TCP socket's descriptor, under any TLS; none once the socket is lost.
    pub(super) fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        match self {
            Io::Plain(socket) => socket.fd(),
            Io::Tls(tls) => tls.get_ref().0.fd(),
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Io::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Io::Tls($s) => {
                let $s = Pin::new($s.as_mut());
                $e
            }
        }
    };
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match delegate!(self, s => s.poll_read(cx, buf)) {
            // A TLS peer that closes without close_notify: the end of the stream, as httpx (and
            // Python's ssl module by default) takes it. A body cut short this way is still
            // caught, by its Content-Length or chunked framing.
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Poll::Ready(Ok(())),
            other => other,
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, data))
    }
    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write_vectored(cx, bufs))
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }
}

/// How a client's connections are made: TLS configuration (its ALPN offers the HTTP versions
/// allowed), HTTP/2 with prior knowledge over cleartext, and HTTP/2's keep-alive.
pub struct Dialer {
    pub tls: Arc<ClientConfig>,
    /// The same TLS settings for an https proxy itself, which is spoken to in HTTP/1.1.
    pub proxy_tls: Arc<ClientConfig>,
    /// Speak HTTP/2 on cleartext connections without asking (httpx's `http1=False`).
    pub prior_knowledge: bool,
    /// The local address sockets are bound to, if any.
    pub local_address: Option<std::net::IpAddr>,
    pub keep_alive: KeepAlive,
}

/// Opens a connection: DNS (cached), TCP (addresses tried as dns.rs says), TLS for https, the HTTP handshake
/// (HTTP/2 when TLS's ALPN agreed on it or with prior knowledge, else HTTP/1.1).
/// The whole is bounded by the connect timeout.
pub async fn connect(endpoint: &Endpoint, dialer: &Dialer, endpoint_http: &Arc<EndpointHttp>, timeouts: &Timeouts) -> Result<HttpConn, HttpError> {
    let started = std::time::Instant::now();
    let work = open(endpoint, dialer, endpoint_http);
    let conn = match timeouts.connect {
        Some(limit) => tokio::time::timeout(limit, work).await.map_err(|_| HttpError::ConnectTimeout)?,
        None => work.await,
    }?;
    endpoint_http.opened.time.observe(started.elapsed());
    Ok(conn)
}

/// TLS over `stream` to `server_name` (the origin, or an https proxy).
async fn tls_handshake(stream: Io, server_name: &str, config: &Arc<ClientConfig>) -> Result<Box<TlsStream<Io>>, HttpError> {
    let tls = TlsConnector::from(config.clone())
        .connect(super::tls::server_name(server_name)?, stream)
        .await
        .map_err(|e| HttpError::Connect(format!("TLS handshake failed: {e}")))?;
    Ok(Box::new(tls))
}

/// How a request names its target on a connection: origin form (`GET /path`), or absolute form
/// to a forward proxy (`GET http://host:port/path`, with the proxy's credentials).
#[derive(Clone)]
pub enum Addressing {
    Origin,
    Absolute { authorization: Option<http::HeaderValue> },
}

async fn open(endpoint: &Endpoint, dialer: &Dialer, endpoint_http: &Arc<EndpointHttp>) -> Result<HttpConn, HttpError> {
    let host = endpoint.host_bare();
    let proxy = match endpoint.via() {
        Some(via) => Some(super::proxy::get(via).ok_or_else(|| HttpError::Config("unknown proxy".into()))?),
        None => None,
    };
    let (dial_host, dial_port) = match &proxy {
        Some(proxy) => (proxy.host.as_str(), proxy.port),
        None => (host, endpoint.port()),
    };
    let answers = super::dns::resolve(dial_host, dial_port).await?;
    let tcp = super::dial::connect(&answers, dialer.local_address).await?;
    let addresses = (tcp.peer_addr(), tcp.local_addr());
    tcp.set_nodelay(true).map_err(|e| HttpError::Connect(e.to_string()))?;
    let mut stream = Io::Plain(Socket::from(tcp));
    if let Some(proxy) = proxy.as_ref().filter(|p| p.scheme == Scheme::Https) {
        stream = Io::Tls(Box::pin(tls_handshake(stream, &proxy.host, &dialer.proxy_tls)).await?);
    }
    let mut tls_info = None;
    let (stream, http2, addressing) = match (endpoint.scheme(), &proxy) {
        (Scheme::Http, None) => (stream, dialer.prior_knowledge, Addressing::Origin),
        // Requests in absolute form to the proxy, over HTTP/1.1 (what forward proxies speak).
        (Scheme::Http, Some(proxy)) => (stream, false, Addressing::Absolute { authorization: proxy.authorization.clone() }),
        (Scheme::Https, _) => {
            if let Some(proxy) = &proxy {
                Box::pin(super::proxy::tunnel(&mut stream, host, endpoint.port(), proxy)).await?;
            }
            let tls = Box::pin(tls_handshake(stream, host, &dialer.tls)).await?;
            let session = tls.get_ref().1;
            endpoint_http.opened.tls_handshake(session.handshake_kind() == Some(rustls::HandshakeKind::Resumed));
            let http2 = session.alpn_protocol() == Some(b"h2");
            tls_info = Some(TlsInfo::of(session));
            (Io::Tls(tls), http2, Addressing::Origin)
        }
    };
    let activity = Arc::new(Activity::default());
    activity.touch();
    let io = Tracked::new(stream, activity.clone());
    let (sender, task, http2_socket, version) = if http2 {
        let socket = io.get_ref().fd().map(|fd| fd.try_clone_to_owned()).transpose();
        let socket = socket.map_err(|e| HttpError::Connect(e.to_string()))?.map(std::net::TcpStream::from);
        let (conn, task) = Box::pin(http2::handshake(io, dialer.keep_alive, endpoint_http.clone())).await?;
        (Sender::Http2(conn), Some(task), socket, http::Version::HTTP_2)
    } else {
        (Sender::Http1(Http1Conn::new(io)), None, None, http::Version::HTTP_11)
    };
    let info = match addresses {
        (Ok(peer), Ok(local)) => ConnectionInfo { peer, local, tls: tls_info },
        (Err(e), _) | (_, Err(e)) => return Err(HttpError::Connect(super::python_os_message(&e))),
    };
    Ok(HttpConn {
        sender,
        info: Arc::new(info),
        activity,
        task,
        http2_socket,
        fork_generation: super::runtime::fork_generation(),
        tls: endpoint.scheme() == Scheme::Https || proxy.is_some_and(|p| p.scheme == Scheme::Https),
        addressing,
        reuse_until: AtomicU64::new(0),
        _counted: endpoint_http.count(version),
    })
}
