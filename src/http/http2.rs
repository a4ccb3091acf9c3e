//! HTTP/2: many requests (streams) share one connection.
//!
//! The pool counts an HTTP/2 connection once, like any other. While streams are in flight on
//! it, the connection is out of the pool under one lease, held here in its endpoint's
//! [`EndpointHttp`], and further requests take streams on it up to the server's
//! `SETTINGS_MAX_CONCURRENT_STREAMS`; only when every connection is full does a request ask the
//! pool for another (within the pool's limits). When its last stream ends the connection goes
//! back to the pool as idle, where expiry and health checks apply to it as to any other.
//!
//! The h2 crate is used directly rather than through hyper because a pool must know how many
//! streams a connection takes (`current_max_send_streams`), which hyper does not tell.

use super::conn::{Activity, ConnectionInfo, HttpConn, Sender};
use super::error::{peer_closed, HttpError, Phase, Received};
use super::{Failure, RequestParts, Sent};
use crate::pool::{HistogramSnapshot, Lease};
use bytes::Bytes;
use h2::client::SendRequest;
use h2::{Reason, RecvStream};
use http::header::{HeaderName, HOST};
use http::{HeaderMap, Request, Version};
use parking_lot::Mutex;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;

/// A stream's receive window: how much of one response may be in flight unread. Large enough
/// that a long streaming response is never throttled by window updates on a real link.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
/// The connection's receive window: several streams' worth, so that one slow reader does not
/// hold back the other streams of its connection.
const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
/// How many streams a connection being opened is expected to take, until its server says
/// (h2's default, and the minimum RFC 9113 recommends servers allow).
const EXPECTED_STREAMS: usize = 100;

/// How a connection checks that its peer is alive: a PING every `interval` (none: never),
/// answered within `timeout`, else the connection is closed and its streams fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlive {
    pub interval: Option<Duration>,
    pub timeout: Duration,
}

impl Default for KeepAlive {
    fn default() -> Self {
        KeepAlive { interval: Some(Duration::from_secs(30)), timeout: Duration::from_secs(20) }
    }
}

/// The HTTP/2 side of a pooled connection (cloned: another handle to the same connection).
#[derive(Clone)]
pub struct Http2Conn {
    send: SendRequest<Bytes>,
    state: Arc<ConnState>,
}

#[derive(Default)]
pub(super) struct ConnState {
    /// The connection ended (its task finished, a PING went unanswered, the server sent
    /// GOAWAY): it takes no new stream.
    closed: AtomicBool,
    /// The server's SETTINGS arrived (before it answered our first PING): until then the
    /// stream limit is not known, and the connection carries only the request that opened it.
    settled: AtomicBool,
    /// Asks the keep-alive task for a PING now, answered within `check_within` (nanoseconds):
    /// a stream's read timed out, and the peer may be dead rather than slow.
    check: Notify,
    check_within: std::sync::atomic::AtomicU64,
    /// A check asked for by `suspect` is under way: until the PING is answered the connection
    /// takes no new stream and, once it has none, stays out of the pool (a request sent on it
    /// now would wait on a peer that may be dead, where httpx would open a new connection).
    suspected: AtomicBool,
}

impl ConnState {
    /// A stream got nothing for `waited`: if the connection is dead, nobody else should wait
    /// on it. A PING answered within that long says it is alive (a slow stream, not a dead
    /// peer), and the connection carries on.
    fn suspect(&self, waited: Duration) {
        self.check_within.store(super::clock::nanos(waited), Relaxed);
        self.suspected.store(true, Relaxed);
        self.check.notify_one();
    }

    /// Whether the connection, with no stream left, goes back to the pool now: not while a
    /// check of its peer is under way (unless it already closed: the pool drops it then).
    fn may_idle(&self) -> bool {
        !self.suspected.load(Relaxed) || self.closed.load(Relaxed)
    }
}

