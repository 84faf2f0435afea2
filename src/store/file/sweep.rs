//! The file store's sweeper: one parallel pass over a data directory that removes expired records,
//! leftovers (orphaned temporary files, corrupt records, legacy Beaker files and lock files
//! past the idle timeout) and reports what it saw. The same walk serves `stats` (count only)
//! and `clear` (remove everything), and `rekey` (re-seal every record under the current
//! key; removes nothing).
//!
//! Confinement: the walk never leaves the data directory. It goes down from the data
//! directory's descriptor one name at a time (`platform`: `O_DIRECTORY | O_NOFOLLOW`), so a
//! symlink where a directory belongs (`fbs1`, a shard, `container_file/` or below) is
//! counted (`Report::symlinks`) and skipped, never followed; and it removes only entries whose
//! names this package (or, in the legacy trees, Beaker) writes there (`shard::classify`,
//! `shard::legacy_session_id`, `shard::is_legacy_lock`), with `unlinkat` in the directory it
//! listed. Anything else is counted (`Report::foreign`) and left alone.
//!
//! Cost is one `readdir` per shard and one `lstat` per file; in `Sweep` mode a record is
//! opened only when its mtime says it may have expired (or an absolute lifetime needs its
//! creation time), so a sweep costs about what `find DIR -mmin +N -delete` does; `Stats`
//! reads every record's headers, so that a garbled record counts as corrupt at once.
//! Expiry is decided by the same rule as `FileStore::open` (`Expiry`, `expiry::last_access`).
//! Shards are handed to worker threads (scoped, so nothing outlives the call and nothing is
//! left behind across a fork).
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

use std::fs::File;
use std::io::ErrorKind;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fs4::fs_std::FileExt as LockExt;

use super::record_io::{self, to_system_time};
use crate::error::{StoreError, StoreResult};
use crate::expiry::Expiry;
use crate::lock::{flock_until, try_flock, LockedFile};
use crate::platform::{self, Dir, Entry, Kind, NotAFile, Sub};
use crate::record::{self, HeaderError, Keys, Rekey, HEADER_LEN};
use crate::report::{Report, WalkMode as Mode};
use crate::shard::{self, Name};

/// Files younger than this (seconds) are never treated as orphaned or torn.
pub const GRACE: f64 = 60.0;

