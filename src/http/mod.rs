//! The HTTP engine: pooled HTTP/1.1 connections over tokio + hyper and HTTP/2 streams over h2
//! (rustls for TLS), response bodies streamed chunk by chunk, drain-on-close, timeouts. Knows
//! nothing of Python.

mod conn;
pub mod dns;
mod head;
pub mod http2;
pub mod inline;
pub mod proxy;
mod runtime;
mod socket;
pub mod tls;

pub use conn::{ConnectionInfo, HttpConn, TlsInfo};
pub use http2::{EndpointHttpStats, KeepAlive, Streams};
pub use runtime::{block_on, fork_generation, reset_after_fork, spawn};

use crate::pool::{CloseReason, Clock, Endpoint, EndpointRef, Lease, Pool, Scheme, SystemClock};
use bytes::Bytes;
use conn::{Activity, Dialer};
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Version};
use http_body_util::Full;
use hyper::body::Body as _;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// What can go wrong, named after httpx's exception classes (the bindings map them 1:1).
/// Messages never include headers, paths or query strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    PoolTimeout,
    ConnectTimeout,
    Connect(String),
    ReadTimeout,
    WriteTimeout,
    Read(String),
    Write(String),
    RemoteProtocol(String),
    LocalProtocol(String),
    /// A proxy refused to open a tunnel (httpx's `ProxyError`).
    Proxy(String),
    /// A setting that cannot be used (a CA file that does not parse, ...).
    Config(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // httpx's words where it has some (its sync transport's: the async one says nothing
            // for timeouts); httpx's pool timeout has no message, ours names what it waited for.
            HttpError::PoolTimeout => f.write_str("timed out waiting for a free connection in the pool"),
            HttpError::ConnectTimeout | HttpError::ReadTimeout | HttpError::WriteTimeout => f.write_str("timed out"),
            HttpError::Connect(m)
            | HttpError::Read(m)
            | HttpError::Write(m)
            | HttpError::RemoteProtocol(m)
            | HttpError::LocalProtocol(m)
            | HttpError::Proxy(m)
            | HttpError::Config(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for HttpError {}

/// httpx's four timeouts; `None` waits without limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Option<Duration>,
    pub read: Option<Duration>,
    pub write: Option<Duration>,
    pub pool: Option<Duration>,
}

/// Monotonic nanoseconds (coarse, cheap), for timeouts measured against socket activity.
pub(crate) fn now() -> u64 {
    SystemClock.now()
}

/// What to do with the rest of a body its reader closed early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainPolicy {
    /// Read at most this many more bytes...
    pub max_bytes: u64,
    /// ...for at most this long, then reuse the connection; past either bound, close it.
    pub max_time: Duration,
}

/// Counters of one client (one transport).
#[derive(Debug, Default)]
pub struct ClientStats {
    pub requests: AtomicU64,
    pub retried: AtomicU64,
    pub drained: AtomicU64,
    pub drain_abandoned: AtomicU64,
}

/// Sends requests over one pool with one set of TLS settings and HTTP versions.
pub struct Client {
    dialer: Dialer,
    versions: tls::Versions,
    tls_profile: u32,
    drain: DrainPolicy,
    pub stats: Arc<ClientStats>,
}

/// A request, as the bindings hand it over: already encoded, body in memory (so it can be sent
/// again on a fresh connection when that is safe).
pub struct RequestParts {
    pub method: Method,
    pub endpoint: Endpoint,
    /// Path and query, as they go on the request line.
    pub target: Bytes,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    pub timeouts: Timeouts,
}

impl RequestParts {
    /// May be sent again after it may have reached the server: an idempotent method (RFC 9110
    /// §9.2.2), or a request that carries an idempotency key (the server deduplicates it).
    fn is_replayable(&self) -> bool {
        self.method.is_idempotent()
            || self.headers.iter().any(|(name, _)| name == "idempotency-key" || name == "x-idempotency-key")
    }
}

/// The response head, and its body still to be read.
pub struct Response {
    pub status: u16,
    pub reason: Bytes,
    pub version: Version,
    /// Every field line as the server sent it: wire order, original name case.
    pub headers: Vec<(Bytes, Bytes)>,
    /// Body bytes read together with the head (in memory: handing them over never waits).
    pub body_bytes_read: usize,
    /// The body's length, when a `Content-Length` frames it (not a Transfer-Encoding).
    pub content_length: Option<u64>,
    /// The connection, when this request opened it (for the `trace` extension).
    pub opened: Option<Arc<ConnectionInfo>>,
    /// The HTTP/2 stream the response came on (for the `trace` extension).
    pub stream_id: Option<u32>,
    pub body: Body,
}

