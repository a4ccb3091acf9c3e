//! The HTTP engine for Python: requests in (already encoded by httpx), a [`PyResponse`] out, sync
//! (GIL released) or async (through a [`LoopBridge`]); prewarm and the engine's counters.

use super::bridge::LoopBridge;
use super::errors::http_error;
use super::response::{PyResponse, READ_WITH_HEAD};
use super::run::{block_on_interruptibly, spawn_to_loop, CancelHandle};
use super::timeout_arg;
use super::registry::NamedPool;
use crate::http::tls::{ConnectSettings, Verify, Versions};
use crate::http::{self, Client, DrainPolicy, HttpError, KeepAlive, RequestParts, Timeouts};
use crate::pool::{ConnId, Endpoint, Scheme};
use bytes::Bytes;
use http::HttpConn;
use ::http::header::{HeaderName, HeaderValue};
use ::http::Method;
use pyo3::prelude::*;
use pyo3::pybacked::{PyBackedBytes, PyBackedStr};
use pyo3::types::{PyDict, PyList, PyTuple};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// A shared engine handle: the pool, and the client with its TLS settings.
#[pyclass(module = "fast_litellm._core", frozen)]
pub struct HttpEngine {
    pool: NamedPool,
    client: Arc<Client>,
}

struct Prepared {
    client: Arc<Client>,
    pool: crate::pool::Pool<HttpConn>,
    request: RequestParts,
    /// A connection the caller holds by id, to send on (the `fast_litellm.connection_id`
    /// request extension).
    held: Option<ConnId>,
}

/// One request as a transport hands it over (`Outgoing` in fast_litellm/_transport.py), read
/// by name: an httpx request's parts, already encoded by httpx.
#[derive(FromPyObject)]
pub struct Outgoing<'py> {
    #[pyo3(attribute)]
    method: PyBackedStr,
    #[pyo3(attribute)]
    scheme: PyBackedStr,
    #[pyo3(attribute)]
    host: PyBackedStr,
    #[pyo3(attribute)]
    port: Option<i64>,
    /// The path and query, as sent.
    #[pyo3(attribute)]
    target: PyBackedBytes,
    /// `(name, value)` pairs of bytes, in order.
    #[pyo3(attribute)]
    headers: Bound<'py, PyList>,
    #[pyo3(attribute)]
    body: PyBackedBytes,
    /// httpx's (connect, read, write, pool) in seconds, None for no limit.
    #[pyo3(attribute)]
    timeouts: (Option<f64>, Option<f64>, Option<f64>, Option<f64>),
    /// The id of a connection the caller holds, to send on.
    #[pyo3(attribute)]
    connection_id: Option<Bound<'py, PyAny>>,
    /// The forward proxy's number (`HttpEngine.register_proxy`).
    #[pyo3(attribute)]
    proxy: Option<u32>,
}

/// An origin as the transports name one: (scheme, host, port).
#[derive(FromPyObject)]
pub struct OriginArg(PyBackedStr, PyBackedStr, Option<i64>);

