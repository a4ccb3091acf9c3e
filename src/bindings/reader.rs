//! A response body as Python reads it: an iterator (sync) or an async iterator over its bytes,
//! each step handing over everything that has arrived as one bytes object. The async one runs
//! its reads on the event loop's thread ([`OnLoop`]) and steps without any Python code of ours:
//! an event stream's event costs the loop one future, set when the event arrives.

use super::bridge::{Deliver, LoopBridge};
use super::errors::http_error;
use super::response::{joined, next_chunks, PyResponse};
use super::run::{block_on_interruptibly, OnLoop};
use crate::http::HttpError;
use parking_lot::Mutex;
use pyo3::exceptions::PyStopAsyncIteration;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use pyo3::{PyTraverseError, PyVisit};

/// The library's exception for an engine error, from the reader's `on_error` (which knows the
/// library and the request); other errors as they are.
fn raised(py: Python<'_>, on_error: &Py<PyAny>, error: HttpError) -> PyErr {
    let engine = http_error(error);
    match on_error.call1(py, (engine.value(py),)) {
        Ok(mapped) => PyErr::from_value(mapped.into_bound(py)),
        Err(failed) => failed,
    }
}

/// Iterates a response body: `bytes` as they arrive (the ones read with the head first), each
/// everything that was here; blocks without the GIL while nothing is, and Ctrl-C stops it.
#[pyclass(module = "fast_litellm._core", frozen)]
pub struct BodyReader {
    response: Py<PyResponse>,
    first: Mutex<Option<Py<PyBytes>>>,
    on_error: Py<PyAny>,
}

#[pymethods]
impl BodyReader {
    #[new]
    fn new(response: Py<PyResponse>, first: Bound<'_, PyBytes>, on_error: Py<PyAny>) -> Self {
        let first = (!first.as_bytes().is_empty()).then(|| first.unbind());
        BodyReader { response, first: Mutex::new(first), on_error }
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        if let Some(first) = self.first.lock().take() {
            return Ok(Some(first.into_bound(py)));
        }
        // One look at the connection per step: bytes already here come back without waiting.
        let chunks = match block_on_interruptibly(py, next_chunks(self.response.get().body_slot()))? {
            Ok(Some(chunks)) => chunks,
            Ok(None) => return Ok(None),
            Err(error) => return Err(raised(py, &self.on_error, error)),
        };
        joined(py, &chunks).map(Some)
    }
}

/// What an async reader calls: cleared by the garbage collector to break a cycle through an
/// abandoned loop (the loop, a task awaiting this reader's future, the task's frame, this reader,
/// which also holds the loop's bridge).
struct Calls {
    /// Makes the event loop's future (asyncio's `loop.create_future`, or trio's parked task).
    new_future: Py<PyAny>,
    on_error: Py<PyAny>,
}

/// The async twin of [`BodyReader`]: each `__anext__` is a future, done at once when bytes are
/// here, else set when they arrive (through the loop's `bridge`). A task that gives up waiting
/// (its future cancelled) leaves the body as it was: the read stops before it takes anything.
#[pyclass(module = "fast_litellm._core", frozen)]
pub struct AsyncBodyReader {
    response: Py<PyResponse>,
    bridge: Py<LoopBridge>,
    first: Mutex<Option<Py<PyBytes>>>,
    calls: Mutex<Option<Calls>>,
}

#[pymethods]
impl AsyncBodyReader {
    #[new]
    fn new(response: Py<PyResponse>, first: Bound<'_, PyBytes>, bridge: Py<LoopBridge>, new_future: Py<PyAny>, on_error: Py<PyAny>) -> Self {
        let first = (!first.as_bytes().is_empty()).then(|| first.unbind());
        AsyncBodyReader { response, bridge, first: Mutex::new(first), calls: Mutex::new(Some(Calls { new_future, on_error })) }
    }

    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let (new_future, on_error) = match &*self.calls.lock() {
            Some(calls) => (calls.new_future.clone_ref(py), calls.on_error.clone_ref(py)),
            None => return Err(PyStopAsyncIteration::new_err(())),
        };
        let future = new_future.call0(py)?;
        if let Some(first) = self.first.lock().take() {
            future.call_method1(py, pyo3::intern!(py, "set_result"), (first,))?;
            return Ok(future);
        }
        let response = self.response.get();
        // A read whose awaiter gave up stops here, leaving the body as it was.
        response.stop_reading();
        // Polled at once: bytes already here set the future before it is returned (one look
        // at the connection per step, whether or not it must wait).
        let slot = response.body_slot();
        let work = OnLoop::start(py, self.bridge.get(), future.clone_ref(py), async move {
            let outcome = next_chunks(slot).await;
            Ok(Box::new(move |py: Python<'_>| match outcome {
                Ok(Some(chunks)) => Ok(joined(py, &chunks)?.into_any().unbind()),
                Ok(None) => Err(PyStopAsyncIteration::new_err(())),
                Err(error) => Err(raised(py, &on_error, error)),
            }) as Deliver)
        });
        response.set_reading(&work);
        Ok(future)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.bridge)?;
        if let Some(calls) = &*self.calls.lock() {
            visit.call(&calls.new_future)?;
            visit.call(&calls.on_error)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        let calls = self.calls.lock().take();
        drop(calls);
    }
}
