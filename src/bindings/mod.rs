//! PyO3 bindings: argument conversion, error mapping and GIL handling. No pool logic here.

mod bridge;
mod engine;
mod errors;
mod reader;
mod registry;
mod response;
mod run;

use crate::http::EndpointHttpStats;
use crate::pool::{HistogramSnapshot, BUCKET_BOUNDS};
use crate::pool::{seconds, ConnId, Endpoint, Lease, Pool, EndpointRef, Settings};
use errors::{endpoint_error, pool_timeout, settings_error, wrong_type};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use crate::http::HttpConn;
use registry::NamedPool;
use once_cell::sync::OnceCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a blocked `acquire` sleeps without the GIL before it checks for signals
/// (so Ctrl-C interrupts a wait).
/// How often a call waiting without the GIL looks for a pending signal (Ctrl-C).
pub(crate) const SIGNAL_CHECK_INTERVAL: Duration = Duration::from_millis(100);
const MAX_POOL_NAME_LEN: usize = 256;

fn endpoint_arg(pool: &Pool<HttpConn>, obj: &Bound<'_, PyAny>) -> PyResult<EndpointRef<HttpConn>> {
    let s = obj.cast::<PyString>().map_err(|_| wrong_type("endpoint", "a str", obj))?;
    pool.endpoint_ref_str(s.to_str()?).map_err(endpoint_error)
}

/// `None` (what `get_connection` returns when the pool is full) is accepted and names nothing,
/// so the documented `finally: pool.return_connection(conn_id)` never raises.
fn id_arg(obj: &Bound<'_, PyAny>) -> PyResult<Option<ConnId>> {
    if obj.is_none() {
        return Ok(None);
    }
    let s = obj.cast::<PyString>().map_err(|_| wrong_type("connection id", "a str", obj))?;
    ConnId::parse(s.to_str()?).map(Some).ok_or_else(|| {
        errors::invalid_argument("connection id is not a UUID string like the ones get_connection returns")
    })
}

fn id_str<'py>(py: Python<'py>, id: ConnId) -> Bound<'py, PyString> {
    PyString::new(py, id.encode(&mut [0u8; 36]))
}

/// A timeout in seconds from Python; `None` waits without limit. `what` names it in the error.
pub(crate) fn timeout_arg(timeout: Option<f64>, what: &str) -> PyResult<Option<Duration>> {
    match timeout {
        Some(t) if t.is_nan() || t < 0.0 => Err(errors::invalid_argument(format!(
            "{what} must be a non-negative number of seconds, or None to wait without limit"
        ))),
        Some(t) => Ok(Some(Duration::from_secs_f64(t.min(1e9)))),
        None => Ok(None),
    }
}

fn positive_int(key: &str, value: &Bound<'_, PyAny>) -> PyResult<usize> {
    if value.is_instance_of::<pyo3::types::PyBool>() {
        return Err(wrong_type(key, "an int", value));
    }
    let n: i64 = value.extract().map_err(|_| wrong_type(key, "an int", value))?;
    usize::try_from(n)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| errors::invalid_argument(format!("invalid pool setting {key}: must be at least 1")))
}

fn optional_seconds(key: &str, value: &Bound<'_, PyAny>) -> PyResult<Option<Duration>> {
    if value.is_none() {
        return Ok(None);
    }
    if value.is_instance_of::<pyo3::types::PyBool>() {
        return Err(wrong_type(key, "a number of seconds or None", value));
    }
    let secs: f64 = value.extract().map_err(|_| wrong_type(key, "a number of seconds or None", value))?;
    seconds(key, Some(secs)).map_err(settings_error)
}

const SETTING_NAMES: &str = "max_connections, max_connections_per_endpoint, idle_timeout, max_lifetime, reaper_interval";

