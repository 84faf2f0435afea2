//! `Store` as a Python class: one native call per store operation, each converting its
//! arguments, releasing the GIL (`Python::detach`) around the core call, and converting the
//! result. It never branches on the backend: that is the core's `Store` trait's job.

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::prelude::*;

use super::config::PyStoreConfig;
use super::enums::{PyBackendKind, PyOpenStatus, PyWalkMode};
use super::errors::guarded;
use super::handle::PyHandle;
use super::large::{self, PyLargeValue};
use super::report::PyReport;
use crate::error::StoreError;
use crate::record::Payload;
use crate::sid::SessionId;
use crate::store::index::{handle_of, IndexEntry, MAX_META};
use crate::store::{self, Store};

fn parse_id(sid: &str) -> PyResult<SessionId> {
    Ok(SessionId::parse(sid).ok_or(StoreError::InvalidId)?)
}

/// A session store.
#[pyclass(name = "Store", module = "flask_beaker_session._core", frozen)]
pub struct PyStore {
    inner: Arc<dyn Store>,
    config: Py<PyStoreConfig>,
}

#[pymethods]
impl PyStore {
    /// Builds the store `config` describes (no I/O, no connection).
    #[new]
    fn new(config: Bound<'_, PyStoreConfig>) -> PyResult<Self> {
        let (common, backend) = config.get().core();
        Ok(PyStore {
            inner: store::build(common, backend)?,
            config: config.unbind(),
        })
    }

    #[getter]
    fn kind(&self) -> PyBackendKind {
        self.inner.kind().into()
    }

    #[getter]
    fn config(&self, py: Python<'_>) -> Py<PyStoreConfig> {
        self.config.clone_ref(py)
    }

    /// The data directory of a file store (None for the others).
    #[getter]
    fn data_dir(&self) -> Option<PathBuf> {
        self.inner.data_dir().map(PathBuf::from)
    }

    /// A fresh id from the OS CSPRNG.
    fn new_id(&self) -> PyResult<String> {
        Ok(SessionId::generate()?.to_hex())
    }

    /// The store's expiry rule for times known only to Python.
    fn expired(&self, now: f64, created: Option<f64>, last_access: Option<f64>) -> bool {
        (self.inner.config().expiry).is_expired(now, created, last_access)
    }

    /// Lock, read and verify session `sid`; the handle is set iff `Found`.
    fn open(
        &self,
        py: Python<'_>,
        sid: &str,
        now: f64,
    ) -> PyResult<(PyOpenStatus, Option<PyHandle>)> {
        let Some(id) = SessionId::parse(sid) else {
            return Ok((PyOpenStatus::Invalid, None));
        };
        let opened = guarded(py, || self.inner.open(&id, now))?;
        let (status, handle) = PyOpenStatus::split(opened);
        Ok((status, handle.map(PyHandle::new)))
    }

    /// Store a new session under a fresh id (never overwrites); `large` lists its large
    /// values (all changed ones: a new record has nothing loaded to reuse).
    #[pyo3(signature = (sid, payload, created, now, large = None))]
    fn create(
        &self,
        py: Python<'_>,
        sid: &str,
        payload: &[u8],
        created: f64,
        now: f64,
        large: Option<Vec<Bound<'_, PyLargeValue>>>,
    ) -> PyResult<()> {
        let id = SessionId::parse(sid).ok_or(StoreError::InvalidId)?;
        let large = large.unwrap_or_default();
        let values = large::values(py, &large);
        let payload = Payload {
            small: payload,
            large: &values,
            loaded: None,
        };
        guarded(py, || {
            self.inner.create_payload(&id, &payload, created, now)
        })?;
        Ok(())
    }

    /// One pass over the store (`threads=0`: one per core).
    #[pyo3(signature = (now, mode, threads = 0))]
    fn walk(
        &self,
        py: Python<'_>,
        now: f64,
        mode: PyWalkMode,
        threads: usize,
    ) -> PyResult<PyReport> {
        let report = guarded(py, || self.inner.walk(now, mode.into(), threads))?;
        Ok(PyReport(report))
    }

    /// Sweep unless another process sharing the store did within `interval` seconds.
    #[pyo3(signature = (now, interval, threads = 0))]
    fn sweep_if_due(
        &self,
        py: Python<'_>,
        now: f64,
        interval: f64,
        threads: usize,
    ) -> PyResult<Option<PyReport>> {
        let report = guarded(py, || self.inner.sweep_if_due(now, interval, threads))?;
        Ok(report.map(PyReport))
    }

    /// Creates what the store needs on its server if missing (the PostgreSQL table);
    /// True if something was created, None for stores that need nothing.
    fn init_schema(&self, py: Python<'_>) -> PyResult<Option<bool>> {
        guarded(py, || self.inner.init_schema())
    }

    /// Ids of the legacy Beaker session files present (file stores).
    fn legacy_ids(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        guarded(py, || Ok(self.inner.legacy_ids()))
    }

    // -- the per-user index (`SESSION_USER_KEY`) ------------------------------------------

    /// The non-secret handle of session `sid` (keyed hash; never the id).
    fn handle_of(&self, sid: &str) -> PyResult<String> {
        Ok(handle_of(&self.inner.config().keys, &parse_id(sid)?))
    }

    /// Adds (or replaces) the entry of session `sid` under `user`, with `meta` (at most
    /// 4096 bytes) written at `now`.
    fn index_put(
        &self,
        py: Python<'_>,
        user: &str,
        sid: &str,
        meta: &[u8],
        now: f64,
    ) -> PyResult<()> {
        if meta.len() > MAX_META {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "index metadata of {} bytes is larger than {MAX_META}",
                meta.len()
            )));
        }
        let entry = IndexEntry {
            id: parse_id(sid)?,
            written_at: now,
            meta: meta.to_vec(),
        };
        guarded(py, || self.inner.index_put(user, &entry))
    }

    /// Removes session `sid` from `user`'s entries.
    fn index_remove(&self, py: Python<'_>, user: &str, sid: &str) -> PyResult<()> {
        let id = parse_id(sid)?;
        guarded(py, || self.inner.index_remove(user, &id))
    }

    /// `user`'s entries as `(sid, written_at, meta)`.
    fn index_list(&self, py: Python<'_>, user: &str) -> PyResult<Vec<(String, f64, Vec<u8>)>> {
        let entries = guarded(py, || self.inner.index_list(user))?;
        Ok(entries
            .into_iter()
            .map(|e| (e.id.to_hex(), e.written_at, e.meta))
            .collect())
    }

    /// Removes unreadable entries, and entries older than `grace` seconds whose record is
    /// gone; how many went.
    fn index_sweep(&self, py: Python<'_>, now: f64, grace: f64) -> PyResult<u64> {
        guarded(py, || self.inner.index_sweep(now, grace))
    }
}
