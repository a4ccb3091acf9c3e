//! How a request gets what it is sent on: a pooled connection (opened when the pool hands out a
//! new slot) or a stream of a shared HTTP/2 connection, waiting up to the pool timeout; and what
//! it holds while in flight.

use super::conn::{self, Sender};
use super::http2::{self, EndpointHttp};
use super::{Client, HttpConn, HttpError, RequestParts};
use crate::pool::{CloseReason, EndpointRef, Lease, Pool};
use std::sync::Arc;
use std::time::Duration;

impl Client {
    /// A connection to send on: an HTTP/1.1 connection under a lease, or a stream on an
    /// HTTP/2 connection. Opens one if the pool hands out a new slot.
    pub(super) async fn connection(&self, pool: &Pool<HttpConn>, endpoint_ref: &EndpointRef<HttpConn>, request: &RequestParts) -> Result<Channel, HttpError> {
        let endpoint_http = endpoint_ref.per_endpoint();
        let offers_http2 = self.offers_http2(&request.endpoint);
        let lease = match offers_http2 {
            true => match checkout_http2(pool, endpoint_ref, endpoint_http, request.timeouts.pool).await? {
                Offer::Stream(stream) => return Ok(Channel::Http2(stream)),
                Offer::Lease(lease) => lease,
            },
            false => checkout(pool, endpoint_ref, request.timeouts.pool).await?,
        };
        let mut lease = match carry(endpoint_http, lease, false) {
            Carried::Stream(stream) => return Ok(Channel::Http2(stream)),
            Carried::Not(lease) => lease,
        };
        if lease.conn().is_some() {
            return Ok(Channel::Http1(InFlight::Lease(Some(lease)), false));
        }
        // Others offering HTTP/2 may wait for this connection rather than open their own.
        let _opening = offers_http2.then(|| endpoint_http.opening());
        // Boxed: a connection is opened once and used many times, and the state of opening one
        // (name lookup, dial: 0.8 KB) would otherwise sit in every request's task.
        match Box::pin(conn::connect(&request.endpoint, &self.dialer, endpoint_http, &request.timeouts)).await {
            Ok(conn) => lease.set_conn(conn),
            Err(e) => {
                Lease::discard(lease, CloseReason::ConnectFailed);
                return Err(e);
            }
        }
        match carry(endpoint_http, lease, true) {
            Carried::Stream(stream) => Ok(Channel::Http2(stream)),
            Carried::Not(lease) => {
                if offers_http2 {
                    endpoint_http.speaks_http1();
                }
                Ok(Channel::Http1(InFlight::Lease(Some(lease)), true))
            }
        }
    }
}

/// What [`carry`] made of a lease.
enum Carried {
    /// An HTTP/2 connection, now carrying the caller's stream.
    Stream(http2::Stream),
    /// Not an HTTP/2 connection (HTTP/1.1, or not connected yet): the lease as it was.
    Not(Lease<HttpConn>),
}

/// Takes a leased HTTP/2 connection out of the pool to carry streams, the first the caller's
/// (`new_connection`: the caller's request opened it). Any other lease comes back as it is.
fn carry(endpoint_http: &Arc<EndpointHttp>, lease: Lease<HttpConn>, new_connection: bool) -> Carried {
    let (conn, info) = match lease.conn() {
        Some(HttpConn { sender: Sender::Http2(conn), info, .. }) => (conn.clone(), info.clone()),
        _ => return Carried::Not(lease),
    };
    Carried::Stream(endpoint_http.carry(Box::new(lease), conn, new_connection.then_some(info)))
}

/// What a request is sent on.
pub(super) enum Channel {
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
    endpoint_http: &Arc<EndpointHttp>,
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
        let changed = endpoint_http.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        match endpoint_http.next() {
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
pub(super) enum InFlight {
    Lease(Option<Lease<HttpConn>>),
    Stream(Option<http2::Stream>),
}

impl InFlight {
    pub(super) fn conn(&self) -> Option<&HttpConn> {
        match self {
            InFlight::Lease(lease) => lease.as_ref().and_then(Lease::conn),
            InFlight::Stream(_) => None,
        }
    }
    pub(super) fn conn_mut(&mut self) -> Option<&mut HttpConn> {
        match self {
            InFlight::Lease(lease) => lease.as_mut().and_then(Lease::conn_mut),
            InFlight::Stream(_) => None,
        }
    }
    pub(super) fn discard(&mut self, reason: CloseReason) {
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
    pub(super) fn release(&mut self) {
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
