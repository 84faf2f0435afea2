//! The across-process layer of the session locks (`flock_bounded`): an exclusive `flock`
//! (through `fs4`) on the record file itself, polled with exponential back-off up to the
//! deadline. The kernel drops it when its holder dies, so a SIGKILLed worker never blocks
//! the others, and no lock file is ever left behind. With a waiter bound
//! (`StoreConfig::max_waiters`), a process whose request must wait for the `flock` first
//! takes one of `max_waiters` *waiter slots*: byte-range OFD locks (`F_OFD_SETLK`) far
//! beyond the end of the record file, which do not interact with `flock` and die with the
//! descriptor; with none free it is refused at once (`Flock::Busy`). Slots engage only when
//! the session is busy: an uncontended request makes exactly the syscalls it made before.

use std::fs::File;
use std::io;
use std::time::{Duration, Instant};

use fs4::fs_std::FileExt;

use super::fork::generation;

/// What `flock_bounded` got.
#[derive(Debug, PartialEq, Eq)]
pub enum Flock {
    /// The `flock`.
    Locked,
    /// The deadline passed while another process held it.
    TimedOut,
    /// Every waiter slot is taken: refused without waiting.
    Busy,
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

/// `flock_until`, but when the `flock` is busy the wait first takes one of `max_waiters`
/// waiter slots of the file (shared by every process); with none free the result is `Busy`
/// at once. `None`: no bound. An uncontended lock costs the one `flock` call it always did.
pub fn flock_bounded(
    file: &File,
    deadline: Instant,
    max_waiters: Option<usize>,
) -> io::Result<Flock> {
    if FileExt::try_lock_exclusive(file)? {
        return Ok(Flock::Locked);
    }
    let slot = match max_waiters {
        None => None,
        Some(max) => match WaiterSlot::take(file, max)? {
            Some(slot) => Some(slot),
            None => return Ok(Flock::Busy),
        },
    };
    let locked = flock_until(file, deadline);
    drop(slot);
    Ok(if locked? {
        Flock::Locked
    } else {
        Flock::TimedOut
    })
}

/// One of the waiter slots of a record file, held while its request waits for the `flock`;
/// given back on drop (and by the kernel when the descriptor closes, e.g. a killed worker).
struct WaiterSlot<'a> {
    file: &'a File,
    index: usize,
}

impl<'a> WaiterSlot<'a> {
    /// A free slot among the first `max`, or `None` when all are taken.
    fn take(file: &'a File, max: usize) -> io::Result<Option<Self>> {
        for index in 0..max {
            if ofd::try_lock_range(file, index)? {
                return Ok(Some(WaiterSlot { file, index }));
            }
        }
        Ok(None)
    }
}

impl Drop for WaiterSlot<'_> {
    fn drop(&mut self) {
        ofd::unlock_range(self.file, self.index);
    }
}

/// Byte-range open-file-description locks, one byte per waiter slot at `BASE + index`
/// (far past the end of any record; such locks never touch the data or the `flock`).
#[cfg(target_os = "linux")]
mod ofd {
    use std::fs::File;
    use std::io;

    use nix::errno::Errno;
    use nix::fcntl::{fcntl, FcntlArg};

    const BASE: i64 = 1 << 62;

    fn range(kind: libc::c_int, index: usize) -> libc::flock {
        libc::flock {
            l_type: kind as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: BASE.saturating_add(i64::try_from(index).unwrap_or(i64::MAX >> 2)),
            l_len: 1,
            l_pid: 0,
        }
    }

    /// Takes slot `index` if no other open file description holds it. A file open for
    /// reading only cannot take a write lock (`EBADF`): it is given the slot uncounted.
    pub fn try_lock_range(file: &File, index: usize) -> io::Result<bool> {
        match fcntl(file, FcntlArg::F_OFD_SETLK(&range(libc::F_WRLCK, index))) {
            Ok(_) | Err(Errno::EBADF) => Ok(true),
            Err(Errno::EAGAIN | Errno::EACCES) => Ok(false),
            Err(e) => Err(io::Error::from(e)),
        }
    }

