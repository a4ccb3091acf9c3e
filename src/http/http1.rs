//! HTTP/1.1: one request at a time on a leased connection (hyper's client, driven by whoever
//! holds the connection), and hyper's errors in httpx's classes.

use super::activity::{watch, Activity};
use super::conn;
use super::error::{peer_closed, python_os_message, HttpError, Phase};
use super::checkout::InFlight;
use super::{head, Failure, RequestParts, Sent};
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use std::sync::Arc;

type Head = http::Response<()>;

/// Sends a request on a leased connection and waits for the response head: the head as hyper
/// parsed it, as the server sent it (when it could be captured), the body to read, and the
/// connection's progress. A failure says how far the request got (see [`Sent`]).
pub(super) async fn exchange(
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

/// Maps hyper's errors to httpx's classes.
pub(super) fn classify(e: &hyper::Error, phase: Phase, activity: &Activity) -> HttpError {
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
