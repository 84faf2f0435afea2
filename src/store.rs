//! The file store: opening (lock + read + verify + expiry), creating, saving in place,
//! touching, deleting and migrating session records under one data directory.
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
//! * Looking up an unknown id creates nothing on disk (no lock file, no directory).
//! * Directories are created 0700 and files 0600, set explicitly rather than via the umask.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{StoreError, StoreResult};
use crate::legacy;
use crate::lock::{fd_cache, flock_until, LockedFile, ThreadLock};
use crate::record::{self, Choice, Keys, HEADER_LEN};
use crate::shard;
use crate::sid::SessionId;

/// Legacy files larger than this are not read (Beaker sessions are small; this bounds the
/// work an oversized or planted file can cause).
const LEGACY_MAX: u64 = 64 << 20;
/// Payloads up to this size are written together with their header in one `pwrite`.
const SMALL_WRITE: usize = 64 << 10;
/// Records up to this size are read with one `pread`; larger ones slot by slot.
const SMALL_RECORD: u64 = 256 << 10;

/// Settings of a store, fixed at `init_app`.
#[derive(Clone)]
pub struct StoreConfig {
    /// Root of the store; created (0700) on the first save.
    pub data_dir: PathBuf,
    /// Tag keys (from `SECRET_KEY` and its fallbacks).
    pub keys: Keys,
    /// Sliding idle timeout in seconds (`None`: sessions never go idle).
    pub idle_timeout: Option<f64>,
    /// Absolute lifetime from creation in seconds (`None`: unlimited).
    pub absolute_timeout: Option<f64>,
    /// How long to wait for another request of the same session.
    pub lock_timeout: Duration,
    /// Whether to look for sessions of the original package (Beaker files).
    pub read_legacy: bool,
}

/// What `FileStore::open` found.
pub enum Opened<H = Handle> {
    /// A live session, locked by the returned handle.
    Found(H),
    /// No record for this id.
    Missing,
    /// The record was past its idle timeout or absolute lifetime; it has been removed.
    Expired,
    /// The record was torn, garbled or not authentic; it has been removed.
    Corrupt,
    /// The record was written by a newer format version; left in place.
    Newer,
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

/// A locked, open session. Dropping it releases the lock without changing anything.
pub struct Handle {
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

/// The file backend.
pub struct FileStore {
    cfg: StoreConfig,
    legacy_present: bool,
}

fn mtime_secs(meta: &fs::Metadata) -> f64 {
    meta.mtime() as f64 + meta.mtime_nsec() as f64 * 1e-9
}

/// Opens an existing file read-write without following a symlink at the last component.
pub(crate) fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Epoch seconds as a `SystemTime` (non-finite or negative values give the epoch).
pub(crate) fn to_system_time(secs: f64) -> SystemTime {
    if secs.is_finite() && secs > 0.0 {
        UNIX_EPOCH + Duration::from_secs_f64(secs)
    } else {
        UNIX_EPOCH
    }
}

/// Whether a session last used at `last_access` and created at `created` is past its idle
/// timeout or absolute lifetime at `now`. A clock that stepped backwards gives a negative age,
/// which never expires anything.
pub(crate) fn expired(
    cfg: &StoreConfig,
    now: f64,
    created: Option<f64>,
    last_access: Option<f64>,
) -> bool {
    let idle =
        matches!((cfg.idle_timeout, last_access), (Some(limit), Some(at)) if now - at > limit);
    let absolute =
        matches!((cfg.absolute_timeout, created), (Some(limit), Some(at)) if now - at > limit);
    idle || absolute
}

/// Creates `dir` and its parents with mode 0700, set explicitly.
fn make_dirs(dir: &Path) -> StoreResult<()> {
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) => Err(StoreError::io("create directory", dir, e)),
    }
}

/// Creates a new file (`O_EXCL`), mode 0600, creating missing parent directories (0700).
pub(crate) fn create_file(path: &Path) -> StoreResult<File> {
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
    };
    let file = match open() {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            if let Some(parent) = path.parent() {
                make_dirs(parent)?;
                // Directories made by us get 0700 whatever the umask.
                let _ = fs::set_permissions(parent, Permissions::from_mode(0o700));
            }
            open().map_err(|e| StoreError::io("create", path, e))?
        }
        other => other.map_err(|e| StoreError::io("create", path, e))?,
    };
    file.set_permissions(Permissions::from_mode(0o600))
        .map_err(|e| StoreError::io("chmod", path, e))?;
    Ok(file)
}