impl Client {
    pub fn new(tls: tls::ConnectSettings, drain: DrainPolicy, keep_alive: KeepAlive) -> Result<Client, HttpError> {
        let versions = tls.versions;
        if !versions.http1 && !versions.http2 {
            return Err(HttpError::Config("at least one of http1 and http2 must be enabled".into()));
        }
        let config = tls.client_config()?;
        // An https proxy is spoken to in HTTP/1.1, with the same trust (as httpx does).
        let mut proxy_tls = (*config).clone();
        proxy_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let dialer = Dialer {
            tls: config,
            proxy_tls: Arc::new(proxy_tls),
            prior_knowledge: versions.http2 && !versions.http1,
            local_address: tls.local_address,
            keep_alive,
        };
        Ok(Client { dialer, versions, tls_profile: tls.profile_id(), drain, stats: Arc::default() })
    }

    /// The pool key for an origin under this client's settings (cleartext connections that are
    /// not like everyone's get keys of their own: HTTP/2 with prior knowledge cannot carry
    /// HTTP/1.1, and a bound local address is a promise to the caller).
    pub fn endpoint(&self, origin: Endpoint, via: Option<crate::pool::Via>) -> Endpoint {
        let origin = match via {
            Some(via) => origin.with_proxy(via),
            None => origin,
        };
        let own_cleartext_keys = self.dialer.prior_knowledge || self.dialer.local_address.is_some();
        match origin.scheme() {
            Scheme::Https => origin.with_tls_profile(self.tls_profile),
            Scheme::Http if own_cleartext_keys => origin.with_tls_profile(self.tls_profile),
            Scheme::Http => origin,
        }
    }

    /// Whether requests to this endpoint may go over HTTP/2 (offered in TLS's ALPN, or spoken
    /// with prior knowledge): then they share connections as streams.
    fn offers_http2(&self, endpoint: &Endpoint) -> bool {
        let cleartext_http2 = self.dialer.prior_knowledge && endpoint.via().is_none();
        self.versions.http2 && (endpoint.scheme() == Scheme::Https || cleartext_http2)
    }

    /// Sends one request and returns once the response head has arrived.
    ///
    /// A request reaches the server at most once behind the caller's back: it is sent again
    /// (once, on another connection) only when a reused connection failed before any response
    /// byte arrived and either no byte of the request was written (hyper hands the request
    /// back) or the request is replayable. Otherwise the error reaches the caller, whose own
    /// retry policy decides (the openai SDK and LiteLLM have one).
    pub async fn send(&self, pool: &Pool<HttpConn>, request: RequestParts) -> Result<Response, HttpError> {
        self.stats.requests.fetch_add(1, Relaxed);
        let endpoint_ref = pool.endpoint_ref(&request.endpoint);
        let mut retried = false;
        loop {
            let (attempt, new_connection) = match self.connection(pool, &endpoint_ref, &request).await? {
                Conn::Http1(in_flight, new_connection) => (self.send_http1(in_flight, new_connection, &request).await, new_connection),
                Conn::Http2(stream) => {
                    let new_connection = stream.opened.is_some();
                    (self.send_http2(stream, &request).await, new_connection)
                }
            };
            match attempt {
                Ok(response) => return Ok(response),
                Err(Failure { error, sent }) => {
                    let may_resend = match sent {
                        Sent::Nothing => true,
                        // A new connection that fails is no stale connection: its error says
                        // something about the server.
                        Sent::NoResponse => !new_connection && request.is_replayable(),
                        Sent::Final => false,
                    };
                    if may_resend && !retried {
                        retried = true;
                        self.stats.retried.fetch_add(1, Relaxed);
                        continue;
                    }
                    return Err(error);
                }
            }
        }
    }

