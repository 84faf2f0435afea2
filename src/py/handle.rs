//! `Handle` as a Python class: one open, locked session. Frozen (shared between threads
//! without "Already borrowed" errors); the core's handle sits behind a mutex, held only
//! for the length of one call (the GIL is released around the store operations), and is consumed exactly once (`save`, `touch`, `delete`;
//! `release` drops it), so the lock is never given up twice.

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::enums::PyPayloadKind;
use super::errors::guarded;
use crate::error::{StoreError, StoreResult};
use crate::sid::SessionId;
use crate::store::{Loaded, PayloadKind, SessionHandle};

/// A locked, open session.
#[pyclass(name = "Handle", module = "flask_beaker_session._core", frozen)]
pub struct PyHandle {
    /// Formatted only when Python asks (the request path names the session by the cookie
    /// value it opened it with).
    id: SessionId,
    loaded: Loaded,
    inner: Mutex<Option<Box<dyn SessionHandle>>>,
}

impl PyHandle {
    /// Wraps an open session.
    pub fn new(handle: Box<dyn SessionHandle>) -> Self {
        PyHandle {
            id: *handle.id(),
            loaded: handle.loaded(),
            inner: Mutex::new(Some(handle)),
        }
    }

    /// Takes the session out (ending the handle), or `Released` if already ended.
    fn take(&self) -> StoreResult<Box<dyn SessionHandle>> {
        self.inner.lock().take().ok_or(StoreError::Released)
    }
}

#[pymethods]
impl PyHandle {
    #[getter]
    fn id(&self) -> String {
        self.id.to_hex()
    }

    #[getter]
    fn kind(&self) -> PyPayloadKind {
        self.loaded.kind.into()
    }

    #[getter]
    fn created(&self) -> Option<f64> {
        self.loaded.created
    }

    #[getter]
    fn last_access(&self) -> Option<f64> {
        self.loaded.last_access
    }

    /// Not stored as the store writes now (a fallback key, the other format, a legacy
    /// file): the next save rewrites it.
    #[getter]
    fn stale(&self) -> bool {
        self.loaded.stale
    }

    /// The stored payload (pickle bytes) as loaded.
    #[getter]
    fn payload<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let guard = self.inner.lock();
        let session = guard.as_ref().ok_or(StoreError::Released)?;
        Ok(PyBytes::new(py, session.payload()))
    }

    /// A record of this package's own format, in one call (it runs on every request that
    /// uses a session): its payload, creation time and last access; None for any other
    /// kind (legacy files), whose payload and times come from the getters.
    #[allow(clippy::type_complexity)]
    fn record<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<Option<(Bound<'py, PyBytes>, Option<f64>, Option<f64>)>> {
        if self.loaded.kind != PayloadKind::Record {
            return Ok(None);
        }
        let guard = self.inner.lock();
        let session = guard.as_ref().ok_or(StoreError::Released)?;
        Ok(Some((
            PyBytes::new(py, session.payload()),
            self.loaded.created,
            self.loaded.last_access,
        )))
    }

    /// Stores a new version and releases. `created` fills in a creation time the core
    /// could not read (legacy sessions).
    #[pyo3(signature = (payload, now, created = None))]
    fn save(&self, py: Python<'_>, payload: &[u8], now: f64, created: Option<f64>) -> PyResult<()> {
        guarded(py, || self.take()?.save(payload, now, created))
    }

    /// Refreshes the last access if the store's touch interval has passed, and releases;
    /// True if it wrote.
    fn touch(&self, py: Python<'_>, now: f64) -> PyResult<bool> {
        guarded(py, || self.take()?.touch(now))
    }

    /// Removes the stored session and releases.
    fn delete(&self, py: Python<'_>) -> PyResult<()> {
        guarded(py, || self.take()?.delete())
    }

    /// Releases without changing anything. Idempotent.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        guarded(py, || {
            drop(self.inner.lock().take());
            Ok(())
        })
    }
}
