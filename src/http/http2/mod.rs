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

mod connection;
mod endpoint;

pub use connection::KeepAlive;
pub(crate) use connection::{handshake, Http2Conn};
pub use endpoint::{EndpointHttp, EndpointHttpStats};
pub(crate) use endpoint::{Counted, Next, Stream};

use super::activity::{watch, Activity};
use super::error::{peer_closed, HttpError, Phase, Received};
use super::{Failure, RequestParts, Sent};
use bytes::Bytes;
use h2::{Reason, RecvStream};
use http::header::{HeaderName, HOST};
use http::{HeaderMap, Request, Version};
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};

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
    let send = stream.conn.sender();
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
    match watch(&activity, &timeouts, response).await {
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

