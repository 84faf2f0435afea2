//! The single mapping from the core's `StoreError` to Python exceptions. Exceptions that are
//! part of the public API are defined in Python (`flask_beaker_session/errors.py`) and
//! imported here, so there is one owner for each class.

use pyo3::exceptions::{PyOSError, PyOverflowError, PyRuntimeError, PyValueError};
use pyo3::PyErr;

use crate::error::StoreError;

pyo3::import_exception!(flask_beaker_session.errors, LockTimeoutError);
pyo3::import_exception!(flask_beaker_session.errors, StoreUnavailableError);
pyo3::import_exception!(flask_beaker_session.errors, ConfigurationError);

impl From<StoreError> for PyErr {
    fn from(err: StoreError) -> PyErr {
        let message = err.to_string();
        match err {
            // OSError(errno, strerror, filename) picks the subclass from errno in Python
            // (FileNotFoundError, PermissionError, …), so callers can catch precisely.
            StoreError::Io { path, source, .. } => match source.raw_os_error() {
                Some(errno) => PyOSError::new_err((errno, message, path.display().to_string())),
                None => PyOSError::new_err(message),
            },
            StoreError::LockTimeout { .. } | StoreError::LockLost => {
                LockTimeoutError::new_err(message)
            }
            StoreError::Unavailable(_) => StoreUnavailableError::new_err(message),
            StoreError::Config(_) => ConfigurationError::new_err(message),
            StoreError::InvalidId => PyValueError::new_err(message),
            StoreError::TooLarge(_) => PyOverflowError::new_err(message),
            StoreError::Released => PyRuntimeError::new_err(message),
        }
    }
}
