//! The file backend: session records under one data directory, locked across processes
//! with `flock`, saved in place, and readable alongside the original package's Beaker files.
//!
//! Invariants:
//! * A record is only ever read or changed by the holder of its session lock (in-process
//!   `ThreadLock` + `flock` on the record file). Deletion and file replacement happen under
//!   that lock; a waiter that then gets the lock on the old inode sees it unlinked
//!   (`platform::still_linked`: `nlink == 0` on POSIX) and starts over on the path, so it never reads a stale or unlinked file.
//! * Saves of an existing record write the older of its two slots in place (one `pwrite`);
//!   only creation, growth past the slot capacity and legacy migration write a whole file,
//!   and the last two do it through a temporary file + `rename`, so the previous version stays
//!   loadable if anything fails or the process is killed.
//! * The last access is the later of the header's save time and the file's mtime, both on
//!   the injected clock: a touch sets the mtime to `now`, and a write pins it to `now` when
//!   the system clock is ahead (`record_io::pin_mtime`), so a faked clock expires sessions
//!   here exactly as in the other backends. The sweeper applies the same rule.
//! * Looking up an unknown id creates nothing on disk (no lock file, no directory).
//! * Directories are created 0700 and files 0600, set explicitly rather than via the umask
//!   (POSIX; on Windows they inherit the data dir's ACL: `platform`, `docs/platforms.md`).

mod handle;
pub mod key;
mod record_io;
pub mod sweep;
#[cfg(test)]
mod tests;
mod tree;
mod user_index;

use std::fs::{self, File};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use crate::error::{StoreError, StoreResult};
use crate::legacy;
use crate::lock::{fd_cache, flock_bounded, Flock, LockKey, LockScope, LockedFile, ThreadLock};
use crate::platform::{self, Dir, NotAFile};
use crate::record;
use crate::report::{Report, WalkMode};
use crate::shard;
use crate::sid::SessionId;
use crate::store::{
    lock_thread, worker_count, BackendKind, IndexEntry, Opened, SessionHandle, Store, StoreConfig,
};

use record_io::{check_len, fill_new, read_record, ReadError};

/// The record's name in its shard: the last component of its path (the id's digest), taken
/// as the path's last `RECORD_NAME_LEN` bytes (this runs on every request; parsing the path
/// into components cost more than the rest of the lookup).
fn record_name(path: &Path) -> &str {
    let bytes = path.as_os_str().as_encoded_bytes();
    bytes
        .get(bytes.len().saturating_sub(shard::RECORD_NAME_LEN)..)
        .and_then(|name| std::str::from_utf8(name).ok())
        .unwrap_or_default()
}

/// The cross-process half for a file-backed session: an exclusive `flock` on `file` (the
/// record at `path`) by `deadline`, refused at once when `max_waiters` processes already
/// wait for it.
fn lock_file(file: &File, path: &Path, deadline: Instant, cfg: &StoreConfig) -> StoreResult<()> {
    match flock_bounded(file, deadline, cfg.max_waiters) {
        Ok(Flock::Locked) => Ok(()),
        Ok(Flock::TimedOut) => Err(cfg.lock_timed_out()),
        Ok(Flock::Busy) => Err(cfg.busy()),
        Err(e) => Err(StoreError::io("lock", path, e)),
    }
}

/// Legacy files larger than this are not read (Beaker sessions are small; this bounds the
/// work an oversized or planted file can cause).
const LEGACY_MAX: u64 = 64 << 20;
/// Payloads up to this size are written together with their header in one `pwrite`.
const SMALL_WRITE: usize = 64 << 10;

/// Settings of the file backend.
#[derive(Clone, Debug)]
pub struct FileConfig {
    /// Root of the store; created (0700) on the first save.
    pub data_dir: PathBuf,
    /// Whether to look for sessions of the original package (Beaker files).
    pub read_legacy: bool,
    /// The largest payload (pickled session) read back: a record header announcing more is
    /// refused before anything is allocated (`SESSION_MAX_SIZE`; writes are checked above).
    pub max_size: usize,
    /// Without a `SECRET_KEY` (unkeyed `StoreConfig::keys`), tag records with a key
    /// generated in the data dir (`key`), instead of a checksum only.
    pub generate_key: bool,
}

