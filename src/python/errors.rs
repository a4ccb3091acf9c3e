//! The one place where core errors become Python exceptions.

use crate::http::HttpError;
use crate::pool::{EndpointError, SettingsError};
use pyo3::exceptions::{PyException, PyTimeoutError, PyTypeError, PyValueError};
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
        HttpError::Config(_) => PyValueError::new_err(message),
    }
}

/// Registers the exception classes on the module.
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