impl Http2Conn {
    /// True while the connection can take a new stream.
    pub fn is_open(&self) -> bool {
        if self.state.closed.load(Relaxed) {
            return false;
        }
        // A fresh handle has no stream of its own pending: this only asks whether the
        // connection ended or received GOAWAY.
        let mut send = self.send.clone();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        !matches!(send.poll_ready(&mut cx), Poll::Ready(Err(_)))
    }

    fn room(&self, in_use: usize) -> bool {
        self.state.settled.load(Relaxed)
            && !self.state.suspected.load(Relaxed)
            && in_use < self.send.current_max_send_streams()
            && self.is_open()
    }

    fn close(&self) {
        self.state.closed.store(true, Relaxed);
    }

    /// The connection is being dropped (its task aborted): the keep-alive task ends too.
    pub(super) fn end(&self) {
        self.close();
        self.state.check.notify_one();
    }
}

/// Performs the HTTP/2 handshake on an open socket and starts the tasks that drive the
/// connection and check on its peer. Returns the connection and its driver task.
pub(super) async fn handshake<T>(
    io: T,
    keep_alive: KeepAlive,
    streams: Arc<EndpointHttp>,
) -> Result<(Http2Conn, tokio::task::AbortHandle), HttpError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, mut connection) = h2::client::Builder::new()
        .enable_push(false)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(super::head::MAX_HEAD_SIZE as u32)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| HttpError::Connect(format!("HTTP/2 handshake failed: {e}")))?;
    let mut ping_pong = connection.ping_pong().expect("taken once, here");
    let state = Arc::new(ConnState::default());
    let driver = {
        let (state, streams) = (state.clone(), streams.clone());
        tokio::spawn(async move {
            // Errors reach the streams through h2; the connection just ends.
            let _ = connection.await;
            state.closed.store(true, Relaxed);
            state.check.notify_one(); // ends the keep-alive task
            streams.changed.notify_waiters();
        })
    };
    let driver_abort = driver.abort_handle();
    {
        let (state, send) = (state.clone(), send.clone());
        let driver = driver.abort_handle();
        tokio::spawn(async move {
            // The server's SETTINGS frame comes first on its side of the connection, so once
            // our PING is answered its stream limit is known.
            let answered = tokio::time::timeout(keep_alive.timeout, ping_pong.ping(h2::Ping::opaque())).await;
            drop(send);
            if !matches!(answered, Ok(Ok(_))) {
                state.closed.store(true, Relaxed);
                driver.abort();
                streams.release_idle();
                return;
            }
            state.settled.store(true, Relaxed);
            streams.changed.notify_waiters();
            loop {
                let within = tokio::select! {
                    _ = sleep_or_never(keep_alive.interval) => keep_alive.timeout,
                    _ = state.check.notified() => Duration::from_nanos(state.check_within.load(Relaxed)).min(keep_alive.timeout),
                };
                if state.closed.load(Relaxed) {
                    streams.release_idle();
                    return;
                }
                let answered = tokio::time::timeout(within, ping_pong.ping(h2::Ping::opaque())).await;
                if !matches!(answered, Ok(Ok(_))) {
                    // A dead peer: close the connection, so its streams fail now rather than
                    // wait without end, and nobody takes a stream on it.
                    state.closed.store(true, Relaxed);
                    driver.abort();
                    streams.release_idle();
                    return;
                }
                // Alive: a slow stream, not a dead peer.
                if state.suspected.swap(false, Relaxed) {
                    streams.release_idle();
                }
            }
        });
    }
    Ok((Http2Conn { send, state }, driver_abort))
}

async fn sleep_or_never(interval: Option<Duration>) {
    match interval {
        Some(interval) => tokio::time::sleep(interval).await,
        None => std::future::pending().await,
    }
}

