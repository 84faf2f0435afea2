//! `Store` and `Handle` as Python classes. Both are frozen (shared between threads without
//! "Already borrowed" errors); a handle keeps its locked session behind a mutex that is only
//! taken while the GIL is released, and gives it up exactly once (`save`+`release`, `delete`
//! or `release`; later calls are no-ops or errors, never a second unlock).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::error::StoreError;
use crate::record::Keys;
use crate::sid::SessionId;
use crate::store::{FileStore, Handle, Opened, Origin, StoreConfig};
use crate::sweep::{self, Mode};

pub const OPEN_FOUND: u8 = 0;
pub const OPEN_MISSING: u8 = 1;
pub const OPEN_INVALID: u8 = 2;
pub const OPEN_EXPIRED: u8 = 3;
pub const OPEN_CORRUPT: u8 = 4;
pub const OPEN_NEWER: u8 = 5;

/// A session store rooted at one data directory.
#[pyclass(name = "Store", module = "flask_beaker_session._core", frozen)]
pub struct PyStore {
    inner: Arc<FileStore>,
}

#[pymethods]
impl PyStore {
    #[new]
    #[pyo3(signature = (data_dir, keys, idle_timeout, absolute_timeout, lock_timeout, read_legacy))]
    fn new(
        data_dir: PathBuf,
        keys: Vec<Vec<u8>>,
        idle_timeout: Option<f64>,
        absolute_timeout: Option<f64>,
        lock_timeout: f64,
        read_legacy: bool,
    ) -> PyResult<Self> {
        let lock_timeout = Duration::try_from_secs_f64(lock_timeout)
            .map_err(|_| pyo3::exceptions::PyValueError::new_err("lock_timeout must be >= 0"))?;
        let cfg = StoreConfig {
            data_dir,
            keys: Keys::new(&keys),
            idle_timeout,
            absolute_timeout,
            lock_timeout,
            read_legacy,
        };
        Ok(PyStore {
            inner: Arc::new(FileStore::new(cfg)),
        })
    }

    /// The data directory.
    #[getter]
    fn data_dir(&self) -> PathBuf {
        self.inner.config().data_dir.clone()
    }

    /// Whether records are authenticated with a secret key.
    #[getter]
    fn keyed(&self) -> bool {
        self.inner.config().keys.keyed()
    }

    /// Whether a legacy Beaker tree was found at construction.
    #[getter]
    fn legacy_present(&self) -> bool {
        self.inner.legacy_present()
    }

    /// A fresh session id from the OS CSPRNG.
    fn new_id(&self) -> PyResult<String> {
        Ok(SessionId::generate()?.to_hex())
    }

    /// Opens (locks, reads, verifies) the session `sid`. Returns `(handle, status)`;
    /// `handle` is None unless `status == OPEN_FOUND`.
    fn open(&self, py: Python<'_>, sid: &str, now: f64) -> PyResult<(Option<PyHandle>, u8)> {
        let Some(id) = SessionId::parse(sid) else {
            return Ok((None, OPEN_INVALID));
        };
        let store = Arc::clone(&self.inner);
        let opened = py.detach(|| store.open(&id, now))?;
        Ok(match opened {
            Opened::Found(handle) => {
                let legacy = match handle.origin() {
                    Origin::Record { .. } => 0,
                    Origin::Legacy { wrapped: false } => 1,
                    Origin::Legacy { wrapped: true } => 2,
                };
                (
                    Some(PyHandle {
                        store: Arc::clone(&self.inner),
                        id: sid.to_owned(),
                        legacy,
                        created: handle.created,
                        last_access: handle.last_access,
                        inner: Mutex::new(Some(handle)),
                    }),
                    OPEN_FOUND,
                )
            }
            Opened::Missing => (None, OPEN_MISSING),
            Opened::Expired => (None, OPEN_EXPIRED),
            Opened::Corrupt => (None, OPEN_CORRUPT),
            Opened::Newer => (None, OPEN_NEWER),
        })
    }