impl HttpEngine {
    fn prepare(&self, outgoing: Outgoing<'_>) -> PyResult<Prepared> {
        let held = match &outgoing.connection_id {
            // A request's problem, reported as the transport reports one (LocalProtocolError).
            Some(id) => super::id_arg(id).map_err(|e| super::errors::invalid_request(e.to_string()))?,
            None => None,
        };
        let origin = origin(&outgoing.scheme, &outgoing.host, outgoing.port)?;
        let via = match outgoing.proxy {
            None => None,
            Some(id) => Some(crate::http::proxy::via(id).ok_or_else(|| super::errors::invalid_argument("unknown proxy number"))?),
        };
        let method = Method::from_bytes(outgoing.method.as_bytes()).map_err(|_| super::errors::invalid_request("invalid HTTP method"))?;
        let mut parsed = Vec::with_capacity(outgoing.headers.len());
        for item in outgoing.headers.iter() {
            let pair = item.cast::<PyTuple>().map_err(|_| super::errors::invalid_type("headers must be (bytes, bytes) pairs"))?;
            let (name, value) = (pair.get_item(0)?, pair.get_item(1)?);
            let (name, value): (&[u8], &[u8]) = (name.extract()?, value.extract()?);
            let name = HeaderName::from_bytes(name).map_err(|_| super::errors::invalid_request("invalid header name"))?;
            // The value is never echoed: it may be an API key.
            let value = HeaderValue::from_bytes(value)
                .map_err(|_| super::errors::invalid_request(format!("invalid value for header '{name}' (control characters?)")))?;
            parsed.push((name, value));
        }
        let timeouts = outgoing.timeouts;
        Ok(Prepared {
            client: self.client.clone(),
            pool: self.pool.pool().into_owned(),
            request: RequestParts {
                method,
                endpoint: self.client.endpoint(origin, via),
                target: Bytes::copy_from_slice(&outgoing.target),
                headers: parsed,
                body: Bytes::copy_from_slice(&outgoing.body),
                timeouts: Timeouts {
                    connect: timeout_arg(timeouts.0, "connect timeout")?,
                    read: timeout_arg(timeouts.1, "read timeout")?,
                    write: timeout_arg(timeouts.2, "write timeout")?,
                    pool: timeout_arg(timeouts.3, "pool timeout")?,
                },
            },
            held,
        })
    }
}

impl HttpEngine {
    fn prewarm_work(
        &self,
        target: &OriginArg,
        connections: usize,
        timeout: Option<f64>,
    ) -> PyResult<impl Future<Output = (usize, Option<String>)> + Send + 'static> {
        let origin = origin(&target.0, &target.1, target.2)?;
        let connect = timeout_arg(timeout, "timeout")?;
        let (client, pool) = (self.client.clone(), self.pool.pool().into_owned());
        Ok(async move {
            let (ready, error) = client.prewarm(&pool, origin, connections, connect).await;
            (ready, error.map(|e| e.to_string()))
        })
    }
}

/// The origin of a request URL's parts. What no connection can be opened to is a connect
/// error, as httpx reports it.
fn origin(scheme: &str, host: &str, port: Option<i64>) -> PyResult<Endpoint> {
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => {
            return Err(super::errors::unsupported_protocol(other))
        }
    };
    let port = match port {
        None => None,
        Some(p) => Some(u16::try_from(p).map_err(|_| super::errors::cannot_connect(crate::pool::EndpointError::InvalidPort))?),
    };
    Endpoint::from_parts(scheme, host, port).map_err(super::errors::cannot_connect)
}

/// Sends, then takes the body bytes that arrived with the head (one hand-over to Python for a
/// small body). Never waits for more: the head is handed over as soon as it is here.
async fn send_and_prefetch(prepared: Prepared) -> Result<PyResponse, HttpError> {
    let Prepared { client, pool, request, held } = prepared;
    let mut response = match held {
        None => client.send(&pool, request).await?,
        Some(id) => {
            let lease = pool.lend_parked(id).ok_or_else(|| {
                HttpError::LocalProtocol("the connection id is not checked out from this pool, or a request is using it".into())
            })?;
            client.send_held(lease, request).await?
        }
    };
    // With a Content-Length, the body bytes read with the head are all data; chunked framing
    // would make that count promise more data than is there, so those take only what is ready.
    let in_memory = response.content_length.map_or(0, |n| n.min(response.body_bytes_read as u64) as usize);
    let prefetched = response.body.chunks_in_memory(in_memory, READ_WITH_HEAD).await;
    Ok(PyResponse::new(response, prefetched))
}

