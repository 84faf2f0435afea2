//! The single mapping from the core's `StoreError` to Python exceptions. Exceptions that are
//! part of the public API are defined in Python (`flask_beaker_session/errors.py`) and
//! imported here, so there is one owner for each class. The choice of exception is a pure
//! function (`classify`), unit-tested without a Python interpreter; building the `PyErr`
//! from it is mechanical.

use pyo3::exceptions::{
    PyFileExistsError, PyOSError, PyOverflowError, PyRuntimeError, PyValueError,
};
use pyo3::PyErr;

use crate::error::StoreError;

pyo3::import_exception!(flask_beaker_session.errors, LockTimeoutError);
pyo3::import_exception!(flask_beaker_session.errors, StoreUnavailableError);
pyo3::import_exception!(flask_beaker_session.errors, ConfigurationError);

/// Which Python exception a `StoreError` becomes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PyErrKind {
    /// `OSError(errno, message, filename)`: Python picks the subclass from errno
    /// (FileNotFoundError, PermissionError, …), so callers can catch precisely. Without an
    /// errno, a plain `OSError(message)`.
    Os {
        errno: Option<i32>,
        filename: Option<String>,
    },
    /// `FileExistsError(EEXIST, message)`: `create` found the id taken.
    FileExists,
    /// `flask_beaker_session.errors.LockTimeoutError`.
    LockTimeout,
    /// `flask_beaker_session.errors.StoreUnavailableError`.
    Unavailable,
    /// `flask_beaker_session.errors.ConfigurationError`.
    Configuration,
    /// `ValueError`.
    Value,
    /// `OverflowError`.
    Overflow,
    /// `RuntimeError`.
    Runtime,
}

/// The Python exception for `err`.
pub(crate) fn classify(err: &StoreError) -> PyErrKind {
    match err {
        StoreError::Io { path, source, .. } => PyErrKind::Os {
            errno: source.raw_os_error(),
            filename: Some(path.display().to_string()),
        },
        StoreError::Random(_) => PyErrKind::Os {
            errno: None,
            filename: None,
        },
        StoreError::IdCollision => PyErrKind::FileExists,
        StoreError::LockTimeout { .. } | StoreError::LockLost | StoreError::Busy { .. } => {
            PyErrKind::LockTimeout
        }
        StoreError::Unavailable(_) => PyErrKind::Unavailable,
        StoreError::Config(_) => PyErrKind::Configuration,
        StoreError::InvalidId | StoreError::BadPayload(_) => PyErrKind::Value,
        StoreError::TooLarge(_) => PyErrKind::Overflow,
        StoreError::Released => PyErrKind::Runtime,
    }
}

/// Runs a core call with the GIL released, turning a panic into a `RuntimeError`: a bug in
/// the core must not raise `PanicException` (a `BaseException`, which escapes Flask's error
/// handlers and takes the worker's request loop down with it).
pub(crate) fn guarded<T: Send>(
    py: pyo3::Python<'_>,
    call: impl FnOnce() -> Result<T, StoreError> + Send,
) -> pyo3::PyResult<T> {
    let outcome = py.detach(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)));
    match outcome {
        Ok(result) => result.map_err(PyErr::from),
        Err(panic) => Err(PyRuntimeError::new_err(format!(
            "internal error in the session store: {}",
            panic_message(panic.as_ref())
        ))),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "panic"
    }
}

impl From<StoreError> for PyErr {
    fn from(err: StoreError) -> PyErr {
        let message = err.to_string();
        match classify(&err) {
            PyErrKind::Os {
                errno: Some(errno),
                filename: Some(filename),
            } => PyOSError::new_err((errno, message, filename)),
            PyErrKind::Os { .. } => PyOSError::new_err(message),
            PyErrKind::FileExists => PyFileExistsError::new_err((libc::EEXIST, message)),
            PyErrKind::LockTimeout => LockTimeoutError::new_err(message),
            PyErrKind::Unavailable => StoreUnavailableError::new_err(message),
            PyErrKind::Configuration => ConfigurationError::new_err(message),
            PyErrKind::Value => PyValueError::new_err(message),
            PyErrKind::Overflow => PyOverflowError::new_err(message),
            PyErrKind::Runtime => PyRuntimeError::new_err(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::time::Duration;

    #[test]
    fn io_errors_keep_their_errno_and_real_path() {
        let err = StoreError::io(
            "open",
            "/data/fbs1/ab/abcd",
            io::Error::from_raw_os_error(libc::EACCES),
        );
        assert_eq!(
            classify(&err),
            PyErrKind::Os {
                errno: Some(libc::EACCES),
                filename: Some("/data/fbs1/ab/abcd".to_owned()),
            }
        );
        let no_errno = StoreError::io("lock", "/data/f", io::Error::other("odd"));
        assert!(matches!(
            classify(&no_errno),
            PyErrKind::Os { errno: None, .. }
        ));
    }

    #[test]
    fn a_random_source_failure_names_no_path() {
        let err = StoreError::Random("no entropy".to_owned());
        assert_eq!(
            classify(&err),
            PyErrKind::Os {
                errno: None,
                filename: None
            }
        );
        assert!(err.to_string().contains("random"));
    }

    #[test]
    fn an_id_collision_is_file_exists_not_unavailable() {
        assert_eq!(classify(&StoreError::IdCollision), PyErrKind::FileExists);
        assert_eq!(
            classify(&StoreError::Unavailable("redis: down".to_owned())),
            PyErrKind::Unavailable
        );
    }

    #[test]
    fn every_other_variant_has_its_exception() {
        let waited = Duration::from_secs(1);
        let cases = [
            (StoreError::LockTimeout { waited }, PyErrKind::LockTimeout),
            (StoreError::LockLost, PyErrKind::LockTimeout),
            (StoreError::Busy { max: 2 }, PyErrKind::LockTimeout),
            (
                StoreError::Config("bad".to_owned()),
                PyErrKind::Configuration,
            ),
            (StoreError::InvalidId, PyErrKind::Value),
            (StoreError::TooLarge(1 << 33), PyErrKind::Overflow),
            (StoreError::Released, PyErrKind::Runtime),
        ];
        for (err, kind) in cases {
            assert_eq!(classify(&err), kind, "{err}");
        }
    }
}
