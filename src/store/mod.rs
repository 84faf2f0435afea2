//! The backend contract: what every session store (files, memory, Redis) does, so the Python
//! layer makes the same calls whichever is configured, and a feature that concerns every
//! backend is written against two traits instead of three implementations.
//!
//! * [`Store`] opens a session (waits for its lock, reads, verifies, enforces expiry),
//!   creates new ones, and walks the whole store (stats, sweep, clear).
//! * [`SessionHandle`] is one open, locked session. It says what it loaded, and ends with
//!   exactly one of `save`, `touch` or `delete`, or by being dropped: each releases the lock
//!   (dropping changes nothing). Consuming the handle makes a second save impossible.
//!
//! What the backends share lives here or next door and nowhere else: the settings every
//! store has ([`StoreConfig`]: tag keys, expiry, lock timeout), the expiry and touch rules
//! (`crate::expiry`), the record format (`crate::record`), and the in-process half of the
//! session lock ([`lock_thread`], keyed by the store's [`LockScope`] and the id).
//!
//! **Adding a backend** means adding one file in `src/store/` with a type implementing
//! [`Store`] and one implementing [`SessionHandle`], a variant of [`BackendConfig`] (and of
//! [`BackendKind`]) built in [`build`], and one pyclass for its settings in
//! `src/py/config.rs`. Nothing else branches on the backend.

pub mod file;
pub mod index;
pub mod memory;
pub mod postgres;
pub mod redis;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{StoreError, StoreResult};
use crate::expiry::Expiry;
use crate::lock::{deadline_after, Acquired, LockKey, ThreadLock};
use crate::record::{Keys, Payload, Segments};
use crate::report::{Report, WalkMode};
use crate::sid::SessionId;
pub use index::IndexEntry;

pub use file::{FileConfig, DEFAULT_MAX_SIZE};
pub use postgres::PostgresConfig;
pub use redis::{RedisConfig, RedisTls};

/// Settings every store has, fixed at `init_app`.
#[derive(Clone)]
pub struct StoreConfig {
    /// Tag keys (from `SECRET_KEY` and its fallbacks).
    pub keys: Keys,
    /// Idle timeout and absolute lifetime.
    pub expiry: Expiry,
    /// How long to wait for another request of the same session.
    pub lock_timeout: Duration,
    /// How many requests may wait for one session behind its holder (`None`: no bound):
    /// per process, and for the file backend also across processes (see `crate::lock`).
    pub max_waiters: Option<usize>,
}

impl StoreConfig {
    /// The error of a lock wait that reached the lock timeout.
    pub fn lock_timed_out(&self) -> StoreError {
        StoreError::LockTimeout {
            waited: self.lock_timeout,
        }
    }

    /// The error of a request refused because too many others wait for the session.
    pub fn busy(&self) -> StoreError {
        StoreError::Busy {
            max: self.max_waiters.unwrap_or(0),
        }
    }
}

/// Which backend a store is, with its own settings.
#[derive(Clone, Debug)]
pub enum BackendConfig {
    /// Files under a data directory.
    File(FileConfig),
    /// This process's memory.
    Memory,
    /// A Redis server.
    Redis(RedisConfig),
    /// A PostgreSQL table.
    Postgres(PostgresConfig),
}

/// Which backend a store is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// Files under a data directory.
    File,
    /// This process's memory.
    Memory,
    /// A Redis server.
    Redis,
    /// A PostgreSQL table.
    Postgres,
}

impl BackendKind {
    /// The backend's `SESSION_TYPE` value.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::File => "file",
            BackendKind::Memory => "memory",
            BackendKind::Redis => "redis",
            BackendKind::Postgres => "postgresql",
        }
    }
}

/// Builds a store. Does no I/O that could block (no connection; a file store only checks
/// whether a legacy tree exists) and holds no descriptor, so it can be built before a
/// pre-fork server forks. Malformed settings (a Redis URL) are `StoreError::Config`.
pub fn build(cfg: StoreConfig, backend: BackendConfig) -> StoreResult<Arc<dyn Store>> {
    Ok(match backend {
        BackendConfig::File(file) => Arc::new(file::FileStore::new(cfg, file)),
        BackendConfig::Memory => Arc::new(memory::MemoryStore::new(cfg)),
        // Redis is reachable from other hosts: without a secret, whoever can write to it
        // could plant records that would be unpickled.
        BackendConfig::Redis(_) if !cfg.keys.is_keyed() => {
            return Err(StoreError::Config(
                "SESSION_TYPE='redis' needs a SECRET_KEY: records in Redis are authenticated \
                 with a key derived from it"
                    .to_owned(),
            ))
        }
        BackendConfig::Redis(redis) => Arc::new(redis::RedisStore::new(cfg, redis)?),
        // As Redis: whoever can write to the table must not be able to plant records.
        BackendConfig::Postgres(_) if !cfg.keys.is_keyed() => {
            return Err(StoreError::Config(
                "SESSION_TYPE='postgresql' needs a SECRET_KEY: records in the database are \
                 authenticated with a key derived from it"
                    .to_owned(),
            ))
        }
        BackendConfig::Postgres(pg) => Arc::new(postgres::PostgresStore::new(cfg, pg)?),
    })
}

