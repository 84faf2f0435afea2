//! Per-session exclusive locks, held from a request's first access to the session until its
//! save (SPEC §7). Two layers, because each is cheap where the other is not:
//!
//! * **In-process** (`ThreadLock`): a table of `parking_lot` mutex + condvar pairs keyed by
//!   a `LockKey`: the store's scope (see `LockScope`) and the session id. Threads of one worker queue here and wake exactly when the holder
//!   releases, with a deadline, without touching the kernel's file locks.
//! * **Across processes** (`flock_until`): an exclusive `flock` (through `fs4`) on the record
//!   file itself, polled with exponential back-off up to the deadline. The kernel drops it when
//!   its holder dies, so a SIGKILLed worker never blocks the others, and no lock file is ever
//!   left behind.
//!
//! Nothing here survives `fork` meaningfully: `reset_after_fork` empties the table in a child
//! (threads that held entries do not exist there).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use fs4::fs_std::FileExt;
use parking_lot::{Condvar, Mutex};

use crate::sid::SessionId;

/// What a store's sessions are locked within: two stores with equal scopes in one process
/// exclude each other, stores with different scopes never interact in-process.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LockScope {
    /// A file store's data directory as configured (two stores on one directory exclude
    /// each other in-process; across processes `flock` does it).
    Dir(Arc<Path>),
    /// One store instance (memory: its sessions exist nowhere else).
    Instance(u64),
    /// A shared server and key space (Redis: URL and key prefix).
    Server(Arc<str>),
}

