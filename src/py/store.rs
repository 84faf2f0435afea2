//! `Store` and `Handle` as Python classes. Both are frozen (shared between threads without
//! "Already borrowed" errors); a handle keeps its locked session behind a mutex that is only
//! taken while the GIL is released, and gives it up exactly once (`save`+`release`, `delete`
//! or `release`; later calls are no-ops or errors, never a second unlock).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::backend::{Backend, Kind, Session};
use crate::error::StoreError;
use crate::memory::MemoryStore;
use crate::record::Keys;
use crate::redis_store::{RedisConfig, RedisStore, RedisTls};
use crate::sid::SessionId;
use crate::store::{FileStore, Opened, StoreConfig};
use crate::sweep::{self, Mode, Report};

pub const OPEN_FOUND: u8 = 0;
pub const OPEN_MISSING: u8 = 1;
pub const OPEN_INVALID: u8 = 2;
pub const OPEN_EXPIRED: u8 = 3;
pub const OPEN_CORRUPT: u8 = 4;
pub const OPEN_NEWER: u8 = 5;

fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| PyValueError::new_err(format!("{name} must be a number of seconds >= 0")))
}

fn config(
    data_dir: PathBuf,
    keys: &[Vec<u8>],
    idle_timeout: Option<f64>,
    absolute_timeout: Option<f64>,
    lock_timeout: f64,
    read_legacy: bool,
) -> PyResult<StoreConfig> {
    Ok(StoreConfig {
        data_dir,
        keys: Keys::new(keys),
        idle_timeout,
        absolute_timeout,
        lock_timeout: seconds("lock_timeout", lock_timeout)?,
        read_legacy,
    })
}

fn report_dict<'py>(py: Python<'py>, r: &Report) -> PyResult<Bound<'py, PyDict>> {
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

/// A session store: files under a data directory, this process's memory, or Redis.
#[pyclass(name = "Store", module = "flask_beaker_session._core", frozen)]
pub struct PyStore {
    inner: Arc<Backend>,
}

