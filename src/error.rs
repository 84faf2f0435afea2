//! The one error type of the core, so that every backend fails the same way and the Python
//! layer maps failures to exceptions in one place (`py/errors.rs`). Variants are grouped by
//! what the caller can do about them: an I/O failure names the operation and the real path
//! involved (never a session id, which is a bearer secret), a lock timeout says how long we
//! waited. Invalid ids, unknown ids, corrupt and expired records are *not* errors: they are
//! ordinary outcomes of `Store::open` ("no session"), because hostile input must never turn
//! into an exception.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong in the core and must be reported to the caller.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem call failed. `op` is a short verb ("open", "write", "rename"…).
    #[error("could not {op} {}: {source}", path.display())]
    Io {
        /// What we were doing.
        op: &'static str,
        /// The file or directory involved (a digest path, never the raw id).
        path: PathBuf,
        /// The OS error, kept so Python gets the right `OSError` subclass.
        #[source]
        source: io::Error,
    },
    /// Another request (thread or process) held the session for longer than the lock timeout.
    #[error(
        "could not lock the session within {:.1}s: another request of the same session \
         still holds it (raise SESSION_LOCK_TIMEOUT if such waits are expected)",
        waited.as_secs_f64()
    )]
    LockTimeout {
        /// How long we waited before giving up.
        waited: Duration,
    },
    /// As many requests as allowed (`SESSION_MAX_WAITERS`) already wait for the session:
    /// refused at once rather than tying up a worker until the lock timeout.
    #[error(
        "the session is busy: {max} other request(s) already wait for it (SESSION_MAX_WAITERS)"
    )]
    Busy {
        /// The bound that was reached.
        max: usize,
    },
    /// A session id that is not 32 lowercase hex characters reached an API that needs one.
    #[error("invalid session id (expected 32 lowercase hexadecimal characters)")]
    InvalidId,
    /// The payload is larger than the record format can describe (4 GiB).
    #[error("session payload of {0} bytes is too large")]
    TooLarge(usize),
    /// `create` found a session under the id already (a fresh id collided, or was reused).
    #[error("a session with this id already exists")]
    IdCollision,
    /// The operating system's random source failed (no path is involved).
    #[error("could not read random bytes from the operating system: {0}")]
    Random(String),
    /// A remote store (Redis) could not be reached or did not answer in time.
    #[error("the session store is unavailable ({0})")]
    Unavailable(String),
    /// The session lock expired while the request held it, and another request took it.
    #[error(
        "the session lock expired before the request saved the session; the save was \
         refused so as not to overwrite a newer version"
    )]
    LockLost,
    /// A setting cannot be used (e.g. a malformed Redis URL).
    #[error("{0}")]
    Config(String),
    /// A save named a large value of the loaded record that it does not have (a caller's
    /// mistake: `Reuse` of an index the record did not list, or on a new session).
    #[error("invalid session payload: {0}")]
    BadPayload(&'static str),
    /// The session handle was already saved-and-released or deleted.
    #[error("the session handle is already released")]
    Released,
}

/// Result alias used throughout the core.
pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    /// Wraps an `io::Error` with the operation and path it came from.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        StoreError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