/// The HTTP/2 connections of one endpoint that carry streams now, and the endpoint's open
/// connections counted by protocol. One per endpoint of a pool (the pool keeps it beside the
/// endpoint's slots).
#[derive(Default)]
pub struct EndpointHttp {
    /// Lock order: taken inside the pool's locks (stats read it under the endpoint map), so no
    /// pool lock is ever taken under it: leases that end here are dropped after it is released.
    lent: Mutex<Lent>,
    /// Signalled whenever a stream may have become available: a stream ended, a connection's
    /// settings arrived, a connection opened, failed or closed.
    changed: Notify,
    http1_connections: AtomicUsize,
    http2_connections: AtomicUsize,
    pub(super) opened: super::conn::Opened,
}

#[derive(Default)]
struct Lent {
    conns: Vec<Carrier>,
    next_key: u64,
    /// Connections being opened by clients that offer HTTP/2, protocol not yet known.
    opening: usize,
    /// Requests waiting for one of those (or for an unsettled connection) to have room.
    waiting: usize,
    /// The endpoint answered the last opened connection with HTTP/1.1: nobody waits for a
    /// connection being opened to carry their request too.
    speaks_http1: bool,
}

/// A connection out of the pool, carrying streams.
struct Carrier {
    key: u64,
    in_use: usize,
    conn: Http2Conn,
    lease: Lease<HttpConn>,
}

/// What the engine knows of an endpoint: open connections by protocol, HTTP/2 streams in
/// flight, and what opening its connections cost.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EndpointHttpStats {
    pub http1_connections: usize,
    pub http2_connections: usize,
    pub streams_in_use: usize,
    pub tls_handshakes_full: u64,
    pub tls_handshakes_resumed: u64,
    pub connect_time: HistogramSnapshot,
}

/// What an HTTP/2-capable request does next at an endpoint.
pub(super) enum Next {
    /// A stream on a connection with room.
    Stream(Stream),
    /// Wait: a connection being opened will likely have room (see [`Waiting`]).
    Wait(Waiting),
    /// Ask the pool for a connection.
    Pool,
}

impl EndpointHttp {
    pub fn stats(&self) -> EndpointHttpStats {
        let streams_in_use = self.lent.lock().conns.iter().map(|c| c.in_use).sum();
        let (tls_handshakes_full, tls_handshakes_resumed) = self.opened.tls_handshakes();
        EndpointHttpStats {
            http1_connections: self.http1_connections.load(Relaxed),
            http2_connections: self.http2_connections.load(Relaxed),
            streams_in_use,
            tls_handshakes_full,
            tls_handshakes_resumed,
            connect_time: self.opened.time.snapshot(),
        }
    }

    /// Counts an open connection of `version` until the returned token is dropped.
    pub(super) fn count(self: &Arc<Self>, version: Version) -> Counted {
        self.counter(version).fetch_add(1, Relaxed);
        Counted { streams: self.clone(), version }
    }

    fn counter(&self, version: Version) -> &AtomicUsize {
        match version {
            Version::HTTP_2 => &self.http2_connections,
            _ => &self.http1_connections,
        }
    }

    /// A future that completes at the next change (create it before looking, so that no
    /// change between the look and the wait is missed).
    pub(super) fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// A stream on the first connection with room; else wait if connections being opened (or
    /// whose limit is not known yet) will likely take this request too; else the pool.
    pub(super) fn next(self: &Arc<Self>) -> Next {
        let mut lent = self.lent.lock();
        if let Some(carrier) = lent.conns.iter_mut().find(|c| c.conn.room(c.in_use)) {
            carrier.in_use += 1;
            let (key, conn) = (carrier.key, carrier.conn.clone());
            return Next::Stream(Stream { streams: self.clone(), key, conn, opened: None });
        }
        let unsettled = lent.conns.iter().filter(|c| !c.conn.state.settled.load(Relaxed) && c.conn.is_open()).count();
        let expected = (lent.opening + unsettled) * (EXPECTED_STREAMS - 1);
        if !lent.speaks_http1 && lent.waiting < expected {
            lent.waiting += 1;
            return Next::Wait(Waiting(self.clone()));
        }
        Next::Pool
    }

