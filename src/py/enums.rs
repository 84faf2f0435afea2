//! The enums of the boundary: what an open found, what a payload is, which backend a store
//! is, what a walk does, how PostgreSQL locks. Python sees members (`OpenStatus.Found`), never magic integers;
//! each mirrors a core enum and converts from or to it here, in one place.

use pyo3::prelude::*;

use crate::report::WalkMode;
use crate::store::postgres::LockMode;
use crate::store::{BackendKind, Opened, PayloadKind};

/// Which backend a store is.
#[pyclass(
    name = "BackendKind",
    module = "flask_beaker_session._core",
    eq,
    eq_int,
    hash,
    frozen
)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PyBackendKind {
    File,
    Memory,
    Redis,
    Postgres,
}

impl From<BackendKind> for PyBackendKind {
    fn from(kind: BackendKind) -> Self {
        match kind {
            BackendKind::File => PyBackendKind::File,
            BackendKind::Memory => PyBackendKind::Memory,
            BackendKind::Redis => PyBackendKind::Redis,
            BackendKind::Postgres => PyBackendKind::Postgres,
        }
    }
}

/// What `Store.open` found.
#[pyclass(
    name = "OpenStatus",
    module = "flask_beaker_session._core",
    eq,
    eq_int,
    hash,
    frozen
)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PyOpenStatus {
    Found,
    Missing,
    Invalid,
    Expired,
    Corrupt,
    Newer,
    Untrusted,
    Unauthenticated,
}

impl PyOpenStatus {
    /// The status of an open outcome, and its handle if any.
    pub fn split<H>(opened: Opened<H>) -> (Self, Option<H>) {
        match opened {
            Opened::Found(h) => (PyOpenStatus::Found, Some(h)),
            Opened::Missing => (PyOpenStatus::Missing, None),
            Opened::Expired => (PyOpenStatus::Expired, None),
            Opened::Corrupt => (PyOpenStatus::Corrupt, None),
            Opened::Unauthenticated => (PyOpenStatus::Unauthenticated, None),
            Opened::Newer => (PyOpenStatus::Newer, None),
            Opened::Untrusted => (PyOpenStatus::Untrusted, None),
        }
    }
}

/// What an opened session's payload is.
#[pyclass(
    name = "PayloadKind",
    module = "flask_beaker_session._core",
    eq,
    eq_int,
    hash,
    frozen
)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PyPayloadKind {
    Record,
    Legacy,
    LegacyWrapped,
}

impl From<PayloadKind> for PyPayloadKind {
    fn from(kind: PayloadKind) -> Self {
        match kind {
            PayloadKind::Record => PyPayloadKind::Record,
            PayloadKind::Legacy => PyPayloadKind::Legacy,
            PayloadKind::LegacyWrapped => PyPayloadKind::LegacyWrapped,
        }
    }
}

/// What a walk over the store does.
#[pyclass(
    name = "WalkMode",
    module = "flask_beaker_session._core",
    from_py_object,
    eq,
    eq_int,
    hash,
    frozen
)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PyWalkMode {
    Stats,
    Sweep,
    Clear,
    Rekey,
    RekeyDryRun,
}

impl From<PyWalkMode> for WalkMode {
    fn from(mode: PyWalkMode) -> Self {
        match mode {
            PyWalkMode::Stats => WalkMode::Stats,
            PyWalkMode::Sweep => WalkMode::Sweep,
            PyWalkMode::Clear => WalkMode::Clear,
            PyWalkMode::Rekey => WalkMode::Rekey,
            PyWalkMode::RekeyDryRun => WalkMode::RekeyDryRun,
        }
    }
}

/// How the PostgreSQL backend locks a session (`SESSION_DATABASE_LOCK`): a lock row in
/// the session's row (any server, any pooler) or a session-level advisory lock
/// (PostgreSQL 14+, no transaction pooling).
#[pyclass(
    name = "PostgresLock",
    module = "flask_beaker_session._core",
    from_py_object,
    eq,
    eq_int,
    hash,
    frozen
)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PyPostgresLock {
    Row,
    Advisory,
}

impl From<PyPostgresLock> for LockMode {
    fn from(mode: PyPostgresLock) -> Self {
        match mode {
            PyPostgresLock::Row => LockMode::Row,
            PyPostgresLock::Advisory => LockMode::Advisory,
        }
    }
}

impl From<LockMode> for PyPostgresLock {
    fn from(mode: LockMode) -> Self {
        match mode {
            LockMode::Row => PyPostgresLock::Row,
            LockMode::Advisory => PyPostgresLock::Advisory,
        }
    }
}