    /// Opens connections to `origin` ahead of need, so that the first requests find them ready
    /// (name lookup, TCP, TLS and the HTTP handshake done), up to `wanted` connections of the
    /// endpoint in all, within the pool's limits and without queueing behind requests (a full
    /// pool stops it). Over HTTP/2 one connection carries many streams: it stops at the first.
    /// Returns how many connections are open, and the first error met opening one.
    pub async fn prewarm(&self, pool: &Pool<HttpConn>, origin: Endpoint, wanted: usize, connect: Option<Duration>) -> (usize, Option<HttpError>) {
        let endpoint = self.endpoint(origin, None);
        let endpoint_ref = pool.endpoint_ref(&endpoint);
        let streams = endpoint_ref.per_endpoint();
        let timeouts = Timeouts { connect, ..Timeouts::default() };
        let mut leases = Vec::new();
        let mut first_error = None;
        // HTTP/2's first connection decides alone: a second is not needed if it speaks HTTP/2.
        let mut batch = if self.offers_http2(&endpoint) { 1 } else { wanted };
        while leases.len() < wanted {
            let mut opening = Vec::new();
            while leases.len() + opening.len() < wanted && opening.len() < batch {
                match pool.try_get(&endpoint_ref) {
                    Ok(lease) if lease.conn().is_some() => leases.push(lease),
                    Ok(lease) => opening.push(lease),
                    Err(_) => break,
                }
            }
            if opening.is_empty() {
                break;
            }
            let opened = join_all(opening.into_iter().map(|mut lease| {
                let (endpoint, timeouts) = (&endpoint, &timeouts);
                async move {
                    match conn::connect(endpoint, &self.dialer, streams, timeouts).await {
                        Ok(conn) => {
                            lease.set_conn(conn);
                            Ok(lease)
                        }
                        Err(e) => {
                            Lease::discard(lease, CloseReason::ConnectFailed);
                            Err(e)
                        }
                    }
                }
            }))
            .await;
            for outcome in opened {
                match outcome {
                    Ok(lease) => leases.push(lease),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            if first_error.is_some() {
                break;
            }
            let speaks_http2 = leases.iter().any(|l| l.conn().is_some_and(|c| matches!(c.sender, conn::Sender::Http2(_))));
            if speaks_http2 {
                break;
            }
            batch = wanted;
        }
        // Back to the pool, idle and ready (an HTTP/2 connection is carried from there by the
        // first request that takes it).
        (leases.len(), first_error)
    }

    /// Sends one request on a connection its caller holds by id (lent by
    /// [`Pool::lend_parked`]); the connection is opened first if it is not open. It is never
    /// sent again, on this connection or another: the caller chose this one. Ids name
    /// endpoints under the default TLS settings, so only a client with those (HTTP/1.1) can
    /// use them.
    pub async fn send_held(&self, lease: Lease<HttpConn>, request: RequestParts) -> Result<Response, HttpError> {
        self.stats.requests.fetch_add(1, Relaxed);
        if lease.endpoint() != &request.endpoint {
            return Err(HttpError::LocalProtocol(
                "the connection id is for another origin, or for other TLS or HTTP version settings than this transport's".into(),
            ));
        }
        let (lease, new_connection) = self.open_held(lease, &request.timeouts).await?;
        self.send_http1(InFlight::Lease(Some(lease)), new_connection, &request).await.map_err(|failure| failure.error)
    }

    /// Opens the connection of a lease lent from its id, unless it is open (one the peer closed
    /// meanwhile is closed and opened again: nothing was sent on it). Says whether it opened one.
    pub async fn open_held(&self, mut lease: Lease<HttpConn>, timeouts: &Timeouts) -> Result<(Lease<HttpConn>, bool), HttpError> {
        if lease.conn().is_some_and(crate::pool::Connection::is_open) {
            return Ok((lease, false));
        }
        drop(lease.take_conn());
        let endpoint = lease.endpoint().clone();
        let conn = conn::connect(&endpoint, &self.dialer, lease.per_endpoint(), timeouts).await?;
        lease.set_conn(conn);
        Ok((lease, true))
    }

    /// A connection to send on: an HTTP/1.1 connection under a lease, or a stream on an
    /// HTTP/2 connection. Opens one if the pool hands out a new slot.
    async fn connection(&self, pool: &Pool<HttpConn>, endpoint_ref: &EndpointRef<HttpConn>, request: &RequestParts) -> Result<Conn, HttpError> {
        let streams = endpoint_ref.per_endpoint();
        let offers_http2 = self.offers_http2(&request.endpoint);
        let lease = match offers_http2 {
            true => match checkout_http2(pool, endpoint_ref, streams, request.timeouts.pool).await? {
                Offer::Stream(stream) => return Ok(Conn::Http2(stream)),
                Offer::Lease(lease) => lease,
            },
            false => checkout(pool, endpoint_ref, request.timeouts.pool).await?,
        };
        let mut lease = match streams.carry(lease, false) {
            http2::Carried::Stream(stream) => return Ok(Conn::Http2(stream)),
            http2::Carried::Not(lease) => lease,
        };
        if lease.conn().is_some() {
            return Ok(Conn::Http1(InFlight::Lease(Some(lease)), false));
        }
        // Others offering HTTP/2 may wait for this connection rather than open their own.
        let _opening = offers_http2.then(|| streams.opening());
        match conn::connect(&request.endpoint, &self.dialer, streams, &request.timeouts).await {
            Ok(conn) => lease.set_conn(conn),
            Err(e) => {
                Lease::discard(lease, CloseReason::ConnectFailed);
                return Err(e);
            }
        }
        match streams.carry(lease, true) {
            http2::Carried::Stream(stream) => Ok(Conn::Http2(stream)),
            http2::Carried::Not(lease) => {
                if offers_http2 {
                    streams.speaks_http1();
                }
                Ok(Conn::Http1(InFlight::Lease(Some(lease)), true))
            }
        }
    }

    async fn send_http1(&self, mut in_flight: InFlight, new_connection: bool, request: &RequestParts) -> Result<Response, Failure> {
        match exchange(&mut in_flight, request).await {
            Ok((head, raw, incoming, activity)) => {
                let (parts, ()) = head.into_parts();
                let (headers, reason, body_bytes_read) = match raw {
                    Some(raw) => (raw.fields, raw.reason, raw.body_bytes_read),
                    // Not found in what was recorded (never seen: hyper parsed the same
                    // bytes): hyper's view, every value kept, names lowercase.
                    None => (
                        field_lines(&parts.headers),
                        Bytes::from_static(parts.status.canonical_reason().unwrap_or("").as_bytes()),
                        0,
                    ),
                };
                let framing = match head::Framing::of(parts.version, parts.status.as_u16(), &headers) {
                    Ok(framing) => framing,
                    Err(error) => {
                        in_flight.discard(CloseReason::NotReusable);
                        return Err(Failure { error, sent: Sent::Final });
                    }
                };
                Ok(Response {
                    status: parts.status.as_u16(),
                    reason,
                    version: parts.version,
                    body_bytes_read,
                    content_length: framing.content_length,
                    opened: in_flight.conn().filter(|_| new_connection).map(|conn| conn.info.clone()),
                    stream_id: None,
                    body: Body {
                        incoming: Some(Incoming::Http1(incoming)),
                        pending_error: None,
                        in_flight,
                        activity,
                        read_timeout: request.timeouts.read,
                        after_body: framing.after_body,
                        drain: self.drain,
                        stats: self.stats.clone(),
                        received: Received { bytes: 0, expected: framing.content_length },
                    },
                    headers,
                })
            }
            Err(failure) => {
                in_flight.discard(CloseReason::NotReusable);
                Err(failure)
            }
        }
    }

    async fn send_http2(&self, stream: http2::Stream, request: &RequestParts) -> Result<Response, Failure> {
        let head = http2::exchange(&stream, request).await?;
        let content_length = head
            .parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        Ok(Response {
            status: head.parts.status.as_u16(),
            // HTTP/2 has no reason phrase.
            reason: Bytes::new(),
            version: Version::HTTP_2,
            headers: field_lines(&head.parts.headers),
            body_bytes_read: 0,
            content_length,
            opened: stream.opened.clone(),
            stream_id: Some(head.stream_id),
            body: Body {
                incoming: Some(Incoming::Http2(head.body)),
                pending_error: None,
                in_flight: InFlight::Stream(Some(stream)),
                activity: head.activity,
                read_timeout: request.timeouts.read,
                after_body: head::AfterBody::Reuse(None),
                drain: self.drain,
                stats: self.stats.clone(),
                received: Received { bytes: 0, expected: content_length },
            },
        })
    }
}

/// Runs futures at once on the current task and collects their outputs in order.
async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if let Some(f) = future {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(out) => {
                        *output = Some(out);
                        *future = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    outputs.into_iter().map(|o| o.expect("every future completed")).collect()
}

/// Field lines as hyper or h2 parsed them: every value kept, names lowercase.
fn field_lines(headers: &http::HeaderMap) -> Vec<(Bytes, Bytes)> {
    headers.iter().map(|(k, v)| (Bytes::copy_from_slice(k.as_str().as_bytes()), Bytes::copy_from_slice(v.as_bytes()))).collect()
}

/// What a request is sent on.
enum Conn {
    /// An HTTP/1.1 connection, and whether it was opened for this request.
    Http1(InFlight, bool),
    Http2(http2::Stream),
}

/// What an HTTP/2-capable checkout got.
enum Offer {
    Stream(http2::Stream),
    /// From the pool: an idle connection of either version, or a new slot to open.
    Lease(Lease<HttpConn>),
}

/// Waits for a stream on an HTTP/2 connection of the endpoint, or else a connection from the
/// pool, up to the pool timeout. Queued in the pool, a request still takes a stream that frees
/// up first.
async fn checkout_http2(
    pool: &Pool<HttpConn>,
    endpoint_ref: &EndpointRef<HttpConn>,
    streams: &Arc<Streams>,
    limit: Option<Duration>,
) -> Result<Offer, HttpError> {
    let deadline = limit.map(|limit| tokio::time::Instant::now() + limit);
    let expired = || async move {
        match deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    };
    // Queued in the pool, a request keeps its place while it looks for streams again.
    let mut ticket = None;
    loop {
        let changed = streams.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        match streams.next() {
            http2::Next::Stream(stream) => return Ok(Offer::Stream(stream)),
            http2::Next::Wait(waiting) if ticket.is_none() => {
                tokio::select! {
                    _ = &mut changed => {}
                    _ = expired() => {
                        pool.record_wait_timeout();
                        return Err(HttpError::PoolTimeout);
                    }
                }
                drop(waiting);
                continue;
            }
            http2::Next::Wait(_) | http2::Next::Pool => {}
        }
        let queued = match &mut ticket {
            Some(queued) => queued,
            None => match pool.get_or_queue(endpoint_ref) {
                Ok(lease) => return Ok(Offer::Lease(lease)),
                Err(queued) => ticket.insert(queued),
            },
        };
        tokio::select! {
            lease = queued => return Ok(Offer::Lease(lease)),
            _ = &mut changed => {}
            _ = expired() => {
                pool.record_wait_timeout();
                return Err(HttpError::PoolTimeout);
            }
        }
    }
}

/// Waits for a connection, up to the pool timeout (first come, first served).
async fn checkout(pool: &Pool<HttpConn>, endpoint_ref: &EndpointRef<HttpConn>, limit: Option<Duration>) -> Result<Lease<HttpConn>, HttpError> {
    match pool.get_or_queue(endpoint_ref) {
        Ok(lease) => Ok(lease),
        Err(ticket) => match limit {
            None => Ok(ticket.await),
            Some(limit) => match tokio::time::timeout(limit, ticket).await {
                Ok(lease) => Ok(lease),
                Err(_) => {
                    pool.record_wait_timeout();
                    Err(HttpError::PoolTimeout)
                }
            },
        },
    }
}

/// What a request holds while in flight: a leased HTTP/1.1 connection, or an HTTP/2 stream.
/// If the request is dropped half-way (cancelled, timed out), an HTTP/1.1 connection's state is
/// unknown, so it is closed, never returned; an HTTP/2 stream is reset (h2 does it when the
/// stream's handles are dropped) and its connection carries on.
enum InFlight {
    Lease(Option<Lease<HttpConn>>),
    Stream(Option<http2::Stream>),
}

impl InFlight {
    fn conn(&self) -> Option<&HttpConn> {
        match self {
            InFlight::Lease(lease) => lease.as_ref().and_then(Lease::conn),
            InFlight::Stream(_) => None,
        }
    }
    fn conn_mut(&mut self) -> Option<&mut HttpConn> {
        match self {
            InFlight::Lease(lease) => lease.as_mut().and_then(Lease::conn_mut),
            InFlight::Stream(_) => None,
        }
    }
    /// Lets an HTTP/1.1 connection read and write (an HTTP/2 connection has its own task).
    fn drive(&mut self, cx: &mut std::task::Context<'_>) {
        if let Some(conn) = self.conn_mut() {
            conn.driver.drive(cx);
        }
    }
    fn discard(&mut self, reason: CloseReason) {
        match self {
            InFlight::Lease(lease) => {
                if let Some(lease) = lease.take() {
                    Lease::discard(lease, reason);
                }
            }
            InFlight::Stream(stream) => drop(stream.take()),
        }
    }
    /// The exchange ended cleanly: the connection goes back to the pool (or the stream ends).
    fn release(&mut self) {
        match self {
            InFlight::Lease(lease) => drop(lease.take()),
            InFlight::Stream(stream) => drop(stream.take()),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.discard(CloseReason::NotReusable);
    }
}

struct Failure {
    error: HttpError,
    sent: Sent,
}

/// How far a failed exchange got: that decides whether the request may be sent again.
enum Sent {
    /// No byte of the request was written (hyper handed it back): safe to send again.
    Nothing,
    /// The request may have reached the server, and no response arrived: safe to send again
    /// only if it is replayable.
    NoResponse,
    /// Never sent again: part of a response arrived, a timeout fired, or the request itself is
    /// at fault.
    Final,
}

type Head = http::Response<()>;

async fn exchange(
    in_flight: &mut InFlight,
    request: &RequestParts,
) -> Result<(Head, Option<head::RawHead>, hyper::body::Incoming, Arc<Activity>), Failure> {
    let conn = in_flight.conn_mut().expect("connected before the exchange");
    let activity = conn.activity.clone();
    let conn::Sender::Http1(sender) = &mut conn.sender else { unreachable!("HTTP/2 goes through http2::exchange") };
    let local = |message: String| Failure { error: HttpError::LocalProtocol(message), sent: Sent::Final };
    let target = match &conn.addressing {
        conn::Addressing::Origin => request.target.clone(),
        conn::Addressing::Absolute { .. } => {
            // As httpx writes it: the port only when it is not the scheme's default.
            let e = &request.endpoint;
            let origin = match e.port() == e.scheme().default_port() {
                true => format!("{}://{}", e.scheme().as_str(), e.host()),
                false => format!("{}://{}:{}", e.scheme().as_str(), e.host(), e.port()),
            };
            Bytes::from([origin.as_bytes(), &request.target].concat())
        }
    };
    let mut builder = Request::builder()
        .method(request.method.clone())
        .uri(http::Uri::from_maybe_shared(target).map_err(|_| local("the request target is not a valid URL path".into()))?);
    if let Some(headers) = builder.headers_mut() {
        headers.reserve(request.headers.len() + 1);
        for (name, value) in &request.headers {
            headers.append(name.clone(), value.clone());
        }
        if let conn::Addressing::Absolute { authorization: Some(value) } = &conn.addressing {
            headers.insert(http::header::PROXY_AUTHORIZATION, value.clone());
        }
    }
    let http_request = builder.body(Full::new(request.body.clone())).map_err(|e| local(e.to_string()))?;
    let driver = &mut conn.driver;
    // The last look at the connection before writing: one the server closed while it was
    // idle is noticed here, with nothing written.
    if driver.run(std::future::poll_fn(|cx| sender.poll_ready(cx))).await.is_err() {
        return Err(Failure { error: HttpError::RemoteProtocol("the connection closed while idle".into()), sent: Sent::Nothing });
    }
    activity.touch();
    activity.head.start();
    let response = watch(&activity, &request.timeouts, driver.run(sender.try_send_request(http_request))).await;
    let (raw, response_began) = activity.head.finish();
    match response {
        Ok(Ok(response)) => {
            let (parts, incoming) = response.into_parts();
            Ok((http::Response::from_parts(parts, ()), raw, incoming, activity))
        }
        Ok(Err(e)) => {
            let nothing_written = e.message().is_some();
            let e = e.into_error();
            let sent = match (nothing_written, response_began) {
                (true, _) => Sent::Nothing,
                (false, true) => Sent::Final,
                (false, false) => Sent::NoResponse,
            };
            Err(Failure { error: classify(&e, Phase::Head, &activity), sent })
        }
        Err(timeout) => Err(Failure { error: timeout, sent: Sent::Final }),
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Phase {
    Head,
    Body(Received),
}

/// How much of a body has arrived, against the length its head announced (None: chunked or
/// close-delimited): httpx's words for a body cut short say it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Received {
    bytes: u64,
    expected: Option<u64>,
}

/// Maps hyper's errors to httpx's classes.
fn classify(e: &hyper::Error, phase: Phase, activity: &Activity) -> HttpError {
    let message = match (os_error(e), std::error::Error::source(e)) {
        (Some(os), _) => os,
        (None, Some(source)) => format!("{e}: {source}"),
        (None, None) => e.to_string(),
    };
    let io_kind = io_error_kind(e);
    let peer_closed_early = e.is_incomplete_message()
        || e.is_canceled()
        || e.is_closed()
        || io_kind == Some(std::io::ErrorKind::UnexpectedEof);
    let bad_framing = matches!(io_kind, Some(std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput));
    if e.is_parse() || e.is_parse_status() || bad_framing {
        // A head, or a body's framing (a chunk size line, ...), that does not parse: hyper's
        // body decoder reports the latter as InvalidInput or InvalidData I/O errors.
        HttpError::RemoteProtocol(message)
    } else if peer_closed_early {
        HttpError::RemoteProtocol(peer_closed(phase))
    } else if e.is_body_write_aborted() || e.is_user() || (matches!(phase, Phase::Head) && activity.write_failed()) {
        HttpError::Write(message)
    } else {
        HttpError::Read(message)
    }
}

/// httpx's words for a server that closed the connection before its response was complete.
fn peer_closed(phase: Phase) -> String {
    match phase {
        Phase::Head => "Server disconnected without sending a response.".into(),
        Phase::Body(Received { bytes, expected: Some(expected) }) => {
            format!("peer closed connection without sending complete message body (received {bytes} bytes, expected {expected})")
        }
        Phase::Body(Received { expected: None, .. }) => {
            "peer closed connection without sending complete message body (incomplete chunked read)".into()
        }
    }
}

/// An operating system error behind a hyper error, as Python words it (`[Errno 104] Connection
/// reset by peer`, what httpx's sync transport reports); None when the error is not one.
fn os_error(e: &hyper::Error) -> Option<String> {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return io.raw_os_error().map(|_| python_os_message(io));
        }
        source = err.source();
    }
    None
}

/// `[Errno N] strerror`, as Python's OSError reads; other errors as they display.
pub(crate) fn python_os_message(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => {
            let text = e.to_string();
            let strerror = text.strip_suffix(&format!(" (os error {code})")).unwrap_or(&text);
            format!("[Errno {code}] {strerror}")
        }
        None => e.to_string(),
    }
}

/// The kind of the I/O error behind a hyper error, if one is. A TLS error (rustls reports
/// them as InvalidData) counts as `Other`: httpx reports those as read errors, not as the
/// server breaking HTTP.
fn io_error_kind(e: &hyper::Error) -> Option<std::io::ErrorKind> {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            let tls = io.get_ref().is_some_and(|inner| inner.is::<rustls::Error>());
            return Some(if tls { std::io::ErrorKind::Other } else { io.kind() });
        }
        source = err.source();
    }
    None
}