    /// Takes a leased HTTP/2 connection out of the pool to carry streams; the first is the
    /// caller's. Any other lease (HTTP/1.1, or not connected yet) comes back as it is.
    pub(super) fn carry(self: &Arc<Self>, lease: Lease<HttpConn>, new_connection: bool) -> Carried {
        let (conn, info) = match lease.conn() {
            Some(HttpConn { sender: Sender::Http2(conn), info, .. }) => (conn.clone(), info.clone()),
            _ => return Carried::Not(lease),
        };
        let key = {
            let mut lent = self.lent.lock();
            let key = lent.next_key;
            lent.next_key += 1;
            lent.speaks_http1 = false;
            lent.conns.push(Carrier { key, in_use: 1, conn: conn.clone(), lease });
            key
        };
        self.changed.notify_waiters();
        Carried::Stream(Stream { streams: self.clone(), key, conn, opened: new_connection.then_some(info) })
    }

    /// A connection is being opened by a client that offers HTTP/2: others may wait for it.
    pub(super) fn opening(self: &Arc<Self>) -> Opening {
        self.lent.lock().opening += 1;
        Opening(self.clone())
    }

    /// The endpoint answered with HTTP/1.1: requests stop waiting for HTTP/2 connections.
    pub(super) fn speaks_http1(&self) {
        self.lent.lock().speaks_http1 = true;
        self.changed.notify_waiters();
    }

    /// A stream ended. The connection's last stream gives it back to the pool (idle, or closed
    /// there if it ended).
    fn end_stream(&self, key: u64) {
        let lease = {
            let mut lent = self.lent.lock();
            let Some(i) = lent.conns.iter().position(|c| c.key == key) else { return };
            let carrier = &mut lent.conns[i];
            carrier.in_use -= 1;
            (carrier.in_use == 0 && carrier.conn.state.may_idle()).then(|| lent.conns.swap_remove(i).lease)
        };
        drop(lease);
        self.changed.notify_waiters();
    }

    /// Gives back to the pool the connections kept out of it with no stream while their peer
    /// was checked (see [`ConnState::suspected`]), now that the check is over.
    fn release_idle(&self) {
        let leases: Vec<_> = {
            let mut lent = self.lent.lock();
            let (idle, busy) = std::mem::take(&mut lent.conns).into_iter().partition(|c| c.in_use == 0 && c.conn.state.may_idle());
            lent.conns = busy;
            idle.into_iter().map(|c: Carrier| c.lease).collect()
        };
        drop(leases);
        self.changed.notify_waiters();
    }

    fn close_connection(&self, key: u64) {
        if let Some(carrier) = self.lent.lock().conns.iter().find(|c| c.key == key) {
            carrier.conn.close();
        }
    }
}

/// What [`EndpointHttp::carry`] made of a lease.
pub(super) enum Carried {
    /// An HTTP/2 connection, now carrying the caller's stream.
    Stream(Stream),
    /// Not an HTTP/2 connection (HTTP/1.1, or not connected yet): the lease as it was.
    Not(Lease<HttpConn>),
}

/// An open connection counted under its protocol, until dropped.
pub(super) struct Counted {
    streams: Arc<EndpointHttp>,
    version: Version,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.streams.counter(self.version).fetch_sub(1, Relaxed);
    }
}

/// A connection being opened; dropping it (opened or failed) lets waiting requests look again.
pub(super) struct Opening(Arc<EndpointHttp>);

impl Drop for Opening {
    fn drop(&mut self) {
        self.0.lent.lock().opening -= 1;
        self.0.changed.notify_waiters();
    }
}

/// A request waiting for room on a connection being opened.
pub(super) struct Waiting(Arc<EndpointHttp>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.lent.lock().waiting -= 1;
    }
}

/// One stream of a connection, held while its request and response are in flight.
pub struct Stream {
    streams: Arc<EndpointHttp>,
    key: u64,
    conn: Http2Conn,
    /// The connection, when this stream's request opened it.
    pub opened: Option<Arc<ConnectionInfo>>,
}

