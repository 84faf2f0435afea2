//! The settings of a store as frozen Python classes: one `StoreConfig` with the settings
//! every store has, and one class per backend for its own (`FileBackend`, `MemoryBackend`,
//! `RedisBackend`, keyword-only). Values are checked and converted to the core's types when
//! the object is built, so building the `Store` cannot fail on them (except for what only
//! the backend can judge: a Redis URL or TLS material).

use std::path::PathBuf;
use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use super::enums::PyPostgresLock;
use crate::expiry::Expiry;
use crate::record::Keys;
use crate::store::redis::Secret;
use crate::store::{
    BackendConfig, FileConfig, PostgresConfig, RedisConfig, RedisTls, StoreConfig, DEFAULT_MAX_SIZE,
};

fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| PyValueError::new_err(format!("{name} must be a number of seconds >= 0")))
}

/// Files under `data_dir` (created 0700 on the first save). `max_size`: the largest
/// payload read back (bytes); `generate_key`: without keys, tag records with a key
/// generated in `data_dir/session.key` instead of a checksum only.
#[pyclass(name = "FileBackend", module = "flask_beaker_session._core", frozen)]
pub struct PyFileBackend(FileConfig);

#[pymethods]
impl PyFileBackend {
    #[new]
    // `max_size` defaults to `DEFAULT_MAX_SIZE`, spelled out so the signature shows it.
    #[pyo3(signature = (*, data_dir, read_legacy = true, max_size = 4194304, generate_key = true))]
    fn new(
        data_dir: PathBuf,
        read_legacy: bool,
        max_size: usize,
        generate_key: bool,
    ) -> PyResult<Self> {
        debug_assert_eq!(4194304, DEFAULT_MAX_SIZE);
        if max_size == 0 || u32::try_from(max_size).is_err() {
            return Err(PyValueError::new_err(
                "max_size must be a number of bytes between 1 and 4294967295",
            ));
        }
        Ok(PyFileBackend(FileConfig {
            data_dir,
            read_legacy,
            max_size,
            generate_key,
        }))
    }

    #[getter]
    fn max_size(&self) -> usize {
        self.0.max_size
    }

    #[getter]
    fn generate_key(&self) -> bool {
        self.0.generate_key
    }

    #[getter]
    fn data_dir(&self) -> PathBuf {
        self.0.data_dir.clone()
    }

    #[getter]
    fn read_legacy(&self) -> bool {
        self.0.read_legacy
    }
}

/// This process's memory (tests and development).
#[pyclass(name = "MemoryBackend", module = "flask_beaker_session._core", frozen)]
pub struct PyMemoryBackend;

#[pymethods]
impl PyMemoryBackend {
    #[new]
    fn new() -> Self {
        PyMemoryBackend
    }
}

/// A Redis server. `tls_*` are PEM bytes for `rediss://`: a CA to trust instead of the
/// public ones, and a client certificate chain with its key.
#[pyclass(name = "RedisBackend", module = "flask_beaker_session._core", frozen)]
pub struct PyRedisBackend(RedisConfig);

#[pymethods]
impl PyRedisBackend {
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (
        *,
        url,
        prefix = "fbs:",
        connect_timeout = 2.0,
        io_timeout = 2.0,
        lock_ttl = 60.0,
        tls_ca_certs = None,
        tls_client = None,
        sentinel_password = None,
        wait_replicas = 0,
        wait_timeout = 1.0,
    ))]
    fn new(
        url: String,
        prefix: &str,
        connect_timeout: f64,
        io_timeout: f64,
        lock_ttl: f64,
        tls_ca_certs: Option<Vec<u8>>,
        tls_client: Option<(Vec<u8>, Vec<u8>)>,
        sentinel_password: Option<String>,
        wait_replicas: u32,
        wait_timeout: f64,
    ) -> PyResult<Self> {
        Ok(PyRedisBackend(RedisConfig {
            url,
            prefix: prefix.to_owned(),
            connect_timeout: seconds("connect_timeout", connect_timeout)?,
            io_timeout: seconds("io_timeout", io_timeout)?,
            lock_ttl: seconds("lock_ttl", lock_ttl)?,
            tls: RedisTls {
                ca_certs: tls_ca_certs,
                client: tls_client,
            },
            sentinel_password: sentinel_password.map(Secret),
            wait_replicas,
            wait_timeout: seconds("wait_timeout", wait_timeout)?,
        }))
    }

    #[getter]
    fn url(&self) -> &str {
        &self.0.url
    }

    #[getter]
    fn prefix(&self) -> &str {
        &self.0.prefix
    }
}

/// A PostgreSQL table. `url`: a libpq-style URL or key=value string (`sslmode`
/// `disable`, `prefer` or `require`; TLS always verifies the server's certificate, against
/// `tls_ca_certs` (PEM bytes) when given, else the public CAs). `create`: whether the first
/// use creates the table when it is missing.
#[pyclass(
    name = "PostgresBackend",
    module = "flask_beaker_session._core",
    frozen
)]
pub struct PyPostgresBackend(PostgresConfig);