/// `base` with the keyword arguments applied; unknown names and bad values raise.
fn apply_settings(base: Settings, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Settings> {
    let mut s = base;
    let Some(kwargs) = kwargs else { return Ok(s) };
    for (key, value) in kwargs.iter() {
        let key: String = key.extract()?;
        match key.as_str() {
            "max_connections" => s.max_connections = positive_int(&key, &value)?,
            "max_connections_per_endpoint" => s.max_connections_per_endpoint = positive_int(&key, &value)?,
            "idle_timeout" => s.idle_timeout = optional_seconds(&key, &value)?,
            "max_lifetime" => s.max_lifetime = optional_seconds(&key, &value)?,
            "reaper_interval" => s.reaper_interval = optional_seconds(&key, &value)?,
            _ => {
                return Err(errors::invalid_type(format!(
                    "unknown pool setting '{key}' (known: {SETTING_NAMES})"
                )))
            }
        }
    }
    s.validate().map_err(settings_error)?;
    Ok(s)
}

fn duration_obj(py: Python<'_>, d: Option<Duration>) -> PyResult<Bound<'_, PyAny>> {
    Ok(d.map(|d| d.as_secs_f64()).into_pyobject(py)?.into_any())
}

fn settings_dict<'py>(py: Python<'py>, s: &Settings) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("max_connections", s.max_connections)?;
    d.set_item("max_connections_per_endpoint", s.max_connections_per_endpoint)?;
    d.set_item("idle_timeout", duration_obj(py, s.idle_timeout)?)?;
    d.set_item("max_lifetime", duration_obj(py, s.max_lifetime)?)?;
    d.set_item("reaper_interval", duration_obj(py, s.reaper_interval)?)?;
    Ok(d)
}

fn stats_dict<'py>(py: Python<'py>, name: &str, pool: &Pool<HttpConn>) -> PyResult<Bound<'py, PyDict>> {
    let (s, settings) = (&pool.stats(), &pool.settings());
    let engine: HashMap<String, EndpointHttpStats> = pool.per_endpoint(|endpoint_http| endpoint_http.stats()).into_iter().collect();
    let d = PyDict::new(py);
    d.set_item("pool_name", name)?;
    d.set_item("total_connections", s.total())?;
    d.set_item("active_connections", s.active)?;
    d.set_item("idle_connections", s.idle)?;
    d.set_item("waiting_requests", s.waiting)?;
    d.set_item("settings", settings_dict(py, settings)?)?;
    let c = &s.counters;
    d.set_item("connections_created", c.created)?;
    d.set_item("connections_reused", c.reused)?;
    let closed = PyDict::new(py);
    for (reason, n) in c.closed {
        closed.set_item(reason.as_str(), n)?;
    }
    d.set_item("connections_closed", closed)?;
    d.set_item("waits", c.waited)?;
    d.set_item("wait_timeouts", c.wait_timeouts)?;
    d.set_item("ignored_returns", c.ignored_returns)?;
    d.set_item("wait_seconds", histogram_dict(py, &c.wait_time)?)?;
    let endpoints = PyDict::new(py);
    for (origin, counts) in &s.endpoints {
        let e = PyDict::new(py);
        e.set_item("active", counts.active)?;
        e.set_item("idle", counts.idle)?;
        e.set_item("total", counts.total())?;
        let http = engine.get(origin).copied().unwrap_or_default();
        e.set_item("http1_connections", http.http1_connections)?;
        e.set_item("http2_connections", http.http2_connections)?;
        e.set_item("streams_in_use", http.streams_in_use)?;
        e.set_item("tls_handshakes_full", http.tls_handshakes_full)?;
        e.set_item("tls_handshakes_resumed", http.tls_handshakes_resumed)?;
        e.set_item("connect_seconds", histogram_dict(py, &http.connect_time)?)?;
        endpoints.set_item(origin, e)?;
    }
    d.set_item("endpoints", endpoints)?;
    Ok(d)
}

/// A histogram as Prometheus reads one: cumulative counts per upper bound (the last bound is
/// infinity), their sum and count.
fn histogram_dict<'py>(py: Python<'py>, h: &HistogramSnapshot) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let mut cumulative = 0;
    let buckets = PyList::empty(py);
    for (i, n) in h.counts.iter().enumerate() {
        cumulative += n;
        let bound = BUCKET_BOUNDS.get(i).copied().unwrap_or(f64::INFINITY);
        buckets.append((bound, cumulative))?;
    }
    d.set_item("buckets", buckets)?;
    d.set_item("sum", h.sum_seconds)?;
    d.set_item("count", cumulative)?;
    Ok(d)
}

