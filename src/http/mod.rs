//! The HTTP engine: pooled HTTP/1.1 connections over tokio + hyper (rustls for TLS), response
//! bodies streamed chunk by chunk, drain-on-close, timeouts. Knows nothing of Python.

mod conn;
mod runtime;
pub mod tls;

pub use conn::HttpConn;
pub use runtime::{block_on, reset_after_fork, spawn};

use crate::pool::{CloseReason, Clock, Endpoint, Lease, Pool, Route, SystemClock};
use bytes::Bytes;
use conn::Activity;
use http::header::{HeaderName, HeaderValue, CONNECTION};
use http::{Method, Request, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper::body::Incoming;
use rustls::ClientConfig;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
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
    /// A setting that cannot be used (a CA file that does not parse, ...).
    Config(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::PoolTimeout => f.write_str("timed out waiting for a free connection in the pool"),
            HttpError::ConnectTimeout => f.write_str("timed out connecting"),
            HttpError::Connect(m) => write!(f, "connection failed: {m}"),
            HttpError::ReadTimeout => f.write_str("timed out reading the response"),
            HttpError::WriteTimeout => f.write_str("timed out sending the request"),
            HttpError::Read(m) => write!(f, "reading the response failed: {m}"),
            HttpError::Write(m) => write!(f, "sending the request failed: {m}"),
            HttpError::RemoteProtocol(m) => write!(f, "the server broke the HTTP protocol: {m}"),
            HttpError::LocalProtocol(m) => write!(f, "invalid request: {m}"),
            HttpError::Config(m) => f.write_str(m),
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

/// Bodies being drained in the background, so that a request can wait for their connection
/// rather than open another.
#[derive(Debug, Default)]
struct Drains {
    in_progress: AtomicUsize,
    done: tokio::sync::Notify,
}

/// Counters of one client (one transport).
#[derive(Debug, Default)]
pub struct ClientStats {
    pub requests: AtomicU64,
    pub retried: AtomicU64,
    pub drained: AtomicU64,
    pub drain_abandoned: AtomicU64,
}

/// Sends requests over one pool with one set of TLS settings.
pub struct Client {
    tls: Option<Arc<ClientConfig>>,
    tls_profile: u32,
    drain: DrainPolicy,
    drains: Arc<Drains>,
    pub stats: Arc<ClientStats>,
}

/// A request, as the bindings hand it over: already encoded, body in memory (so it can be sent
/// again on a fresh connection).
pub struct RequestParts {
    pub method: Method,
    pub endpoint: Endpoint,
    /// Path and query, as they go on the request line.
    pub target: Bytes,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    pub timeouts: Timeouts,
}

/// The response head, and its body still to be read.
pub struct Response {
    pub status: u16,
    pub reason: Option<String>,
    pub version: Version,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Body,
}

impl Client {
    pub fn new(tls: tls::TlsSettings, drain: DrainPolicy) -> Result<Client, HttpError> {
        Ok(Client {
            tls_profile: tls.profile_id(),
            tls: Some(tls.client_config()?),
            drain,
            drains: Arc::default(),
            stats: Arc::default(),
        })
    }

    /// The pool key for an origin under this client's TLS settings.
    pub fn endpoint(&self, origin: Endpoint) -> Endpoint {
        match origin.scheme() {
            crate::pool::Scheme::Https => origin.with_tls_profile(self.tls_profile),
            crate::pool::Scheme::Http => origin,
        }
    }

    /// Sends one request and returns once the response head has arrived. A reused connection
    /// that fails before any response byte arrives is replaced by a fresh one, once.
    pub async fn send(&self, pool: &Pool<HttpConn>, request: RequestParts) -> Result<Response, HttpError> {
        self.stats.requests.fetch_add(1, Relaxed);
        let route = pool.route(&request.endpoint);
        let mut retried = false;
        loop {
            let lease = self.checkout(pool, &route, request.timeouts.pool).await?;
            let mut in_flight = InFlight(Some(lease));
            let reused = in_flight.lease().conn().is_some();
            if !reused {
                match conn::connect(&request.endpoint, self.tls.as_ref(), &request.timeouts).await {
                    Ok(conn) => in_flight.lease_mut().set_conn(conn),
                    Err(e) => {
                        in_flight.discard(CloseReason::ConnectFailed);
                        return Err(e);
                    }
                }
            }
            match exchange(&mut in_flight, &request).await {
                Ok((head, incoming, activity)) => {
                    let keep_alive = keeps_alive(&head);
                    let (parts, ()) = head.into_parts();
                    return Ok(Response {
                        status: parts.status.as_u16(),
                        reason: parts.extensions.get::<hyper::ext::ReasonPhrase>().map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned()),
                        version: parts.version,
                        headers: parts.headers.into_iter().filter_map(|(k, v)| Some((k?, v))).collect(),
                        body: Body {
                            incoming: Some(incoming),
                            in_flight,
                            activity,
                            read_timeout: request.timeouts.read,
                            keep_alive,
                            drain: self.drain,
                            drains: self.drains.clone(),
                            stats: self.stats.clone(),
                        },
                    });
                }
                Err(Failure { error, before_response }) => {
                    in_flight.discard(CloseReason::NotReusable);
                    if reused && before_response && !retried {
                        retried = true;
                        self.stats.retried.fetch_add(1, Relaxed);
                        continue;
                    }
                    return Err(error);
                }
            }
        }
    }

    /// Waits for a connection, up to the pool timeout. While one of this client's bodies is
    /// being drained and no connection is idle, waits (within the drain bound) for that one
    /// first: sequential streaming calls then share one connection instead of opening more.
    async fn checkout(&self, pool: &Pool<HttpConn>, route: &Route<HttpConn>, limit: Option<Duration>) -> Result<Lease<HttpConn>, HttpError> {
        if self.drains.in_progress.load(Relaxed) > 0 {
            let drained = self.drains.done.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if let Some(lease) = pool.try_get_idle(route) {
                return Ok(lease);
            }
            if self.drains.in_progress.load(Relaxed) > 0 {
                let _ = tokio::time::timeout(self.drain.max_time, drained).await;
            }
        }
        match pool.get_or_queue(route) {
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
}

/// A lease in use by a request: if the request is dropped half-way (cancelled, timed out), the
/// connection's state is unknown, so it is closed, never returned.
struct InFlight(Option<Lease<HttpConn>>);

impl InFlight {
    fn lease(&self) -> &Lease<HttpConn> {
        self.0.as_ref().expect("in flight until finished")
    }
    fn lease_mut(&mut self) -> &mut Lease<HttpConn> {
        self.0.as_mut().expect("in flight until finished")
    }
    fn discard(&mut self, reason: CloseReason) {
        if let Some(lease) = self.0.take() {
            Lease::discard(lease, reason);
        }
    }
    /// The exchange ended cleanly: the connection goes back to the pool.
    fn release(&mut self) {
        self.0.take();
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.discard(CloseReason::NotReusable);
    }
}

struct Failure {
    error: HttpError,
    /// Nothing of the response arrived: the request may be sent again.
    before_response: bool,
}

type Head = http::Response<()>;

async fn exchange(in_flight: &mut InFlight, request: &RequestParts) -> Result<(Head, Incoming, Arc<Activity>), Failure> {
    let conn = in_flight.lease_mut().conn_mut().expect("connected before the exchange");
    let activity = conn.activity.clone();
    let mut builder = Request::builder()
        .method(request.method.clone())
        .uri(http::Uri::from_maybe_shared(request.target.clone()).map_err(|_| Failure {
            error: HttpError::LocalProtocol("the request target is not a valid URL path".into()),
            before_response: false,
        })?);
    if let Some(headers) = builder.headers_mut() {
        headers.reserve(request.headers.len());
        for (name, value) in &request.headers {
            headers.append(name.clone(), value.clone());
        }
    }
    let http_request = builder.body(Full::new(request.body.clone())).map_err(|e| Failure {
        error: HttpError::LocalProtocol(e.to_string()),
        before_response: false,
    })?;
    if conn.sender.ready().await.is_err() {
        return Err(Failure { error: HttpError::RemoteProtocol("the connection closed while idle".into()), before_response: true });
    }
    activity.touch();
    let response = watch(&activity, &request.timeouts, conn.sender.send_request(http_request)).await;
    match response {
        Ok(Ok(response)) => {
            let (parts, incoming) = response.into_parts();
            Ok((http::Response::from_parts(parts, ()), incoming, activity))
        }
        // A parse error means response bytes arrived; anything else failed before the response.
        Ok(Err(e)) => Err(Failure { before_response: !(e.is_parse() || e.is_parse_status()), error: classify(&e, Phase::Head) }),
        Err(timeout) => Err(Failure { error: timeout, before_response: false }),
    }
}

#[derive(Clone, Copy)]
enum Phase {
    Head,
    Body,
}

/// Maps hyper's errors to httpx's classes.
fn classify(e: &hyper::Error, phase: Phase) -> HttpError {
    let message = match std::error::Error::source(e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    };
    let peer_closed_early = e.is_incomplete_message()
        || e.is_canceled()
        || e.is_closed()
        || io_error_kind(e) == Some(std::io::ErrorKind::UnexpectedEof);
    if e.is_parse() || e.is_parse_status() {
        HttpError::RemoteProtocol(message)
    } else if peer_closed_early {
        match phase {
            Phase::Head => HttpError::RemoteProtocol(format!("server disconnected without sending a complete response ({message})")),
            Phase::Body => HttpError::RemoteProtocol(format!("peer closed connection without sending complete message body ({message})")),
        }
    } else if e.is_body_write_aborted() || e.is_user() {
        HttpError::Write(message)
    } else {
        HttpError::Read(message)
    }
}

/// The kind of the I/O error behind a hyper error, if one is.
fn io_error_kind(e: &hyper::Error) -> Option<std::io::ErrorKind> {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = err.source();
    }
    None
}

/// Runs `work` while the read and write timeouts are measured against the socket's progress.
async fn watch<F: Future>(activity: &Activity, timeouts: &Timeouts, work: F) -> Result<F::Output, HttpError> {
    if timeouts.read.is_none() && timeouts.write.is_none() {
        return Ok(work.await);
    }
    tokio::pin!(work);
    loop {
        let now = now();
        let Some((deadline, error)) = activity.deadline(timeouts) else {
            return Ok(work.await);
        };
        if deadline <= now {
            return Err(error);
        }
        // A write may get stuck while we sleep: look again within one write timeout.
        let wake = match timeouts.write {
            Some(write) if !activity.write_blocked() => deadline.min(now + conn::nanos(write)),
            _ => deadline,
        };
        tokio::select! {
            biased;
            out = &mut work => return Ok(out),
            _ = tokio::time::sleep(Duration::from_nanos(wake - now)) => {}
        }
    }
}

/// HTTP/1.1 keeps the connection unless `Connection: close`; HTTP/1.0 only with keep-alive.
fn keeps_alive(head: &Head) -> bool {
    let has = |token: &str| {
        head.headers().get_all(CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    match head.version() {
        Version::HTTP_11 => !has("close"),
        Version::HTTP_10 => has("keep-alive"),
        _ => false,
    }
}

/// A response body being read. Reading it to the end gives the connection back to the pool;
/// closing it early drains the rest in the background (within the drain policy).
pub struct Body {
    incoming: Option<Incoming>,
    in_flight: InFlight,
    activity: Arc<Activity>,
    read_timeout: Option<Duration>,
    keep_alive: bool,
    drain: DrainPolicy,
    drains: Arc<Drains>,
    stats: Arc<ClientStats>,
}

impl Body {
    /// The next chunk of the body; `None` at its end (the connection is back in the pool).
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, HttpError> {
        loop {
            let Some(incoming) = self.incoming.as_mut() else { return Ok(None) };
            let timeouts = Timeouts { read: self.read_timeout, ..Timeouts::default() };
            self.activity.touch();
            let frame = match watch(&self.activity, &timeouts, incoming.frame()).await {
                Ok(frame) => frame,
                Err(timeout) => {
                    self.fail();
                    return Err(timeout);
                }
            };
            match frame {
                None => {
                    self.finish();
                    return Ok(None);
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            return Ok(Some(data));
                        }
                    }
                }
                Some(Err(e)) => {
                    self.fail();
                    return Err(classify(&e, Phase::Body));
                }
            }
        }
    }

    /// Whatever chunks are already here, without waiting (at most `limit` bytes), and whether
    /// the body ended. Lets a small body travel with its head in one hand-over.
    pub fn ready_chunks(&mut self, limit: usize) -> Result<(Vec<Bytes>, bool), HttpError> {
        let mut chunks = Vec::new();
        let mut size = 0;
        while size < limit {
            let Some(incoming) = self.incoming.as_mut() else { return Ok((chunks, true)) };
            let waker = std::task::Waker::noop();
            let mut cx = std::task::Context::from_waker(waker);
            match std::pin::Pin::new(incoming).poll_frame(&mut cx) {
                std::task::Poll::Pending => return Ok((chunks, false)),
                std::task::Poll::Ready(None) => {
                    self.finish();
                    return Ok((chunks, true));
                }
                std::task::Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        size += data.len();
                        if !data.is_empty() {
                            chunks.push(data);
                        }
                    }
                }
                std::task::Poll::Ready(Some(Err(e))) => {
                    self.fail();
                    return Err(classify(&e, Phase::Body));
                }
            }
        }
        Ok((chunks, false))
    }

    pub fn is_finished(&self) -> bool {
        self.incoming.is_none()
    }

    fn finish(&mut self) {
        self.incoming = None;
        if self.keep_alive {
            self.in_flight.release();
        } else {
            self.in_flight.discard(CloseReason::NotReusable);
        }
    }

    fn fail(&mut self) {
        self.incoming = None;
        self.in_flight.discard(CloseReason::NotReusable);
    }

    /// Stops reading. If the body has not ended, the rest is drained in the background so the
    /// connection can be reused; past the drain bounds it is closed instead.
    pub fn close(mut self) {
        if self.incoming.is_none() {
            return;
        }
        if !self.keep_alive {
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
        self.drains.in_progress.fetch_add(1, Relaxed);
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
            self.drains.in_progress.fetch_sub(1, Relaxed);
            self.drains.done.notify_waiters();
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