#[pymethods]
impl HttpEngine {
    /// `pool`: a SimpleConnectionPool, a pool name, or None for the default pool.
    /// `verify`: True, False, or a CA bundle path. `cert`: a PEM path holding certificate and
    /// key, or a (certificate, key) pair of paths.
    /// `http1` / `http2`: the HTTP versions offered, as httpx's arguments of those names.
    /// `local_address`: an IP address sockets are bound to (httpx's argument; "0.0.0.0" keeps
    /// connections to IPv4).
    #[new]
    #[pyo3(signature = (pool=None, verify=None, cert=None, drain=None, versions=(true, false), local_address=None))]
    fn new(
        pool: Option<&Bound<'_, PyAny>>,
        verify: Option<&Bound<'_, PyAny>>,
        cert: Option<&Bound<'_, PyAny>>,
        drain: Option<(u64, f64)>,
        versions: (bool, bool),
        local_address: Option<&str>,
    ) -> PyResult<Self> {
        let pool = match pool {
            None => NamedPool::open_default().map_err(super::errors::settings_error)?,
            Some(p) => {
                if let Ok(handle) = p.cast::<super::PySimpleConnectionPool>() {
                    handle.get().handle.clone()
                } else if let Ok(name) = p.extract::<String>() {
                    super::PySimpleConnectionPool::open(&name, None)?.handle
                } else {
                    return Err(super::errors::wrong_type("pool", "a SimpleConnectionPool, a pool name or None", p));
                }
            }
        };
        let verify = match verify {
            None => Verify::Default,
            Some(v) if v.is_instance_of::<pyo3::types::PyBool>() => {
                if v.extract::<bool>()? { Verify::Default } else { Verify::Off }
            }
            Some(v) => match v.extract::<PathBuf>() {
                Ok(path) => Verify::CaFile(path),
                Err(_) => return Err(super::errors::wrong_type("verify", "True, False or a CA bundle path", v)),
            },
        };
        let client_cert = match cert {
            None => None,
            Some(c) => match c.extract::<PathBuf>() {
                Ok(path) => Some((path.clone(), path)),
                Err(_) => match c.extract::<(PathBuf, PathBuf)>() {
                    Ok(pair) => Some(pair),
                    Err(_) => return Err(super::errors::wrong_type("cert", "a PEM path or a (certificate, key) pair of paths", c)),
                },
            },
        };
        let drain = match drain {
            None => DrainPolicy::DEFAULT,
            Some((max_bytes, seconds)) => DrainPolicy { max_bytes, max_time: timeout_arg(Some(seconds), "drain_timeout")?.unwrap_or_default() },
        };
        let versions = Versions { http1: versions.0, http2: versions.1 };
        let local_address = match local_address {
            None => None,
            Some(a) => Some(a.parse::<std::net::IpAddr>().map_err(|_| super::errors::invalid_argument("local_address must be an IP address"))?),
        };
        let tls = ConnectSettings { verify, client_cert, versions, local_address };
        let client = Client::new(tls, drain, KeepAlive::default())
            .map_err(|e| super::errors::invalid_argument(e.to_string()))?;
        Ok(HttpEngine { pool, client: Arc::new(client) })
    }

    /// Sends a request and returns its response head (and any body already read), blocking
    /// without the GIL. A deliberate mirror of `send_async` (the same request, prepared alike):
    /// the sync and async transports stay twins.
    fn send(&self, py: Python<'_>, request: Outgoing<'_>) -> PyResult<PyResponse> {
        let prepared = self.prepare(request)?;
        block_on_interruptibly(py, send_and_prefetch(prepared))?.map_err(http_error)
    }

