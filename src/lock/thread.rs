//! The in-process layer of the session locks (`ThreadLock`): a table of mutex + condvar
//! pairs keyed by a `LockKey`: the store's scope (see `LockScope`) and the session id.
//! Threads of one worker queue here and wake exactly when the holder releases, with a
//! deadline, without touching the kernel's file locks. A store may bound how many requests
//! wait for one session (`StoreConfig::max_waiters`): the table counts a session's holder
//! and waiters, and past the bound a request is refused at once (`Acquired::Busy`) instead
//! of tying up a worker until the lock timeout.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::fork::{clear_if_free, generation, lock, ForkLocal};
use crate::sid::SessionId;

/// `now + timeout`, saturating far in the future instead of panicking on overflow.
pub fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(now)
}

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

static TABLE: ForkLocal<Mutex<Table>> = ForkLocal::new();

/// What `ThreadLock::acquire_bounded` got.
pub enum Acquired {
    /// The lock.
    Locked(ThreadLock),
    /// The deadline passed while another thread held it.
    TimedOut,
    /// As many threads as allowed already wait for it: refused without waiting.
    Busy,
}

/// The in-process half of a session lock; released on drop.
pub struct ThreadLock {
    key: LockKey,
    entry: Arc<Entry>,
    table: &'static Mutex<Table>,
    generation: u64,
}

impl ThreadLock {
    /// Waits until no other thread of this process holds `key`, or until `deadline`.
    /// Returns `None` on timeout.
    pub fn acquire(key: LockKey, deadline: Instant) -> Option<ThreadLock> {
        match Self::acquire_bounded(key, deadline, None) {
            Acquired::Locked(lock) => Some(lock),
            Acquired::TimedOut | Acquired::Busy => None,
        }
    }

    /// `acquire`, but refused at once (`Busy`) when `max_waiters` threads already wait for
    /// `key` behind its holder (`None`: no bound).
    pub fn acquire_bounded(
        key: LockKey,
        deadline: Instant,
        max_waiters: Option<usize>,
    ) -> Acquired {
        let generation = generation();
        let table = TABLE.get_or_retire(clear_if_free);
        let entry = {
            let mut table = lock(table);
            let slot = table
                .entry(key.clone())
                .or_insert_with(|| (Arc::new(Entry::default()), 0));
            // slot.1 counts the holder (or the thread about to hold) and the waiters.
            if max_waiters.is_some_and(|max| slot.1 > max) {
                return Acquired::Busy;
            }
            slot.1 += 1;
            Arc::clone(&slot.0)
        };
        let mut held = lock(&entry.held);
        while *held {
            let now = Instant::now();
            if now >= deadline {
                drop(held);
                forget(table, &key);
                return Acquired::TimedOut;
            }
            held = match entry.freed.wait_timeout(held, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        *held = true;
        drop(held);
        Acquired::Locked(ThreadLock {
            key,
            entry,
            table,
            generation,
        })
    }
}

/// Drops one holder or waiter of `key` from the table; returns how many remain.
fn forget(table: &Mutex<Table>, key: &LockKey) -> usize {
    let mut table = lock(table);
    let Some(slot) = table.get_mut(key) else {
        return 0;
    };
    slot.1 -= 1;
    let left = slot.1;
    if left == 0 {
        table.remove(key);
    }
    left
}

impl Drop for ThreadLock {
    fn drop(&mut self) {
        if self.generation != generation() {
            // Taken before a fork: in the child, the entry's mutex may be held by a thread
            // that does not exist here. The child's table does not know this entry anyway.
            return;
        }
        // Counted out first: a thread that registers after this finds no entry and makes
        // its own. Waking is a syscall with the standard library's condvar, so it is done
        // only for a waiter that registered before.
        let waiting = forget(self.table, &self.key);
        *lock(&self.entry.held) = false;
        if waiting > 0 {
            self.entry.freed.notify_one();
        }
    }
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

    fn in_table(key: &LockKey) -> bool {
        lock(TABLE.get()).contains_key(key)
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
        assert!(!in_table(&key));
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
    fn waiters_past_the_bound_are_refused_at_once() {
        let key = key(4);
        let far = Instant::now() + Duration::from_secs(30);
        let Acquired::Locked(held) = ThreadLock::acquire_bounded(key.clone(), far, Some(1)) else {
            panic!("uncontended lock refused");
        };
        // One waiter is allowed: it waits (until its short deadline).
        let k = key.clone();
        let waiter = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_millis(500);
            matches!(
                ThreadLock::acquire_bounded(k, deadline, Some(1)),
                Acquired::TimedOut
            )
        });
        let start = Instant::now();
        while lock(TABLE.get()).get(&key).map(|s| s.1) != Some(2) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "waiter never queued"
            );
            std::thread::yield_now();
        }
        // A second one is refused without waiting, and leaves the counts as they were.
        let start = Instant::now();
        assert!(matches!(
            ThreadLock::acquire_bounded(key.clone(), far, Some(1)),
            Acquired::Busy
        ));
        assert!(start.elapsed() < Duration::from_millis(100));
        assert!(waiter.join().unwrap());
        // Bound 0: nobody may wait.
        assert!(matches!(
            ThreadLock::acquire_bounded(key.clone(), far, Some(0)),
            Acquired::Busy
        ));
        drop(held);
        assert!(!in_table(&key));
    }

    #[test]
    fn deadlines_saturate_instead_of_panicking() {
        let far = deadline_after(Duration::from_secs(u64::MAX));
        assert!(far > Instant::now() + Duration::from_secs(86_400));
    }
}
