//! The file store's sweeper: one parallel pass over a data directory that removes expired records,
//! leftovers (orphaned temporary files, corrupt records, legacy Beaker files and lock files
//! past the idle timeout) and reports what it saw. The same walk serves `stats` (count only)
//! and `clear` (remove everything).
//!
//! Cost is one `readdir` per shard and one `stat` per file; a record is opened only when its
//! mtime says it may have expired (or an absolute lifetime needs its creation time), so a
//! sweep costs about what `find DIR -mmin +N -delete` does. Expiry is decided by the same
//! rule as `FileStore::open` (`Expiry`, `record_io::last_access`). Shards are handed to worker
//! threads (scoped, so nothing outlives the call and nothing is left behind across a fork).
//!
//! Safety: a record is removed only while holding its `flock` (taken without waiting: a
//! locked record is in use, hence live), and files younger than `GRACE` seconds are never
//! taken for garbage, so a record being created or installed is not mistaken for a torn one.
//!
//! Fork safety: every `flock` taken here is released explicitly (`LOCK_UN`), not by closing
//! the file. A `flock` belongs to the open file description, which a child forked while a
//! sweep runs shares through its inherited descriptors: released by `close` alone, the lock
//! would live on in the child (which never runs this thread's destructors), blocking the
//! record's session, or every later sweep, for as long as the child lives.

use std::fs::{self, File, Metadata};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use fs4::fs_std::FileExt as LockExt;

use super::record_io::{self, create_file, mtime, open_rw, to_system_time};
use crate::error::{StoreError, StoreResult};
use crate::expiry::Expiry;
use crate::lock::{try_flock, LockedFile};
use crate::record::{self, HeaderError, HEADER_LEN};
use crate::report::{Report, WalkMode as Mode};
use crate::shard;

/// Files younger than this (seconds) are never treated as orphaned or torn.
pub const GRACE: f64 = 60.0;

fn remove(report: &mut Report, path: &Path, len: u64) {
    match fs::remove_file(path) {
        Ok(()) => {
            report.removed += 1;
            report.bytes_freed += len;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(_) => report.errors += 1,
    }
}

/// What the headers of a record say, read without verifying its tag (the sweeper has no id
/// to bind; a forged header can at worst get a record removed, which its forger could do).
enum Times {
    Known { created: f64, saved_at: f64 },
    Newer,
    Garbage,
}

fn read_times(file: &File, len: u64) -> Times {
    if len < 2 * HEADER_LEN as u64 || len % 2 != 0 {
        return Times::Garbage;
    }
    let mut best: Option<record::SlotHeader> = None;
    let mut newer = false;
    for offset in [0, len / 2] {
        let mut head = [0u8; HEADER_LEN];
        if file.read_exact_at(&mut head, offset).is_err() {
            return Times::Garbage;
        }
        match record::parse_header(&head) {
            Ok(h) if best.is_none_or(|b| h.seq > b.seq) => best = Some(h),
            Ok(_) | Err(HeaderError::Garbage) => {}
            Err(HeaderError::Newer(_)) => newer = true,
        }
    }
    match (best, newer) {
        (Some(h), _) => Times::Known {
            created: h.created,
            saved_at: h.saved_at,
        },
        (None, true) => Times::Newer,
        (None, false) => Times::Garbage,
    }
}

struct Walker<'a> {
    expiry: &'a Expiry,
    now: f64,
    mode: Mode,
}