/// Default of `FileConfig::max_size` (and of `SESSION_MAX_SIZE`): 4 MiB.
pub const DEFAULT_MAX_SIZE: usize = 4 << 20;

/// Where the data of an open session came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// One of our records, slot `slot` with sequence number `seq`, `slot_size` bytes per slot.
    Record {
        /// Index of the current slot.
        slot: usize,
        /// Its sequence number.
        seq: u64,
        /// Bytes per slot.
        slot_size: usize,
    },
    /// A Beaker file, to be migrated on the next save.
    Legacy {
        /// Whether the payload is Beaker's whole outer pickle.
        wrapped: bool,
    },
}

struct Shared {
    cfg: StoreConfig,
    data_dir: Arc<Path>,
    /// Whether a legacy tree is there (one cached `lstat`; `None` inside when reading
    /// legacy files is off).
    legacy: legacy::TreeProbe,
    /// Tag keys: from `SECRET_KEY`, or generated in the data dir.
    keys: key::KeySource,
    max_size: usize,
    /// The data dir's directories, opened without following symlinks (`tree`).
    tree: tree::Tree,
    /// When this process last swept without a usable stamp (`sweep::claim`), `f64` bits.
    last_unstamped_sweep: AtomicU64,
}

/// Where an opened session was found: our record in its shard, or a legacy file.
enum Found {
    Record(Arc<Dir>),
    Legacy(LegacyFile),
}

/// A legacy file being read: where it is, and its directory (for removing it without
/// following a path again).
struct LegacyFile {
    path: PathBuf,
    dir: Arc<Dir>,
    name: String,
}

/// The file backend.
pub struct FileStore {
    shared: Arc<Shared>,
}

/// A locked, open session of a `FileStore`. Dropping it releases the lock without changing
/// anything.
pub struct FileHandle {
    store: Arc<Shared>,
    id: SessionId,
    path: PathBuf,
    /// The record's name (the id's digest) and its shard directory, once it exists.
    name: String,
    shard: Option<Arc<Dir>>,
    legacy: Option<LegacyFile>,
    file: LockedFile,
    /// Whether the file may be kept open for a later request (false once deleted).
    reusable: bool,
    origin: Origin,
    /// The stored payload as loaded (pickle bytes).
    pub payload: Vec<u8>,
    /// The large values as loaded (taken by the Python handle).
    pub segments: record::Segments,
    /// Creation time, when known without Python (always for our records).
    pub created: Option<f64>,
    /// Time of the previous access, when known without Python.
    pub last_access: Option<f64>,
    /// Opened under a fallback key or in the other format: the next save rewrites it.
    pub stale: bool,
    _thread_lock: ThreadLock,
}

enum Step<T> {
    Done(T),
    Retry,
}

/// An opened and `flock`ed file, and its metadata as seen under the lock.
struct Held {
    locked: LockedFile,
    meta: fs::Metadata,
}

impl FileStore {
    /// Builds a store. Does no I/O and holds no file descriptor, so it is safe to create
    /// before a pre-fork server forks.
    pub fn new(cfg: StoreConfig, file: FileConfig) -> Self {
        let tree = file
            .read_legacy
            .then(|| file.data_dir.join(shard::LEGACY_DIR));
        let keys = key::KeySource::new(&cfg.keys, &file.data_dir, file.generate_key);
        let data_dir: Arc<Path> = Arc::from(file.data_dir);
        FileStore {
            shared: Arc::new(Shared {
                cfg,
                tree: tree::Tree::new(Arc::clone(&data_dir)),
                last_unstamped_sweep: AtomicU64::new(0),
                data_dir,
                legacy: legacy::TreeProbe::new(tree),
                keys,
                max_size: file.max_size,
            }),
        }
    }

