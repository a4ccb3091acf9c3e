//! A response handed to Python: its head, the body chunks read with it, and the body read on,
//! sync or async, or closed (drained in the background).

use super::run::OnLoop;
use crate::http::{Body, HttpError, Response};
use bytes::Bytes;
use ::http::Version;
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use std::sync::{Arc, Weak};

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
    /// The body chunks read with the head, until `ready_bytes` hands them over.
    prefetched: Mutex<Option<Vec<Bytes>>>,
    body: Arc<Mutex<BodySlot>>,
    /// An async read under way (`reader.rs`), stopped by `close` or by the next read. Weak: the
    /// read holds its reader's error call, which holds this response (a cycle the garbage
    /// collector could not see).
    reading: Mutex<Weak<OnLoop>>,
}

/// Where a response's body is: here, out with a read under way, or gone (closed or given
/// back).
// One per response, never moved: boxing the body would cost an allocation per response.
#[allow(clippy::large_enum_variant)]
pub(super) enum BodySlot {
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
            reading: Mutex::new(Weak::new()),
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
        self.stop_reading();
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

/// The next chunks of the body in `slot` (waiting for the first): see `Body::next_chunks`.
pub(super) async fn next_chunks(slot: Arc<Mutex<BodySlot>>) -> Result<Option<Vec<Bytes>>, HttpError> {
    let Some(mut borrowed) = Borrowed::take(&slot) else {
        return match &*slot.lock() {
            // A read cancelled a moment ago may still hold it: an end of body here would be a lie.
            BodySlot::Reading { .. } => Err(HttpError::Read("another read of this response body is under way".into())),
            _ => Ok(None),
        };
    };
    borrowed.body.as_mut().expect("taken above").next_chunks(READ_WITH_HEAD).await
}

/// `chunks` as one bytes object: one hand-over, one Python object, one copy.
pub(super) fn joined<'py>(py: Python<'py>, chunks: &[Bytes]) -> PyResult<Bound<'py, PyBytes>> {
    if let [one] = chunks {
        return Ok(PyBytes::new(py, one));
    }
    let size = chunks.iter().map(Bytes::len).sum();
    PyBytes::new_with(py, size, |space| {
        let mut at = 0;
        for chunk in chunks {
            space[at..at + chunk.len()].copy_from_slice(chunk);
            at += chunk.len();
        }
        Ok(())
    })
}

impl PyResponse {
    pub(super) fn body_slot(&self) -> Arc<Mutex<BodySlot>> {
        self.body.clone()
    }

    /// The async read now under way, which `close` (and the next read) stops.
    pub(super) fn set_reading(&self, work: &Arc<OnLoop>) {
        *self.reading.lock() = Arc::downgrade(work);
    }

    /// Stops an async read under way: its work goes, with the body back in its slot (nothing is
    /// taken from the connection but whole chunks, so nothing is lost).
    pub(super) fn stop_reading(&self) {
        let work = std::mem::take(&mut *self.reading.lock()).upgrade();
        if let Some(work) = work {
            work.cancel();
        }
    }
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

    /// The body bytes that came with the head, as one bytes object, and whether the body
    /// ended. Once, when the response is handed over: never polls further, so that a body
    /// error comes from reading the body (after these bytes), not from handing the head over.
    /// The rest is read with a reader (`reader.rs`).
    fn ready_bytes<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyBytes>, bool)> {
        let prefetched = self.prefetched.lock().take().unwrap_or_default();
        Ok((joined(py, &prefetched)?, self.is_finished()))
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
