//! The file backend: session records under one data directory, locked across processes
//! with `flock`, saved in place, and readable alongside the original package's Beaker files.
//!
//! Invariants:
//! * A record is only ever read or changed by the holder of its session lock (in-process
//!   `ThreadLock` + `flock` on the record file). Deletion and file replacement happen under
//!   that lock; a waiter that then gets the lock on the old inode sees `nlink == 0` and starts
//!   over on the path, so it never reads a stale or unlinked file.
//! * Saves of an existing record write the older of its two slots in place (one `pwrite`);
//!   only creation, growth past the slot capacity and legacy migration write a whole file,
//!   and the last two do it through a temporary file + `rename`, so the previous version stays
//!   loadable if anything fails or the process is killed.
//! * The last access is the later of the header's save time and the file's mtime, both on
//!   the injected clock: a touch sets the mtime to `now`, and a write pins it to `now` when
//!   the system clock is ahead (`record_io::pin_mtime`), so a faked clock expires sessions
//!   here exactly as in the other backends. The sweeper applies the same rule.
//! * Looking up an unknown id creates nothing on disk (no lock file, no directory).
//! * Directories are created 0700 and files 0600, set explicitly rather than via the umask.

mod handle;
mod record_io;
pub mod sweep;
#[cfg(test)]
mod tests;

use std::fs::{self, File};
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::error::{StoreError, StoreResult};
use crate::legacy;
use crate::lock::{fd_cache, flock_until, LockKey, LockScope, LockedFile, ThreadLock};
use crate::record;
use crate::report::{Report, WalkMode};
use crate::shard;
use crate::sid::SessionId;
use crate::store::{
    lock_thread, worker_count, BackendKind, Opened, SessionHandle, Store, StoreConfig,
};