    /// Whether a legacy Beaker tree is there now (as of at most `legacy::PROBE_TTL` ago):
    /// one `lstat` of `container_file/` per TTL, only after a miss in our store.
    pub fn legacy_present(&self) -> bool {
        self.shared.legacy.present()
    }

    /// Path of the record of `id`.
    pub fn record_path(&self, id: &SessionId) -> PathBuf {
        shard::record_path(&self.shared.data_dir, id)
    }

    /// Opens session `id`: waits for its lock (bounded), reads and verifies the record,
    /// enforces expiry. Corrupt and expired records are removed.
    pub fn open_file(&self, id: &SessionId, now: f64) -> StoreResult<Opened<FileHandle>> {
        let key = LockKey {
            scope: LockScope::Dir(Arc::clone(&self.shared.data_dir)),
            id: *id,
        };
        let (thread_lock, deadline) = lock_thread(key, &self.shared.cfg)?;
        let path = self.record_path(id);
        let mut thread_lock = Some(thread_lock);
        loop {
            if let Step::Done(result) = self.try_open(id, &path, now, deadline, &mut thread_lock)? {
                return Ok(result);
            }
        }
    }

    /// Locks `file` (opened at `name` in `dir`, bounded by `deadline`) and reads its
    /// metadata; `None` if it was unlinked meanwhile (deleted or replaced while we waited:
    /// look again).
    fn hold(
        &self,
        file: File,
        (dir, name): (&Dir, &str),
        path: &Path,
        deadline: Instant,
    ) -> StoreResult<Option<Held>> {
        let locked = LockedFile::new(file);
        let file = locked.file().map_err(|e| StoreError::io("open", path, e))?;
        lock_file(file, path, deadline, &self.shared.cfg)?;
        let meta = file
            .metadata()
            .map_err(|e| StoreError::io("stat", path, e))?;
        let linked = platform::still_linked(file, &meta, dir, name)
            .map_err(|e| StoreError::io("stat", path, e))?;
        Ok(linked.then_some(Held { locked, meta }))
    }