#[pymethods]
impl PyPostgresBackend {
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (
        *,
        url,
        schema = None,
        table = "beaker_sessions",
        pool_size = 8,
        connect_timeout = 2.0,
        timeout = 2.0,
        lock_ttl = 60.0,
        create = true,
        tls_ca_certs = None,
        lock = PyPostgresLock::Row,
    ))]
    fn new(
        url: String,
        schema: Option<String>,
        table: &str,
        pool_size: usize,
        connect_timeout: f64,
        timeout: f64,
        lock_ttl: f64,
        create: bool,
        tls_ca_certs: Option<Vec<u8>>,
        lock: PyPostgresLock,
    ) -> PyResult<Self> {
        if pool_size == 0 {
            return Err(PyValueError::new_err("pool_size must be at least 1"));
        }
        if lock == PyPostgresLock::Advisory && pool_size < 2 {
            // A holder keeps one connection; its other statements need another.
            return Err(PyValueError::new_err(
                "pool_size must be at least 2 with the advisory lock",
            ));
        }
        Ok(PyPostgresBackend(PostgresConfig {
            url,
            schema,
            table: table.to_owned(),
            pool_size,
            connect_timeout: seconds("connect_timeout", connect_timeout)?,
            timeout: seconds("timeout", timeout)?,
            lock_ttl: seconds("lock_ttl", lock_ttl)?,
            lock: lock.into(),
            create,
            tls_ca_certs,
        }))
    }

    #[getter]
    fn table(&self) -> &str {
        &self.0.table
    }

    #[getter]
    fn schema(&self) -> Option<&str> {
        self.0.schema.as_deref()
    }

    #[getter]
    fn lock(&self) -> PyPostgresLock {
        self.0.lock.into()
    }
}

/// Everything a store needs, fixed at `init_app`.
#[pyclass(name = "StoreConfig", module = "flask_beaker_session._core", frozen)]
pub struct PyStoreConfig {
    backend: Py<PyAny>,
    backend_config: BackendConfig,
    config: StoreConfig,
    lock_timeout: f64,
}

impl PyStoreConfig {
    /// The core's settings: the common ones and the backend's.
    pub fn core(&self) -> (StoreConfig, BackendConfig) {
        (self.config.clone(), self.backend_config.clone())
    }
}

fn backend_config(backend: &Bound<'_, PyAny>) -> PyResult<BackendConfig> {
    if let Ok(file) = backend.cast::<PyFileBackend>() {
        return Ok(BackendConfig::File(file.get().0.clone()));
    }
    if backend.cast::<PyMemoryBackend>().is_ok() {
        return Ok(BackendConfig::Memory);
    }
    if let Ok(redis) = backend.cast::<PyRedisBackend>() {
        return Ok(BackendConfig::Redis(redis.get().0.clone()));
    }
    if let Ok(pg) = backend.cast::<PyPostgresBackend>() {
        return Ok(BackendConfig::Postgres(pg.get().0.clone()));
    }
    Err(PyTypeError::new_err(
        "backend must be a FileBackend, MemoryBackend, RedisBackend or PostgresBackend",
    ))
}

#[pymethods]
impl PyStoreConfig {
    #[new]
    #[pyo3(
        signature = (
            *,
            backend,
            keys = Vec::new(),
            idle_timeout = None,
            absolute_timeout = None,
            lock_timeout = 10.0,
            max_waiters = None,
            encrypt = true,
        ),
        text_signature = "(*, backend, keys=(), idle_timeout=None, absolute_timeout=None, lock_timeout=10.0, max_waiters=None, encrypt=True)"
    )]
    #[allow(clippy::too_many_arguments)] // keyword-only, one per setting
    fn new(
        backend: &Bound<'_, PyAny>,
        keys: Vec<Vec<u8>>,
        idle_timeout: Option<f64>,
        absolute_timeout: Option<f64>,
        lock_timeout: f64,
        max_waiters: Option<usize>,
        encrypt: bool,
    ) -> PyResult<Self> {
        Ok(PyStoreConfig {
            backend_config: backend_config(backend)?,
            backend: backend.clone().unbind(),
            config: StoreConfig {
                keys: Keys::new(&keys).encrypting(encrypt),
                expiry: Expiry {
                    idle: idle_timeout,
                    absolute: absolute_timeout,
                },
                lock_timeout: seconds("lock_timeout", lock_timeout)?,
                max_waiters,
            },
            lock_timeout,
        })
    }

    #[getter]
    fn backend(&self, py: Python<'_>) -> Py<PyAny> {
        self.backend.clone_ref(py)
    }

    #[getter]
    fn idle_timeout(&self) -> Option<f64> {
        self.config.expiry.idle
    }

    #[getter]
    fn absolute_timeout(&self) -> Option<f64> {
        self.config.expiry.absolute
    }

    #[getter]
    fn lock_timeout(&self) -> f64 {
        self.lock_timeout
    }

    /// How many requests may wait for one session (None: no bound).
    #[getter]
    fn max_waiters(&self) -> Option<usize> {
        self.config.max_waiters
    }

    /// How often read-only requests refresh the last access (None: never needed).
    #[getter]
    fn touch_interval(&self) -> Option<f64> {
        self.config.expiry.touch_interval()
    }
}