/// Takes a connection, waiting (GIL released, first come first served) up to `timeout`.
fn acquire_lease(py: Python<'_>, pool: &Pool<HttpConn>, endpoint_ref: &EndpointRef<HttpConn>, timeout: Option<Duration>) -> PyResult<Lease<HttpConn>> {
    let mut ticket = match pool.get_or_queue(endpoint_ref) {
        Ok(lease) => return hand_over(py, lease),
        Err(ticket) => ticket,
    };
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let slice_end = Instant::now() + SIGNAL_CHECK_INTERVAL;
        let until = deadline.map_or(slice_end, |d| d.min(slice_end));
        if let Some(lease) = py.detach(|| ticket.wait_until(Some(until))) {
            return hand_over(py, lease);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            pool.record_wait_timeout();
            return Err(pool_timeout(endpoint_ref.endpoint()));
        }
        // KeyboardInterrupt and friends end the wait; dropping the ticket leaves the queue.
        py.check_signals()?;
    }
}

/// The last step before a lease becomes an id in the caller's hands. A signal that arrived
/// meanwhile (Ctrl-C) would otherwise raise right after this call returns, and the id would be
/// lost with the connection checked out for good: its handler runs here instead, and if it
/// raises, the connection goes back.
fn hand_over<T>(py: Python<'_>, held: T) -> PyResult<T> {
    py.check_signals()?;
    Ok(held)
}

/// A connection pool shared by every handle with the same name.
///
/// Connections are named by UUID strings. `get_connection` never blocks; `acquire` waits first
/// come, first served; `connection()` is a context manager.
#[pyclass(module = "fast_litellm._core", name = "SimpleConnectionPool", frozen)]
pub struct PySimpleConnectionPool {
    pub(crate) handle: NamedPool,
}

impl PySimpleConnectionPool {
    /// The pool of that name, created with `settings` if new; an existing pool's settings must
    /// not conflict with them.
    pub(crate) fn open(name: &str, settings: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        if name.is_empty() || name.len() > MAX_POOL_NAME_LEN || name.chars().any(char::is_control) {
            return Err(errors::invalid_argument(format!(
                "pool_name must be 1 to {MAX_POOL_NAME_LEN} characters without control characters"
            )));
        }
        let base = if name == registry::DEFAULT_POOL { registry::default_settings() } else { Ok(Settings::default()) };
        let base = base.map_err(settings_error)?;
        let wanted = apply_settings(base, settings)?;
        let (handle, created) = NamedPool::open(name, || Ok(wanted.clone())).map_err(settings_error)?;
        if !created && settings.is_some_and(|s| !s.is_empty()) {
            let current = handle.pool().settings();
            let requested = apply_settings(current.clone(), settings)?;
            if requested != current {
                return Err(errors::invalid_argument(format!(
                    "pool '{name}' already exists with other settings; change them with configure(...)"
                )));
            }
        }
        Ok(PySimpleConnectionPool { handle })
    }

    fn get<'py>(&self, py: Python<'py>, endpoint: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyString>>> {
        let pool = self.handle.pool();
        let endpoint = endpoint.cast::<PyString>().map_err(|_| wrong_type("endpoint", "a str", endpoint))?;
        let id = pool.with_endpoint_ref_str(endpoint.to_str()?, |endpoint_ref| pool.try_get_id(endpoint_ref).ok()).map_err(endpoint_error)?;
        let Some(id) = id else { return Ok(None) };
        if let Err(interrupted) = hand_over(py, ()) {
            pool.return_by_id(id);
            return Err(interrupted);
        }
        Ok(Some(id_str(py, id)))
    }
}