/// Runs `work` while the read and write timeouts are measured against the socket's progress.
/// Each applies on its own: a write that makes no progress for the write timeout fails even
/// when there is no read timeout, and the other way round.
async fn watch<F: Future>(activity: &Activity, timeouts: &Timeouts, work: F) -> Result<F::Output, HttpError> {
    if timeouts.read.is_none() && timeouts.write.is_none() {
        return Ok(work.await);
    }
    tokio::pin!(work);
    loop {
        let now = now();
        let deadline = activity.deadline(timeouts);
        if let Some((deadline, error)) = &deadline {
            if *deadline <= now {
                return Err(error.clone());
            }
        }
        // A write may get stuck while we sleep: look again within one write timeout (and not
        // in a busy loop when that timeout is zero), unless the deadline already is the write
        // timeout's. Decided from `deadline` alone: a second look at the write state could see
        // a write blocked since, and leave a request with a write timeout waiting unbounded.
        let write_deadline = matches!(deadline, Some((_, HttpError::WriteTimeout)));
        let next_write_check = timeouts.write.filter(|_| !write_deadline).map(|w| now + conn::nanos(w).max(1_000_000));
        let wake = match (deadline, next_write_check) {
            (Some((d, _)), Some(w)) => d.min(w),
            (Some((d, _)), None) => d,
            (None, Some(w)) => w,
            (None, None) => return Ok(work.await),
        };
        tokio::select! {
            biased;
            out = &mut work => return Ok(out),
            _ = tokio::time::sleep(Duration::from_nanos(wake - now)) => {}
        }
    }
}

