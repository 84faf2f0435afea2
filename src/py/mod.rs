//! The PyO3 layer: the only code that knows about Python. It converts arguments to plain
//! Rust values, releases the GIL (`Python::detach`) around every call into the core, and
//! maps `StoreError` to Python exceptions in exactly one place (`errors.rs`).

mod errors;
mod store;

use pyo3::prelude::*;

/// The private native module `flask_beaker_session._core`.
#[pymodule]
pub mod _core {
    #[pymodule_export]
    use super::store::{PyHandle, PyStore};

    use pyo3::prelude::*;

    /// Forgets in-process lock state; registered with `os.register_at_fork` for the child.
    #[pyfunction]
    fn reset_after_fork() {
        crate::lock::reset_after_fork();
        crate::redis_store::reset_after_fork();
    }

    /// Path of the record of `sid` under `data_dir` (the layout's single source of truth,
    /// for tools and tests). Raises ValueError for a malformed id.
    #[pyfunction]
    fn record_path(data_dir: std::path::PathBuf, sid: &str) -> PyResult<std::path::PathBuf> {
        let id = crate::sid::SessionId::parse(sid).ok_or(crate::error::StoreError::InvalidId)?;
        Ok(crate::shard::record_path(&data_dir, &id))
    }

    /// Whether `value` is a well-formed session id (32 lowercase hex characters).
    #[pyfunction]
    fn is_valid_id(value: &str) -> bool {
        crate::sid::SessionId::parse(value).is_some()
    }

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("OPEN_FOUND", super::store::OPEN_FOUND)?;
        m.add("OPEN_MISSING", super::store::OPEN_MISSING)?;
        m.add("OPEN_INVALID", super::store::OPEN_INVALID)?;
        m.add("OPEN_EXPIRED", super::store::OPEN_EXPIRED)?;
        m.add("OPEN_CORRUPT", super::store::OPEN_CORRUPT)?;
        m.add("OPEN_NEWER", super::store::OPEN_NEWER)?;
        m.add("RECORD_FORMAT_VERSION", crate::record::VERSION)?;
        Ok(())
    }
}
