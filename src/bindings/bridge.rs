//! Hands results from the runtime's threads to an asyncio event loop without the GIL: results
//! queue up here, and an eventfd the loop watches (`loop.add_reader`) wakes it. The loop then
//! sets them on their futures, many per wake-up under load. Work that runs on the loop's own
//! thread ([`OnLoop`]) is queued here too when the runtime wakes it, to be polled there.

use super::run::OnLoop;
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};
use rustix::event::{eventfd, EventfdFlags};
use rustix::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Weak};

/// A result waiting for its loop: made into Python objects there, with the GIL.
pub type Deliver = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

pub(super) struct Completion {
    pub(super) future: Py<PyAny>,
    pub(super) deliver: Deliver,
}

/// What waits for the loop: a result for a future, or work of the loop's own to poll again.
enum Item {
    Completion(Completion),
    Poll(Arc<OnLoop>),
}

/// What the runtime's threads and the loop share: what waits for the loop, and the descriptor
/// that wakes the loop for it.
struct Mailbox {
    wake: OwnedFd,
    queue: Mutex<Vec<Item>>,
}

/// One per event loop (made and registered by `fast_litellm._transport`).
#[pyclass(module = "fast_litellm._core", frozen)]
pub struct LoopBridge {
    shared: Arc<Mailbox>,
}

/// The sending side of a bridge, for the runtime's threads.
#[derive(Clone)]
pub struct Sender {
    shared: Arc<Mailbox>,
}

impl Sender {
    /// Queues a result for `future`; the first result of a batch wakes the loop.
    pub fn complete(&self, future: Py<PyAny>, deliver: Deliver) {
        self.queue(Item::Completion(Completion { future, deliver }));
    }

    fn queue(&self, item: Item) {
        let was_empty = {
            let mut queue = self.shared.queue.lock();
            queue.push(item);
            queue.len() == 1
        };
        if was_empty {
            // A full counter (never, at 2^64 - 1) would only mean the loop is already woken.
            let _ = rustix::io::write(&self.shared.wake, &1u64.to_ne_bytes());
        }
    }
}

/// A sender that does not keep the bridge: for work on the loop, which a socket may still wake
/// after the loop and its bridge are gone (the waker stays registered until it is replaced).
pub(super) struct WeakSender {
    shared: Weak<Mailbox>,
}

impl WeakSender {
    /// Asks the loop to poll `work` again (the runtime woke it); nothing if the bridge is gone.
    pub(super) fn repoll(&self, work: Arc<OnLoop>) {
        if let Some(shared) = self.shared.upgrade() {
            Sender { shared }.queue(Item::Poll(work));
        }
    }
}

impl LoopBridge {
    pub fn sender(&self) -> Sender {
        Sender { shared: self.shared.clone() }
    }

    pub(super) fn weak_sender(&self) -> WeakSender {
        WeakSender { shared: Arc::downgrade(&self.shared) }
    }
}

#[pymethods]
impl LoopBridge {
    #[new]
    fn new() -> PyResult<Self> {
        let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|e| super::errors::os_error("eventfd", e))?;
        Ok(LoopBridge { shared: Arc::new(Mailbox { wake, queue: Mutex::new(Vec::new()) }) })
    }

    /// The futures of waiting results, for the garbage collector: a loop abandoned unclosed with a
    /// result still here is a cycle (loop, its reader, this bridge, the future, its loop).
    /// Waits for the queue's lock rather than skip it: a collection traverses twice, and a
    /// future seen the first time but not the second could be freed while queued here. Runtime
    /// threads hold the lock only to push (never the GIL), and only a GIL holder takes results
    /// out, so the second look sees at least what the first saw.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for item in self.shared.queue.lock().iter() {
            match item {
                Item::Completion(completion) => visit.call(&completion.future)?,
                Item::Poll(work) => {
                    if let Some(future) = &*work.future() {
                        visit.call(future)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Breaks such a cycle: the waiting results are dropped (their connections go back to the
    /// pool, or close), as when a bridge goes with its closed loop.
    fn __clear__(&self) {
        // Dropped once the lock is released (a result's drop gives its connection back).
        let dropped = std::mem::take(&mut *self.shared.queue.lock());
        drop(dropped);
    }

    /// The file descriptor the loop watches.
    fn fileno(&self) -> i32 {
        self.shared.wake.as_raw_fd()
    }

    /// Called by the loop when the descriptor is readable: sets every queued result. A future
    /// cancelled meanwhile gets nothing; its result is dropped, which returns or closes its
    /// connection. Whatever happens to one result, every other one of the batch is delivered.
    fn deliver_ready(&self, py: Python<'_>) {
        let mut counter = [0u8; 8];
        let _ = rustix::io::read(&self.shared.wake, &mut counter);
        let batch = std::mem::take(&mut *self.shared.queue.lock());
        for item in batch {
            let completion = match item {
                Item::Completion(completion) => completion,
                Item::Poll(work) => match work.repoll(py) {
                    Some(completion) => completion,
                    None => continue,
                },
            };
            let future = completion.future.clone_ref(py);
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| completion.deliver(py))) {
                Ok(Ok(())) => {}
                // Not the waiting task's error (that one is set on its future): report it as
                // Python reports errors it cannot raise anywhere, and go on.
                Ok(Err(err)) => err.write_unraisable(py, None),
                // A panic while making one result must not drop the rest of the batch, nor
                // leave this one's future waiting forever: it gets the error instead.
                Err(_) => {
                    let error = super::errors::task_panicked();
                    if let Err(err) = future.bind(py).call_method1(pyo3::intern!(py, "set_exception"), (error.value(py),)) {
                        err.write_unraisable(py, None);
                    }
                }
            }
        }
    }
}

impl Completion {
    pub(super) fn deliver(self, py: Python<'_>) -> PyResult<()> {
        let future = self.future.bind(py);
        if future.call_method0(pyo3::intern!(py, "cancelled"))?.is_truthy()? {
            return Ok(());
        }
        match (self.deliver)(py) {
            Ok(value) => future.call_method1(pyo3::intern!(py, "set_result"), (value,))?,
            Err(err) => future.call_method1(pyo3::intern!(py, "set_exception"), (err.value(py),))?,
        };
        Ok(())
    }
}