    /// Gives slot `index` back (errors ignored: closing the descriptor also does it).
    pub fn unlock_range(file: &File, index: usize) {
        let _ = fcntl(file, FcntlArg::F_OFD_SETLK(&range(libc::F_UNLCK, index)));
    }
}

/// Elsewhere there are no OFD locks: every waiter gets a slot (the in-process bound still
/// applies).
#[cfg(not(target_os = "linux"))]
mod ofd {
    use std::fs::File;
    use std::io;

    pub fn try_lock_range(_: &File, _: usize) -> io::Result<bool> {
        Ok(true)
    }

    pub fn unlock_range(_: &File, _: usize) {}
}

/// A file whose `flock` (if taken) is released explicitly when it is dropped. Closing alone
/// is not enough: after a `fork` the child holds a copy of the descriptor, and the lock
/// lives on as long as any copy is open, so a session would stay locked until the child
/// exits. Unlocking a file that is not locked is a no-op. In a child forked while the file
/// was held, dropping it only closes the child's descriptor: the lock is the parent's.
pub struct LockedFile(Option<File>, u64);

impl LockedFile {
    /// Wraps an open file (locked or not yet locked).
    pub fn new(file: File) -> Self {
        LockedFile(Some(file), generation())
    }

    /// The open file. An error only after `take_unlocked` emptied the wrapper, which its
    /// owner does as it is dropped; the error keeps that mistake from being a panic.
    pub fn file(&self) -> io::Result<&File> {
        self.0
            .as_ref()
            .ok_or_else(|| io::Error::other("record file already handed back"))
    }

    /// Unlocks the file and hands it over (for reuse by a later request); the wrapper is
    /// empty afterwards (see `file`). `None` in a forked child (the lock is the parent's).
    pub fn take_unlocked(&mut self) -> Option<File> {
        let file = self.0.take()?;
        if self.1 != generation() {
            return None;
        }
        FileExt::unlock(&file).ok()?;
        Some(file)
    }
}

impl Drop for LockedFile {
    fn drop(&mut self) {
        if let Some(file) = &self.0 {
            if self.1 == generation() {
                let _ = FileExt::unlock(file);
            }
        }
    }
}

/// Takes an exclusive `flock` on `file` if nobody holds it; never waits.
pub fn try_flock(file: &File) -> io::Result<bool> {
    FileExt::try_lock_exclusive(file)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[cfg(target_os = "linux")]
    #[test]
    fn waiter_slots_are_shared_by_open_file_descriptions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        let open = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap()
        };
        let holder = open();
        let far = Instant::now() + Duration::from_secs(30);
        assert_eq!(flock_bounded(&holder, far, Some(1)).unwrap(), Flock::Locked);
        // A waiter in its slot (as another process would be, with its own description).
        let waiting = open();
        let slot = WaiterSlot::take(&waiting, 1).unwrap().unwrap();
        let start = Instant::now();
        let other = open();
        assert_eq!(flock_bounded(&other, far, Some(1)).unwrap(), Flock::Busy);
        assert_eq!(flock_bounded(&other, far, Some(0)).unwrap(), Flock::Busy);
        assert!(start.elapsed() < Duration::from_millis(100));
        // With two slots the second waiter waits (and times out: the holder keeps it).
        let soon = Instant::now() + Duration::from_millis(30);
        assert_eq!(
            flock_bounded(&other, soon, Some(2)).unwrap(),
            Flock::TimedOut
        );
        // Slots are given back: after the timeout, and when the first waiter leaves.
        drop(slot);
        let soon = Instant::now() + Duration::from_millis(30);
        assert_eq!(
            flock_bounded(&other, soon, Some(1)).unwrap(),
            Flock::TimedOut
        );
        drop(holder);
        assert_eq!(flock_bounded(&other, far, Some(0)).unwrap(), Flock::Locked);
        // The data and size of the file are untouched.
        assert_eq!(std::fs::read(&path).unwrap(), b"x");
    }
}