/// A response body being read. Reading it to the end gives the connection back to the pool;
/// closing it early drains the rest in the background (within the drain policy).
pub struct Body {
    incoming: Option<Incoming>,
    /// An error met while collecting chunks that had already arrived: raised after them, at
    /// the next read, so that every byte the server sent reaches the reader first.
    pending_error: Option<HttpError>,
    in_flight: InFlight,
    activity: Arc<Activity>,
    read_timeout: Option<Duration>,
    after_body: head::AfterBody,
    drain: DrainPolicy,
    stats: Arc<ClientStats>,
    received: Received,
}

/// A response body as the connection delivers it.
enum Incoming {
    Http1(hyper::body::Incoming),
    Http2(h2::RecvStream),
}

impl Incoming {
    /// The next non-empty data chunk; `None` at the end of the body (trailers are skipped).
    fn poll_chunk(&mut self, cx: &mut std::task::Context<'_>, activity: &Activity, received: &mut Received) -> std::task::Poll<Option<Result<Bytes, HttpError>>> {
        use std::task::Poll;
        match self {
            Incoming::Http1(incoming) => loop {
                match std::pin::Pin::new(&mut *incoming).poll_frame(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => return Poll::Ready(None),
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            if !data.is_empty() {
                                received.bytes += data.len() as u64;
                                return Poll::Ready(Some(Ok(data)));
                            }
                        }
                    }
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(classify(&e, Phase::Body(*received), activity)))),
                }
            },
            Incoming::Http2(body) => loop {
                match http2::poll_data(body, cx, received) {
                    Poll::Ready(Some(Ok(data))) if data.is_empty() => continue,
                    Poll::Ready(Some(Ok(data))) => {
                        activity.touch();
                        return Poll::Ready(Some(Ok(data)));
                    }
                    other => return other,
                }
            },
        }
    }
}

