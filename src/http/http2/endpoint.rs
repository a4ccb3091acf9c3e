//! An endpoint's HTTP/2 connections that carry streams now (out of the pool under one lease each),
//! the streams handed out on them, the endpoint's open connections counted by protocol, and what
//! opening them cost.

use super::super::info::ConnectionInfo;
use super::connection::{Http2Conn, Listener};
use crate::pool::{Histogram, HistogramSnapshot};
use http::Version;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// How many streams a connection being opened is expected to take, until its server says
/// (h2's default, and the minimum RFC 9113 recommends servers allow).
const EXPECTED_STREAMS: usize = 100;

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
    pub(crate) opened: Opened,
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

/// The pool's lease of a carried connection, held only to be dropped, which gives the connection
/// back to the pool. Opaque here: the connection's type names this table as its endpoint's
/// companion, so the table does not name it back.
pub(crate) type HeldLease = Box<dyn Send>;

/// A connection out of the pool, carrying streams.
struct Carrier {
    key: u64,
    in_use: usize,
    conn: Http2Conn,
    lease: HeldLease,
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

/// What opening an endpoint's connections cost: TLS handshakes by kind, and the time from the
/// name lookup to a connection ready for requests (successful opens only).
#[derive(Debug, Default)]
pub struct Opened {
    tls_full: AtomicU64,
    tls_resumed: AtomicU64,
    pub time: Histogram,
}

impl Opened {
    /// Counts a TLS handshake, resumed (a session ticket) or full.
    pub(crate) fn tls_handshake(&self, resumed: bool) {
        let kind = if resumed { &self.tls_resumed } else { &self.tls_full };
        kind.fetch_add(1, Relaxed);
    }

    /// (full, resumed) TLS handshakes so far.
    pub fn tls_handshakes(&self) -> (u64, u64) {
        (self.tls_full.load(Relaxed), self.tls_resumed.load(Relaxed))
    }
}

/// What an HTTP/2-capable request does next at an endpoint.
pub(crate) enum Next {
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
    pub(crate) fn count(self: &Arc<Self>, version: Version) -> Counted {
        self.counter(version).fetch_add(1, Relaxed);
        Counted { endpoint_http: self.clone(), version }
    }

    fn counter(&self, version: Version) -> &AtomicUsize {
        match version {
            Version::HTTP_2 => &self.http2_connections,
            _ => &self.http1_connections,
        }
    }

    /// A future that completes at the next change (create it before looking, so that no
    /// change between the look and the wait is missed).
    pub(crate) fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// A stream on the first connection with room; else wait if connections being opened (or
    /// whose limit is not known yet) will likely take this request too; else the pool.
    pub(crate) fn next(self: &Arc<Self>) -> Next {
        let mut lent = self.lent.lock();
        if let Some(carrier) = lent.conns.iter_mut().find(|c| c.conn.room(c.in_use)) {
            carrier.in_use += 1;
            let (key, conn) = (carrier.key, carrier.conn.clone());
            return Next::Stream(Stream { endpoint_http: self.clone(), key, conn, opened: None });
        }
        let unsettled = lent.conns.iter().filter(|c| !c.conn.is_settled() && c.conn.is_open()).count();
        let expected = (lent.opening + unsettled) * (EXPECTED_STREAMS - 1);
        if !lent.speaks_http1 && lent.waiting < expected {
            lent.waiting += 1;
            return Next::Wait(Waiting(self.clone()));
        }
        Next::Pool
    }

    /// Carries a leased HTTP/2 connection out of the pool, with the caller's stream as its
    /// first; `opened` when the caller's request opened it.
    pub(crate) fn carry(self: &Arc<Self>, lease: HeldLease, conn: Http2Conn, opened: Option<Arc<ConnectionInfo>>) -> Stream {
        let key = {
            let mut lent = self.lent.lock();
            let key = lent.next_key;
            lent.next_key += 1;
            lent.speaks_http1 = false;
            lent.conns.push(Carrier { key, in_use: 1, conn: conn.clone(), lease });
            key
        };
        self.changed.notify_waiters();
        Stream { endpoint_http: self.clone(), key, conn, opened }
    }

    /// A connection is being opened by a client that offers HTTP/2: others may wait for it.
    pub(crate) fn opening(self: &Arc<Self>) -> Opening {
        self.lent.lock().opening += 1;
        Opening(self.clone())
    }

    /// The endpoint answered with HTTP/1.1: requests stop waiting for HTTP/2 connections.
    pub(crate) fn speaks_http1(&self) {
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
            (carrier.in_use == 0 && carrier.conn.may_idle()).then(|| lent.conns.swap_remove(i).lease)
        };
        drop(lease);
        self.changed.notify_waiters();
    }

    /// Gives back to the pool the connections kept out of it with no stream while their peer
    /// was checked (see [`Http2Conn::may_idle`]), now that the check is over.
    fn release_idle(&self) {
        let leases: Vec<_> = {
            let mut lent = self.lent.lock();
            let (idle, busy) = std::mem::take(&mut lent.conns).into_iter().partition(|c| c.in_use == 0 && c.conn.may_idle());
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

/// An open connection counted under its protocol, until dropped.
pub(crate) struct Counted {
    endpoint_http: Arc<EndpointHttp>,
    version: Version,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.endpoint_http.counter(self.version).fetch_sub(1, Relaxed);
    }
}

/// A connection being opened; dropping it (opened or failed) lets waiting requests look again.
pub(crate) struct Opening(Arc<EndpointHttp>);

impl Drop for Opening {
    fn drop(&mut self) {
        self.0.lent.lock().opening -= 1;
        self.0.changed.notify_waiters();
    }
}

/// A request waiting for room on a connection being opened.
pub(crate) struct Waiting(Arc<EndpointHttp>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.lent.lock().waiting -= 1;
    }
}

/// One stream of a connection, held while its request and response are in flight.
pub struct Stream {
    endpoint_http: Arc<EndpointHttp>,
    key: u64,
    pub(super) conn: Http2Conn,
    /// The connection, when this stream's request opened it.
    pub opened: Option<Arc<ConnectionInfo>>,
}

impl Stream {
    /// This stream's read timed out after `waited`: check the connection's peer is alive.
    pub(crate) fn read_timed_out(&self, waited: Duration) {
        self.conn.suspect(waited);
    }

    /// Marks the connection as not taking new streams (it broke, or refused this one).
    pub(super) fn close_connection(&self) {
        self.endpoint_http.close_connection(self.key);
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.endpoint_http.end_stream(self.key);
    }
}

impl Listener for EndpointHttp {
    fn room_changed(&self) {
        self.changed.notify_waiters();
    }

    fn check_ended(&self) {
        self.release_idle();
    }
}
