//! How Rust work runs for Python: on the caller's thread with the GIL released and Ctrl-C looked
//! for between slices; as a runtime task whose outcome is set on an event loop's future; or on the
//! event loop's own thread, polled there whenever the runtime wakes it ([`OnLoop`]). A
//! [`CancelHandle`] stops a task; an [`OnLoop`] stops when its awaiter gives up, or is stopped.

use super::bridge::{Completion, Deliver, LoopBridge, Sender, WeakSender};
use super::errors::{http_error, task_panicked};
use super::SIGNAL_CHECK_INTERVAL;
use crate::http::{self, HttpError};
use pyo3::prelude::*;
use parking_lot::Mutex;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
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

type LoopWork = Pin<Box<dyn Future<Output = Result<Deliver, HttpError>> + Send>>;

/// Work polled on an event loop's own thread, with the GIL: its sockets and timers are the
/// runtime's, whose threads only wake it, through the loop's bridge, when it can move. A body
/// read that waits for the network thus costs one hand-over between threads (the runtime's
/// wake-up of the loop) where a task costs two (the loop's wake-up of the runtime to start it,
/// and the result's way back).
pub(super) struct OnLoop {
    /// `None` once done or cancelled.
    work: Mutex<Option<LoopWork>>,
    /// The future its outcome goes to; let go of once done or cancelled. A socket may keep a
    /// waker of this work registered after that, until another read replaces it: it then holds
    /// no Python object (the future holds its loop) and not the bridge (nor its eventfd).
    future: Mutex<Option<Py<PyAny>>>,
    sender: WeakSender,
    /// In the bridge's queue already: more wake-ups add nothing.
    queued: AtomicBool,
}

impl OnLoop {
    /// Starts `work` on the calling thread (the loop's): polled at once, and again whenever it
    /// is woken, until it is done; its outcome is then set on `future`. It stops, unpolled, once
    /// `future` is cancelled (its awaiter gave up), or when `cancel` is called.
    pub(super) fn start<F>(py: Python<'_>, bridge: &LoopBridge, future: Py<PyAny>, work: F) -> Arc<OnLoop>
    where
        F: Future<Output = Result<Deliver, HttpError>> + Send + 'static,
    {
        let on_loop = Arc::new(OnLoop {
            work: Mutex::new(Some(Box::pin(work))),
            future: Mutex::new(Some(future)),
            sender: bridge.weak_sender(),
            queued: AtomicBool::new(true),
        });
        if let Some(completion) = on_loop.poll(py) {
            if let Err(err) = completion.deliver(py) {
                err.write_unraisable(py, None);
            }
        }
        on_loop
    }

    /// Only the loop's thread, with the GIL, takes this lock (to poll, cancel, or show the
    /// garbage collector the future): it never waits.
    pub(super) fn future(&self) -> parking_lot::MutexGuard<'_, Option<Py<PyAny>>> {
        self.future.lock()
    }

    /// Polls the work once; its outcome, for the future, when it is done. A panic is the
    /// future's error, as in a task.
    fn poll(self: &Arc<Self>, _gil: Python<'_>) -> Option<Completion> {
        self.queued.store(false, Ordering::Release);
        let mut slot = self.work.lock();
        let work = slot.as_mut()?;
        let waker = Waker::from(self.clone());
        // Timers and sockets made while polling belong to the runtime.
        let _runtime = http::enter();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work.as_mut().poll(&mut Context::from_waker(&waker))));
        let deliver: Deliver = match outcome {
            Ok(Poll::Pending) => return None,
            Ok(Poll::Ready(Ok(deliver))) => deliver,
            Ok(Poll::Ready(Err(e))) => Box::new(move |_py: Python<'_>| Err(http_error(e))),
            Err(_) => Box::new(|_py: Python<'_>| Err(task_panicked())),
        };
        let done = slot.take();
        drop(slot);
        drop(done);
        let future = self.future.lock().take()?;
        Some(Completion { future, deliver })
    }

    /// Polls the work again, as the runtime asked, unless its awaiter gave up meanwhile: then it
    /// stops before it takes anything from the connection (a chunk read for nobody would be
    /// lost to the body's next reader).
    pub(super) fn repoll(self: &Arc<Self>, py: Python<'_>) -> Option<Completion> {
        if self.abandoned(py) {
            self.queued.store(false, Ordering::Release);
            self.cancel();
            return None;
        }
        self.poll(py)
    }

    /// Whether nobody waits for the outcome any more: the future was cancelled (its task was),
    /// or the work is done or cancelled.
    fn abandoned(&self, py: Python<'_>) -> bool {
        // Out of the lock before calling Python: a garbage collection meanwhile takes it.
        let Some(future) = self.future().as_ref().map(|f| f.clone_ref(py)) else { return true };
        future.bind(py).call_method0(pyo3::intern!(py, "cancelled")).and_then(|c| c.is_truthy()).unwrap_or(true)
    }

    pub(super) fn cancel(&self) {
        let work = self.work.lock().take();
        drop(work);
        drop(self.future.lock().take());
    }
}

impl Wake for OnLoop {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.sender.repoll(self.clone());
        }
    }
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

/// Stops an async request (its HTTP/1.1 connection is closed: its state is unknown).
#[pyclass(module = "fast_litellm._core", frozen)]
pub struct CancelHandle {
    task: AbortHandle,
}

#[pymethods]
impl CancelHandle {
    fn cancel(&self) {
        self.task.abort();
    }
}
