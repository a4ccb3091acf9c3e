//! A socket's progress, what httpx's read and write timeouts are measured against: when it last
//! moved, since when a write is stuck; the wrapper that records it, and the wait bounded by it.

use super::clock::{nanos, now};
use super::{HttpError, Timeouts};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// When the socket last made progress, and since when a write has been stuck.
#[derive(Debug, Default)]
pub struct Activity {
    last_progress: AtomicU64,
    write_blocked_since: AtomicU64,
}

const NOT_BLOCKED: u64 = 0;

impl Activity {
    pub fn touch(&self) {
        self.last_progress.store(now(), Relaxed);
    }

    /// The moment a timeout fires if nothing moves, and which timeout it is: the write timeout
    /// while a write is stuck, else the read timeout (also while a write is stuck with no write
    /// timeout: a request never waits without a bound it was given).
    pub fn deadline(&self, timeouts: &Timeouts) -> Option<(u64, HttpError)> {
        let blocked = self.write_blocked_since.load(Relaxed);
        if let (true, Some(t)) = (blocked != NOT_BLOCKED, timeouts.write) {
            return Some((blocked + nanos(t), HttpError::WriteTimeout));
        }
        timeouts.read.map(|t| (self.last_progress.load(Relaxed) + nanos(t), HttpError::ReadTimeout))
    }
}

/// The socket, with its progress recorded in [`Activity`].
pub(super) struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        self.note_write(&result);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note_write(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S> Tracked<S> {
    pub(super) fn new(inner: S, activity: Arc<Activity>) -> Tracked<S> {
        Tracked { inner, activity }
    }

    pub(super) fn get_ref(&self) -> &S {
        &self.inner
    }

    fn note_write<T>(&self, result: &Poll<io::Result<T>>) {
        match result {
            Poll::Pending => {
                if self.activity.write_blocked_since.load(Relaxed) == NOT_BLOCKED {
                    self.activity.write_blocked_since.store(now().max(1), Relaxed);
                }
            }
            Poll::Ready(_) => {
                self.activity.write_blocked_since.store(NOT_BLOCKED, Relaxed);
                self.activity.touch();
            }
        }
    }
}

/// Runs `work` while the read and write timeouts are measured against the socket's progress.
/// Each applies on its own: a write that makes no progress for the write timeout fails even
/// when there is no read timeout, and the other way round.
pub(super) async fn watch<F: Future>(activity: &Activity, timeouts: &Timeouts, work: F) -> Result<F::Output, HttpError> {
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
        let next_write_check = timeouts.write.filter(|_| !write_deadline).map(|w| now + nanos(w).max(1_000_000));
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