#[pymethods]
impl PySimpleConnectionPool {
    /// Opens the pool named `pool_name`, creating it with `settings` if it does not exist yet.
    /// Settings that differ from an existing pool's raise ValueError: change them with
    /// `configure()`.
    #[new]
    #[pyo3(signature = (pool_name = None, **settings))]
    fn new(pool_name: Option<&Bound<'_, PyAny>>, settings: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let name = match pool_name {
            None => registry::DEFAULT_POOL.to_owned(),
            Some(n) => n.cast::<PyString>().map_err(|_| wrong_type("pool_name", "a str", n))?.to_str()?.to_owned(),
        };
        PySimpleConnectionPool::open(&name, settings)
    }

    /// The pool's name.
    #[getter]
    fn pool_name(&self) -> &str {
        &self.handle.name
    }

    /// The current settings, as a dict.
    #[getter]
    fn settings<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        settings_dict(py, &self.handle.pool().settings())
    }

    /// Changes settings in place (the same keywords as the constructor).
    #[pyo3(signature = (**settings))]
    fn configure(&self, settings: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        let pool = self.handle.pool();
        let new = apply_settings(pool.settings(), settings)?;
        pool.configure(new).map_err(settings_error)
    }

    /// A connection id for `endpoint`, or None when the limits are reached. Never blocks.
    fn get_connection<'py>(&self, py: Python<'py>, endpoint: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyString>>> {
        self.get(py, endpoint)
    }

    /// A connection id for `endpoint`, waiting first come first served (without the GIL) until
    /// one is free. Raises PoolTimeout (a TimeoutError) after `timeout` seconds.
    #[pyo3(signature = (endpoint, timeout = None))]
    fn acquire<'py>(&self, py: Python<'py>, endpoint: &Bound<'py, PyAny>, timeout: Option<f64>) -> PyResult<Bound<'py, PyString>> {
        let timeout = timeout_arg(timeout, "timeout")?;
        let pool = self.handle.pool();
        let endpoint_ref = endpoint_arg(&pool, endpoint)?;
        let lease = acquire_lease(py, &pool, &endpoint_ref, timeout)?;
        Ok(id_str(py, pool.check_out_by_id(lease)))
    }

    /// `with pool.connection(endpoint) as conn_id:` acquires (waiting up to `timeout`), returns
    /// the connection on normal exit, and removes it when the block raises.
    #[pyo3(signature = (endpoint, timeout = None))]
    fn connection(&self, endpoint: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<ConnectionContext> {
        Ok(ConnectionContext {
            endpoint: endpoint_arg(&self.handle.pool(), endpoint)?.endpoint().clone(),
            handle: self.handle.clone(),
            timeout: timeout_arg(timeout, "timeout")?,
            state: parking_lot::Mutex::new(ContextState::Ready),
        })
    }

    /// Gives a connection back. Returns False, changing nothing, for None, an unknown id, an id
    /// already returned, or a removed one. A malformed id raises ValueError.
    fn return_connection(&self, connection_id: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(match id_arg(connection_id)? {
            Some(id) => self.handle.pool().return_by_id(id),
            None => false,
        })
    }

    /// Closes a connection (checked out or idle). False if there is no such connection.
    fn remove_connection(&self, connection_id: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(match id_arg(connection_id)? {
            Some(id) => self.handle.pool().remove_by_id(id),
            None => false,
        })
    }

    /// True if the id names an open, unexpired connection: its socket was opened (`connect()`,
    /// or a request sent on it) and the peer has not closed it. False for one never opened, and
    /// for unknown, removed, expired or broken ones.
    fn health_check(&self, connection_id: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(match id_arg(connection_id)? {
            Some(id) => {
                let pool = self.handle.pool();
                pool.is_connected(id) && pool.is_healthy(id)
            }
            None => false,
        })
    }

    /// Opens the connection checked out under this id now (DNS, TCP, TLS with the default
    /// settings), within `timeout` seconds; one already open is left as it is. False if the id
    /// is not checked out (or a request is using it); raises ConnectError / ConnectTimeout.
    #[pyo3(signature = (connection_id, timeout = None))]
    fn connect(&self, py: Python<'_>, connection_id: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<bool> {
        let timeout = timeout_arg(timeout, "timeout")?;
        match id_arg(connection_id)? {
            Some(id) => engine::connect_held(py, &self.handle.pool(), id, timeout),
            None => Ok(false),
        }
    }

    /// Closes idle connections past idle_timeout or max_lifetime (and broken ones); returns how
    /// many. Active connections are never closed.
    fn cleanup(&self) -> usize {
        self.handle.pool().cleanup()
    }

    /// Counts, limits and counters; `total_connections == active_connections + idle_connections`.
    fn get_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        stats_dict(py, &self.handle.name, &self.handle.pool())
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let s = self.handle.pool().stats();
        let name = PyString::new(py, &self.handle.name).repr()?;
        Ok(format!("SimpleConnectionPool({name}, active={}, idle={}, waiting={})", s.active, s.idle, s.waiting))
    }
}