impl Body {
    /// The next chunk of the body; `None` at its end (the connection is back in the pool).
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, HttpError> {
        if let Some(error) = self.pending_error.take() {
            return Err(error);
        }
        let Some(incoming) = self.incoming.as_mut() else { return Ok(None) };
        let timeouts = Timeouts { read: self.read_timeout, ..Timeouts::default() };
        self.activity.touch();
        let (activity, in_flight, received) = (&self.activity, &mut self.in_flight, &mut self.received);
        let chunk = std::future::poll_fn(|cx| {
            in_flight.drive(cx);
            incoming.poll_chunk(cx, activity, received)
        });
        match watch(&self.activity, &timeouts, chunk).await {
            Ok(Some(Ok(data))) => Ok(Some(data)),
            Ok(None) => {
                self.finish();
                Ok(None)
            }
            Ok(Some(Err(error))) => {
                self.fail();
                Err(error)
            }
            Err(timeout) => {
                if let (InFlight::Stream(Some(stream)), Some(waited)) = (&self.in_flight, self.read_timeout) {
                    stream.read_timed_out(waited);
                }
                self.fail();
                Err(timeout)
            }
        }
    }

    /// Whatever chunks are already here, without waiting (about `limit` bytes at most), and
    /// whether the body ended. An error comes only when no chunk does: one met after some
    /// chunks waits for the next read.
    pub fn ready_chunks(&mut self, limit: usize) -> Result<(Vec<Bytes>, bool), HttpError> {
        let mut chunks = Vec::new();
        let mut size = 0;
        while size < limit {
            if self.pending_error.is_some() {
                return match chunks.is_empty() {
                    true => Err(self.pending_error.take().expect("checked above")),
                    false => Ok((chunks, false)),
                };
            }
            let Some(incoming) = self.incoming.as_mut() else { return Ok((chunks, true)) };
            let (activity, in_flight, received) = (&self.activity, &mut self.in_flight, &mut self.received);
            match inline::poll_now(|cx| {
                in_flight.drive(cx);
                incoming.poll_chunk(cx, activity, received)
            }) {
                std::task::Poll::Pending => return Ok((chunks, false)),
                std::task::Poll::Ready(None) => {
                    self.finish();
                    return Ok((chunks, true));
                }
                std::task::Poll::Ready(Some(Ok(data))) => {
                    size += data.len();
                    chunks.push(data);
                }
                std::task::Poll::Ready(Some(Err(error))) => {
                    self.fail();
                    self.pending_error = Some(error);
                }
            }
        }
        Ok((chunks, false))
    }

