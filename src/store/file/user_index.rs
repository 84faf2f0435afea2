//! The file backend's per-user index (`crate::store::index`):
//!
//! ```text
//! <data_dir>/users1/<u[0..2]>/<u>/<d>    entry (u = user digest, d = the record's name)
//! ```
//!
//! The same confinement rules as the records (`tree`, `sweep`): every directory is reached
//! from the data directory's descriptor one name at a time without following a symlink
//! (`Tree::walk_path`), created 0700 (a symlink or file planted where one of these
//! directories belongs is replaced, never followed), entries are created `O_EXCL |
//! O_NOFOLLOW` with mode 0600 and opened `O_NOFOLLOW`, and only names of the forms above
//! (two hex characters, 64-hex digests) are ever removed; anything else is left alone.
//!
//! An entry's name is its record's name, so a listing of the tree reveals no session id
//! and no user id (both are digests); the id is inside the entry (0600), which revocation
//! needs.

use std::io::{self, ErrorKind, Read, Write};
use std::path::PathBuf;

use super::tree::Found;
use super::FileStore;
use crate::error::{StoreError, StoreResult};
use crate::platform::{self, Dir, Kind};
use crate::record::Keys;
use crate::shard;
use crate::sid::SessionId;
use crate::store::index::{self, IndexEntry, MAX_META};

/// Name of the index's directory under the data dir (versioned, as `fbs1`).
pub const USERS_DIR: &str = "users1";
/// The largest entry read back: header and metadata.
const MAX_ENTRY: u64 = (MAX_META + 256) as u64;