    fn try_open(
        &self,
        id: &SessionId,
        path: &Path,
        now: f64,
        deadline: Instant,
        thread_lock: &mut Option<ThreadLock>,
    ) -> StoreResult<Step<Opened<FileHandle>>> {
        let name = record_name(path);
        // The shard, reached from the data dir without following symlinks (cached). A
        // symlink or a file in its place is never followed: no session here (the sweeper
        // reports it). ENOTDIR for the data dir itself, like EROFS or EACCES, is an I/O
        // error: the store is broken, which must not pass for a missing session.
        let shard = match self.shared.tree.shard(shard::shard_of(name), false) {
            Ok(tree::Found::Dir(fd)) => fd,
            Ok(tree::Found::Missing) if !self.shared.tree.still_current(None) => {
                return Ok(Step::Retry);
            }
            Ok(tree::Found::Missing | tree::Found::NotDir) => {
                return self.try_open_legacy(id, path, now, deadline, thread_lock);
            }
            Err(e) => return Err(StoreError::io("open", path, e)),
        };
        let opened = match fd_cache::take(path) {
            Some(f) => Ok(f),
            None => platform::open_file(&shard, name),
        };
        let file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                // The cached shard may be stale (data dir removed or replaced): look again.
                if !self.shared.tree.still_current(Some(&shard)) {
                    return Ok(Step::Retry);
                }
                return self.try_open_legacy(id, path, now, deadline, thread_lock);
            }
            // Not a file at the record's name (a symlink: ELOOP, never followed; a
            // directory: EISDIR; a socket: ENXIO): no session. A symlink is removed (the
            // link itself), an empty directory too, anything else the sweeper reports.
            Err(e)
                if matches!(
                    platform::not_a_file(&e),
                    Some(NotAFile::Symlink | NotAFile::Dir | NotAFile::Special)
                ) =>
            {
                if platform::unlink(&shard, name).is_err() {
                    let _ = platform::remove_empty_dir(&shard, name);
                }
                return Ok(Step::Done(Opened::Corrupt));
            }
            Err(e) => return Err(StoreError::io("open", path, e)),
        };
        let Some(Held { locked, meta }) = self.hold(file, (&shard, name), path, deadline)? else {
            return Ok(Step::Retry);
        };
        let file = locked.file().map_err(|e| StoreError::io("read", path, e))?;
        // No generated key yet: nothing we wrote can verify (planted, or the key was lost).
        let Some(keys) = self.shared.keys.existing()? else {
            let _ = platform::unlink(&shard, name);
            return Ok(Step::Done(Opened::Unauthenticated));
        };
        let read = match read_record(file, &meta, keys, id, self.shared.max_size) {
            Ok(r) => r,
            Err(ReadError::Io(e)) => return Err(StoreError::io("read", path, e)),
            Err(ReadError::Newer) => return Ok(Step::Done(Opened::Newer)),
            Err(ReadError::Corrupt) => {
                let _ = platform::unlink(&shard, name);
                return Ok(Step::Done(Opened::Corrupt));
            }
            Err(ReadError::Unauthenticated) => {
                let _ = platform::unlink(&shard, name);
                return Ok(Step::Done(Opened::Unauthenticated));
            }
        };
        let last_access = record_io::last_access(read.saved_at, &meta);
        let expiry = &self.shared.cfg.expiry;
        if expiry.is_expired(now, Some(read.created), Some(last_access)) {
            let _ = platform::unlink(&shard, name);
            return Ok(Step::Done(Opened::Expired));
        }
        let origin = Origin::Record {
            slot: read.slot,
            seq: read.seq,
            slot_size: read.slot_size,
        };
        let mut handle =
            self.handle(id, path, Found::Record(shard), locked, origin, thread_lock)?;
        handle.payload = read.payload;
        handle.segments = read.segments;
        handle.stale = read.stale;
        handle.created = Some(read.created);
        handle.last_access = Some(last_access);
        Ok(Step::Done(Opened::Found(handle)))
    }

    /// A handle without payload or times yet (the caller fills them in).
    fn handle(
        &self,
        id: &SessionId,
        path: &Path,
        at: Found,
        file: LockedFile,
        origin: Origin,
        thread_lock: &mut Option<ThreadLock>,
    ) -> StoreResult<FileHandle> {
        let (shard, legacy) = match at {
            Found::Record(shard) => (Some(shard), None),
            Found::Legacy(legacy) => (None, Some(legacy)),
        };
        let Some(lock) = thread_lock.take() else {
            return Err(StoreError::Released);
        };
        Ok(FileHandle {
            store: Arc::clone(&self.shared),
            id: *id,
            path: path.to_path_buf(),
            name: record_name(path).to_owned(),
            shard,
            legacy,
            file,
            reusable: true,
            origin,
            payload: Vec::new(),
            segments: record::Segments::default(),
            created: None,
            last_access: None,
            stale: false,
            _thread_lock: lock,
        })
    }

    fn try_open_legacy(
        &self,
        id: &SessionId,
        path: &Path,
        now: f64,
        deadline: Instant,
        thread_lock: &mut Option<ThreadLock>,
    ) -> StoreResult<Step<Opened<FileHandle>>> {
        if !self.shared.legacy.present() {
            return Ok(Step::Done(Opened::Missing));
        }
        let legacy_path = shard::legacy_path(&self.shared.data_dir, id);
        // Reached from the data dir one name at a time, never through a symlink.
        let (legacy_dir, legacy_name) = match self.legacy_dir(id) {
            Ok(Some(found)) => found,
            Ok(None) => return Ok(Step::Done(Opened::Missing)),
            Err(e) => return Err(StoreError::io("open", &legacy_path, e)),
        };
        let file = match platform::open_file(&legacy_dir, &legacy_name) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound || platform::not_a_file(&e).is_some() => {
                // Absent, or not a file we could read (a directory, a symlink, a socket).
                return Ok(Step::Done(Opened::Missing));
            }
            Err(e) => return Err(StoreError::io("open", &legacy_path, e)),
        };
        // Unlinked meanwhile: migrated (or removed) while we waited; our record may exist now.
        let held = self.hold(file, (&legacy_dir, &legacy_name), &legacy_path, deadline)?;
        let Some(Held { locked, meta }) = held else {
            return Ok(Step::Retry);
        };
        // A legacy file is a raw pickle: only one that nobody but this user can have written
        // is read (SECURITY.md). Others are left in place, unread.
        if legacy::trusted(&meta).is_err() {
            return Ok(Step::Done(Opened::Untrusted));
        }
        if meta.len() > LEGACY_MAX {
            return Ok(Step::Done(Opened::Corrupt));
        }
        let mut bytes = vec![0u8; meta.len() as usize];
        match (locked.file()).and_then(|f| platform::read_exact_at(f, &mut bytes, 0)) {
            Ok(()) => {}
            // Shorter than `fstat` said: cut under us, unusable.
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                return Ok(Step::Done(Opened::Corrupt))
            }
            Err(e) => return Err(StoreError::io("read", &legacy_path, e)),
        }
        let Ok(decoded) = legacy::decode(&bytes) else {
            let _ = platform::unlink(&legacy_dir, &legacy_name);
            return Ok(Step::Done(Opened::Corrupt));
        };
        let expiry = &self.shared.cfg.expiry;
        if expiry.is_expired(now, decoded.created, decoded.accessed) {
            let _ = platform::unlink(&legacy_dir, &legacy_name);
            return Ok(Step::Done(Opened::Expired));
        }
        let origin = Origin::Legacy {
            wrapped: decoded.wrapped,
        };
        let legacy = LegacyFile {
            path: legacy_path,
            dir: legacy_dir,
            name: legacy_name,
        };
        let mut handle =
            self.handle(id, path, Found::Legacy(legacy), locked, origin, thread_lock)?;
        handle.payload = decoded.payload;
        handle.created = decoded.created;
        handle.last_access = decoded.accessed;
        Ok(Step::Done(Opened::Found(handle)))
    }

    /// The directory `container_file/<c>/<cc>/` of a legacy session and its file's name;
    /// `None` if that directory is missing, or a symlink or a file is in its way.
    fn legacy_dir(&self, id: &SessionId) -> std::io::Result<Option<(Arc<Dir>, String)>> {
        let h = id.to_hex();
        let found = self
            .shared
            .tree
            .open_path(&[shard::LEGACY_DIR, &h[..1], &h[..2]])?;
        Ok(match found {
            tree::Found::Dir(fd) => Some((fd, format!("{h}.cache"))),
            tree::Found::Missing | tree::Found::NotDir => None,
        })
    }

    /// Creates the record file `name` (never overwriting, never through a symlink) in its
    /// shard, creating the directories it needs (0700). A shard found removed is looked up
    /// again from the path, and the cache is re-checked at most once a second
    /// (`tree::Tree::recheck_due`), so records go to a data directory replaced under its
    /// path within a second.
    fn create_record(&self, name: &str, path: &Path) -> StoreResult<(Arc<Dir>, File)> {
        let tree = &self.shared.tree;
        let mut fresh = false;
        loop {
            let shard = match tree.shard(shard::shard_of(name), true) {
                Ok(tree::Found::Dir(fd)) => fd,
                Ok(_) => {
                    let e = std::io::Error::new(
                        ErrorKind::NotADirectory,
                        "a symlink or a file is where the shard directory belongs \
                         (never followed; see `flask beaker-session stats`)",
                    );
                    return Err(StoreError::io("create", path, e));
                }
                Err(e) => return Err(StoreError::io("create", path, e)),
            };
            if !fresh && tree.recheck_due() && !tree.still_current(Some(&shard)) {
                fresh = true;
                continue;
            }
            match platform::create_file(&shard, name) {
                Ok(file) => return Ok((shard, file)),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    return Err(StoreError::IdCollision)
                }
                // The shard was removed since it was cached: once more, from the path.
                Err(e) if e.kind() == ErrorKind::NotFound && !fresh => {
                    tree.forget();
                    fresh = true;
                }
                Err(e) => return Err(StoreError::io("create", path, e)),
            }
        }
    }

    /// Stores a brand-new session under a freshly generated `id`. Nobody else knows the id
    /// yet, so no lock is needed; `O_EXCL` refuses to overwrite anything.
    pub fn create_file<'a>(
        &self,
        id: &SessionId,
        payload: impl Into<record::Payload<'a>>,
        created: f64,
        now: f64,
    ) -> StoreResult<()> {
        let payload = payload.into();
        check_len(payload.plain_len())?;
        let path = self.record_path(id);
        let keys = self.shared.keys.signing()?;
        let slot = record::encode_slot(keys, id, 1, created, now, payload)?;
        check_len(slot.len() - record::HEADER_LEN)?;
        let slot_size = record::slot_size_for(slot.len() - record::HEADER_LEN);
        let (shard, file) = self.create_record(record_name(&path), &path)?;
        if let Err(e) = fill_new(&file, &path, &slot, slot_size, now) {
            // Nothing of a half-written new record may stay behind (disk full, quota).
            let _ = platform::unlink(&shard, record_name(&path));
            return Err(e);
        }
        Ok(())
    }
}

