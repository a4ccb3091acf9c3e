//! The one place where core errors become Python exceptions.

use crate::http::HttpError;
use crate::pool::{EndpointError, SettingsError};
use pyo3::exceptions::{PyException, PyOSError, PyRuntimeError, PyTimeoutError, PyTypeError, PyValueError};
use pyo3::prelude::*;

pyo3::create_exception!(
    fast_litellm._core,
    PoolTimeout,
    PyTimeoutError,
    "No pooled connection became free before the timeout."
);
pyo3::create_exception!(fast_litellm._core, TransportError, PyException, "An HTTP request failed (the transports raise httpx's classes instead).");
pyo3::create_exception!(fast_litellm._core, ConnectError, TransportError, "Connecting failed.");
pyo3::create_exception!(fast_litellm._core, ConnectTimeout, TransportError, "Connecting timed out.");
pyo3::create_exception!(fast_litellm._core, ReadTimeout, TransportError, "Reading the response timed out.");
pyo3::create_exception!(fast_litellm._core, WriteTimeout, TransportError, "Sending the request timed out.");
pyo3::create_exception!(fast_litellm._core, ReadError, TransportError, "Reading the response failed.");
pyo3::create_exception!(fast_litellm._core, WriteError, TransportError, "Sending the request failed.");
pyo3::create_exception!(fast_litellm._core, RemoteProtocolError, TransportError, "The server broke the HTTP protocol.");
pyo3::create_exception!(fast_litellm._core, LocalProtocolError, TransportError, "The request cannot be sent as it is.");
pyo3::create_exception!(fast_litellm._core, UnsupportedProtocol, TransportError, "The URL's scheme is not http or https.");
pyo3::create_exception!(fast_litellm._core, ProxyError, TransportError, "A proxy refused to open a tunnel.");

/// The engine's errors, each as the exception named after httpx's class.
pub fn http_error(e: HttpError) -> PyErr {
    let message = e.to_string();
    match e {
        HttpError::PoolTimeout => PoolTimeout::new_err(message),
        HttpError::ConnectTimeout => ConnectTimeout::new_err(message),
        HttpError::Connect(_) => ConnectError::new_err(message),
        HttpError::ReadTimeout => ReadTimeout::new_err(message),
        HttpError::WriteTimeout => WriteTimeout::new_err(message),
        HttpError::Read(_) => ReadError::new_err(message),
        HttpError::Write(_) => WriteError::new_err(message),
        HttpError::RemoteProtocol(_) => RemoteProtocolError::new_err(message),
        HttpError::LocalProtocol(_) => LocalProtocolError::new_err(message),
        HttpError::Proxy(_) => ProxyError::new_err(message),
        HttpError::Config(_) => PyValueError::new_err(message),
    }
}

/// Registers the exception classes on the module, one line per class (a deliberate list, like
/// the declarations above).
pub fn add_exceptions(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("PoolTimeout", py.get_type::<PoolTimeout>())?;
    m.add("TransportError", py.get_type::<TransportError>())?;
    m.add("ConnectError", py.get_type::<ConnectError>())?;
    m.add("ConnectTimeout", py.get_type::<ConnectTimeout>())?;
    m.add("ReadTimeout", py.get_type::<ReadTimeout>())?;
    m.add("WriteTimeout", py.get_type::<WriteTimeout>())?;
    m.add("ReadError", py.get_type::<ReadError>())?;
    m.add("WriteError", py.get_type::<WriteError>())?;
    m.add("RemoteProtocolError", py.get_type::<RemoteProtocolError>())?;
    m.add("LocalProtocolError", py.get_type::<LocalProtocolError>())?;
    m.add("UnsupportedProtocol", py.get_type::<UnsupportedProtocol>())?;
    m.add("ProxyError", py.get_type::<ProxyError>())?;
    Ok(())
}

pub fn endpoint_error(e: EndpointError) -> PyErr {
    PyValueError::new_err(e.to_string())
}

pub fn settings_error(e: SettingsError) -> PyErr {
    PyValueError::new_err(format!("invalid pool setting {e}"))
}

pub fn wrong_type(what: &str, expected: &str, got: &Bound<'_, PyAny>) -> PyErr {
    let type_name = got
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_owned());
    PyTypeError::new_err(format!("{what} must be {expected}, not {type_name}"))
}

pub fn pool_timeout(endpoint: &impl std::fmt::Display) -> PyErr {
    PoolTimeout::new_err(format!("timed out waiting for a free connection to {endpoint}"))
}

/// A request that cannot be sent as it is (a bad header, method or connection id): httpx's
/// `LocalProtocolError`.
pub fn invalid_request(message: impl Into<String>) -> PyErr {
    LocalProtocolError::new_err(message.into())
}

/// A URL whose scheme is neither http nor https, in httpx's words.
pub fn unsupported_protocol(scheme: &str) -> PyErr {
    UnsupportedProtocol::new_err(match scheme {
        "" => "Request URL is missing an 'http://' or 'https://' protocol.".to_owned(),
        _ => format!("Request URL has an unsupported protocol '{scheme}://'."),
    })
}

/// What no connection can be opened to (a bad port or host), as httpx reports it.
pub fn cannot_connect(e: EndpointError) -> PyErr {
    ConnectError::new_err(e.to_string())
}

/// An argument with a value that cannot be used.
pub fn invalid_argument(message: impl Into<String>) -> PyErr {
    PyValueError::new_err(message.into())
}

/// An argument of a type that cannot be used (see also [`wrong_type`]).
pub fn invalid_type(message: impl Into<String>) -> PyErr {
    PyTypeError::new_err(message.into())
}

/// The operating system refused what the bindings need (an eventfd).
pub fn os_error(what: &str, e: impl std::fmt::Display) -> PyErr {
    PyOSError::new_err(format!("{what} failed: {e}"))
}

/// A task on the runtime panicked: reported on its future, never a future that waits forever.
pub fn task_panicked() -> PyErr {
    PyRuntimeError::new_err("fast_litellm internal error: the request task panicked")
}
