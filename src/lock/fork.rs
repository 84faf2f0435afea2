//! Fork safety for every process-wide state of the library. A child of `fork` has only the
//! thread that forked; a mutex another thread held at that instant stays held forever in
//! the child. So nothing here survives `fork` and the at-fork path takes no lock at all:
//! `reset_after_fork` only bumps a generation counter, and every process-wide state (the
//! lock table, the descriptor cache, and per-store state such as the Redis pool) lives in a
//! `ForkLocal`, which hands each generation fresh objects, found without locking
//! (`once_cell::race::OnceBox`). State of an earlier generation is cleared if its mutex
//! happens to be free, and otherwise left alone (leaked). Guards created before the fork
//! (`ThreadLock`, `LockedFile`) do nothing when dropped in the child: releasing them there
//! would release the parent's locks. The primitives are the standard library's (futex-based
//! on Linux), not `parking_lot`'s, whose global table of parked threads could itself be
//! caught mid-update by a fork.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};

use once_cell::race::OnceBox;

static GENERATION: AtomicU64 = AtomicU64::new(0);

/// How many forks led to this process since the library was loaded (0 in the original).
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

/// Makes this process a new generation: every `ForkLocal` hands out fresh state from now on,
/// guards from before do nothing when dropped. Called in a child right after `fork`, while
/// it has a single thread; takes no lock (a parent thread may have held any of them).
pub fn reset_after_fork() {
    GENERATION.fetch_add(1, Ordering::AcqRel);
}

/// Locks `mutex`, ignoring poisoning (a panicking holder leaves plain data behind).
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Resets the state in `mutex` to its default if nobody holds it; never waits (the holder
/// may be a thread that did not survive a fork). The retiring step of `ForkLocal`.
pub fn clear_if_free<T: Default>(mutex: &Mutex<T>) {
    match mutex.try_lock() {
        Ok(mut state) => *state = T::default(),
        Err(TryLockError::Poisoned(state)) => *state.into_inner() = T::default(),
        Err(TryLockError::WouldBlock) => {}
    }
}

/// A copy of the state in `mutex` if nobody holds it, else the default; never waits. The
/// inheriting step of `ForkLocal::get_or_inherit`.
pub fn clone_if_free<T: Clone + Default>(mutex: &Mutex<T>) -> Mutex<T> {
    match mutex.try_lock() {
        Ok(state) => Mutex::new(state.clone()),
        Err(TryLockError::Poisoned(state)) => Mutex::new(state.into_inner().clone()),
        Err(TryLockError::WouldBlock) => Mutex::new(T::default()),
    }
}

/// A value of which each fork generation has its own: `get` returns this generation's,
/// creating it on first use, without ever waiting on anything another thread may hold.
pub struct ForkLocal<T> {
    generation: u64,
    value: OnceBox<T>,
    next: OnceBox<ForkLocal<T>>,
}

impl<T> ForkLocal<T> {
    /// For a `static`: starts at generation 0.
    pub const fn new() -> Self {
        Self::at(0)
    }

    /// For state created now (a store built in a forked child starts at its generation).
    pub fn here() -> Self {
        Self::at(generation())
    }

    const fn at(generation: u64) -> Self {
        ForkLocal {
            generation,
            value: OnceBox::new(),
            next: OnceBox::new(),
        }
    }
}

impl<T: Default> ForkLocal<T> {
    /// This generation's value.
    pub fn get(&self) -> &T {
        self.get_or_retire(|_| {})
    }

    /// This generation's value; the first time a generation is reached, `retire` is given
    /// the previous one (it must not wait on anything: see `clear_if_free`).
    pub fn get_or_retire(&self, retire: impl Fn(&T)) -> &T {
        self.get_at(generation(), retire)
    }

    /// This generation's value; the first time a generation is reached, its value is
    /// `inherit(previous)` (`inherit` must not wait: see `clone_if_free`).
    pub fn get_or_inherit(&self, inherit: impl Fn(&T) -> T) -> &T {
        let target = generation();
        let mut node = self;
        while node.generation < target {
            node = node.next.get_or_init(|| {
                let next = ForkLocal::at(target);
                if let Some(old) = node.value.get() {
                    let _ = next.value.set(Box::new(inherit(old)));
                }
                Box::new(next)
            });
        }
        node.value.get_or_init(|| Box::new(T::default()))
    }

    fn get_at(&self, target: u64, retire: impl Fn(&T)) -> &T {
        let mut node = self;
        while node.generation < target {
            node = node.next.get_or_init(|| {
                if let Some(old) = node.value.get() {
                    retire(old);
                }
                Box::new(ForkLocal::at(target))
            });
        }
        node.value.get_or_init(|| Box::new(T::default()))
    }
}

impl<T> Default for ForkLocal<T> {
    fn default() -> Self {
        Self::here()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_fork_generation_gets_fresh_state_without_waiting() {
        let local: ForkLocal<Mutex<Vec<u32>>> = ForkLocal::new();
        lock(local.get_at(0, clear_if_free)).push(1);
        // Generation 1 while a (vanished) thread holds generation 0's mutex: no wait, the
        // old state is left alone, the new one is empty.
        let held = lock(local.get_at(0, clear_if_free));
        let fresh = local.get_at(1, clear_if_free);
        assert!(lock(fresh).is_empty());
        lock(fresh).push(2);
        drop(held);
        assert_eq!(*lock(local.get_at(0, clear_if_free)), vec![1]);
        // Generation 3 (skipping 2): the free generation-1 state is cleared on the way.
        let third = local.get_at(3, clear_if_free);
        assert!(lock(third).is_empty());
        assert!(lock(local.get_at(1, clear_if_free)).is_empty());
        assert!(std::ptr::eq(third, local.get_at(3, clear_if_free)));
    }
}