/// The context manager returned by `SimpleConnectionPool.connection()`.
///
/// It keeps the pool's name, not the pool, so that one made before `os.fork()` uses the
/// child's own pool in the child.
#[pyclass(module = "fast_litellm._core", frozen)]
pub struct ConnectionContext {
    handle: NamedPool,
    endpoint: Endpoint,
    timeout: Option<Duration>,
    state: parking_lot::Mutex<ContextState>,
}

/// Where a connection context is. `Entering` is claimed under the lock before the (blocking,
/// GIL-free) acquire, so a second thread entering the same context is refused, never let
/// through to overwrite the first one's id.
enum ContextState {
    Ready,
    Entering,
    Entered(ConnId),
}

impl ConnectionContext {
    fn acquire_id(&self, py: Python<'_>) -> PyResult<ConnId> {
        let pool = self.handle.pool();
        let lease = acquire_lease(py, &pool, &pool.endpoint_ref(&self.endpoint), self.timeout)?;
        Ok(pool.check_out_by_id(lease))
    }
}

#[pymethods]
impl ConnectionContext {
    fn __enter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyString>> {
        {
            let mut state = self.state.lock();
            if !matches!(*state, ContextState::Ready) {
                return Err(errors::invalid_argument("this connection context is already entered"));
            }
            *state = ContextState::Entering;
        }
        let acquired = self.acquire_id(py);
        let mut state = self.state.lock();
        match acquired {
            Ok(id) => {
                *state = ContextState::Entered(id);
                Ok(id_str(py, id))
            }
            Err(e) => {
                *state = ContextState::Ready;
                Err(e)
            }
        }
    }

    #[pyo3(signature = (*exc))]
    fn __exit__(&self, exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        let raised = exc.get_item(0).is_ok_and(|t| !t.is_none());
        // Only an entered context gives its connection back; one another thread is still
        // entering is left to that thread.
        let entered = {
            let mut state = self.state.lock();
            match *state {
                ContextState::Entered(id) => {
                    *state = ContextState::Ready;
                    Some(id)
                }
                _ => None,
            }
        };
        match entered {
            Some(id) if raised => {
                self.handle.pool().remove_by_id(id);
            }
            Some(id) => {
                self.handle.pool().return_by_id(id);
            }
            None => {}
        }
        Ok(false)
    }
}

impl Drop for ConnectionContext {
    /// Entered and never exited (an exception between `__enter__` and the block): the
    /// connection's use is unknown, so it is closed rather than leaked.
    fn drop(&mut self) {
        if let ContextState::Entered(id) = *self.state.get_mut() {
            self.handle.pool().remove_by_id(id);
        }
    }
}

static DEFAULT_HANDLE: OnceCell<PySimpleConnectionPool> = OnceCell::new();

/// The handle the module-level functions use (the pool named "default").
fn default_handle() -> PyResult<&'static PySimpleConnectionPool> {
    DEFAULT_HANDLE.get_or_try_init(|| {
        NamedPool::open_default().map(|handle| PySimpleConnectionPool { handle }).map_err(settings_error)
    })
}

/// Default pool: a connection id for `endpoint`, or None when the limits are reached.
#[pyfunction]
fn get_connection<'py>(py: Python<'py>, endpoint: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyString>>> {
    default_handle()?.get(py, endpoint)
}

