//! Idle record files kept open between requests of this process, so that a request on a
//! recently used session skips `open` and `close` (a path walk each: ~2 µs warm, more when
//! the kernel's caches are cold). Only unlocked files are kept; a file taken from here is
//! re-checked (`nlink`) under its lock like a freshly opened one, so a record deleted or
//! replaced meanwhile (by another process, the sweeper) is never used. A kept descriptor of
//! a deleted record would keep its disk space allocated: at most once a second, the next
//! `put` drops every kept file whose record was unlinked. After a `fork` the child starts
//! with an empty cache: its descriptors share their open file description, and so their
//! `flock`, with the parent's. On Windows nothing is kept (`platform::KEEP_IDLE_FILES`): a
//! file open there can keep a deleted record's name from being reused.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::fork::{clear_if_free, lock, ForkLocal};
use crate::platform;

/// Files kept at most (per process).
const MAX: usize = 128;
/// How often kept files are checked for having been unlinked.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Cache {
    files: HashMap<PathBuf, File>,
    checked: Option<Instant>,
}

static CACHE: ForkLocal<Mutex<Cache>> = ForkLocal::new();

fn cache() -> MutexGuard<'static, Cache> {
    lock(CACHE.get_or_retire(clear_if_free))
}

/// Drops the kept files whose record was unlinked, if that was not done within
/// `CHECK_EVERY` (one `fstat` per kept file, at most once per interval).
fn drop_unlinked(cache: &mut Cache) {
    let now = Instant::now();
    if cache
        .checked
        .is_none_or(|at| now.duration_since(at) >= CHECK_EVERY)
    {
        cache.checked = Some(now);
        (cache.files).retain(|_, f| !platform::is_unlinked(f));
    }
}

/// Takes the idle file of `path`, if one is kept.
pub fn take(path: &Path) -> Option<File> {
    cache().files.remove(path)
}

/// Keeps an unlocked file for a later request on `path`.
pub fn put(path: PathBuf, file: File) {
    if !platform::KEEP_IDLE_FILES {
        return;
    }
    let mut cache = cache();
    drop_unlinked(&mut cache);
    if cache.files.len() >= MAX {
        if let Some(victim) = cache.files.keys().next().cloned() {
            cache.files.remove(&victim);
        }
    }
    cache.files.insert(path, file);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::fd_cache;

    /// Only where idle files are kept (not on Windows: `platform::KEEP_IDLE_FILES`).
    #[cfg(unix)]
    #[test]
    fn kept_descriptors_of_unlinked_records_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        let kept = dir.path().join("kept");
        for p in [&gone, &kept] {
            std::fs::write(p, b"x").unwrap();
            fd_cache::put(p.clone(), File::open(p).unwrap());
        }
        std::fs::remove_file(&gone).unwrap();
        std::thread::sleep(fd_cache::CHECK_EVERY + Duration::from_millis(50));
        let other = dir.path().join("other");
        std::fs::write(&other, b"x").unwrap();
        fd_cache::put(other.clone(), File::open(&other).unwrap());
        assert!(fd_cache::take(&gone).is_none());
        assert!(fd_cache::take(&kept).is_some());
        assert!(fd_cache::take(&other).is_some());
    }

    #[cfg(windows)]
    #[test]
    fn nothing_is_kept_on_windows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kept");
        std::fs::write(&path, b"x").unwrap();
        fd_cache::put(path.clone(), File::open(&path).unwrap());
        assert!(fd_cache::take(&path).is_none());
        // Nothing holds the file open: it can be removed at once.
        std::fs::remove_file(&path).unwrap();
    }
}
