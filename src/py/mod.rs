//! The PyO3 layer: the only code that knows about Python. It converts arguments to plain
//! Rust values, releases the GIL (`Python::detach`) around every call into the core, and
//! maps `StoreError` to Python exceptions in exactly one place (`errors.rs`). One file per
//! exposed concept: the store, the handle, the settings, the enums, the walk report.

mod config;
mod enums;
mod errors;
mod handle;
mod large;
mod report;
mod store;

use pyo3::prelude::*;

/// The private native module `flask_beaker_session._core`.
#[pymodule]
pub mod _core {
    #[pymodule_export]
    use super::config::{
        PyFileBackend, PyMemoryBackend, PyPostgresBackend, PyRedisBackend, PyStoreConfig,
    };
    #[pymodule_export]
    use super::enums::{PyBackendKind, PyOpenStatus, PyPayloadKind, PyPostgresLock, PyWalkMode};
    #[pymodule_export]
    use super::handle::PyHandle;
    #[pymodule_export]
    use super::large::PyLargeValue;
    #[pymodule_export]
    use super::report::PyReport;
    #[pymodule_export]
    use super::store::PyStore;

    use pyo3::prelude::*;

    /// Forgets in-process lock state, cached descriptors and pooled connections; registered
    /// with `os.register_at_fork` for the child.
    #[pyfunction]
    fn reset_after_fork() {
        crate::store::reset_after_fork();
    }

    /// Path of the record of `sid` under `data_dir` (the layout's single source of truth,
    /// for tools and tests). Raises ValueError for a malformed id.
    #[pyfunction]
    fn record_path(data_dir: std::path::PathBuf, sid: &str) -> PyResult<std::path::PathBuf> {
        let id = crate::sid::SessionId::parse(sid).ok_or(crate::error::StoreError::InvalidId)?;
        Ok(crate::shard::record_path(&data_dir, &id))
    }

    /// Records visited by walks (`Store.walk`) in this process so far, every store and mode
    /// counted: sampled before and while a walk runs (in another thread: it releases the
    /// GIL), the difference is that walk's progress.
    #[pyfunction]
    fn walked_records() -> u64 {
        crate::report::walked()
    }

    /// Whether `value` is a well-formed session id (32 lowercase hex characters).
    #[pyfunction]
    fn is_valid_id(value: &str) -> bool {
        crate::sid::SessionId::parse(value).is_some()
    }

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("RECORD_FORMAT_VERSION", crate::record::VERSION)?;
        m.add("LARGE_VALUE", crate::record::LARGE_VALUE)?;
        Ok(())
    }
}
