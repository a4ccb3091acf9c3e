//! The HTTP engine: pooled HTTP/1.1 connections over tokio + hyper (rustls for TLS), response
//! bodies streamed chunk by chunk, drain-on-close, timeouts. Knows nothing of Python.

mod conn;
mod head;
mod runtime;
pub mod tls;

pub use conn::HttpConn;
pub use runtime::{block_on, fork_generation, reset_after_fork, spawn};

use crate::pool::{CloseReason, Clock, Endpoint, Lease, Pool, Route, SystemClock};
use bytes::Bytes;
use conn::Activity;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper::body::Incoming;
use rustls::ClientConfig;
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
    tls: Arc<ClientConfig>,
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
    /// Whether this request opened a new connection (for the `trace` extension).
    pub new_connection: bool,
    pub body: Body,
}

impl Client {
    pub fn new(tls: tls::TlsSettings, drain: DrainPolicy) -> Result<Client, HttpError> {
        Ok(Client { tls_profile: tls.profile_id(), tls: tls.client_config()?, drain, stats: Arc::default() })
    }

    /// The pool key for an origin under this client's TLS settings.
    pub fn endpoint(&self, origin: Endpoint) -> Endpoint {
        match origin.scheme() {
            crate::pool::Scheme::Https => origin.with_tls_profile(self.tls_profile),
            crate::pool::Scheme::Http => origin,
        }
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
        let route = pool.route(&request.endpoint);
        let mut retried = false;
        loop {
            let lease = checkout(pool, &route, request.timeouts.pool).await?;
            let mut in_flight = InFlight(Some(lease));
            let new_connection = in_flight.lease().conn().is_none();
            if new_connection {
                match conn::connect(&request.endpoint, &self.tls, &request.timeouts).await {
                    Ok(conn) => in_flight.lease_mut().set_conn(conn),
                    Err(e) => {
                        in_flight.discard(CloseReason::ConnectFailed);
                        return Err(e);
                    }
                }
            }
            match exchange(&mut in_flight, &request).await {
                Ok((head, raw, incoming, activity)) => {
                    let (parts, ()) = head.into_parts();
                    let (headers, reason, body_bytes_read) = match raw {
                        Some(raw) => (raw.fields, raw.reason, raw.body_bytes_read),
                        // Not found in what was recorded (never seen: hyper parsed the same
                        // bytes): hyper's view, every value kept, names lowercase.
                        None => (
                            parts.headers.iter().map(|(k, v)| (Bytes::copy_from_slice(k.as_str().as_bytes()), Bytes::copy_from_slice(v.as_bytes()))).collect(),
                            Bytes::from_static(parts.status.canonical_reason().unwrap_or("").as_bytes()),
                            0,
                        ),
                    };
                    let framing = match head::Framing::of(parts.version, parts.status.as_u16(), &headers) {
                        Ok(framing) => framing,
                        Err(e) => {
                            in_flight.discard(CloseReason::NotReusable);
                            return Err(e);
                        }
                    };
                    return Ok(Response {
                        status: parts.status.as_u16(),
                        reason,
                        version: parts.version,
                        body_bytes_read,
                        content_length: framing.content_length,
                        new_connection,
                        body: Body {
                            incoming: Some(incoming),
                            pending_error: None,
                            in_flight,
                            activity,
                            read_timeout: request.timeouts.read,
                            after_body: framing.after_body,
                            drain: self.drain,
                            stats: self.stats.clone(),
                        },
                        headers,
                    });
                }
                Err(Failure { error, sent }) => {
                    in_flight.discard(CloseReason::NotReusable);
                    let may_resend = match sent {
                        Sent::Nothing => true,
                        Sent::NoResponse => request.is_replayable(),
                        Sent::Final => false,
                    };
                    if !new_connection && may_resend && !retried {
                        retried = true;
                        self.stats.retried.fetch_add(1, Relaxed);
                        continue;
                    }
                    return Err(error);
                }
            }
        }
    }
}

/// Waits for a connection, up to the pool timeout (first come, first served).
async fn checkout(pool: &Pool<HttpConn>, route: &Route<HttpConn>, limit: Option<Duration>) -> Result<Lease<HttpConn>, HttpError> {
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
) -> Result<(Head, Option<head::RawHead>, Incoming, Arc<Activity>), Failure> {
    let conn = in_flight.lease_mut().conn_mut().expect("connected before the exchange");
    let activity = conn.activity.clone();
    let local = |message: String| Failure { error: HttpError::LocalProtocol(message), sent: Sent::Final };
    let mut builder = Request::builder().method(request.method.clone()).uri(
        http::Uri::from_maybe_shared(request.target.clone())
            .map_err(|_| local("the request target is not a valid URL path".into()))?,
    );
    if let Some(headers) = builder.headers_mut() {
        headers.reserve(request.headers.len());
        for (name, value) in &request.headers {
            headers.append(name.clone(), value.clone());
        }
    }
    let http_request = builder.body(Full::new(request.body.clone())).map_err(|e| local(e.to_string()))?;
    // The last look at the connection before writing: one the server closed while it was
    // idle is noticed here, with nothing written.
    if conn.sender.ready().await.is_err() {
        return Err(Failure { error: HttpError::RemoteProtocol("the connection closed while idle".into()), sent: Sent::Nothing });
    }
    activity.touch();
    activity.head.start();
    let response = watch(&activity, &request.timeouts, conn.sender.try_send_request(http_request)).await;
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
enum Phase {
    Head,
    Body,
}

/// Maps hyper's errors to httpx's classes.
fn classify(e: &hyper::Error, phase: Phase, activity: &Activity) -> HttpError {
    let message = match std::error::Error::source(e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
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
        match phase {
            Phase::Head => HttpError::RemoteProtocol(format!("server disconnected without sending a complete response ({message})")),
            Phase::Body => HttpError::RemoteProtocol(format!("peer closed connection without sending complete message body ({message})")),
        }
    } else if e.is_body_write_aborted() || e.is_user() || (matches!(phase, Phase::Head) && activity.write_failed()) {
        HttpError::Write(message)
    } else {
        HttpError::Read(message)
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
        // in a busy loop when that timeout is zero).
        let next_write_check = timeouts.write.filter(|_| !activity.write_blocked()).map(|w| now + conn::nanos(w).max(1_000_000));
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
}

impl Body {
    /// The next chunk of the body; `None` at its end (the connection is back in the pool).
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, HttpError> {
        if let Some(error) = self.pending_error.take() {
            return Err(error);
        }
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
                    return Err(classify(&e, Phase::Body, &self.activity));
                }
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
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
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
                    self.pending_error = Some(classify(&e, Phase::Body, &self.activity));
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
                if let Some(conn) = self.in_flight.0.as_ref().and_then(|l| l.conn()) {
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
        if self.after_body == head::AfterBody::Close {
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
