//! How Rust work runs for Python: on the caller's thread with the GIL released and Ctrl-C looked
//! for between slices, or as a runtime task whose outcome is set on an event loop's future (and that
//! a [`CancelHandle`] stops).

use super::bridge::{Deliver, Sender};
use super::errors::{http_error, task_panicked};
use super::SIGNAL_CHECK_INTERVAL;
use crate::http::{self, HttpError};
use pyo3::prelude::*;
use std::future::Future;
use tokio::task::AbortHandle;

/// Runs a future on the calling thread without the GIL (its HTTP/1.1 socket read and written
/// there: see `http::inline`); Ctrl-C (any pending signal) stops it.
pub(super) fn block_on_interruptibly<F>(py: Python<'_>, future: F) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let mut future = std::pin::pin!(future);
    loop {
        match py.detach(|| http::inline::block_on(future.as_mut(), SIGNAL_CHECK_INTERVAL)) {
            Some(out) => return Ok(out),
            None => py.check_signals()?,
        }
    }
}

/// Runs `work` on the runtime and sets its outcome on `future`. A panic in `work` becomes an
/// exception on the future, never a future that waits forever.
pub(super) fn spawn_to_loop<F>(sender: Sender, future: Py<PyAny>, work: F) -> CancelHandle
where
    F: Future<Output = Result<Deliver, HttpError>> + Send + 'static,
{
    let task = http::spawn(async move {
        let deliver: Deliver = match (CatchPanic { inner: Box::pin(work) }).await {
            Ok(Ok(deliver)) => deliver,
            Ok(Err(e)) => Box::new(move |_py: Python<'_>| Err(http_error(e))),
            Err(()) => Box::new(|_py: Python<'_>| Err(task_panicked())),
        };
        sender.complete(future, deliver);
    });
    CancelHandle { task: task.abort_handle() }
}

/// A future that turns a panic while polling its inner future into `Err(())`.
struct CatchPanic<F> {
    inner: std::pin::Pin<Box<F>>,
}

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, ()>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let inner = self.inner.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(std::task::Poll::Ready(out)) => std::task::Poll::Ready(Ok(out)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(_) => std::task::Poll::Ready(Err(())),
        }
    }
}

/// Stops an async request (its HTTP/1.1 connection is closed: its state is unknown) or body
/// read (the body stays readable; closing it drains the rest).
#[pyclass(module = "fast_litellm._core", frozen)]
pub struct CancelHandle {
    pub(super) task: AbortHandle,
}

#[pymethods]
impl CancelHandle {
    fn cancel(&self) {
        self.task.abort();
    }
}
