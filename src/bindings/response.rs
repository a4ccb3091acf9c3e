//! A response handed to Python: its head, the body chunks read with it, and the body read on,
//! sync or async, or closed (drained in the background).

use super::bridge::LoopBridge;
use super::errors::http_error;
use super::run::{block_on_interruptibly, CancelHandle, OnLoop};
use crate::http::{Body, HttpError, Response};
use bytes::Bytes;
use ::http::Version;
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use std::sync::Arc;

/// At most this much of a body already here is handed over with its head, or with one read.
pub(super) const READ_WITH_HEAD: usize = 256 * 1024;

/// A response head and its body. Reading the body to its end gives the connection back;
/// `close()` before the end drains the rest in the background.
#[pyclass(module = "fast_litellm._core", frozen)]
pub struct PyResponse {
    #[pyo3(get)]
    status: u16,
    reason: Bytes,
    version: Version,
    headers: Vec<(Bytes, Bytes)>,
    /// The connection, when the request opened it (the `trace` extension reports it).
    opened: Option<Arc<crate::http::ConnectionInfo>>,
    /// The HTTP/2 stream the response came on.
    #[pyo3(get)]
    stream_id: Option<u32>,
    /// The body chunks read with the head, until the first `ready_chunks` hands them over.
    prefetched: Mutex<Option<Vec<Bytes>>>,
    body: Arc<Mutex<BodySlot>>,
}

/// Where a response's body is: here, out with a read under way, or gone (closed or given
/// back).
// One per response, never moved: boxing the body would cost an allocation per response.
#[allow(clippy::large_enum_variant)]
enum BodySlot {
    Here(Body),
    /// `close` was asked for while a read had it: the read closes it when it is back.
    Reading { close_when_back: bool },
    Gone,
}

/// A body taken out of its slot for one read. Goes back when the read ends, also when the read
/// is cancelled half-way (a chunk is only taken from the connection when it is complete, so
/// nothing is lost): a cancelled read must not cost the connection, whose rest is then drained
/// by `close` like any body closed early.
struct Borrowed {
    slot: Arc<Mutex<BodySlot>>,
    body: Option<Body>,
}

impl Borrowed {
    fn take(slot: &Arc<Mutex<BodySlot>>) -> Option<Borrowed> {
        let mut here = slot.lock();
        match std::mem::replace(&mut *here, BodySlot::Reading { close_when_back: false }) {
            BodySlot::Here(body) => Some(Borrowed { slot: slot.clone(), body: Some(body) }),
            other => {
                *here = other;
                None
            }
        }
    }
}

impl Drop for Borrowed {
    fn drop(&mut self) {
        let Some(body) = self.body.take() else { return };
        let mut slot = self.slot.lock();
        if matches!(*slot, BodySlot::Reading { close_when_back: true }) {
            *slot = BodySlot::Gone;
            drop(slot);
            body.close();
        } else {
            *slot = BodySlot::Here(body);
        }
    }
}

impl PyResponse {
    pub(super) fn new(response: Response, prefetched: Vec<Bytes>) -> PyResponse {
        PyResponse {
            status: response.status,
            reason: response.reason,
            version: response.version,
            headers: response.headers,
            opened: response.opened,
            stream_id: response.stream_id,
            prefetched: Mutex::new(Some(prefetched)),
            body: Arc::new(Mutex::new(BodySlot::Here(response.body))),
        }
    }

    fn is_finished(&self) -> bool {
        match &*self.body.lock() {
            BodySlot::Here(body) => body.is_finished(),
            BodySlot::Reading { .. } => false,
            BodySlot::Gone => true,
        }
    }

    /// Stops reading: see `close` below.
    fn close_body(&self) {
        let mut slot = self.body.lock();
        match std::mem::replace(&mut *slot, BodySlot::Gone) {
            BodySlot::Here(body) => {
                drop(slot);
                body.close();
            }
            BodySlot::Reading { .. } => *slot = BodySlot::Reading { close_when_back: true },
            BodySlot::Gone => {}
        }
    }
}

async fn next_chunk(slot: Arc<Mutex<BodySlot>>) -> Result<Option<Bytes>, HttpError> {
    let Some(mut borrowed) = Borrowed::take(&slot) else {
        return match &*slot.lock() {
            // A read cancelled a moment ago may still hold it: an end of body here would be a lie.
            BodySlot::Reading { .. } => Err(HttpError::Read("another read of this response body is under way".into())),
            _ => Ok(None),
        };
    };
    borrowed.body.as_mut().expect("taken above").next_chunk().await
}