/// Forgets every per-process state of every backend (in-process locks, kept descriptors,
/// pooled connections). Called in a child right after `fork`.
/// Takes no lock: it makes this process a new fork generation (`crate::lock::ForkLocal`),
/// and each of those states is replaced lazily, on its next use.
pub fn reset_after_fork() {
    crate::lock::reset_after_fork();
}

/// What `Store::open` found.
pub enum Opened<H> {
    /// A live session, locked by the returned handle.
    Found(H),
    /// No stored session has this id.
    Missing,
    /// The session was past its idle timeout or absolute lifetime; it has been removed.
    Expired,
    /// The record was torn or garbled; it has been removed.
    Corrupt,
    /// The record is whole but its tag fails under every key (written with another key, or
    /// forged); it has been removed.
    Unauthenticated,
    /// The record was written by a newer format version; left in place.
    Newer,
    /// A legacy (Beaker) file that this process must not unpickle: not a regular file, not
    /// owned by this process's user, or writable by group or others. Left in place, unread.
    Untrusted,
}

impl<H> From<crate::record::Refused> for Opened<H> {
    fn from(refused: crate::record::Refused) -> Self {
        match refused {
            crate::record::Refused::Newer => Opened::Newer,
            crate::record::Refused::Corrupt => Opened::Corrupt,
            crate::record::Refused::Unauthenticated => Opened::Unauthenticated,
        }
    }
}

impl<H> Opened<H> {
    /// The same outcome with the handle converted.
    pub fn map<T>(self, f: impl FnOnce(H) -> T) -> Opened<T> {
        match self {
            Opened::Found(h) => Opened::Found(f(h)),
            Opened::Missing => Opened::Missing,
            Opened::Expired => Opened::Expired,
            Opened::Corrupt => Opened::Corrupt,
            Opened::Unauthenticated => Opened::Unauthenticated,
            Opened::Newer => Opened::Newer,
            Opened::Untrusted => Opened::Untrusted,
        }
    }
}

/// What an opened session's payload is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadKind {
    /// Our record: the pickled user dict.
    Record,
    /// A legacy Beaker session whose payload is the bare session dict.
    Legacy,
    /// A legacy Beaker session whose payload is Beaker's whole outer pickle.
    LegacyWrapped,
}

/// What an open session knew when it was loaded (besides its payload).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Loaded {
    /// What the payload is.
    pub kind: PayloadKind,
    /// Creation time, when known without unpickling (always for our records).
    pub created: Option<f64>,
    /// Last access (see `expiry::last_access`), when known without unpickling.
    pub last_access: Option<f64>,
    /// Not stored as the store would write it now (under a fallback key, sealed or not
    /// against `SESSION_ENCRYPT`, or a legacy file): its next save rewrites it, and
    /// `flask beaker-session rekey` saves it for that reason alone.
    pub stale: bool,
}

/// A session store.
pub trait Store: Send + Sync {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;

    /// The settings every store has.
    fn config(&self) -> &StoreConfig;

    /// Locks and reads session `id` (waiting at most the lock timeout), enforces expiry.
    /// Expired and corrupt sessions are removed.
    fn open(&self, id: &SessionId, now: f64) -> StoreResult<Opened<Box<dyn SessionHandle>>>;

    /// Stores a new session under a fresh `id`; never overwrites (`StoreError::IdCollision`).
    /// The payload's large values are all new (a new record has no loaded segments).
    fn create_payload(
        &self,
        id: &SessionId,
        payload: &Payload<'_>,
        created: f64,
        now: f64,
    ) -> StoreResult<()>;

    /// [`Store::create_payload`] for a payload without large values.
    fn create(&self, id: &SessionId, payload: &[u8], created: f64, now: f64) -> StoreResult<()> {
        self.create_payload(id, &Payload::small(payload), created, now)
    }

    /// One pass over the store; `threads == 0` means one worker per core.
    fn walk(&self, now: f64, mode: WalkMode, threads: usize) -> StoreResult<Report>;

    /// Sweeps unless another process sharing the store did within `interval` seconds;
    /// `None` when skipped. By default a store sweeps every time (it is not shared).
    fn sweep_if_due(&self, now: f64, interval: f64, threads: usize) -> StoreResult<Option<Report>> {
        let _ = interval;
        self.walk(now, WalkMode::Sweep, threads).map(Some)
    }