/// Writes a whole new record file (slot 0 = `slot`, slot 1 empty) into an open, empty file.
fn fill_new(file: &File, path: &Path, slot: &[u8], slot_size: usize) -> StoreResult<()> {
    file.write_all_at(slot, 0)
        .map_err(|e| StoreError::io("write", path, e))?;
    // The second slot stays a hole until the first in-place save writes it.
    file.set_len(2 * slot_size as u64)
        .map_err(|e| StoreError::io("write", path, e))
}

enum Step<T> {
    Done(T),
    Retry,
}

impl FileStore {
    /// Builds a store. Does no I/O except checking once whether a legacy Beaker tree exists,
    /// so that probing for legacy files costs nothing when there are none. Holds no file
    /// descriptor, so it is safe to create before a pre-fork server forks.
    pub fn new(cfg: StoreConfig) -> Self {
        let legacy_present = cfg.read_legacy && cfg.data_dir.join(shard::LEGACY_DIR).is_dir();
        FileStore {
            cfg,
            legacy_present,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    /// Whether a legacy Beaker tree was found when the store was built.
    pub fn legacy_present(&self) -> bool {
        self.legacy_present
    }

    /// Path of the record of `id`.
    pub fn record_path(&self, id: &SessionId) -> PathBuf {
        shard::record_path(&self.cfg.data_dir, id)
    }

    /// Opens session `id`: waits for its lock (bounded), reads and verifies the record,
    /// enforces expiry. Corrupt and expired records are removed.
    pub fn open(&self, id: &SessionId, now: f64) -> StoreResult<Opened> {
        let path = self.record_path(id);
        let deadline = Instant::now() + self.cfg.lock_timeout;
        let Some(thread_lock) = ThreadLock::acquire(&path, deadline) else {
            return Err(StoreError::LockTimeout {
                waited: self.cfg.lock_timeout,
            });
        };
        let mut thread_lock = Some(thread_lock);
        loop {
            if let Step::Done(result) = self.try_open(id, &path, now, deadline, &mut thread_lock)? {
                return Ok(result);
            }
        }
    }

    fn lock_file(&self, file: &File, deadline: Instant) -> StoreResult<()> {
        match flock_until(file, deadline) {
            Ok(true) => Ok(()),
            Ok(false) => Err(StoreError::LockTimeout {
                waited: self.cfg.lock_timeout,
            }),
            Err(e) => Err(StoreError::io("lock", "session record", e)),
        }
    }

    fn try_open(
        &self,
        id: &SessionId,
        path: &Path,
        now: f64,
        deadline: Instant,
        thread_lock: &mut Option<ThreadLock>,
    ) -> StoreResult<Step<Opened>> {
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
        let locked = LockedFile::new(file);
        let file = locked.file().map_err(|e| StoreError::io("open", path, e))?;
        self.lock_file(file, deadline)?;
        let meta = file
            .metadata()
            .map_err(|e| StoreError::io("stat", path, e))?;
        if meta.nlink() == 0 {
            // Deleted or replaced while we waited for the lock: look again.
            return Ok(Step::Retry);
        }
        let loaded = match read_record(file, &meta, &self.cfg.keys, id) {
            Ok(l) => l,
            Err(ReadError::Io(e)) => return Err(StoreError::io("read", path, e)),
            Err(ReadError::Newer) => return Ok(Step::Done(Opened::Newer)),
            Err(ReadError::Corrupt) => {
                let _ = fs::remove_file(path);
                return Ok(Step::Done(Opened::Corrupt));
            }
        };
        let last_access = loaded.saved_at.max(mtime_secs(&meta));
        if expired(&self.cfg, now, Some(loaded.created), Some(last_access)) {
            let _ = fs::remove_file(path);
            return Ok(Step::Done(Opened::Expired));
        }
        let Some(lock) = thread_lock.take() else {
            return Err(StoreError::Released);
        };
        Ok(Step::Done(Opened::Found(Handle {
            id: *id,
            path: path.to_path_buf(),
            legacy_path: None,
            file: locked,
            reusable: true,
            origin: Origin::Record {
                slot: loaded.slot,
                seq: loaded.seq,
                slot_size: loaded.slot_size,
            },
            payload: loaded.payload,
            created: Some(loaded.created),
            last_access: Some(last_access),
            _thread_lock: lock,
        })))
    }

    fn try_open_legacy(
        &self,
        id: &SessionId,
        path: &Path,
        now: f64,
        deadline: Instant,
        thread_lock: &mut Option<ThreadLock>,
    ) -> StoreResult<Step<Opened>> {
        if !self.legacy_present {
            return Ok(Step::Done(Opened::Missing));
        }
        let legacy_path = shard::legacy_path(&self.cfg.data_dir, id);
        let file = match open_rw(&legacy_path) {
            Ok(f) => f,
            Err(e)
                if e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                return Ok(Step::Done(Opened::Missing))
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Ok(Step::Done(Opened::Missing));
            }
            Err(e) => return Err(StoreError::io("open", &legacy_path, e)),
        };
        let locked = LockedFile::new(file);
        let file = locked
            .file()
            .map_err(|e| StoreError::io("open", &legacy_path, e))?;
        self.lock_file(file, deadline)?;
        let meta = file
            .metadata()
            .map_err(|e| StoreError::io("stat", &legacy_path, e))?;
        if meta.nlink() == 0 {
            // Migrated (or removed) while we waited: our record may exist now.
            return Ok(Step::Retry);
        }
        if meta.len() > LEGACY_MAX {
            return Ok(Step::Done(Opened::Corrupt));
        }
        let mut bytes = vec![0u8; meta.len() as usize];
        file.read_exact_at(&mut bytes, 0)
            .map_err(|e| StoreError::io("read", &legacy_path, e))?;
        let decoded = match legacy::decode(&bytes) {
            Ok(d) => d,
            Err(legacy::NotLegacy) => {
                let _ = fs::remove_file(&legacy_path);
                return Ok(Step::Done(Opened::Corrupt));
            }
        };
        if expired(&self.cfg, now, decoded.created, decoded.accessed) {
            let _ = fs::remove_file(&legacy_path);
            return Ok(Step::Done(Opened::Expired));
        }
        let Some(lock) = thread_lock.take() else {
            return Err(StoreError::Released);
        };
        Ok(Step::Done(Opened::Found(Handle {
            id: *id,
            path: path.to_path_buf(),
            legacy_path: Some(legacy_path),
            file: locked,
            reusable: true,
            origin: Origin::Legacy {
                wrapped: decoded.wrapped,
            },
            payload: decoded.payload,
            created: decoded.created,
            last_access: decoded.accessed,
            _thread_lock: lock,
        })))
    }

    /// Stores a brand-new session under a freshly generated `id`. Nobody else knows the id
    /// yet, so no lock is needed; `O_EXCL` refuses to overwrite anything.
    pub fn create(
        &self,
        id: &SessionId,
        payload: &[u8],
        created: f64,
        now: f64,
    ) -> StoreResult<()> {
        check_len(payload)?;
        let path = self.record_path(id);
        let slot = record::encode_slot(&self.cfg.keys, id, 1, created, now, payload);
        let slot_size = record::slot_size_for(payload.len());
        let file = create_file(&path)?;
        if let Err(e) = fill_new(&file, &path, &slot, slot_size) {
            // Nothing of a half-written new record may stay behind (disk full, quota).
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        Ok(())
    }

    /// Ids of the legacy Beaker session files under the data dir (file names that are
    /// valid ids; anything else is ignored). Lists the tree fresh, whatever was seen at
    /// construction.
    pub fn legacy_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        let mut stack = vec![self.cfg.data_dir.join(shard::LEGACY_DIR)];
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

    /// Creates the data directory (0700) if it does not exist yet.
    pub fn ensure_data_dir(&self) -> StoreResult<()> {
        make_dirs(&self.cfg.data_dir)
    }
}

fn check_len(payload: &[u8]) -> StoreResult<()> {
    if u32::try_from(payload.len()).is_err() {
        return Err(StoreError::TooLarge(payload.len()));
    }
    Ok(())
}

impl Handle {
    /// The session id.
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    /// Where the payload came from.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// Stores `payload` as the new version of the session (we hold its lock). In place when
    /// it fits the older slot, otherwise through a new file installed by `rename`.
    pub fn save(&mut self, store: &FileStore, payload: &[u8], now: f64) -> StoreResult<()> {
        check_len(payload)?;
        let created = self.created.unwrap_or(now);
        match self.origin {
            Origin::Record {
                slot,
                seq,
                slot_size,
            } => {
                let target = 1 - slot;
                if HEADER_LEN + payload.len() <= slot_size {
                    let header = record::encode_header(
                        &store.cfg.keys,
                        &self.id,
                        seq + 1,
                        created,
                        now,
                        payload,
                    );
                    self.write_slot(&header, payload, (target * slot_size) as u64)?;
                    self.origin = Origin::Record {
                        slot: target,
                        seq: seq + 1,
                        slot_size,
                    };
                } else {
                    self.install(store, payload, created, now, seq + 1)?;
                }
            }
            Origin::Legacy { .. } => {
                // Keep the legacy file locked until it is unlinked: a waiter in another
                // process must then see `nlink == 0` and move to the new record, never load
                // the stale legacy session.
                let legacy_file = self.install(store, payload, created, now, 1)?;
                if let Some(old) = self.legacy_path.take() {
                    let _ = fs::remove_file(old);
                }
                drop(legacy_file);
            }
        }
        // `payload` means "as loaded"; the caller has the saved bytes already, and keeping
        // a copy would cost a large session an allocation and a copy per save.
        self.payload = Vec::new();
        self.created = Some(created);
        self.last_access = Some(now);
        Ok(())
    }

    /// Writes one slot in place. Small slots go out in one `pwrite`; large ones as payload
    /// then header, which spares copying the payload into a buffer. A crash between the two
    /// writes leaves a slot whose tag does not verify, so the other slot wins: still safe.
    fn write_slot(&self, header: &[u8], payload: &[u8], offset: u64) -> StoreResult<()> {
        let io = |e| StoreError::io("write", &self.path, e);
        let file = self.file.file().map_err(io)?;
        if payload.len() <= SMALL_WRITE {
            let mut buf = Vec::with_capacity(HEADER_LEN + payload.len());
            buf.extend_from_slice(header);
            buf.extend_from_slice(payload);
            return file.write_all_at(&buf, offset).map_err(io);
        }
        file.write_all_at(payload, offset + HEADER_LEN as u64)
            .map_err(io)?;
        file.write_all_at(header, offset).map_err(io)
    }

    /// Writes a complete new record to a temporary file, locks it, and renames it over the
    /// record path. Waiters on the old file see it unlinked and move to the new one, whose
    /// lock we already hold. Returns the old file, still locked, for the caller to drop.
    fn install(
        &mut self,
        store: &FileStore,
        payload: &[u8],
        created: f64,
        now: f64,
        seq: u64,
    ) -> StoreResult<LockedFile> {
        let suffix = SessionId::generate()?.to_hex();
        let mut name = self
            .path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        name.push(format!(".{}{}", &suffix[..8], shard::TMP_SUFFIX));
        let tmp = self.path.with_file_name(name);
        let slot = record::encode_slot(&store.cfg.keys, &self.id, seq, created, now, payload);
        let slot_size = record::slot_size_for(payload.len());
        let locked = LockedFile::new(create_file(&tmp)?);
        let result = (|| {
            let file = locked
                .file()
                .map_err(|e| StoreError::io("create", &tmp, e))?;
            // Uncontended: nobody else can know the temporary name.
            if !fs4::fs_std::FileExt::try_lock_exclusive(file)
                .map_err(|e| StoreError::io("lock", &tmp, e))?
            {
                return Err(StoreError::io(
                    "lock",
                    &tmp,
                    io::Error::from(ErrorKind::WouldBlock),
                ));
            }
            fill_new(file, &tmp, &slot, slot_size)?;
            fs::rename(&tmp, &self.path).map_err(|e| StoreError::io("rename", &self.path, e))
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let old = std::mem::replace(&mut self.file, locked);
        self.origin = Origin::Record {
            slot: 0,
            seq,
            slot_size,
        };
        Ok(old)
    }

    /// Refreshes the last-access time without rewriting the record: a metadata-only update
    /// of the file's mtime, done only when `interval` seconds have passed since the last
    /// access, so read-only traffic costs at most one `futimens` per interval.
    pub fn touch(&mut self, now: f64, interval: f64) -> StoreResult<bool> {
        if !matches!(self.origin, Origin::Record { .. }) {
            return Ok(false);
        }
        if let Some(last) = self.last_access {
            if now - last < interval {
                return Ok(false);
            }
        }
        let touch = |e| StoreError::io("touch", &self.path, e);
        self.file
            .file()
            .and_then(|f| f.set_modified(to_system_time(now)))
            .map_err(touch)?;
        self.last_access = Some(now);
        Ok(true)
    }

    /// Removes the session's record (and legacy file), then releases the lock.
    pub fn delete(mut self) -> StoreResult<()> {
        self.reusable = false;
        let target = self.legacy_path.as_deref().unwrap_or(&self.path);
        match fs::remove_file(target) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("remove", target, e)),
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Unlock first (the waiters then go), keep the descriptor for the next request on
        // this session; a legacy file (still ours only until migrated) is not kept.
        if self.reusable && matches!(self.origin, Origin::Record { .. }) {
            if let Some(file) = self.file.take_unlocked() {
                fd_cache::put(self.path.clone(), file);
            }
        }
    }
}

struct Loaded {
    slot: usize,
    seq: u64,
    slot_size: usize,
    created: f64,
    saved_at: f64,
    payload: Vec<u8>,
}

enum ReadError {
    Io(io::Error),
    Corrupt,
    Newer,
}

fn read_record(
    file: &File,
    meta: &fs::Metadata,
    keys: &Keys,
    id: &SessionId,
) -> Result<Loaded, ReadError> {
    let len = meta.len();
    if len < 2 * HEADER_LEN as u64
        || len % 2 != 0
        || len > 2 * (u64::from(u32::MAX) + HEADER_LEN as u64)
    {
        return Err(ReadError::Corrupt);
    }
    let slot_size = (len / 2) as usize;
    let (heads, whole): ([Vec<u8>; 2], Option<Vec<u8>>) = if len <= SMALL_RECORD {
        let mut all = vec![0u8; len as usize];
        file.read_exact_at(&mut all, 0).map_err(ReadError::Io)?;
        (
            [
                all[..HEADER_LEN].to_vec(),
                all[slot_size..slot_size + HEADER_LEN].to_vec(),
            ],
            Some(all),
        )
    } else {
        let mut a = vec![0u8; HEADER_LEN];
        let mut b = vec![0u8; HEADER_LEN];
        file.read_exact_at(&mut a, 0).map_err(ReadError::Io)?;
        file.read_exact_at(&mut b, slot_size as u64)
            .map_err(ReadError::Io)?;
        ([a, b], None)
    };
    let mut io_error = None;
    let choice = record::choose(keys, id, [&heads[0], &heads[1]], slot_size, |i, h| {
        let start = i * slot_size + HEADER_LEN;
        let payload = match &whole {
            Some(all) => all.get(start..start + h.payload_len)?.to_vec(),
            None => {
                let mut buf = vec![0u8; h.payload_len];
                if let Err(e) = file.read_exact_at(&mut buf, start as u64) {
                    io_error = Some(e);
                    return None;
                }
                buf
            }
        };
        Some(payload)
    });
    if let Some(e) = io_error {
        return Err(ReadError::Io(e));
    }
    match choice {
        Choice::Valid(slot, h, payload) => Ok(Loaded {
            slot,
            seq: h.seq,
            slot_size,
            created: h.created,
            saved_at: h.saved_at,
            payload,
        }),
        Choice::Newer(_) => Err(ReadError::Newer),
        Choice::Corrupt => Err(ReadError::Corrupt),
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
