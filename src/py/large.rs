//! `LargeValue`: one large value of a save, as Python hands it to the core: either the
//! loaded record's value `index`, unchanged (its stored segment is reused: not re-pickled,
//! re-encrypted nor re-hashed), or new bytes to seal into a segment of their own
//! (`record::segments`). A typed object rather than positional tuples, so that a reuse can
//! never be mistaken for a value.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::record::{Kind, Value};

enum Source {
    Loaded(usize),
    Changed {
        key: Py<PyBytes>,
        value: Py<PyBytes>,
        kind: Kind,
    },
}

/// One large value of a save (`Handle.save`, `Store.create`).
#[pyclass(name = "LargeValue", module = "flask_beaker_session._core", frozen)]
pub struct PyLargeValue {
    source: Source,
}

#[pymethods]
impl PyLargeValue {
    /// The loaded record's large value `index` (as `Handle.record()` listed it), unchanged.
    #[staticmethod]
    fn loaded(index: usize) -> Self {
        PyLargeValue {
            source: Source::Loaded(index),
        }
    }

    /// A new or changed value: `key` is the pickled key, `value` the pickled value, or the
    /// value itself when it is a `bytes` object (`raw`).
    #[staticmethod]
    #[pyo3(signature = (key, value, raw = false))]
    fn changed(key: Py<PyBytes>, value: Py<PyBytes>, raw: bool) -> Self {
        PyLargeValue {
            source: Source::Changed {
                key,
                value,
                kind: if raw { Kind::Bytes } else { Kind::Pickle },
            },
        }
    }

    /// The loaded index this value reuses (None for a changed value).
    #[getter]
    fn index(&self) -> Option<usize> {
        match self.source {
            Source::Loaded(i) => Some(i),
            Source::Changed { .. } => None,
        }
    }
}

/// The core's view of `values`, borrowing the bytes of the Python objects (which the caller
/// keeps alive; `bytes` are immutable, so they can be read with the GIL released).
pub fn values<'a>(py: Python<'_>, values: &'a [Bound<'_, PyLargeValue>]) -> Vec<Value<'a>> {
    values
        .iter()
        .map(|v| match &v.get().source {
            Source::Loaded(i) => Value::Reuse(*i),
            Source::Changed { key, value, kind } => Value::New {
                key: bytes_of(py, key),
                kind: *kind,
                plain: bytes_of(py, value),
            },
        })
        .collect()
}

fn bytes_of<'a>(py: Python<'_>, b: &'a Py<PyBytes>) -> &'a [u8] {
    // Tied to the `Py`, which the caller's `LargeValue` keeps for the whole call.
    b.as_bytes(py)
}
