//! Per-session exclusive locks, held from a request's first access to the session until its
//! save (SPEC §7). Two layers, because each is cheap where the other is not: threads of one
//! process queue on an in-process table (`thread`), processes on a `flock` of the record
//! file (`file`); both may bound how many requests wait for one session. Everything here
//! is fork-safe (`fork`), and `fd_cache` keeps idle record files open between requests.

pub mod fd_cache;
mod file;
mod fork;
mod thread;

pub use file::{flock_bounded, flock_until, try_flock, Flock, LockedFile};
pub use fork::{clear_if_free, clone_if_free, generation, lock, reset_after_fork, ForkLocal};
pub use thread::{deadline_after, Acquired, LockKey, LockScope, ThreadLock};