    /// Sends a request on the runtime; its response (or error) is set on `future` through
    /// `bridge`. Returns a handle whose `cancel()` stops the request. The async twin of `send`.
    fn send_async(&self, bridge: &LoopBridge, future: Py<PyAny>, request: Outgoing<'_>) -> PyResult<CancelHandle> {
        let prepared = self.prepare(request)?;
        let sender = bridge.sender();
        Ok(spawn_to_loop(sender, future, async move {
            match send_and_prefetch(prepared).await {
                Ok(response) => Ok(Box::new(move |py: Python<'_>| Ok(Py::new(py, response)?.into_any())) as super::bridge::Deliver),
                Err(e) => Err(e),
            }
        }))
    }

    /// The number requests name a forward proxy by (`send(..., proxy=n)`): the same for the same
    /// proxy origin and `Proxy-Authorization` value, which stays in the engine (never in a pool
    /// key, a stat or a message).
    #[staticmethod]
    #[pyo3(signature = (scheme, host, port, authorization=None))]
    fn register_proxy(scheme: &str, host: &str, port: u16, authorization: Option<&[u8]>) -> PyResult<u32> {
        let scheme = match scheme {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => return Err(super::errors::unsupported_protocol(other)),
        };
        let authorization = match authorization {
            None => None,
            Some(value) => Some(HeaderValue::from_bytes(value).map_err(|_| super::errors::invalid_argument("the proxy credentials are not a valid header value"))?),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        Ok(crate::http::proxy::register(crate::http::proxy::Proxy { scheme, host, port, authorization }).id)
    }

    /// Opens up to `connections` connections to the origin ahead of need (see
    /// `Client::prewarm`), each within `timeout` seconds, blocking without the GIL. Returns how
    /// many are open and the first error met (a message naming no path), never raises for an
    /// endpoint that cannot be reached.
    fn prewarm(&self, py: Python<'_>, origin: OriginArg, connections: usize, timeout: Option<f64>) -> PyResult<(usize, Option<String>)> {
        let work = self.prewarm_work(&origin, connections, timeout)?;
        block_on_interruptibly(py, work)
    }

    /// `prewarm` on the runtime; its outcome is set on `future` through `bridge`.
    fn prewarm_async(&self, bridge: &LoopBridge, future: Py<PyAny>, origin: OriginArg, connections: usize, timeout: Option<f64>) -> PyResult<CancelHandle> {
        let work = self.prewarm_work(&origin, connections, timeout)?;
        Ok(spawn_to_loop(bridge.sender(), future, async move {
            let outcome = work.await;
            Ok(Box::new(move |py: Python<'_>| Ok(outcome.into_pyobject(py)?.into_any().unbind())) as super::bridge::Deliver)
        }))
    }

    /// Counters of this engine, by name.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = &self.client.stats;
        let counters = PyDict::new(py);
        counters.set_item("requests", s.requests.load(Relaxed))?;
        counters.set_item("retried", s.retried.load(Relaxed))?;
        counters.set_item("drained", s.drained.load(Relaxed))?;
        counters.set_item("drain_abandoned", s.drain_abandoned.load(Relaxed))?;
        Ok(counters)
    }
}

/// The client the id API opens connections with: the default TLS settings (bundled roots, no
/// client certificate), HTTP/1.1 (the settings its endpoints are keyed under).
fn id_api_client() -> PyResult<&'static Client> {
    static CLIENT: std::sync::OnceLock<Client> = std::sync::OnceLock::new();
    if let Some(client) = CLIENT.get() {
        return Ok(client);
    }
    let drain = DrainPolicy::DEFAULT;
    let client = Client::new(ConnectSettings::default(), drain, KeepAlive::default()).map_err(http_error)?;
    Ok(CLIENT.get_or_init(|| client))
}

/// Opens the connection held under `id` now (DNS, TCP, TLS), unless it is open. False if the
/// id is not checked out from `pool` (or a request is using it); errors are the transports'.
pub(super) fn connect_held(py: Python<'_>, pool: &crate::pool::Pool<HttpConn>, id: ConnId, timeout: Option<Duration>) -> PyResult<bool> {
    let client = id_api_client()?;
    let Some(lease) = pool.lend_parked(id) else { return Ok(false) };
    let timeouts = Timeouts { connect: timeout, ..Timeouts::default() };
    let opened = block_on_interruptibly(py, async move { client.open_held(lease, &timeouts).await.map(drop) })?;
    opened.map_err(http_error)?;
    Ok(true)
}