impl LockScope {
    /// A scope no other store shares.
    pub fn unique() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        LockScope::Instance(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// The in-process lock of one session of one store.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LockKey {
    /// The store's scope.
    pub scope: LockScope,
    /// The session.
    pub id: SessionId,
}

#[derive(Default)]
struct Entry {
    held: Mutex<bool>,
    freed: Condvar,
}

/// Entries with the number of threads that hold or wait for them; an entry is dropped when
/// that count reaches zero, so the table only holds sessions in use.
type Table = HashMap<LockKey, (Arc<Entry>, usize)>;

static TABLE: LazyLock<Mutex<Table>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// The in-process half of a session lock; released on drop.
pub struct ThreadLock {
    key: LockKey,
    entry: Arc<Entry>,
}

impl ThreadLock {
    /// Waits until no other thread of this process holds `key`, or until `deadline`.
    /// Returns `None` on timeout.
    pub fn acquire(key: LockKey, deadline: Instant) -> Option<ThreadLock> {
        let entry = {
            let mut table = TABLE.lock();
            let slot = table
                .entry(key.clone())
                .or_insert_with(|| (Arc::new(Entry::default()), 0));
            slot.1 += 1;
            Arc::clone(&slot.0)
        };
        let mut held = entry.held.lock();
        while *held {
            if entry.freed.wait_until(&mut held, deadline).timed_out() && *held {
                drop(held);
                forget(&key);
                return None;
            }
        }
        *held = true;
        drop(held);
        Some(ThreadLock { key, entry })
    }
}

fn forget(key: &LockKey) {
    let mut table = TABLE.lock();
    if let Some(slot) = table.get_mut(key) {
        slot.1 -= 1;
        if slot.1 == 0 {
            table.remove(key);
        }
    }
}

impl Drop for ThreadLock {
    fn drop(&mut self) {
        *self.entry.held.lock() = false;
        self.entry.freed.notify_one();
        forget(&self.key);
    }
}

/// Forgets every in-process lock. Called in a child right after `fork`, where the threads
/// that held entries no longer exist.
pub fn reset_after_fork() {
    let mut table = TABLE.lock();
    *table = HashMap::new();
    fd_cache::GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// Takes an exclusive `flock` on `file`, polling until `deadline`. Returns `Ok(false)` on
/// timeout. The back-off starts at 20 µs (an uncontended re-try costs one syscall) and is
/// capped at 2 ms so a waiter notices a release quickly.
pub fn flock_until(file: &File, deadline: Instant) -> io::Result<bool> {
    let mut backoff = Duration::from_micros(20);
    loop {
        if FileExt::try_lock_exclusive(file)? {
            return Ok(true);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        std::thread::sleep(backoff.min(deadline - now));
        backoff = (backoff * 2).min(Duration::from_millis(2));
    }
}

/// A file whose `flock` (if taken) is released explicitly when it is dropped. Closing alone
/// is not enough: after a `fork` the child holds a copy of the descriptor, and the lock
/// lives on as long as any copy is open, so a session would stay locked until the child
/// exits. Unlocking a file that is not locked is a no-op.
pub struct LockedFile(Option<File>);

impl LockedFile {
    /// Wraps an open file (locked or not yet locked).
    pub fn new(file: File) -> Self {
        LockedFile(Some(file))
    }

    /// The open file. An error only after `take_unlocked` emptied the wrapper, which its
    /// owner does as it is dropped; the error keeps that mistake from being a panic.
    pub fn file(&self) -> io::Result<&File> {
        self.0
            .as_ref()
            .ok_or_else(|| io::Error::other("record file already handed back"))
    }

    /// Unlocks the file and hands it over (for reuse by a later request); the wrapper is
    /// empty afterwards (see `file`).
    pub fn take_unlocked(&mut self) -> Option<File> {
        let file = self.0.take()?;
        FileExt::unlock(&file).ok()?;
        Some(file)
    }
}

impl Drop for LockedFile {
    fn drop(&mut self) {
        if let Some(file) = &self.0 {
            let _ = FileExt::unlock(file);
        }
    }
}

/// Idle record files kept open between requests of this process, so that a request on a
/// recently used session skips `open` and `close` (a path walk each: ~2 µs warm, more when
/// the kernel's caches are cold). Only unlocked files are kept; a file taken from here is
/// re-checked (`nlink`) under its lock like a freshly opened one, so a record deleted or
/// replaced meanwhile (by another process, the sweeper) is never used. After a `fork` the
/// child drops what it inherited: its descriptors share their open file description, and so
/// their `flock`, with the parent's.
pub mod fd_cache {
    use super::*;

    /// Files kept at most (per process).
    const MAX: usize = 128;

    pub(crate) static GENERATION: AtomicU64 = AtomicU64::new(0);

    static CACHE: LazyLock<Mutex<(u64, HashMap<PathBuf, File>)>> =
        LazyLock::new(|| Mutex::new((0, HashMap::new())));

    fn current(cache: &mut (u64, HashMap<PathBuf, File>)) -> &mut HashMap<PathBuf, File> {
        let generation = GENERATION.load(Ordering::SeqCst);
        if cache.0 != generation {
            cache.1.clear();
            cache.0 = generation;
        }
        &mut cache.1
    }

    /// Takes the idle file of `path`, if one is kept.
    pub fn take(path: &Path) -> Option<File> {
        let mut cache = CACHE.lock();
        current(&mut cache).remove(path)
    }

    /// Keeps an unlocked file for a later request on `path`.
    pub fn put(path: PathBuf, file: File) {
        let mut cache = CACHE.lock();
        let map = current(&mut cache);
        if map.len() >= MAX {
            if let Some(victim) = map.keys().next().cloned() {
                map.remove(&victim);
            }
        }
        map.insert(path, file);
    }
}

/// Takes an exclusive `flock` on `file` if nobody holds it; never waits.
pub fn try_flock(file: &File) -> io::Result<bool> {
    FileExt::try_lock_exclusive(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn key(n: u8) -> LockKey {
        let hex = format!("{n:02x}").repeat(16);
        LockKey {
            scope: LockScope::Dir(Arc::from(Path::new("/nonexistent"))),
            id: SessionId::parse(&hex).unwrap(),
        }
    }

    #[test]
    fn threads_are_serialised_per_key() {
        let key = key(1);
        let inside = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (key, inside, max) = (key.clone(), inside.clone(), max.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let deadline = Instant::now() + Duration::from_secs(10);
                        let _guard = ThreadLock::acquire(key.clone(), deadline).unwrap();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        max.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(max.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn waits_are_bounded_and_entries_cleaned() {
        let key = key(2);
        let held =
            ThreadLock::acquire(key.clone(), Instant::now() + Duration::from_secs(1)).unwrap();
        let start = Instant::now();
        let k2 = key.clone();
        let t = std::thread::spawn(move || {
            ThreadLock::acquire(k2, Instant::now() + Duration::from_millis(100)).is_none()
        });
        assert!(t.join().unwrap());
        assert!(start.elapsed() >= Duration::from_millis(100));
        drop(held);
        assert!(TABLE.lock().get(&key).is_none());
        // A different key is independent.
        let a = ThreadLock::acquire(key.clone(), Instant::now()).unwrap();
        let b = ThreadLock::acquire(self::key(3), Instant::now()).unwrap();
        // The same id in another scope too.
        let other_scope = LockKey {
            scope: LockScope::unique(),
            ..key.clone()
        };
        let c = ThreadLock::acquire(other_scope, Instant::now()).unwrap();
        drop((a, b, c));
    }

    #[test]
    fn flock_excludes_other_open_file_descriptions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        let a = File::open(&path).unwrap();
        let b = File::open(&path).unwrap();
        assert!(flock_until(&a, Instant::now()).unwrap());
        let start = Instant::now();
        assert!(!flock_until(&b, Instant::now() + Duration::from_millis(50)).unwrap());
        assert!(start.elapsed() >= Duration::from_millis(50));
        drop(a);
        assert!(flock_until(&b, Instant::now()).unwrap());
    }
}