    /// The chunks of the first `in_memory` bytes of the body (read together with the head, so
    /// waiting for them never waits for the network), then whatever else is ready, up to about
    /// `limit` bytes. Never fails: an error waits for the next read.
    pub async fn chunks_in_memory(&mut self, in_memory: usize, limit: usize) -> Vec<Bytes> {
        let mut chunks = Vec::new();
        let mut size = 0;
        while size < in_memory {
            match self.next_chunk().await {
                Ok(Some(chunk)) => {
                    size += chunk.len();
                    chunks.push(chunk);
                }
                Ok(None) => return chunks,
                Err(error) => {
                    self.pending_error = Some(error);
                    return chunks;
                }
            }
        }
        match self.ready_chunks(limit.saturating_sub(size)) {
            Ok((more, _)) => chunks.extend(more),
            Err(error) => self.pending_error = Some(error),
        }
        chunks
    }

    /// True once the body ended and nothing is left to hand over (no chunk, no error).
    pub fn is_finished(&self) -> bool {
        self.incoming.is_none() && self.pending_error.is_none()
    }

    fn finish(&mut self) {
        self.incoming = None;
        match self.after_body {
            head::AfterBody::Close => self.in_flight.discard(CloseReason::NotReusable),
            head::AfterBody::Reuse(server_idle_timeout) => {
                if let Some(conn) = self.in_flight.conn() {
                    conn.set_server_idle_timeout(server_idle_timeout);
                }
                self.in_flight.release();
            }
        }
    }

