//! `Handle` as a Python class: one open, locked session. Frozen (shared between threads
//! without "Already borrowed" errors); the core's handle sits behind a mutex, held only
//! for the length of one call (the GIL is released around the store operations), and is consumed exactly once (`save`, `touch`, `delete`;
//! `release` drops it), so the lock is never given up twice.

use parking_lot::Mutex;
use pyo3::exceptions::PyIndexError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use super::enums::PyPayloadKind;
use super::errors::guarded;
use super::large::{self, PyLargeValue};
use crate::error::{StoreError, StoreResult};
use crate::record::{Kind, Payload, Segments};
use crate::sid::SessionId;
use crate::store::{Loaded, PayloadKind, SessionHandle};

/// A locked, open session.
#[pyclass(name = "Handle", module = "flask_beaker_session._core", frozen)]
pub struct PyHandle {
    /// Formatted only when Python asks (the request path names the session by the cookie
    /// value it opened it with).
    id: SessionId,
    loaded: Loaded,
    /// The loaded record's large values: taken out of the core's handle when it is
    /// wrapped, so they stay readable after the lock is given up (non-locking mode, a
    /// streamed body) and a save can reuse them.
    segments: Segments,
    inner: Mutex<Option<Box<dyn SessionHandle>>>,
}

impl PyHandle {
    /// Wraps an open session.
    pub fn new(mut handle: Box<dyn SessionHandle>) -> Self {
        PyHandle {
            id: *handle.id(),
            loaded: handle.loaded(),
            segments: handle.take_segments(),
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
    /// uses a session): its payload (the small values' pickle), creation time, last access
    /// and large values (None when it has none: most sessions; else a tuple of `(pickled
    /// key, raw, size)` in the order `open_large` and `LargeValue.loaded` number them); None for
    /// any other kind (legacy files), whose payload and times come from the getters.
    #[allow(clippy::type_complexity)]
    fn record<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<
        Option<(
            Bound<'py, PyBytes>,
            Option<f64>,
            Option<f64>,
            Option<Bound<'py, PyTuple>>,
        )>,
    > {
        if self.loaded.kind != PayloadKind::Record {
            return Ok(None);
        }
        let guard = self.inner.lock();
        let session = guard.as_ref().ok_or(StoreError::Released)?;
        let large = if self.segments.is_empty() {
            None
        } else {
            let entries = self.segments.entries().iter().enumerate().map(|(i, e)| {
                let size = self.segments.plain_len(i).unwrap_or(0);
                (PyBytes::new(py, &e.key), e.kind == Kind::Bytes, size)
            });
            Some(PyTuple::new(py, entries)?)
        };
        Ok(Some((
            PyBytes::new(py, session.payload()),
            self.loaded.created,
            self.loaded.last_access,
            large,
        )))
    }

    /// The loaded record's large value `index`, verified and decrypted (with the GIL
    /// released) into a new `bytes`: its pickle, or the value itself when `raw`. None if
    /// its segment does not verify (the record was altered): the value must be treated as
    /// absent. Works after the handle was released. IndexError for an index the record
    /// did not list.
    fn open_large<'py>(
        &self,
        py: Python<'py>,
        index: usize,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let segments = &self.segments;
        let len = segments
            .plain_len(index)
            .ok_or_else(|| PyIndexError::new_err("no such large value"))?;
        let mut opened = false;
        let bytes = PyBytes::new_with(py, len, |buf| {
            opened = py.detach(|| segments.open_into(index, buf));
            Ok(())
        })?;
        Ok(opened.then_some(bytes))
    }

    /// Stores a new version and releases. `created` fills in a creation time the core
    /// could not read (legacy sessions); `large` lists the large values, each reused from
    /// the loaded record or new (`payload` then holds the small ones).
    #[pyo3(signature = (payload, now, created = None, large = None))]
    fn save(
        &self,
        py: Python<'_>,
        payload: &[u8],
        now: f64,
        created: Option<f64>,
        large: Option<Vec<Bound<'_, PyLargeValue>>>,
    ) -> PyResult<()> {
        let large = large.unwrap_or_default();
        let values = large::values(py, &large);
        let payload = Payload {
            small: payload,
            large: &values,
            loaded: Some(&self.segments),
        };
        guarded(py, || self.take()?.save_payload(&payload, now, created))
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
