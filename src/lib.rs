//! Rust core of flask-beaker-session: session ids, the record format, per-session locks,
//! the file store with crash-safe in-place saves, and the reader for the original package's
//! Beaker files. Everything but `py` is plain Rust, testable with `cargo test`; `py` is the
//! thin PyO3 layer that exposes it as the private module `flask_beaker_session._core`.

pub mod backend;
pub mod error;
pub mod legacy;
pub mod lock;
pub mod memory;
pub mod pickle_scan;
#[cfg(test)]
mod proptests;
mod py;
pub mod record;
pub mod redis_store;
pub mod shard;
pub mod sid;
pub mod store;
pub mod sweep;

pub use py::_core;
