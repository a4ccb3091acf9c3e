//! The one place where core errors become Python exceptions.

use crate::pool::{EndpointError, SettingsError};
use pyo3::exceptions::{PyTimeoutError, PyTypeError, PyValueError};
use pyo3::prelude::*;

pyo3::create_exception!(
    fast_litellm,
    PoolTimeout,
    PyTimeoutError,
    "No pooled connection became free before the timeout."
);

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