#[pymethods]
impl PyStore {
    /// A file store rooted at `data_dir`.
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
        let cfg = config(
            data_dir,
            &keys,
            idle_timeout,
            absolute_timeout,
            lock_timeout,
            read_legacy,
        )?;
        Ok(PyStore {
            inner: Arc::new(Backend::File(FileStore::new(cfg))),
        })
    }

    /// A store in this process's memory.
    #[staticmethod]
    #[pyo3(signature = (idle_timeout, absolute_timeout, lock_timeout))]
    fn memory(
        idle_timeout: Option<f64>,
        absolute_timeout: Option<f64>,
        lock_timeout: f64,
    ) -> PyResult<Self> {
        let cfg = config(
            PathBuf::new(),
            &[],
            idle_timeout,
            absolute_timeout,
            lock_timeout,
            false,
        )?;
        Ok(PyStore {
            inner: Arc::new(Backend::Memory(MemoryStore::new(cfg))),
        })
    }

    /// A Redis store. Connects lazily; raises `ConfigurationError` for a malformed URL.
    #[staticmethod]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (url, prefix, keys, idle_timeout, absolute_timeout, lock_timeout, connect_timeout, io_timeout, lock_ttl, tls_ca_certs=None, tls_client=None))]
    fn redis(
        url: String,
        prefix: String,
        keys: Vec<Vec<u8>>,
        idle_timeout: Option<f64>,
        absolute_timeout: Option<f64>,
        lock_timeout: f64,
        connect_timeout: f64,
        io_timeout: f64,
        lock_ttl: f64,
        tls_ca_certs: Option<Vec<u8>>,
        tls_client: Option<(Vec<u8>, Vec<u8>)>,
    ) -> PyResult<Self> {
        let cfg = config(
            PathBuf::new(),
            &keys,
            idle_timeout,
            absolute_timeout,
            lock_timeout,
            false,
        )?;
        let rcfg = RedisConfig {
            url,
            prefix,
            connect_timeout: seconds("connect_timeout", connect_timeout)?,
            io_timeout: seconds("io_timeout", io_timeout)?,
            lock_ttl: seconds("lock_ttl", lock_ttl)?,
            tls: RedisTls {
                ca_certs: tls_ca_certs,
                client: tls_client,
            },
        };
        Ok(PyStore {
            inner: Arc::new(Backend::Redis(Box::new(RedisStore::new(cfg, rcfg)?))),
        })
    }

    /// The backend: "file", "memory" or "redis".
    #[getter]
    fn kind(&self) -> &'static str {
        match &*self.inner {
            Backend::File(_) => "file",
            Backend::Memory(_) => "memory",
            Backend::Redis(_) => "redis",
        }
    }

    /// The data directory of a file store (None otherwise).
    #[getter]
    fn data_dir(&self) -> Option<PathBuf> {
        self.inner.data_dir().map(PathBuf::from)
    }

    /// Whether a legacy Beaker tree was found at construction (file stores).
    #[getter]
    fn legacy_present(&self) -> bool {
        matches!(&*self.inner, Backend::File(s) if s.legacy_present())
    }

    /// A fresh session id from the OS CSPRNG.
    fn new_id(&self) -> PyResult<String> {
        Ok(SessionId::generate()?.to_hex())
    }

    /// Checks that the store answers (Redis: PING). A no-op for the other backends.
    fn ping(&self, py: Python<'_>) -> PyResult<()> {
        let store = Arc::clone(&self.inner);
        py.detach(|| match &*store {
            Backend::Redis(s) => s.ping(),
            _ => Ok(()),
        })?;
        Ok(())
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
            Opened::Found(session) => {
                let legacy = match session.kind() {
                    Kind::Record => 0,
                    Kind::Legacy => 1,
                    Kind::LegacyWrapped => 2,
                };
                (
                    Some(PyHandle {
                        id: sid.to_owned(),
                        legacy,
                        created: session.created(),
                        last_access: session.last_access(),
                        inner: Mutex::new(Some(session)),
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

    /// One pass over the store: `mode` is "stats", "sweep" or "clear". Returns the counts.
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
                return Err(PyValueError::new_err(
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
        let report = py.detach(|| store.walk(now, mode, threads))?;
        report_dict(py, &report)
    }

    /// Sweeps if no process sharing the data dir has done so in the last `interval`
    /// seconds: coordinated through `<data_dir>/sweep.stamp` (its `flock` elects one
    /// sweeper, its mtime records the last sweep). Returns the counts, or None if skipped.
    /// Memory stores sweep every time; Redis expires keys itself (always None).
    #[pyo3(signature = (now, interval, threads=0))]
    fn sweep_if_due<'py>(
        &self,
        py: Python<'py>,
        now: f64,
        interval: f64,
        threads: usize,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let claim = match &*self.inner {
            Backend::File(s) => match py.detach(|| sweep::claim(s.config(), now, interval))? {
                Some(claim) => Some(claim),
                None => return Ok(None),
            },
            Backend::Memory(_) => None,
            Backend::Redis(_) => return Ok(None),
        };
        let result = self.walk(py, now, "sweep", threads).map(Some);
        drop(claim);
        result
    }

    /// Ids of the legacy Beaker sessions present (their file names), for migration.
    fn legacy_ids(&self, py: Python<'_>) -> Vec<String> {
        let store = Arc::clone(&self.inner);
        py.detach(|| match &*store {
            Backend::File(s) => s.legacy_ids(),
            _ => Vec::new(),
        })
    }
}

/// A locked, open session.
#[pyclass(name = "Handle", module = "flask_beaker_session._core", frozen)]
pub struct PyHandle {
    id: String,
    legacy: u8,
    created: Option<f64>,
    last_access: Option<f64>,
    inner: Mutex<Option<Session>>,
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
        let session = guard.as_ref().ok_or(StoreError::Released)?;
        Ok(PyBytes::new(py, session.payload()?))
    }

    /// Saves a new version of the session. `created` fills in the creation time when the
    /// core could not read it (legacy sessions). With `release`, the lock is given up in the
    /// same call (one native call and, for Redis, one round trip less per request).
    #[pyo3(signature = (payload, now, created=None, release=false))]
    fn save(
        &self,
        py: Python<'_>,
        payload: &[u8],
        now: f64,
        created: Option<f64>,
        release: bool,
    ) -> PyResult<()> {
        py.detach(|| {
            let mut guard = self.inner.lock();
            let session = guard.as_mut().ok_or(StoreError::Released)?;
            session.save(payload, now, created, release)?;
            if release {
                *guard = None;
            }
            Ok::<(), StoreError>(())
        })?;
        Ok(())
    }

    /// Refreshes the last-access time (metadata only) if `interval` seconds have passed;
    /// with `release`, gives up the lock afterwards either way.
    #[pyo3(signature = (now, interval, release=false))]
    fn touch(&self, py: Python<'_>, now: f64, interval: f64, release: bool) -> PyResult<bool> {
        Ok(py.detach(|| {
            let mut guard = self.inner.lock();
            let session = guard.as_mut().ok_or(StoreError::Released)?;
            let touched = session.touch(now, interval, release)?;
            if release {
                *guard = None;
            }
            Ok::<bool, StoreError>(touched)
        })?)
    }

    /// Removes the stored session and releases the lock.
    fn delete(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| match self.inner.lock().take() {
            Some(session) => session.delete(),
            None => Err(StoreError::Released),
        })?;
        Ok(())
    }

    /// Releases the lock. Idempotent.
    fn release(&self, py: Python<'_>) {
        py.detach(|| drop(self.inner.lock().take()));
    }
}
