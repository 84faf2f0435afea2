//! `Report` as a frozen Python class: the counts of one walk, as attributes and as a dict
//! (for `--json` output), built from the core's `Report::counts` so the names are listed
//! once.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::report::Report;

/// Counts from one walk over a store.
#[pyclass(name = "Report", module = "flask_beaker_session._core", frozen, eq)]
#[derive(PartialEq)]
pub struct PyReport(pub Report);

#[pymethods]
impl PyReport {
    #[getter]
    fn records(&self) -> u64 {
        self.0.records
    }
    #[getter]
    fn bytes(&self) -> u64 {
        self.0.bytes
    }
    #[getter]
    fn live(&self) -> u64 {
        self.0.live
    }
    #[getter]
    fn expired(&self) -> u64 {
        self.0.expired
    }
    #[getter]
    fn corrupt(&self) -> u64 {
        self.0.corrupt
    }
    #[getter]
    fn temp(&self) -> u64 {
        self.0.temp
    }
    #[getter]
    fn legacy(&self) -> u64 {
        self.0.legacy
    }
    #[getter]
    fn legacy_expired(&self) -> u64 {
        self.0.legacy_expired
    }
    #[getter]
    fn legacy_locks(&self) -> u64 {
        self.0.legacy_locks
    }
    #[getter]
    fn removed(&self) -> u64 {
        self.0.removed
    }
    #[getter]
    fn bytes_freed(&self) -> u64 {
        self.0.bytes_freed
    }
    #[getter]
    fn errors(&self) -> u64 {
        self.0.errors
    }
    #[getter]
    fn symlinks(&self) -> u64 {
        self.0.symlinks
    }
    #[getter]
    fn foreign(&self) -> u64 {
        self.0.foreign
    }
    #[getter]
    fn rekeyed(&self) -> u64 {
        self.0.rekeyed
    }
    #[getter]
    fn current(&self) -> u64 {
        self.0.current
    }
    #[getter]
    fn plain(&self) -> u64 {
        self.0.plain
    }
    #[getter]
    fn unopenable(&self) -> u64 {
        self.0.unopenable
    }
    #[getter]
    fn sizes(&self) -> Vec<u64> {
        self.0.sizes.to_vec()
    }

    /// The counts as a dict (for `--json` output).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for (name, value) in self.0.counts() {
            out.set_item(name, value)?;
        }
        out.set_item("sizes", self.sizes())?;
        Ok(out)
    }

    fn __repr__(&self) -> String {
        let counts: Vec<String> = (self.0.counts().iter())
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        format!("Report({}, sizes={:?})", counts.join(", "), self.0.sizes)
    }
}
