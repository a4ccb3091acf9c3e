//! A response body: read chunk by chunk (waiting, or taking what has arrived), given back to
//! the pool at its end, drained in the background when closed early.

use super::activity::{watch, Activity};
use super::error::{HttpError, Received};
use super::{conn, head, http1, http2, inline, runtime, ClientStats, DrainPolicy, Timeouts};
use super::checkout::InFlight;
use crate::pool::CloseReason;
use bytes::Bytes;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// A response body being read. Reading it to the end gives the connection back to the pool;
/// closing it early drains the rest in the background (within the drain policy).
pub struct Body {
    pub(super) incoming: Option<Incoming>,
    /// An error met while collecting chunks that had already arrived: raised after them, at
    /// the next read, so that every byte the server sent reaches the reader first.
    pub(super) pending_error: Option<HttpError>,
    pub(super) in_flight: InFlight,
    pub(super) activity: Arc<Activity>,
    pub(super) read_timeout: Option<Duration>,
    pub(super) after_body: head::AfterBody,
    pub(super) drain: DrainPolicy,
    pub(super) stats: Arc<ClientStats>,
    pub(super) received: Received,
}

/// A response body as the connection delivers it.
pub(super) enum Incoming {
    /// Read from the connection the body holds, as its decoder frames it.
    Http1(http1::Decoder),
    Http2(h2::RecvStream),
}

impl Incoming {
    /// The next non-empty data chunk; `None` at the end of the body (trailers are skipped).
    fn poll_chunk(&mut self, cx: &mut std::task::Context<'_>, in_flight: &mut InFlight, activity: &Activity, received: &mut Received) -> std::task::Poll<Option<Result<Bytes, HttpError>>> {
        use std::task::Poll;
        match self {
            Incoming::Http1(decoder) => match in_flight.conn_mut().map(|conn| &mut conn.sender) {
                Some(conn::Sender::Http1(conn)) => conn.poll_body(decoder, cx, received),
                _ => unreachable!("an HTTP/1.1 body holds its connection until its end"),
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
        let chunk = std::future::poll_fn(|cx| incoming.poll_chunk(cx, in_flight, activity, received));
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

    /// The next chunk (waiting for it) with every chunk that arrived along with it, up to about
    /// `limit` bytes: one hand-over for all that is here. `None` at the end of the body; an
    /// error met after that first chunk waits for the next read, as in `ready_chunks`.
    pub async fn next_chunks(&mut self, limit: usize) -> Result<Option<Vec<Bytes>>, HttpError> {
        let Some(first) = self.next_chunk().await? else { return Ok(None) };
        let size = first.len();
        let mut chunks = vec![first];
        match self.ready_chunks(limit.saturating_sub(size)) {
            Ok((more, _)) => chunks.extend(more),
            Err(error) => self.pending_error = Some(error),
        }
        Ok(Some(chunks))
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
            match inline::poll_now(|cx| incoming.poll_chunk(cx, in_flight, activity, received)) {
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