impl Walker<'_> {
    fn record(&self, path: &Path, meta: &Metadata, report: &mut Report) {
        let len = meta.len();
        let age = self.now - mtime(meta);
        if path
            .as_os_str()
            .to_string_lossy()
            .ends_with(shard::TMP_SUFFIX)
        {
            if self.mode == Mode::Clear || age > GRACE {
                report.temp += 1;
                if self.mode != Mode::Stats {
                    remove(report, path, len);
                }
            }
            return;
        }
        report.records += 1;
        report.bytes += len;
        report.add_size(len);
        if self.mode == Mode::Clear {
            remove(report, path, len);
            return;
        }
        // Fast path: the mtime is at most the last access (`record_io::last_access`), so a
        // recent mtime proves the record is within its idle timeout, and without an absolute
        // lifetime that is all.
        let idle_fresh = !self.expiry.is_expired(self.now, None, Some(mtime(meta)));
        if idle_fresh && self.expiry.absolute.is_none() {
            report.live += 1;
            return;
        }
        self.examine(path, report);
    }

    /// The slow path of `record`: locks the record (without waiting: a locked record is in
    /// use, hence live), then decides from its header and mtime as `FileStore::open` would.
    fn examine(&self, path: &Path, report: &mut Report) {
        let Ok(locked) = open_rw(path).map(LockedFile::new) else {
            report.errors += 1;
            return;
        };
        let Ok(file) = locked.file() else {
            report.errors += 1;
            return;
        };
        if self.mode == Mode::Sweep && !try_flock(file).unwrap_or(false) {
            // In use by a request right now: live by definition.
            report.live += 1;
            return;
        }
        // Look again now that we hold the lock: a request may have touched (or removed)
        // the record between the directory scan and the lock.
        let Ok(meta) = file.metadata() else {
            report.errors += 1;
            return;
        };
        if meta.nlink() == 0 {
            return; // removed or replaced meanwhile
        }
        let len = meta.len();
        let age = self.now - mtime(&meta);
        match read_times(file, len) {
            Times::Known { created, saved_at } => {
                let last_access = record_io::last_access(saved_at, &meta);
                if self
                    .expiry
                    .is_expired(self.now, Some(created), Some(last_access))
                {
                    report.expired += 1;
                    if self.mode == Mode::Sweep {
                        remove(report, path, len);
                    }
                } else {
                    report.live += 1;
                }
            }
            Times::Newer => report.live += 1,
            Times::Garbage if age > GRACE => {
                report.corrupt += 1;
                if self.mode == Mode::Sweep {
                    remove(report, path, len);
                }
            }
            Times::Garbage => report.live += 1,
        }
    }

    fn shard(&self, dir: &Path, report: &mut Report) {
        let Ok(entries) = fs::read_dir(dir) else {
            report.errors += 1;
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.metadata() {
                Ok(meta) if meta.is_file() => self.record(&path, &meta, report),
                Ok(_) => {}
                Err(_) => report.errors += 1,
            }
        }
    }

    /// Legacy files: Beaker rewrote a session file on every access, so its mtime is the
    /// last access; lock files are never used by us.
    fn legacy(&self, root: &Path, report: &mut Report) {
        let mut stack = vec![
            root.join(shard::LEGACY_DIR),
            root.join("container_file_lock"),
        ];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(meta) = entry.metadata() else {
                    report.errors += 1;
                    continue;
                };
                if meta.is_dir() {
                    stack.push(path);
                    continue;
                }
                let len = meta.len();
                let age = self.now - mtime(&meta);
                let name = path.as_os_str().to_string_lossy();
                if name.ends_with(".lock") {
                    report.legacy_locks += 1;
                    let old = self.expiry.idle.map_or(age > GRACE, |t| age > t);
                    if self.mode == Mode::Clear || (self.mode == Mode::Sweep && old) {
                        remove(report, &path, len);
                    }
                } else if name.ends_with(".cache") {
                    report.legacy += 1;
                    // Beaker rewrote the file on every access: its mtime is the last one.
                    let old = self.expiry.is_expired(self.now, None, Some(mtime(&meta)));
                    if old {
                        report.legacy_expired += 1;
                    }
                    if self.mode == Mode::Clear || (self.mode == Mode::Sweep && old) {
                        remove(report, &path, len);
                    }
                }
            }
        }
    }
}

/// Name of the file that coordinates automatic sweeps between processes.
pub const STAMP: &str = "sweep.stamp";

/// Proof that this process won the right to sweep now; holds the stamp's lock until dropped.
pub struct Claim {
    file: File,
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Explicitly, so that a child forked during the sweep does not keep the lock.
        let _ = LockExt::unlock(&self.file);
    }
}

/// Claims the next automatic sweep: `Some` if no other process holds the stamp's lock and
/// the last sweep (the stamp's mtime) is at least `interval` seconds old. The stamp's mtime
/// is set to `now` on success, so other processes skip until the next interval. Creates the
/// data dir (0700) and the stamp (0600) if needed.
pub fn claim(data_dir: &Path, now: f64, interval: f64) -> StoreResult<Option<Claim>> {
    let path = data_dir.join(STAMP);
    let file = match open_rw(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match create_file(&path) {
            Ok(f) => f,
            // Another process created it first: use theirs.
            Err(_) => open_rw(&path).map_err(|e| StoreError::io("open", &path, e))?,
        },
        Err(e) => return Err(StoreError::io("open", &path, e)),
    };
    if !try_flock(&file).map_err(|e| StoreError::io("lock", &path, e))? {
        return Ok(None);
    }
    let meta = file
        .metadata()
        .map_err(|e| StoreError::io("stat", &path, e))?;
    // A fresh stamp (empty file) has not recorded any sweep yet.
    if meta.len() > 0 && now - mtime(&meta) < interval {
        return Ok(None);
    }
    file.set_len(1)
        .map_err(|e| StoreError::io("write", &path, e))?;
    file.set_modified(to_system_time(now))
        .map_err(|e| StoreError::io("touch", &path, e))?;
    Ok(Some(Claim { file }))
}

/// Walks the store under `data_dir` with `threads` workers (at least one).
pub fn walk(data_dir: &Path, expiry: &Expiry, now: f64, mode: Mode, threads: usize) -> Report {
    let walker = Walker { expiry, now, mode };
    let records = data_dir.join(shard::RECORDS_DIR);
    let shards: Vec<PathBuf> = match fs::read_dir(&records) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect(),
        Err(_) => Vec::new(),
    };
    let next = AtomicUsize::new(0);
    let mut total = Report::default();
    let workers = threads.clamp(1, shards.len().max(1));
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut report = Report::default();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(dir) = shards.get(i) else { break };
                        walker.shard(dir, &mut report);
                    }
                    report
                })
            })
            .collect();
        for handle in handles {
            match handle.join() {
                Ok(report) => total.merge(&report),
                Err(_) => total.errors += 1,
            }
        }
    });
    walker.legacy(data_dir, &mut total);
    total
}