impl Stream {
    /// This stream's read timed out after `waited`: check the connection's peer is alive.
    pub(super) fn read_timed_out(&self, waited: Duration) {
        self.conn.state.suspect(waited);
    }

    /// Marks the connection as not taking new streams (it broke, or refused this one).
    fn close_connection(&self) {
        self.streams.close_connection(self.key);
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.streams.end_stream(self.key);
    }
}

/// A response head over HTTP/2, and its body to be read.
pub(super) struct Head {
    pub parts: http::response::Parts,
    pub body: RecvStream,
    pub activity: Arc<Activity>,
    pub stream_id: u32,
}

/// Sends a request on a stream and waits for the response head. The read timeout counts from
/// this stream's own progress (other streams keep the socket busy), as httpx measures it.
pub(super) async fn exchange(stream: &Stream, request: &RequestParts) -> Result<Head, Failure> {
    let local = |message: String| Failure { error: HttpError::LocalProtocol(message), sent: Sent::Final };
    let http_request = build(request).map_err(local)?;
    let send = stream.conn.send.clone();
    // h2 waits here when the server lowered its stream limit below the streams counted open: a
    // wait for a stream, bounded as every wait for a connection is, by the pool timeout.
    let ready = match request.timeouts.pool {
        Some(limit) => tokio::time::timeout(limit, send.ready()).await,
        None => Ok(send.ready().await),
    };
    let mut send = match ready {
        Err(_) => return Err(Failure { error: HttpError::PoolTimeout, sent: Sent::Final }),
        Ok(Ok(send)) => send,
        Ok(Err(e)) => {
            // The connection ended or was told to go away: nothing of this request was sent.
            stream.close_connection();
            return Err(Failure { error: classify(&e, Phase::Head), sent: Sent::Nothing });
        }
    };
    let activity = Arc::new(Activity::default());
    activity.touch();
    let (response, mut body) = match send.send_request(http_request, request.body.is_empty()) {
        Ok(sent) => sent,
        Err(e) if e.is_io() || e.is_go_away() || e.is_reset() => {
            stream.close_connection();
            return Err(Failure { error: classify(&e, Phase::Head), sent: Sent::Nothing });
        }
        Err(e) => return Err(local(format!("the request cannot be sent over HTTP/2: {e}"))),
    };
    let failed = |e: h2::Error| {
        let sent = if never_processed(&e) { Sent::Nothing } else { Sent::NoResponse };
        if e.is_io() || e.is_go_away() {
            stream.close_connection();
        }
        Failure { error: classify(&e, Phase::Head), sent }
    };
    let sending = async {
        let mut rest = request.body.clone();
        while !rest.is_empty() {
            body.reserve_capacity(rest.len());
            let granted = match poll_fn(|cx| body.poll_capacity(cx)).await {
                Some(Ok(n)) => n,
                Some(Err(e)) => return Err(e),
                None => return Ok(()), // the stream ended (the server answered early)
            };
            if granted == 0 {
                continue;
            }
            let chunk = rest.split_to(granted.min(rest.len()));
            body.send_data(chunk, rest.is_empty())?;
            activity.touch();
        }
        Ok(())
    };
    let sent = match request.timeouts.write {
        Some(limit) => tokio::time::timeout(limit, sending).await.map_err(|_| Failure { error: HttpError::WriteTimeout, sent: Sent::Final })?,
        None => sending.await,
    };
    sent.map_err(failed)?;
    let stream_id = u32::from(body.stream_id());
    // Kept until the response head is here: dropping it would reset the stream.
    let _body = body;
    let timeouts = super::Timeouts { read: request.timeouts.read, ..super::Timeouts::default() };
    match super::watch(&activity, &timeouts, response).await {
        Ok(Ok(response)) => {
            let (parts, body) = response.into_parts();
            activity.touch();
            Ok(Head { parts, body, activity, stream_id })
        }
        Ok(Err(e)) => Err(failed(e)),
        Err(timeout) => {
            if let Some(waited) = request.timeouts.read {
                stream.read_timed_out(waited);
            }
            Err(Failure { error: timeout, sent: Sent::Final })
        }
    }
}

