//! One HTTP/2 connection: the handshake, the task that drives it, and the keep-alive task that
//! checks its peer is alive; what it can take (`room`) as its endpoint's table asks.

use super::super::clock::nanos;
use super::super::error::HttpError;
use bytes::Bytes;
use h2::client::SendRequest;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;

/// Who hears of a connection's changes: its endpoint's table of connections carrying streams
/// (a trait, so that the connection knows nothing of the table that holds it).
pub(crate) trait Listener: Send + Sync + 'static {
    /// The connection may take streams it could not before (its server's settings arrived),
    /// or none any more (it ended).
    fn room_changed(&self);
    /// A check of the peer ended, or the connection closed: connections kept out of the pool
    /// with no stream while they were checked may go back.
    fn check_ended(&self);
}

/// A stream's receive window: how much of one response may be in flight unread. Large enough
/// that a long streaming response is never throttled by window updates on a real link.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
/// The connection's receive window: several streams' worth, so that one slow reader does not
/// hold back the other streams of its connection.
const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

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
struct ConnState {
    /// The connection ended (its task finished, a PING went unanswered, the server sent
    /// GOAWAY): it takes no new stream.
    closed: AtomicBool,
    /// The server's SETTINGS arrived (before it answered our first PING): until then the
    /// stream limit is not known, and the connection carries only the request that opened it.
    settled: AtomicBool,
    /// Asks the keep-alive task for a PING now, answered within `check_within` (nanoseconds):
    /// a stream's read timed out, and the peer may be dead rather than slow.
    check: Notify,
    check_within: AtomicU64,
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
        self.check_within.store(nanos(waited), Relaxed);
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

    /// Whether the connection takes one more stream beside the `in_use` it carries.
    pub(super) fn room(&self, in_use: usize) -> bool {
        self.is_settled()
            && !self.state.suspected.load(Relaxed)
            && in_use < self.send.current_max_send_streams()
            && self.is_open()
    }

    /// Its server's settings arrived: its stream limit is known.
    pub(super) fn is_settled(&self) -> bool {
        self.state.settled.load(Relaxed)
    }

    /// See [`ConnState::may_idle`].
    pub(super) fn may_idle(&self) -> bool {
        self.state.may_idle()
    }

    /// See [`ConnState::suspect`].
    pub(super) fn suspect(&self, waited: Duration) {
        self.state.suspect(waited);
    }

    /// A handle to send requests on (h2's, cloned).
    pub(super) fn sender(&self) -> SendRequest<Bytes> {
        self.send.clone()
    }

    pub(super) fn close(&self) {
        self.state.closed.store(true, Relaxed);
    }

    /// The connection is being dropped (its task aborted): the keep-alive task ends too.
    pub(crate) fn end(&self) {
        self.close();
        self.state.check.notify_one();
    }
}

/// Performs the HTTP/2 handshake on an open socket and starts the tasks that drive the
/// connection and check on its peer. Returns the connection and its driver task.
pub(crate) async fn handshake<T>(
    io: T,
    keep_alive: KeepAlive,
    listener: Arc<dyn Listener>,
) -> Result<(Http2Conn, tokio::task::AbortHandle), HttpError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, mut connection) = h2::client::Builder::new()
        .enable_push(false)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(super::super::head::MAX_HEAD_SIZE as u32)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| HttpError::Connect(format!("HTTP/2 handshake failed: {e}")))?;
    let mut ping_pong = connection.ping_pong().expect("taken once, here");
    let state = Arc::new(ConnState::default());
    let driver = {
        let (state, listener) = (state.clone(), listener.clone());
        tokio::spawn(async move {
            // Errors reach the streams through h2; the connection just ends.
            let _ = connection.await;
            state.closed.store(true, Relaxed);
            state.check.notify_one(); // ends the keep-alive task
            listener.room_changed();
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
                listener.check_ended();
                return;
            }
            state.settled.store(true, Relaxed);
            listener.room_changed();
            loop {
                let within = tokio::select! {
                    _ = sleep_or_never(keep_alive.interval) => keep_alive.timeout,
                    _ = state.check.notified() => Duration::from_nanos(state.check_within.load(Relaxed)).min(keep_alive.timeout),
                };
                if state.closed.load(Relaxed) {
                    listener.check_ended();
                    return;
                }
                let answered = tokio::time::timeout(within, ping_pong.ping(h2::Ping::opaque())).await;
                if !matches!(answered, Ok(Ok(_))) {
                    // A dead peer: close the connection, so its streams fail now rather than
                    // wait without end, and nobody takes a stream on it.
                    state.closed.store(true, Relaxed);
                    driver.abort();
                    listener.check_ended();
                    return;
                }
                // Alive: a slow stream, not a dead peer.
                if state.suspected.swap(false, Relaxed) {
                    listener.check_ended();
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