impl Store for FileStore {
    fn kind(&self) -> BackendKind {
        BackendKind::File
    }

    fn config(&self) -> &StoreConfig {
        &self.shared.cfg
    }

    fn open(&self, id: &SessionId, now: f64) -> StoreResult<Opened<Box<dyn SessionHandle>>> {
        Ok(self
            .open_file(id, now)?
            .map(|h| Box::new(h) as Box<dyn SessionHandle>))
    }

    fn create_payload(
        &self,
        id: &SessionId,
        payload: &record::Payload<'_>,
        created: f64,
        now: f64,
    ) -> StoreResult<()> {
        self.create_file(id, *payload, created, now)
    }

    fn walk(&self, now: f64, mode: WalkMode, threads: usize) -> StoreResult<Report> {
        let (dir, expiry) = (&self.shared.data_dir, &self.shared.cfg.expiry);
        if mode.rekeys() {
            let rekeying = sweep::Rekeying {
                keys: self.shared.keys.existing()?,
                max_payload: self.shared.max_size,
                lock_timeout: self.shared.cfg.lock_timeout,
            };
            let threads = worker_count(threads);
            return Ok(sweep::walk_with(
                dir,
                expiry,
                now,
                mode,
                threads,
                Some(&rekeying),
            ));
        }
        Ok(sweep::walk(dir, expiry, now, mode, worker_count(threads)))
    }