fn is_shard_name(name: &str) -> bool {
    name.len() == shard::SHARD_CHARS && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Reads the entry `name` of `dir` (never through a symlink); `None` if it is not one.
fn read_entry(keys: &Keys, dir: &Dir, name: &str) -> io::Result<Option<IndexEntry>> {
    let file = match platform::open_file(dir, name) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound || platform::not_a_file(&e).is_some() => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.take(MAX_ENTRY + 1).read_to_end(&mut bytes)?;
    Ok(IndexEntry::decode(keys, &bytes))
}

/// Writes `bytes` as the entry `name` of `dir`, replacing an older one.
fn write_entry(dir: &Dir, name: &str, bytes: &[u8]) -> io::Result<()> {
    match platform::unlink(dir, name) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut file = match platform::create_file(dir, name) {
        Ok(f) => f,
        // A concurrent write of the same entry (the same session logging in twice at once):
        // either one names the session.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    };
    file.write_all(bytes)
}

impl FileStore {
    fn users_path(&self, user: &str) -> PathBuf {
        let mut path = self.shared.data_dir.join(USERS_DIR);
        path.push(&user[..shard::SHARD_CHARS]);
        path.push(user);
        path
    }

    /// `user`'s directory (created with its parents when `create`); `None` when missing or
    /// when something that is not a directory is in the way (never followed).
    fn user_dir(&self, user: &str, create: bool) -> StoreResult<Option<std::sync::Arc<Dir>>> {
        let components = [USERS_DIR, &user[..shard::SHARD_CHARS], user];
        match self.shared.tree.walk_path(&components, create) {
            Ok(Found::Dir(dir)) => Ok(Some(dir)),
            Ok(Found::Missing | Found::NotDir) => Ok(None),
            Err(e) => Err(StoreError::io("open", self.users_path(user), e)),
        }
    }

    pub(super) fn put_entry(&self, user: &str, entry: &IndexEntry) -> StoreResult<()> {
        let user = index::user_digest(user);
        let name = shard::digest(&entry.id);
        let bytes = entry.encode(self.shared.keys.signing()?)?;
        // Twice: a sweep may remove the user's (then empty) directory between our walk and
        // our write, which then fails with ENOENT; the second walk makes it again.
        for attempt in 0..2 {
            let Some(dir) = self.user_dir(&user, true)? else {
                let e = io::Error::other("not a directory");
                return Err(StoreError::io("create", self.users_path(&user), e));
            };
            match write_entry(&dir, &name, &bytes) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::NotFound && attempt == 0 => {}
                Err(e) => return Err(StoreError::io("write", self.users_path(&user), e)),
            }
        }
        Ok(())
    }

    pub(super) fn remove_entry(&self, user: &str, id: &SessionId) -> StoreResult<()> {
        let user = index::user_digest(user);
        let Some(dir) = self.user_dir(&user, false)? else {
            return Ok(());
        };
        match platform::unlink(&dir, &shard::digest(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("remove", self.users_path(&user), e)),
        }
    }

    pub(super) fn list_entries(&self, user: &str) -> StoreResult<Vec<IndexEntry>> {
        let user = index::user_digest(user);
        let Some(dir) = self.user_dir(&user, false)? else {
            return Ok(Vec::new());
        };
        // (No key yet: no entry was ever written with one, none can be read.)
        let Some(keys) = self.shared.keys.existing()? else {
            return Ok(Vec::new());
        };
        let io_err = |e| StoreError::io("read", self.users_path(&user), e);
        let mut entries = Vec::new();
        for name in platform::names(&dir).map_err(io_err)? {
            if index::is_digest(&name) {
                if let Some(entry) = read_entry(keys, &dir, &name).map_err(io_err)? {
                    entries.push(entry);
                }
            }
        }
        Ok(entries)
    }

    /// Whether the record named `name` is in its shard (a file, not followed).
    fn record_exists(&self, name: &str) -> io::Result<bool> {
        match self.shared.tree.shard(shard::shard_of(name), false)? {
            Found::Dir(dir) => {
                Ok(matches!(platform::stat_at(&dir, name)?, Some(e) if e.kind == Kind::File))
            }
            Found::Missing | Found::NotDir => Ok(false),
        }
    }

    /// One entry of the sweep: whether it is to go.
    fn stale(&self, keys: &Keys, dir: &Dir, name: &str, now: f64, grace: f64) -> io::Result<bool> {
        let Some(meta) = platform::stat_at(dir, name)? else {
            return Ok(false);
        };
        if meta.kind != Kind::File {
            return Ok(false); // not ours to remove
        }
        match read_entry(keys, dir, name)? {
            // Torn (a crash while writing it) or garbled: its record was never written
            // after it, or it would have been written whole first. Left for `grace` after
            // its last change, as a write may be under way.
            None => Ok(now - meta.mtime > grace),
            Some(entry) if name != shard::digest(&entry.id) => Ok(true),
            Some(entry) => Ok(now - entry.written_at > grace && !self.record_exists(name)?),
        }
    }

    pub(super) fn sweep_entries(&self, now: f64, grace: f64) -> StoreResult<u64> {
        let path = self.shared.data_dir.join(USERS_DIR);
        let io_err = |e| StoreError::io("sweep", path.clone(), e);
        let users = match self.shared.tree.walk_path(&[USERS_DIR], false) {
            Ok(Found::Dir(dir)) => dir,
            Ok(Found::Missing | Found::NotDir) => return Ok(0),
            Err(e) => return Err(io_err(e)),
        };
        // (No key: no entry can be verified, so none is taken for stale.)
        let Some(keys) = self.shared.keys.existing()? else {
            return Ok(0);
        };
        let mut removed = 0u64;
        for shard_name in platform::names(&users).map_err(io_err)? {
            if !is_shard_name(&shard_name) {
                continue;
            }
            let platform::Sub::Dir(shard_dir) =
                platform::subdir(&users, &shard_name).map_err(io_err)?
            else {
                continue;
            };
            for user in platform::names(&shard_dir).map_err(io_err)? {
                if !index::is_digest(&user) || !user.starts_with(&shard_name) {
                    continue;
                }
                let platform::Sub::Dir(user_dir) =
                    platform::subdir(&shard_dir, &user).map_err(io_err)?
                else {
                    continue;
                };
                for name in platform::names(&user_dir).map_err(io_err)? {
                    if index::is_digest(&name)
                        && self
                            .stale(keys, &user_dir, &name, now, grace)
                            .map_err(io_err)?
                        && platform::unlink(&user_dir, &name).is_ok()
                    {
                        removed += 1;
                    }
                }
                // Only if empty (ENOTEMPTY otherwise); a put racing this makes it again.
                let _ = platform::remove_empty_dir(&shard_dir, &user);
            }
            let _ = platform::remove_empty_dir(&users, &shard_name);
        }
        Ok(removed)
    }
}
