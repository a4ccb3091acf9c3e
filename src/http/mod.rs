//! The HTTP engine's client: a request's way through checkout (a pooled connection, or a stream
//! of a shared HTTP/2 connection), exchange, retry and response, and the request types both
//! protocols share. Knows nothing of Python. The protocols are `http1` (our own) and `http2` (h2),
//! the checkout `checkout`, the body `body`, the connection `conn`, its progress and the timeouts
//! measured against it `activity`, errors `error`.

mod activity;
mod body;
mod checkout;
mod clock;
mod conn;
mod dial;
pub mod dns;
mod error;
mod head;
mod http1;
mod info;
pub mod http2;
pub mod inline;
pub mod proxy;
mod runtime;
mod socket;
pub mod tls;

pub use body::Body;
pub use conn::HttpConn;
pub use info::{ConnectionInfo, TlsInfo};
pub use error::HttpError;
pub(crate) use error::python_os_message;
pub use http2::{EndpointHttp, EndpointHttpStats, KeepAlive};
pub use runtime::{block_on, enter, fork_generation, reset_after_fork, spawn};

use crate::pool::{CloseReason, Endpoint, Lease, Pool, Scheme};
use body::Incoming;
use checkout::{Channel, InFlight};
use bytes::Bytes;
use conn::Dialer;
use error::Received;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Version};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// httpx's four timeouts; `None` waits without limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Option<Duration>,
    pub read: Option<Duration>,
    pub write: Option<Duration>,
    pub pool: Option<Duration>,
}

/// What to do with the rest of a body its reader closed early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainPolicy {
    /// Read at most this many more bytes...
    pub max_bytes: u64,
    /// ...for at most this long, then reuse the connection; past either bound, close it.
    pub max_time: Duration,
}

impl DrainPolicy {
    /// The transports' default (their `drain_bytes` / `drain_timeout`, read from here): a
    /// streamed completion closed early is most often a few KB from its end, and a quarter of
    /// a MB within half a second saves a handshake without holding a connection long.
    pub const DEFAULT: DrainPolicy = DrainPolicy { max_bytes: 256 * 1024, max_time: Duration::from_millis(500) };
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
    /// byte arrived and either no byte of the request was written or the request is
    /// replayable. Otherwise the error reaches the caller, whose own
    /// retry policy decides (the openai SDK and LiteLLM have one).
    pub async fn send(&self, pool: &Pool<HttpConn>, request: RequestParts) -> Result<Response, HttpError> {
        self.stats.requests.fetch_add(1, Relaxed);
        let endpoint_ref = pool.endpoint_ref(&request.endpoint);
        let mut retried = false;
        loop {
            let (attempt, new_connection) = match self.connection(pool, &endpoint_ref, &request).await? {
                Channel::Http1(in_flight, new_connection) => (self.send_http1(in_flight, new_connection, &request).await, new_connection),
                Channel::Http2(stream) => {
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
        let endpoint_http = endpoint_ref.per_endpoint();
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
                    match conn::connect(endpoint, &self.dialer, endpoint_http, timeouts).await {
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

    async fn send_http1(&self, mut in_flight: InFlight, new_connection: bool, request: &RequestParts) -> Result<Response, Failure> {
        let (head, body_bytes_read, activity) = match http1::exchange(&mut in_flight, request).await {
            Ok(exchanged) => exchanged,
            Err(failure) => {
                in_flight.discard(CloseReason::NotReusable);
                return Err(failure);
            }
        };
        let mut framing = match head::Framing::of(head.version, head.status, &head.fields) {
            Ok(framing) => framing,
            Err(error) => {
                in_flight.discard(CloseReason::NotReusable);
                return Err(Failure { error, sent: Sent::Final });
            }
        };
        let decoder = http1::Decoder::of(&request.method, head.status, framing.chunked, framing.content_length);
        if decoder == http1::Decoder::UntilClose || http1::asks_to_close(request) {
            framing.after_body = head::AfterBody::Close;
        }
        Ok(Response {
            status: head.status,
            reason: head.reason,
            version: head.version,
            body_bytes_read,
            content_length: framing.content_length,
            opened: in_flight.conn().filter(|_| new_connection).map(|conn| conn.info.clone()),
            stream_id: None,
            body: Body {
                incoming: Some(Incoming::Http1(decoder)),
                pending_error: None,
                in_flight,
                activity,
                read_timeout: request.timeouts.read,
                after_body: framing.after_body,
                drain: self.drain,
                stats: self.stats.clone(),
                received: Received { bytes: 0, expected: framing.content_length },
            },
            headers: head.fields,
        })
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

/// Field lines as h2 parsed them: every value kept, names lowercase.
fn field_lines(headers: &http::HeaderMap) -> Vec<(Bytes, Bytes)> {
    headers.iter().map(|(k, v)| (Bytes::copy_from_slice(k.as_str().as_bytes()), Bytes::copy_from_slice(v.as_bytes()))).collect()
}

struct Failure {
    error: HttpError,
    sent: Sent,
}

/// How far a failed exchange got: that decides whether the request may be sent again.
enum Sent {
    /// No byte of the request was written: safe to send again.
    Nothing,
    /// The request may have reached the server, and no response arrived: safe to send again
    /// only if it is replayable.
    NoResponse,
    /// Never sent again: part of a response arrived, a timeout fired, or the request itself is
    /// at fault.
    Final,
}

#[cfg(test)]
mod tests;