    fn fail(&mut self) {
        self.incoming = None;
        self.in_flight.discard(CloseReason::NotReusable);
    }

    /// Stops reading. If the body has not ended, the rest is drained in the background so the
    /// connection can be reused; past the drain bounds it is closed instead. Meanwhile the
    /// connection counts as in use: a request that finds the endpoint at its limit queues for
    /// it like for any other.
    pub fn close(mut self) {
        if self.incoming.is_none() {
            return;
        }
        // An HTTP/2 stream is reset (nothing to drain: the connection carries on), and an
        // HTTP/1.1 connection that closes after this response has nothing to save.
        if matches!(self.in_flight, InFlight::Stream(_)) || self.after_body == head::AfterBody::Close {
            self.fail();
            return;
        }
        // Usually the rest is already here (an event stream's last chunk): then the connection
        // is back in the pool before the caller's next request.
        match self.ready_chunks(self.drain.max_bytes as usize) {
            Ok((_, true)) => {
                self.stats.drained.fetch_add(1, Relaxed);
                return;
            }
            Ok((chunks, false)) if chunks.iter().map(Bytes::len).sum::<usize>() < self.drain.max_bytes as usize => {}
            _ => {
                self.stats.drain_abandoned.fetch_add(1, Relaxed);
                self.fail();
                return;
            }
        }
        runtime::spawn(async move {
            let drain = self.drain;
            let mut drained = 0u64;
            let outcome = tokio::time::timeout(drain.max_time, async {
                loop {
                    match self.next_chunk().await {
                        Ok(Some(chunk)) => {
                            drained += chunk.len() as u64;
                            if drained > drain.max_bytes {
                                return false;
                            }
                        }
                        Ok(None) => return true,
                        Err(_) => return false,
                    }
                }
            })
            .await;
            if outcome == Ok(true) {
                self.stats.drained.fetch_add(1, Relaxed);
            } else {
                self.stats.drain_abandoned.fetch_add(1, Relaxed);
                self.fail();
            }
        });
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        // Dropped without close() (a cancelled reader): the connection's state is unknown.
        if self.incoming.is_some() {
            self.fail();
        }
    }
}

#[cfg(test)]
mod tests;