/// Default pool: gives a connection back (False if it was not checked out).
#[pyfunction]
fn return_connection(connection_id: &Bound<'_, PyAny>) -> PyResult<bool> {
    default_handle()?.return_connection(connection_id)
}

/// Default pool: closes a connection (False if there is no such connection).
#[pyfunction]
fn remove_connection(connection_id: &Bound<'_, PyAny>) -> PyResult<bool> {
    default_handle()?.remove_connection(connection_id)
}

/// Default pool: True if the id names a live, unexpired connection.
#[pyfunction]
fn health_check_connection(connection_id: &Bound<'_, PyAny>) -> PyResult<bool> {
    default_handle()?.health_check(connection_id)
}

/// Default pool: opens the connection checked out under this id now.
#[pyfunction]
#[pyo3(signature = (connection_id, timeout = None))]
fn connect_connection(py: Python<'_>, connection_id: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<bool> {
    default_handle()?.connect(py, connection_id, timeout)
}

/// Default pool: closes expired idle connections; returns how many.
#[pyfunction]
fn cleanup_expired_connections() -> PyResult<usize> {
    Ok(default_handle()?.cleanup())
}

/// Default pool: its statistics dict.
#[pyfunction]
fn get_connection_pool_stats(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    default_handle()?.get_stats(py)
}

/// Sets how long name lookups are kept (seconds; 0 or None: not kept). Process-wide, like the
/// lookup itself.
#[pyfunction]
fn configure_dns_cache(ttl: Option<f64>) -> PyResult<()> {
    let ttl = timeout_arg(ttl, "ttl")?.filter(|t| !t.is_zero());
    crate::http::dns::set_ttl(ttl);
    Ok(())
}

/// The DNS cache's settings and counters: ttl (seconds or None) and lookups made.
#[pyfunction]
fn get_dns_cache_stats(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("ttl", crate::http::dns::ttl().map(|t| t.as_secs_f64()))?;
    d.set_item("lookups", crate::http::dns::lookups())?;
    Ok(d)
}

/// The names of the pools made so far in this process (the default pool once used).
#[pyfunction]
fn pool_names() -> Vec<String> {
    registry::names()
}

/// Called in the child by `os.register_at_fork`: every pool starts empty.
#[pyfunction]
fn reset_after_fork() {
    registry::reset_after_fork();
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<PySimpleConnectionPool>()?;
    m.add_class::<ConnectionContext>()?;
    errors::add_exceptions(m)?;
    m.add_class::<bridge::LoopBridge>()?;
    m.add_class::<engine::HttpEngine>()?;
    // The transports' defaults for draining a body closed early (`DrainPolicy::DEFAULT`).
    m.add("DRAIN_BYTES", crate::http::DrainPolicy::DEFAULT.max_bytes)?;
    m.add("DRAIN_SECONDS", crate::http::DrainPolicy::DEFAULT.max_time.as_secs_f64())?;
    m.add_class::<response::PyResponse>()?;
    m.add_class::<reader::BodyReader>()?;
    m.add_class::<reader::AsyncBodyReader>()?;
    m.add_class::<run::CancelHandle>()?;
    m.add_function(wrap_pyfunction!(get_connection, m)?)?;
    m.add_function(wrap_pyfunction!(return_connection, m)?)?;
    m.add_function(wrap_pyfunction!(remove_connection, m)?)?;
    m.add_function(wrap_pyfunction!(health_check_connection, m)?)?;
    m.add_function(wrap_pyfunction!(cleanup_expired_connections, m)?)?;
    m.add_function(wrap_pyfunction!(get_connection_pool_stats, m)?)?;
    m.add_function(wrap_pyfunction!(connect_connection, m)?)?;
    m.add_function(wrap_pyfunction!(pool_names, m)?)?;
    m.add_function(wrap_pyfunction!(configure_dns_cache, m)?)?;
    m.add_function(wrap_pyfunction!(get_dns_cache_stats, m)?)?;
    m.add_function(wrap_pyfunction!(reset_after_fork, m)?)?;
    Ok(())
}
