//! Rust core of flask-beaker-session, exposed to Python as the private module
//! `flask_beaker_session._core`. Everything but `py` is plain Rust, testable with
//! `cargo test`. A table of contents:
//!
//! * `store`: the backend contract (`Store`, `SessionHandle`) and its three
//!   implementations, `store::file` (with its sweeper), `store::memory` and `store::redis`.
//! * `expiry`: the idle timeout, absolute lifetime, touch interval and Redis TTL rules, in
//!   one place for every backend.
//! * `lock`: the in-process half of the session locks and the `flock` helpers.
//! * `record`: the authenticated record format; `shard`: where a file store keeps records;
//!   `sid`: session ids.
//! * `legacy`: reading the original package's Beaker files.
//! * `report`: what a walk over a store (stats, sweep, clear) returns.
//! * `error`: the one error type.
//! * `platform`: what POSIX and Windows do differently (files, directories, locks' helpers).
//! * `py`: the thin PyO3 layer, the only code that knows about Python.

mod aead;
pub mod error;
pub mod expiry;
pub mod legacy;
pub mod lock;
mod platform;
#[cfg(test)]
mod proptests;
#[cfg(feature = "python")]
mod py;
pub mod record;
pub mod report;
pub mod shard;
pub mod sid;
pub mod store;

#[cfg(feature = "python")]
pub use py::_core;