    /// Ids of the legacy Beaker sessions present, for migration (file stores only).
    fn legacy_ids(&self) -> Vec<String> {
        Vec::new()
    }

    /// The data directory (file stores only).
    fn data_dir(&self) -> Option<&Path> {
        None
    }

    /// Creates what the store needs on its server if missing (the PostgreSQL table, an
    /// idempotent migration); `Some(true)` if something was created, `None` for stores
    /// that need nothing created.
    fn init_schema(&self) -> StoreResult<Option<bool>> {
        Ok(None)
    }

    // -- the per-user index (`SESSION_USER_KEY`, `index`) ---------------------------------
    // Written before the record that names the user and removed after the record stopped
    // naming them (the Python layer orders the calls), so a crash leaves at worst a stale
    // entry. An entry is a candidate, never proof: readers check the record.

    /// Adds (or replaces) `entry` under `user`.
    fn index_put(&self, user: &str, entry: &IndexEntry) -> StoreResult<()> {
        let _ = (user, entry);
        Err(index::unsupported(self.kind().name()))
    }

    /// Removes session `id` from `user`'s entries (nothing if it is not there).
    fn index_remove(&self, user: &str, id: &SessionId) -> StoreResult<()> {
        let _ = (user, id);
        Err(index::unsupported(self.kind().name()))
    }

    /// `user`'s entries, in no particular order (unreadable ones are left out).
    fn index_list(&self, user: &str) -> StoreResult<Vec<IndexEntry>> {
        let _ = user;
        Err(index::unsupported(self.kind().name()))
    }

    /// Removes every entry whose record no longer exists and that was written more than
    /// `grace` seconds before `now` (younger ones may be ahead of their record), and entries
    /// that cannot be read; returns how many went. Run after a sweep removed the expired
    /// records, it leaves the index naming exactly the stored sessions.
    fn index_sweep(&self, now: f64, grace: f64) -> StoreResult<u64> {
        let _ = (now, grace);
        Err(index::unsupported(self.kind().name()))
    }
}

/// One open session, holding its lock until it is saved, touched, deleted or dropped.
pub trait SessionHandle: Send {
    /// The session id.
    fn id(&self) -> &SessionId;

    /// What was loaded, besides the payload.
    fn loaded(&self) -> Loaded;

    /// The stored payload as loaded (pickle bytes): of the small values only when the
    /// record has large ones (`take_segments`).
    fn payload(&self) -> &[u8];

    /// The loaded record's large values (`record::segments`), taken out (once: afterwards
    /// empty). They keep the stored bytes they live in, so they stay readable after the
    /// handle is gone, and a save's `Value::Reuse` refers to them. No default: a backend
    /// that answered "none" would make every large value of its records vanish.
    fn take_segments(&mut self) -> Segments;

    /// Stores `payload` as the new version and releases the lock (also when it fails).
    /// `created` fills in a creation time the store could not read (legacy sessions). The
    /// record format (sealing, segments reused as stored) is `record`'s business: a
    /// backend passes the payload on to `record::encode_slot` or `record::seal`.
    fn save_payload(
        self: Box<Self>,
        payload: &Payload<'_>,
        now: f64,
        created: Option<f64>,
    ) -> StoreResult<()>;

    /// [`SessionHandle::save_payload`] for a payload without large values.
    fn save(self: Box<Self>, payload: &[u8], now: f64, created: Option<f64>) -> StoreResult<()> {
        self.save_payload(&Payload::small(payload), now, created)
    }

    /// Refreshes the last access if the touch interval has passed since the loaded one
    /// (`Expiry::touch_due`), and releases the lock either way. True if it wrote.
    fn touch(self: Box<Self>, now: f64) -> StoreResult<bool>;

    /// Removes the stored session and releases the lock.
    fn delete(self: Box<Self>) -> StoreResult<()>;
}

/// The lock preamble of every backend's `open`: waits (bounded by the lock timeout, and
/// refused at once past `max_waiters` waiting threads) for the in-process lock of `key`,
/// and returns it with the deadline that bounds the rest of the wait (the cross-process
/// half: the file store's `flock`, Redis `SET NX`).
pub fn lock_thread(key: LockKey, cfg: &StoreConfig) -> StoreResult<(ThreadLock, Instant)> {
    let deadline = deadline_after(cfg.lock_timeout);
    match ThreadLock::acquire_bounded(key, deadline, cfg.max_waiters) {
        Acquired::Locked(lock) => Ok((lock, deadline)),
        Acquired::TimedOut => Err(cfg.lock_timed_out()),
        Acquired::Busy => Err(cfg.busy()),
    }
}

/// `threads`, or one per core when 0.
pub fn worker_count(threads: usize) -> usize {
    if threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        threads
    }
}

#[cfg(test)]
mod tests;