/// The HTTP/2 request: the target's origin in the pseudo-headers (the Host field becomes
/// `:authority`), and the fields HTTP/2 forbids (connection-specific ones) left out, as
/// httpcore does.
fn build(request: &RequestParts) -> Result<Request<()>, String> {
    let mut authority = None;
    let mut headers = HeaderMap::with_capacity(request.headers.len());
    for (name, value) in &request.headers {
        if name == HOST {
            authority.get_or_insert(value.clone());
        } else if !is_connection_specific(name, value.as_bytes()) {
            headers.append(name.clone(), value.clone());
        }
    }
    let authority = match authority {
        Some(value) => value.to_str().map_err(|_| "the Host header is not a valid authority".to_string())?.to_owned(),
        None => format!("{}:{}", request.endpoint.host(), request.endpoint.port()),
    };
    let uri = http::Uri::builder()
        .scheme(request.endpoint.scheme().as_str())
        .authority(authority)
        .path_and_query(http::uri::PathAndQuery::from_maybe_shared(request.target.clone()).map_err(|_| "the request target is not a valid URL path".to_string())?)
        .build()
        .map_err(|_| "the request target is not a valid URL path".to_string())?;
    let mut http_request = Request::builder().method(request.method.clone()).uri(uri).version(Version::HTTP_2).body(()).map_err(|e| e.to_string())?;
    *http_request.headers_mut() = headers;
    Ok(http_request)
}

fn is_connection_specific(name: &HeaderName, value: &[u8]) -> bool {
    matches!(name.as_str(), "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade")
        || (name == "te" && !value.eq_ignore_ascii_case(b"trailers"))
}

/// True when the server says it did not process the stream: refused (REFUSED_STREAM), or
/// above the last stream a graceful GOAWAY says it processed. Such a request may be sent again.
fn never_processed(e: &h2::Error) -> bool {
    e.is_remote()
        && (e.reason() == Some(Reason::REFUSED_STREAM) || (e.is_go_away() && e.reason() == Some(Reason::NO_ERROR)))
}

/// Maps h2's errors to httpx's classes (httpcore raises RemoteProtocolError for resets and
/// GOAWAY, as for a server that disconnects).
pub(super) fn classify(e: &h2::Error, phase: Phase) -> HttpError {
    if let Some(io) = e.get_io() {
        use std::io::ErrorKind::*;
        return match io.kind() {
            UnexpectedEof | BrokenPipe | ConnectionReset | ConnectionAborted => HttpError::RemoteProtocol(peer_closed(phase)),
            _ => HttpError::Read(super::python_os_message(io)),
        };
    }
    if e.is_reset() || e.is_go_away() {
        let reason = e.reason().map_or_else(|| "unknown".to_string(), |r| format!("{r:?}"));
        return match (e.is_remote(), e.is_go_away()) {
            (true, false) => HttpError::RemoteProtocol(format!("the server reset the stream ({reason})")),
            (true, true) => HttpError::RemoteProtocol(format!("the server closed the connection (GOAWAY {reason})")),
            (false, _) => HttpError::RemoteProtocol(format!("the server broke the HTTP/2 protocol ({reason})")),
        };
    }
    HttpError::LocalProtocol(e.to_string())
}

/// Reads the next data of an HTTP/2 response body, giving its room back to the server's
/// window at once (the reader holds it from here).
pub(super) fn poll_data(body: &mut RecvStream, cx: &mut Context<'_>, received: &mut Received) -> Poll<Option<Result<Bytes, HttpError>>> {
    match body.poll_data(cx) {
        Poll::Ready(Some(Ok(data))) => {
            let _ = body.flow_control().release_capacity(data.len());
            received.bytes += data.len() as u64;
            Poll::Ready(Some(Ok(data)))
        }
        Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(classify(&e, Phase::Body(*received))))),
        Poll::Ready(None) => Poll::Ready(None),
        Poll::Pending => Poll::Pending,
    }
}