    /// One parallel pass over the store: `mode` is "stats", "sweep" or "clear". Returns
    /// the counts as a dict.
    #[pyo3(signature = (now, mode, threads=0))]
    fn walk<'py>(
        &self,
        py: Python<'py>,
        now: f64,
        mode: &str,
        threads: usize,
    ) -> PyResult<Bound<'py, PyDict>> {
        let mode = match mode {
            "stats" => Mode::Stats,
            "sweep" => Mode::Sweep,
            "clear" => Mode::Clear,
            _ => {
                return Err(pyo3::exceptions::PyValueError::new_err(
                    "mode must be 'stats', 'sweep' or 'clear'",
                ))
            }
        };
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            threads
        };
        let store = Arc::clone(&self.inner);
        let r = py.detach(|| sweep::walk(store.config(), now, mode, threads));
        let out = PyDict::new(py);
        out.set_item("records", r.records)?;
        out.set_item("bytes", r.bytes)?;
        out.set_item("live", r.live)?;
        out.set_item("expired", r.expired)?;
        out.set_item("corrupt", r.corrupt)?;
        out.set_item("temp", r.temp)?;
        out.set_item("legacy", r.legacy)?;
        out.set_item("legacy_expired", r.legacy_expired)?;
        out.set_item("legacy_locks", r.legacy_locks)?;
        out.set_item("removed", r.removed)?;
        out.set_item("bytes_freed", r.bytes_freed)?;
        out.set_item("errors", r.errors)?;
        out.set_item("sizes", r.sizes.to_vec())?;
        Ok(out)
    }

    /// Sweeps if no process sharing the data dir has done so in the last `interval`
    /// seconds: coordinated through `<data_dir>/sweep.stamp` (its `flock` elects one
    /// sweeper, its mtime records the last sweep). Returns the counts, or None if skipped.
    #[pyo3(signature = (now, interval, threads=0))]
    fn sweep_if_due<'py>(
        &self,
        py: Python<'py>,
        now: f64,
        interval: f64,
        threads: usize,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let store = Arc::clone(&self.inner);
        let due = py.detach(|| sweep::claim(store.config(), now, interval))?;
        let Some(_claim) = due else {
            return Ok(None);
        };
        self.walk(py, now, "sweep", threads).map(Some)
    }

    /// Ids of the legacy Beaker sessions present (their file names), for migration.
    fn legacy_ids(&self, py: Python<'_>) -> Vec<String> {
        let store = Arc::clone(&self.inner);
        py.detach(|| store.legacy_ids())
    }

    /// Stores a new session under `sid` (which must be fresh from `new_id`).
    fn create(
        &self,
        py: Python<'_>,
        sid: &str,
        payload: &[u8],
        created: f64,
        now: f64,
    ) -> PyResult<()> {
        let id = SessionId::parse(sid).ok_or(StoreError::InvalidId)?;
        let store = Arc::clone(&self.inner);
        py.detach(|| store.create(&id, payload, created, now))?;
        Ok(())
    }
}

/// A locked, open session.
#[pyclass(name = "Handle", module = "flask_beaker_session._core", frozen)]
pub struct PyHandle {
    store: Arc<FileStore>,
    id: String,
    legacy: u8,
    created: Option<f64>,
    last_access: Option<f64>,
    inner: Mutex<Option<Handle>>,
}

#[pymethods]
impl PyHandle {
    /// The session id.
    #[getter]
    fn id(&self) -> &str {
        &self.id
    }

    /// 0: our record; 1: legacy Beaker session (bare dict pickle); 2: legacy, Beaker's whole
    /// outer pickle (take `['session']`).
    #[getter]
    fn legacy(&self) -> u8 {
        self.legacy
    }

    /// Creation time from the record header (None if unknown without unpickling).
    #[getter]
    fn created(&self) -> Option<f64> {
        self.created
    }

    /// Previous access time (None if unknown without unpickling).
    #[getter]
    fn last_access(&self) -> Option<f64> {
        self.last_access
    }

    /// Whether the lock has been given up.
    #[getter]
    fn released(&self) -> bool {
        self.inner.lock().is_none()
    }

    /// The stored payload (pickle bytes) as loaded.
    #[getter]
    fn payload<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let guard = self.inner.lock();
        let handle = guard.as_ref().ok_or(StoreError::Released)?;
        Ok(PyBytes::new(py, &handle.payload))
    }

    /// Saves a new version of the session, keeping the lock. `created` fills in the
    /// creation time when the core could not read it (legacy sessions).
    #[pyo3(signature = (payload, now, created=None))]
    fn save(&self, py: Python<'_>, payload: &[u8], now: f64, created: Option<f64>) -> PyResult<()> {
        py.detach(|| {
            let mut guard = self.inner.lock();
            let handle = guard.as_mut().ok_or(StoreError::Released)?;
            if handle.created.is_none() {
                handle.created = created;
            }
            handle.save(&self.store, payload, now)
        })?;
        Ok(())
    }

    /// Refreshes the last-access time (metadata only) if `interval` seconds have passed.
    fn touch(&self, py: Python<'_>, now: f64, interval: f64) -> PyResult<bool> {
        Ok(py.detach(|| {
            let mut guard = self.inner.lock();
            let handle = guard.as_mut().ok_or(StoreError::Released)?;
            handle.touch(now, interval)
        })?)
    }

    /// Removes the stored session and releases the lock.
    fn delete(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| match self.inner.lock().take() {
            Some(handle) => handle.delete(),
            None => Err(StoreError::Released),
        })?;
        Ok(())
    }

    /// Releases the lock. Idempotent.
    fn release(&self, py: Python<'_>) {
        py.detach(|| drop(self.inner.lock().take()));
    }
}
