//! The data directory as open descriptors: the record shards a request needs, reached from
//! the data directory's descriptor one name at a time without following symlinks
//! (`platform`), and kept open per process so that opening a record costs one `openat`, as a
//! plain `open` of its path did.
//!
//! Cached descriptors are directories: they hold no lock and their offset is never used, so
//! a forked child may go on using what it inherited. They are re-validated where a stale one
//! would matter, at no cost on the request path of an existing session: when a record is not
//! found (the data directory may have been removed, or replaced under its path), when a
//! create finds its shard gone, and, at most once a second, before a record is created (a
//! data directory moved away and replaced by another keeps its descriptors valid; checking
//! it on every creation would cost every new session two syscalls). The cache's mutex is only ever taken with a bounded wait, falling back
//! to an uncached walk, so a child forked while a parent thread held it never blocks.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::platform::{self, Dir, Sub};
use crate::shard;

/// How long a request waits for the cache before walking without it.
const CACHE_WAIT: Duration = Duration::from_millis(1);
/// How often, at most, a creation re-checks that the cached data directory is still the one
/// at the configured path (milliseconds).
const RECHECK_MS: u64 = 1000;

/// The origin of the coarse monotonic clock of `Tree::recheck_due`.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// What a lookup of a directory of the store found.
pub(crate) enum Found {
    /// The directory (shared with the cache).
    Dir(Arc<Dir>),
    /// It does not exist (nor, possibly, the data directory).
    Missing,
    /// A symlink or a non-directory is where the directory belongs; never followed.
    NotDir,
}

#[derive(Default)]
struct Cached {
    root: Option<(Arc<Dir>, (u64, u64))>,
    records: Option<Arc<Dir>>,
    shards: HashMap<String, Arc<Dir>>,
}

/// The open directories of one data directory.
pub(crate) struct Tree {
    path: Arc<Path>,
    cache: Mutex<Cached>,
    /// When (ms after `EPOCH`) a creation next re-checks the cache (`recheck_due`).
    next_check: AtomicU64,
}

fn found(sub: Sub) -> Found {
    match sub {
        Sub::Dir(fd) => Found::Dir(Arc::new(fd)),
        Sub::Missing => Found::Missing,
        Sub::Symlink | Sub::NotDir => Found::NotDir,
    }
}

impl Tree {
    pub(crate) fn new(path: Arc<Path>) -> Self {
        Tree {
            path,
            cache: Mutex::new(Cached::default()),
            next_check: AtomicU64::new(0),
        }
    }

    /// The data directory (created, 0700, when `create`). `ENOTDIR` when it is a file.
    pub(crate) fn root(&self, create: bool) -> io::Result<Option<Arc<Dir>>> {
        let mut guard = self.cache.try_lock_for(CACHE_WAIT);
        if let Some((fd, _)) = guard.as_ref().and_then(|c| c.root.as_ref()) {
            return Ok(Some(Arc::clone(fd)));
        }
        let fd = match platform::open_root(&self.path) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                platform::make_root(&self.path)?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let id = platform::identity(&fd)?;
        let fd = Arc::new(fd);
        if let Some(cache) = guard.as_mut() {
            cache.root = Some((Arc::clone(&fd), id));
        }
        Ok(Some(fd))
    }

    /// The shard directory `fbs1/<name>` (created with its parents when `create`).
    pub(crate) fn shard(&self, name: &str, create: bool) -> io::Result<Found> {
        if let Some(cache) = self.cache.try_lock_for(CACHE_WAIT) {
            if let Some(fd) = cache.shards.get(name) {
                return Ok(Found::Dir(Arc::clone(fd)));
            }
        }
        let records = match self.records(create)? {
            Found::Dir(fd) => fd,
            other => return Ok(other),
        };
        let sub = if create {
            platform::make_subdir(&records, name)?
        } else {
            platform::subdir(&records, name)?
        };
        let result = found(sub);
        if let Found::Dir(fd) = &result {
            if let Some(mut cache) = self.cache.try_lock_for(CACHE_WAIT) {
                cache.shards.insert(name.to_owned(), Arc::clone(fd));
            }
        }
        Ok(result)
    }

    fn records(&self, create: bool) -> io::Result<Found> {
        if let Some(cache) = self.cache.try_lock_for(CACHE_WAIT) {
            if let Some(fd) = &cache.records {
                return Ok(Found::Dir(Arc::clone(fd)));
            }
        }
        let Some(root) = self.root(create)? else {
            return Ok(Found::Missing);
        };
        let sub = if create {
            platform::make_subdir(&root, shard::RECORDS_DIR)?
        } else {
            platform::subdir(&root, shard::RECORDS_DIR)?
        };
        let result = found(sub);
        if let Found::Dir(fd) = &result {
            if let Some(mut cache) = self.cache.try_lock_for(CACHE_WAIT) {
                cache.records = Some(Arc::clone(fd));
            }
        }
        Ok(result)
    }

    /// Whether the cached descriptors still describe the data directory at its path, with
    /// `shard` (one of them) still linked. When not, the cache is emptied. Costs a `stat`
    /// (and an `fstat`); called only when a record was not found, and before a creation.
    pub(crate) fn still_current(&self, shard: Option<&Dir>) -> bool {
        let cached = self
            .cache
            .try_lock_for(CACHE_WAIT)
            .and_then(|c| c.root.as_ref().map(|(_, id)| *id));
        let current = match cached {
            Some(id) => platform::identity_of(&self.path).is_ok_and(|now| now == id),
            None => true,
        };
        if current && !shard.is_some_and(platform::is_removed) {
            return true;
        }
        self.forget();
        false
    }

    /// Whether a creation should re-check the cache now (`still_current`): true at most
    /// once per `RECHECK_MS` (lock-free, so it is fork-safe).
    pub(crate) fn recheck_due(&self) -> bool {
        let now = u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_check.load(Ordering::Relaxed);
        now >= next
            && self
                .next_check
                .compare_exchange(
                    next,
                    now.saturating_add(RECHECK_MS),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// Drops every cached descriptor.
    pub(crate) fn forget(&self) {
        if let Some(mut cache) = self.cache.try_lock_for(CACHE_WAIT) {
            *cache = Cached::default();
        }
    }

    /// Opens a directory below the data directory by the names of its components (no
    /// caching; for the legacy tree and the sweeper).
    pub(crate) fn open_path(&self, components: &[&str]) -> io::Result<Found> {
        self.walk_path(components, false)
    }

    /// `open_path`, creating (0700) what is missing when `create`, by the same rules as the
    /// shards: one name at a time from the data directory's descriptor, a symlink or a
    /// file in the way of one of our names replaced by a directory (`make_subdir`), never
    /// followed. For the per-user index (`user_index`), whose names are all digests.
    pub(crate) fn walk_path(&self, components: &[&str], create: bool) -> io::Result<Found> {
        let Some(root) = self.root(create)? else {
            return Ok(Found::Missing);
        };
        let mut current = root;
        for name in components {
            // Opened first even when creating: a user's directories exist after their first
            // login, and `make_subdir` would pay a failing `mkdirat` for each of them.
            let sub = match platform::subdir(&current, name)? {
                Sub::Dir(fd) => Sub::Dir(fd),
                _ if create => platform::make_subdir(&current, name)?,
                other => other,
            };
            match found(sub) {
                Found::Dir(fd) => current = fd,
                other => return Ok(other),
            }
        }
        Ok(Found::Dir(current))
    }
}