use record_io::{check_len, create_file, fill_new, open_rw, read_record, ReadError};

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
}

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
    legacy_present: bool,
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
    legacy_path: Option<PathBuf>,
    file: LockedFile,
    /// Whether the file may be kept open for a later request (false once deleted).
    reusable: bool,
    origin: Origin,
    /// The stored payload as loaded (pickle bytes).
    pub payload: Vec<u8>,
    /// Creation time, when known without Python (always for our records).
    pub created: Option<f64>,
    /// Time of the previous access, when known without Python.
    pub last_access: Option<f64>,
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
    /// Builds a store. Does no I/O except checking once whether a legacy Beaker tree exists,
    /// so that probing for legacy files costs nothing when there are none. Holds no file
    /// descriptor, so it is safe to create before a pre-fork server forks.
    pub fn new(cfg: StoreConfig, file: FileConfig) -> Self {
        let legacy_present = file.read_legacy && file.data_dir.join(shard::LEGACY_DIR).is_dir();
        FileStore {
            shared: Arc::new(Shared {
                cfg,
                data_dir: Arc::from(file.data_dir),
                legacy_present,
            }),
        }
    }

    /// Whether a legacy Beaker tree was found when the store was built.
    pub fn legacy_present(&self) -> bool {
        self.shared.legacy_present
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

    /// Locks `file` (bounded by `deadline`) and reads its metadata; `None` if it was
    /// unlinked meanwhile (deleted or replaced while we waited: look again).
    fn hold(&self, file: File, path: &Path, deadline: Instant) -> StoreResult<Option<Held>> {
        let locked = LockedFile::new(file);
        let file = locked.file().map_err(|e| StoreError::io("open", path, e))?;
        match flock_until(file, deadline) {
            Ok(true) => {}
            Ok(false) => return Err(self.shared.cfg.lock_timed_out()),
            Err(e) => return Err(StoreError::io("lock", path, e)),
        }
        let meta = file
            .metadata()
            .map_err(|e| StoreError::io("stat", path, e))?;
        Ok((meta.nlink() > 0).then_some(Held { locked, meta }))
    }

    fn try_open(
        &self,
        id: &SessionId,
        path: &Path,
        now: f64,
        deadline: Instant,
        thread_lock: &mut Option<ThreadLock>,
    ) -> StoreResult<Step<Opened<FileHandle>>> {
        let opened = match fd_cache::take(path) {
            Some(f) => Ok(f),
            None => open_rw(path),
        };
        let file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return self.try_open_legacy(id, path, now, deadline, thread_lock);
            }
            // ENOTDIR (the data dir or a shard is a file), like EROFS or EACCES, is an I/O
            // error: the store is broken, which must not pass for a missing session.
            // ELOOP: a planted symlink; never followed, removed.
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                let _ = fs::remove_file(path);
                return Ok(Step::Done(Opened::Corrupt));
            }
            Err(e) => return Err(StoreError::io("open", path, e)),
        };
        let Some(Held { locked, meta }) = self.hold(file, path, deadline)? else {
            return Ok(Step::Retry);
        };
        let file = locked.file().map_err(|e| StoreError::io("read", path, e))?;
        let read = match read_record(file, &meta, &self.shared.cfg.keys, id) {
            Ok(r) => r,
            Err(ReadError::Io(e)) => return Err(StoreError::io("read", path, e)),
            Err(ReadError::Newer) => return Ok(Step::Done(Opened::Newer)),
            Err(ReadError::Corrupt) => {
                let _ = fs::remove_file(path);
                return Ok(Step::Done(Opened::Corrupt));
            }
        };
        let last_access = record_io::last_access(read.saved_at, &meta);
        let expiry = &self.shared.cfg.expiry;
        if expiry.is_expired(now, Some(read.created), Some(last_access)) {
            let _ = fs::remove_file(path);
            return Ok(Step::Done(Opened::Expired));
        }
        let origin = Origin::Record {
            slot: read.slot,
            seq: read.seq,
            slot_size: read.slot_size,
        };
        let mut handle = self.handle(id, path, None, locked, origin, thread_lock)?;
        handle.payload = read.payload;
        handle.created = Some(read.created);
        handle.last_access = Some(last_access);
        Ok(Step::Done(Opened::Found(handle)))
    }

    /// A handle without payload or times yet (the caller fills them in).
    fn handle(
        &self,
        id: &SessionId,
        path: &Path,
        legacy_path: Option<PathBuf>,
        file: LockedFile,
        origin: Origin,
        thread_lock: &mut Option<ThreadLock>,
    ) -> StoreResult<FileHandle> {
        let Some(lock) = thread_lock.take() else {
            return Err(StoreError::Released);
        };
        Ok(FileHandle {
            store: Arc::clone(&self.shared),
            id: *id,
            path: path.to_path_buf(),
            legacy_path,
            file,
            reusable: true,
            origin,
            payload: Vec::new(),
            created: None,
            last_access: None,
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
        if !self.shared.legacy_present {
            return Ok(Step::Done(Opened::Missing));
        }
        let legacy_path = shard::legacy_path(&self.shared.data_dir, id);
        let file = match open_rw(&legacy_path) {
            Ok(f) => f,
            Err(e)
                if e.kind() == ErrorKind::NotFound
                    || matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) =>
            {
                return Ok(Step::Done(Opened::Missing))
            }
            Err(e) => return Err(StoreError::io("open", &legacy_path, e)),
        };
        // Unlinked meanwhile: migrated (or removed) while we waited; our record may exist now.
        let Some(Held { locked, meta }) = self.hold(file, &legacy_path, deadline)? else {
            return Ok(Step::Retry);
        };
        if meta.len() > LEGACY_MAX {
            return Ok(Step::Done(Opened::Corrupt));
        }
        let mut bytes = vec![0u8; meta.len() as usize];
        locked
            .file()
            .and_then(|f| f.read_exact_at(&mut bytes, 0))
            .map_err(|e| StoreError::io("read", &legacy_path, e))?;
        let Ok(decoded) = legacy::decode(&bytes) else {
            let _ = fs::remove_file(&legacy_path);
            return Ok(Step::Done(Opened::Corrupt));
        };
        let expiry = &self.shared.cfg.expiry;
        if expiry.is_expired(now, decoded.created, decoded.accessed) {
            let _ = fs::remove_file(&legacy_path);
            return Ok(Step::Done(Opened::Expired));
        }
        let origin = Origin::Legacy {
            wrapped: decoded.wrapped,
        };
        let mut handle = self.handle(id, path, Some(legacy_path), locked, origin, thread_lock)?;
        handle.payload = decoded.payload;
        handle.created = decoded.created;
        handle.last_access = decoded.accessed;
        Ok(Step::Done(Opened::Found(handle)))
    }

    /// Stores a brand-new session under a freshly generated `id`. Nobody else knows the id
    /// yet, so no lock is needed; `O_EXCL` refuses to overwrite anything.
    pub fn create_file(
        &self,
        id: &SessionId,
        payload: &[u8],
        created: f64,
        now: f64,
    ) -> StoreResult<()> {
        check_len(payload)?;
        let path = self.record_path(id);
        let slot = record::encode_slot(&self.shared.cfg.keys, id, 1, created, now, payload);
        let slot_size = record::slot_size_for(payload.len());
        let file = match create_file(&path) {
            Err(StoreError::Io { source, .. }) if source.kind() == ErrorKind::AlreadyExists => {
                return Err(StoreError::IdCollision)
            }
            other => other?,
        };
        if let Err(e) = fill_new(&file, &path, &slot, slot_size, now) {
            // Nothing of a half-written new record may stay behind (disk full, quota).
            let _ = fs::remove_file(&path);
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

    fn create(&self, id: &SessionId, payload: &[u8], created: f64, now: f64) -> StoreResult<()> {
        self.create_file(id, payload, created, now)
    }

    fn walk(&self, now: f64, mode: WalkMode, threads: usize) -> StoreResult<Report> {
        let (dir, expiry) = (&self.shared.data_dir, &self.shared.cfg.expiry);
        Ok(sweep::walk(dir, expiry, now, mode, worker_count(threads)))
    }

    /// Coordinated through `<data_dir>/sweep.stamp`: its `flock` elects one sweeper among
    /// the processes sharing the directory, its mtime records the last sweep.
    fn sweep_if_due(&self, now: f64, interval: f64, threads: usize) -> StoreResult<Option<Report>> {
        let Some(claim) = sweep::claim(&self.shared.data_dir, now, interval)? else {
            return Ok(None);
        };
        let report = self.walk(now, WalkMode::Sweep, threads);
        drop(claim);
        report.map(Some)
    }

    /// Ids of the legacy Beaker session files under the data dir (file names that are
    /// valid ids; anything else is ignored). Lists the tree fresh, whatever was seen at
    /// construction.
    fn legacy_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        let mut stack = vec![self.shared.data_dir.join(shard::LEGACY_DIR)];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(path);
                } else if let Some(stem) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".cache"))
                {
                    if SessionId::parse(stem).is_some() {
                        ids.push(stem.to_owned());
                    }
                }
            }
        }
        ids.sort();
        ids
    }

    fn data_dir(&self) -> Option<&Path> {
        Some(&self.shared.data_dir)
    }
}