#[pymethods]
impl PyResponse {
    /// `b"HTTP/2"`, `b"HTTP/1.1"` or `b"HTTP/1.0"`.
    #[getter]
    fn http_version<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let v: &[u8] = match self.version {
            Version::HTTP_2 => b"HTTP/2",
            Version::HTTP_10 => b"HTTP/1.0",
            Version::HTTP_09 => b"HTTP/0.9",
            _ => b"HTTP/1.1",
        };
        PyBytes::new(py, v)
    }

    /// Whether the request opened a new connection.
    #[getter]
    fn new_connection(&self) -> bool {
        self.opened.is_some()
    }

    /// The connection the request opened, as the `trace` extension reports it: ((server ip,
    /// port), (client ip, port), TLS as (version, cipher, ALPN protocol) or None); None when
    /// the request reused a connection.
    #[getter]
    #[allow(clippy::type_complexity)]
    fn opened_connection(&self) -> Option<((String, u16), (String, u16), Option<(&'static str, String, Option<String>)>)> {
        let info = self.opened.as_ref()?;
        let address = |a: &std::net::SocketAddr| (a.ip().to_string(), a.port());
        let tls = info.tls.as_ref().map(|t| (t.version, t.cipher.clone(), t.alpn.clone()));
        Some((address(&info.peer), address(&info.local), tls))
    }

    /// The reason phrase as the server sent it.
    #[getter]
    fn reason_phrase<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.reason)
    }

    /// Every field line as (name, value) byte pairs: wire order, names as the server wrote them.
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for (k, v) in &self.headers {
            list.append((PyBytes::new(py, k), PyBytes::new(py, v)))?;
        }
        Ok(list)
    }

    /// The body chunks here now, without waiting, and whether the body ended: first the ones
    /// read with the head (handed over once), then whatever else has arrived. With
    /// `read_chunk` / `read_chunk_async` (wait for the next one) this is the whole way body
    /// bytes reach Python: a reader asks for what is here, and waits only when nothing is,
    /// which skips a hand-over through the runtime whenever data is already there.
    fn ready_chunks<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyList>, bool)> {
        let list = PyList::empty(py);
        if let Some(prefetched) = self.prefetched.lock().take() {
            // The first call, with the head: never polls further, so that a body error comes
            // from reading the body (after these chunks), not from handing the head over.
            for c in prefetched {
                list.append(PyBytes::new(py, &c))?;
            }
            return Ok((list, self.is_finished()));
        }
        let mut slot = self.body.lock();
        let finished = match &mut *slot {
            // Taken by a read under way, or already given back to the pool.
            BodySlot::Reading { .. } | BodySlot::Gone => return Ok((list, false)),
            BodySlot::Here(body) => {
                let (chunks, finished) = body.ready_chunks(READ_WITH_HEAD).map_err(http_error)?;
                for c in chunks {
                    list.append(PyBytes::new(py, &c))?;
                }
                finished
            }
        };
        Ok((list, finished))
    }

    /// The next body chunk (blocking without the GIL), or None at the end.
    fn read_chunk<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let chunk = block_on_interruptibly(py, next_chunk(self.body.clone()))?.map_err(http_error)?;
        Ok(chunk.map(|c| PyBytes::new(py, &c)))
    }

    /// The next body chunk (bytes, or None at the end) is set on `future`: read on the event
    /// loop's thread, at once if it is here, else when the runtime wakes the read through `bridge`.
    fn read_chunk_async(&self, py: Python<'_>, bridge: &LoopBridge, future: Py<PyAny>) -> CancelHandle {
        let body = self.body.clone();
        OnLoop::start(py, bridge, future, async move {
            let chunk = next_chunk(body).await?;
            Ok(Box::new(move |py: Python<'_>| Ok(chunk.map(|c| PyBytes::new(py, &c).into_any().unbind()).into_pyobject(py)?.unbind()))
                as super::bridge::Deliver)
        })
    }

    /// Stops reading: the rest of the body is drained in the background (bounded), then the
    /// connection is reused; past the bounds it is closed. Safe to call twice.
    fn close(&self) {
        self.close_body();
    }
}

impl Drop for PyResponse {
    fn drop(&mut self) {
        self.close_body();
    }
}