    /// Coordinated through `<data_dir>/sweep.stamp`: its `flock` elects one sweeper among
    /// the processes sharing the directory, its mtime records the last sweep.
    fn sweep_if_due(&self, now: f64, interval: f64, threads: usize) -> StoreResult<Option<Report>> {
        let last = &self.shared.last_unstamped_sweep;
        let Some(claim) = sweep::claim(&self.shared.data_dir, now, interval, last)? else {
            return Ok(None);
        };
        let report = self.walk(now, WalkMode::Sweep, threads);
        drop(claim);
        report.map(Some)
    }

    /// Ids of the legacy Beaker session files under the data dir (valid ids at their place
    /// in Beaker's layout; anything else is ignored, no symlink is followed). Lists the
    /// tree fresh, whatever was seen at construction.
    fn legacy_ids(&self) -> Vec<String> {
        sweep::legacy_ids(&self.shared.data_dir)
    }

    fn data_dir(&self) -> Option<&Path> {
        Some(&self.shared.data_dir)
    }

    fn index_put(&self, user: &str, entry: &IndexEntry) -> StoreResult<()> {
        self.put_entry(user, entry)
    }

    fn index_remove(&self, user: &str, id: &SessionId) -> StoreResult<()> {
        self.remove_entry(user, id)
    }

    fn index_list(&self, user: &str) -> StoreResult<Vec<IndexEntry>> {
        self.list_entries(user)
    }

    fn index_sweep(&self, now: f64, grace: f64) -> StoreResult<u64> {
        self.sweep_entries(now, grace)
    }
}