/// Removes `name` from `dir` (a symlink itself, never its target), counting it.
fn remove(report: &mut Report, dir: &Dir, name: &str, len: u64) {
    match platform::unlink(dir, name) {
        Ok(()) => {
            report.removed += 1;
            report.bytes_freed += len;
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
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
    let slot_size = len / 2;
    let mut best: Option<record::SlotHeader> = None;
    let mut newer = false;
    for offset in [0, slot_size] {
        let mut head = [0u8; HEADER_LEN];
        if platform::read_exact_at(file, &mut head, offset).is_err() {
            return Times::Garbage;
        }
        match record::parse_header(&head) {
            // A payload that cannot fit its slot: not a header this package wrote.
            Ok(h) if (HEADER_LEN + h.payload_len) as u64 > slot_size => {}
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
    rekeying: Option<&'a Rekeying<'a>>,
}

/// What a `Rekey` walk needs besides the rest: the keys (`None`: the generated key does
/// not exist, so nothing stored can be opened), the largest payload read back, and how long
/// to wait for a record a request holds.
pub struct Rekeying<'a> {
    /// The store's keys, if any exist yet.
    pub keys: Option<&'a Keys>,
    /// `FileConfig::max_size`.
    pub max_payload: usize,
    /// The store's lock timeout.
    pub lock_timeout: Duration,
}

impl Walker<'_> {
    /// One entry of a shard directory (`dir`, named `shard_name`).
    fn entry(&self, dir: &Dir, shard_name: &str, name: &str, report: &mut Report) {
        let class = shard::classify(shard_name, name);
        if class == Name::Foreign {
            report.foreign += 1;
            return;
        }
        let entry = match platform::stat_at(dir, name) {
            Ok(Some(e)) => e,
            Ok(None) => return, // removed meanwhile
            Err(_) => {
                report.errors += 1;
                return;
            }
        };
        match (entry.kind, class) {
            (Kind::File, Name::Temp) => self.temp(dir, name, &entry, report),
            (Kind::File, _) => self.record(dir, name, &entry, report),
            // At one of our names, the link itself can go; it is never followed.
            (Kind::Symlink, _) => {
                report.symlinks += 1;
                if self.mode.removes() {
                    remove(report, dir, name, 0);
                }
            }
            // A directory at a record's name: removed if empty, otherwise reported.
            (Kind::Dir, _) => {
                if !self.mode.removes() {
                    report.corrupt += 1;
                    return;
                }
                match platform::remove_empty_dir(dir, name) {
                    Ok(()) => {
                        report.corrupt += 1;
                        report.removed += 1;
                    }
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(_) => report.foreign += 1,
                }
            }
            // A FIFO, socket or device node at a record's name: unusable; the name is ours.
            (Kind::Other, _) => {
                report.corrupt += 1;
                if self.mode.removes() {
                    remove(report, dir, name, 0);
                }
            }
        }
    }

    fn temp(&self, dir: &Dir, name: &str, entry: &Entry, report: &mut Report) {
        let age = self.now - entry.mtime;
        if self.mode == Mode::Clear || age > GRACE {
            report.temp += 1;
            if self.mode.removes() {
                remove(report, dir, name, entry.len);
            }
        }
    }

    fn record(&self, dir: &Dir, name: &str, entry: &Entry, report: &mut Report) {
        let len = entry.len;
        report.records += 1;
        crate::report::count_walked(1);
        report.bytes += len;
        report.add_size(len);
        if self.mode == Mode::Clear {
            remove(report, dir, name, len);
            return;
        }
        if let (true, Some(rekeying)) = (self.mode.rekeys(), self.rekeying) {
            self.rekey(dir, name, rekeying, report);
            return;
        }
        // Fast path of a sweep: the mtime is at most the last access
        // (`record_io::last_access`), so a recent mtime proves the record is within its idle
        // timeout, and without an absolute lifetime that is all. `Stats` reads every header,
        // so that a record overwritten with garbage counts as corrupt at once.
        let idle_fresh = !self.expiry.is_expired(self.now, None, Some(entry.mtime));
        if self.mode == Mode::Sweep && idle_fresh && self.expiry.absolute.is_none() {
            report.live += 1;
            return;
        }
        self.examine(dir, name, report);
    }

    /// The slow path of `record`: locks the record (without waiting: a locked record is in
    /// use, hence live), then decides from its header and mtime as `FileStore::open` would.
    fn examine(&self, dir: &Dir, name: &str, report: &mut Report) {
        let Ok(locked) = platform::open_file(dir, name).map(LockedFile::new) else {
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
        let Some(meta) = relooked(file, dir, name, report) else {
            return;
        };
        let len = meta.len();
        let age = self.now - platform::mtime(&meta);
        match read_times(file, len) {
            Times::Known { created, saved_at } => {
                let last_access = record_io::last_access(saved_at, &meta);
                if self
                    .expiry
                    .is_expired(self.now, Some(created), Some(last_access))
                {
                    report.expired += 1;
                    if self.mode == Mode::Sweep {
                        remove(report, dir, name, len);
                    }
                } else {
                    report.live += 1;
                }
            }
            Times::Newer => report.live += 1,
            Times::Garbage if age > GRACE => {
                report.corrupt += 1;
                if self.mode == Mode::Sweep {
                    remove(report, dir, name, len);
                }
            }
            // A record being created (empty, or its first slot not yet complete) is not
            // garbage; anything else of a record's size is, however young (counted only:
            // `FileStore::open` removes it on its next use, a sweep once past `GRACE`).
            Times::Garbage
                if self.mode == Mode::Stats && len >= 2 * HEADER_LEN as u64 && len % 2 == 0 =>
            {
                report.corrupt += 1
            }
            Times::Garbage => report.live += 1,
        }
    }

    /// `Rekey`: re-seals one record under the current key, holding its lock (waiting at
    /// most the lock timeout for a request that holds it). The record is known by its name
    /// only, the digest of its id (`record::Name::Digest`).
    fn rekey(&self, dir: &Dir, name: &str, rekeying: &Rekeying<'_>, report: &mut Report) {
        let mut digest = [0u8; 32];
        if hex::decode_to_slice(name, &mut digest).is_err() {
            report.foreign += 1;
            return;
        }
        let Some(keys) = rekeying.keys else {
            report.unopenable += 1;
            return;
        };
        let Ok(locked) = platform::open_file(dir, name).map(LockedFile::new) else {
            report.errors += 1;
            return;
        };
        let Ok(file) = locked.file() else {
            report.errors += 1;
            return;
        };
        let deadline = Instant::now() + rekeying.lock_timeout;
        if !flock_until(file, deadline).unwrap_or(false) {
            report.errors += 1; // held by a request all along: run the command again
            return;
        }
        let Some(meta) = relooked(file, dir, name, report) else {
            return;
        };
        let write = self.mode == Mode::Rekey;
        match record_io::rekey_file(file, &meta, keys, &digest, rekeying.max_payload, write) {
            Ok(Rekey::Reseal(_)) => report.rekeyed += 1,
            Ok(Rekey::Current) => report.current += 1,
            Ok(Rekey::Plain) => report.plain += 1,
            Ok(Rekey::Unopenable) => report.unopenable += 1,
            Ok(Rekey::Newer) => report.live += 1,
            Ok(Rekey::Corrupt) => report.corrupt += 1,
            Err(_) => report.errors += 1,
        }
    }

    fn shard(&self, dir: &Dir, shard_name: &str, report: &mut Report) {
        let Ok(names) = platform::names(dir) else {
            report.errors += 1;
            return;
        };
        for name in names {
            self.entry(dir, shard_name, &name, report);
        }
    }

    /// The shard directories under `fbs1/`, opened without following symlinks.
    fn shards(&self, root: &Dir, report: &mut Report) -> Vec<(String, Dir)> {
        let Some(records) = open_sub(root, shard::RECORDS_DIR, report) else {
            return Vec::new();
        };
        let Ok(names) = platform::names(&records) else {
            report.errors += 1;
            return Vec::new();
        };
        let mut shards = Vec::new();
        for name in names {
            if !shard::is_shard_name(&name) {
                report.foreign += 1;
            } else if let Some(fd) = open_sub(&records, &name, report) {
                shards.push((name, fd));
            }
        }
        shards
    }

    /// Legacy files: Beaker rewrote a session file on every access, so its mtime is the
    /// last access; lock files are never used by us.
    fn legacy(&self, root: &Dir, report: &mut Report) {
        visit_legacy(
            root,
            shard::LEGACY_DIR,
            |prefix, name| shard::legacy_session_id(prefix, name).is_some(),
            self.mode,
            report,
            |dir, name, entry, report| {
                report.legacy += 1;
                // Beaker rewrote the file on every access: its mtime is the last one.
                let old = self.expiry.is_expired(self.now, None, Some(entry.mtime));
                if old {
                    report.legacy_expired += 1;
                }
                if self.mode == Mode::Clear || (self.mode == Mode::Sweep && old) {
                    remove(report, dir, name, entry.len);
                }
            },
        );
        visit_legacy(
            root,
            shard::LEGACY_LOCK_DIR,
            shard::is_legacy_lock,
            self.mode,
            report,
            |dir, name, entry, report| {
                report.legacy_locks += 1;
                let age = self.now - entry.mtime;
                let old = self.expiry.idle.map_or(age > GRACE, |t| age > t);
                if self.mode == Mode::Clear || (self.mode == Mode::Sweep && old) {
                    remove(report, dir, name, entry.len);
                }
            },
        );
    }
}

/// Opens directory `name` of `parent` without following a symlink; counts what is there
/// instead when it is not a directory.
fn open_sub(parent: &Dir, name: &str, report: &mut Report) -> Option<Dir> {
    match platform::subdir(parent, name) {
        Ok(Sub::Dir(fd)) => Some(fd),
        Ok(Sub::Missing) => None,
        Ok(Sub::Symlink) => {
            report.symlinks += 1;
            None
        }
        Ok(Sub::NotDir) => {
            report.foreign += 1;
            None
        }
        Err(_) => {
            report.errors += 1;
            None
        }
    }
}

/// Walks Beaker's layout under `root/top/<c>/<cc>/`, calling `visit` for each regular file
/// whose name `accepts` (given `cc`). Symlinks are never followed: in place of a directory
/// they are counted and skipped, at an accepted file name counted and (unless `Stats`)
/// removed. Everything else is counted as foreign and left alone.
fn visit_legacy(
    root: &Dir,
    top: &str,
    accepts: impl Fn(&str, &str) -> bool,
    mode: Mode,
    report: &mut Report,
    mut visit: impl FnMut(&Dir, &str, &Entry, &mut Report),
) {
    let Some(top) = open_sub(root, top, report) else {
        return;
    };
    let Ok(level1) = platform::names(&top) else {
        report.errors += 1;
        return;
    };
    for n1 in level1 {
        if n1.len() != 1 {
            report.foreign += 1;
            continue;
        }
        let Some(d1) = open_sub(&top, &n1, report) else {
            continue;
        };
        let Ok(level2) = platform::names(&d1) else {
            report.errors += 1;
            continue;
        };
        for n2 in level2 {
            if n2.len() != 2 || !n2.starts_with(&n1) {
                report.foreign += 1;
                continue;
            }
            let Some(d2) = open_sub(&d1, &n2, report) else {
                continue;
            };
            let Ok(files) = platform::names(&d2) else {
                report.errors += 1;
                continue;
            };
            for name in files {
                if !accepts(&n2, &name) {
                    report.foreign += 1;
                    continue;
                }
                match platform::stat_at(&d2, &name) {
                    Ok(Some(e)) if e.kind == Kind::File => visit(&d2, &name, &e, report),
                    Ok(Some(e)) if e.kind == Kind::Symlink => {
                        report.symlinks += 1;
                        if mode.removes() {
                            remove(report, &d2, &name, 0);
                        }
                    }
                    Ok(Some(_)) => report.foreign += 1,
                    Ok(None) => {}
                    Err(_) => report.errors += 1,
                }
            }
        }
    }
}

/// Ids of the legacy Beaker session files under `data_dir` (valid ids at their place in
/// Beaker's layout), found without following symlinks.
pub(crate) fn legacy_ids(data_dir: &Path) -> Vec<String> {
    let mut ids = Vec::new();
    let Ok(root) = platform::open_root(data_dir) else {
        return ids;
    };
    let mut report = Report::default();
    visit_legacy(
        &root,
        shard::LEGACY_DIR,
        |prefix, name| shard::legacy_session_id(prefix, name).is_some(),
        Mode::Stats,
        &mut report,
        |_, name, _, _| {
            if let Some(stem) = name.strip_suffix(".cache") {
                ids.push(stem.to_owned());
            }
        },
    );
    ids.sort();
    ids
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

/// Opens (or creates, 0600) the stamp; `None` when something else is at its name (a
/// directory that is not empty, a FIFO, a socket): the caller then sweeps without it. An
/// empty directory or a symlink there is removed (the link, never its target) and replaced
/// by the stamp.
fn open_stamp(root: &Dir) -> std::io::Result<Option<File>> {
    for _ in 0..3 {
        match platform::open_file(root, STAMP) {
            Ok(f) if f.metadata()?.is_file() => return Ok(Some(f)),
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => match platform::create_file(root, STAMP) {
                Ok(f) => return Ok(Some(f)),
                // Another process created it first: use theirs.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            },
            Err(e) if platform::not_a_file(&e) == Some(NotAFile::Dir) => {
                if platform::remove_empty_dir(root, STAMP).is_err() {
                    return Ok(None);
                }
            }
            // A symlink (the link itself goes; its target is never touched).
            Err(e) if platform::not_a_file(&e) == Some(NotAFile::Symlink) => {
                if platform::unlink(root, STAMP).is_err() {
                    return Ok(None);
                }
            }
            Err(e) if platform::not_a_file(&e) == Some(NotAFile::Special) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Claims the next automatic sweep: `Some` if no other process holds the stamp's lock and
/// the last sweep (the stamp's mtime) is at least `interval` seconds old. The stamp's mtime
/// is set to `now` on success, so other processes skip until the next interval. Creates the
/// data dir (0700) and the stamp (0600) if needed.
///
/// When something that is not a file occupies the stamp's name (a planted directory), the
/// sweep still runs: the data directory's own `flock` elects the sweeper and `last` (this
/// process's last sweep, as `f64` bits) spaces the sweeps, so each process sweeps at most
/// once per interval; the walk reports the obstacle (`Report::foreign` or `symlinks`).
pub fn claim(
    data_dir: &Path,
    now: f64,
    interval: f64,
    last: &AtomicU64,
) -> StoreResult<Option<Claim>> {
    let path = data_dir.join(STAMP);
    let root = match platform::open_root(data_dir) {
        Ok(fd) => fd,
        Err(e) if e.kind() == ErrorKind::NotFound => platform::make_root(data_dir)
            .map_err(|e| StoreError::io("create directory", data_dir, e))?,
        Err(e) => return Err(StoreError::io("open", data_dir, e)),
    };
    let Some(file) = open_stamp(&root).map_err(|e| StoreError::io("open", &path, e))? else {
        let locked = platform::try_lock_dir(root);
        let Some(file) = locked.map_err(|e| StoreError::io("lock", data_dir, e))? else {
            return Ok(None);
        };
        let previous = f64::from_bits(last.load(Ordering::Relaxed));
        if previous > 0.0 && now - previous < interval {
            return Ok(None);
        }
        last.store(now.to_bits(), Ordering::Relaxed);
        return Ok(Some(Claim { file }));
    };
    if !try_flock(&file).map_err(|e| StoreError::io("lock", &path, e))? {
        return Ok(None);
    }
    let meta = file
        .metadata()
        .map_err(|e| StoreError::io("stat", &path, e))?;
    // A fresh stamp (empty file) has not recorded any sweep yet.
    if meta.len() > 0 && now - platform::mtime(&meta) < interval {
        return Ok(None);
    }
    file.set_len(1)
        .map_err(|e| StoreError::io("write", &path, e))?;
    file.set_modified(to_system_time(now))
        .map_err(|e| StoreError::io("touch", &path, e))?;
    Ok(Some(Claim { file }))
}

/// The metadata of a record's file looked up again once its lock is held, if the directory
/// still names that file (`None`: removed or replaced meanwhile, or an error, counted).
fn relooked(file: &File, dir: &Dir, name: &str, report: &mut Report) -> Option<std::fs::Metadata> {
    let Ok(meta) = file.metadata() else {
        report.errors += 1;
        return None;
    };
    match platform::still_linked(file, &meta, dir, name) {
        Ok(true) => Some(meta),
        Ok(false) => None,
        Err(_) => {
            report.errors += 1;
            None
        }
    }
}

/// Walks the store under `data_dir` with `threads` workers (at least one).
pub fn walk(data_dir: &Path, expiry: &Expiry, now: f64, mode: Mode, threads: usize) -> Report {
    walk_with(data_dir, expiry, now, mode, threads, None)
}

/// `walk`, with what a `Rekey` walk needs (without it a rekey walk only counts records).
pub fn walk_with(
    data_dir: &Path,
    expiry: &Expiry,
    now: f64,
    mode: Mode,
    threads: usize,
    rekeying: Option<&Rekeying<'_>>,
) -> Report {
    let walker = Walker {
        expiry,
        now,
        mode,
        rekeying,
    };
    let mut total = Report::default();
    let root = match platform::open_root(data_dir) {
        Ok(fd) => fd,
        Err(e) if e.kind() == ErrorKind::NotFound => return total,
        Err(_) => {
            total.errors += 1;
            return total;
        }
    };
    // Something other than a file at the stamp's name (see `claim`).
    match platform::stat_at(&root, STAMP) {
        Ok(Some(e)) if e.kind == Kind::Symlink => total.symlinks += 1,
        Ok(Some(e)) if e.kind != Kind::File => total.foreign += 1,
        _ => {}
    }
    let shards = walker.shards(&root, &mut total);
    let next = AtomicUsize::new(0);
    let workers = threads.clamp(1, shards.len().max(1));
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut report = Report::default();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((name, dir)) = shards.get(i) else {
                            break;
                        };
                        walker.shard(dir, name, &mut report);
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
    walker.legacy(&root, &mut total);
    total
}
