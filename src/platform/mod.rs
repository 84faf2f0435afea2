//! Everything the file store, its locks and the legacy reader need from the operating
//! system that POSIX and Windows do differently, behind one interface, so that the store
//! itself has no `cfg` (issue 19). `unix.rs` is the POSIX implementation (Linux, macOS):
//! descriptor-relative calls (`openat`, `unlinkat`, …) with `O_NOFOLLOW`, positional I/O,
//! mode bits and owners. `windows.rs` is the Windows one: paths below a checked directory,
//! reparse points refused like symlinks, `seek_read`/`seek_write`, share modes that let a
//! record be replaced or deleted while it is open, and no mode bits (privacy comes from the
//! data directory's ACL, which new files inherit). `docs/platforms.md` lists what differs.
//!
//! The interface, implemented by both:
//! * `Dir`: an open directory of the store; `open_root`, `make_root`, `subdir`,
//!   `make_subdir` reach one, never through a symlink below the data directory.
//! * names in a `Dir`: `open_file`, `create_file`, `unlink`, `remove_empty_dir`, `rename`,
//!   `stat_at`, `names`, and `still_linked` (is the file opened at a name still there?).
//! * `identity`, `identity_of`, `is_removed`: a cached directory's validity;
//!   `try_lock_dir`: the sweep election's fallback lock.
//! * `read_exact_at`, `write_all_at`, `mtime`, `is_unlinked`: record I/O.
//! * `open_key`, `create_private`, `make_private_dirs`, `key_distrust`: the generated key.
//! * `ownership`: what the legacy trust rule needs of a file's owner and mode.
//! * `KEEP_IDLE_FILES`: whether idle record files may stay open between requests.

use std::io;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as imp;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as imp;

pub(crate) use imp::*;

/// What is at a name where a directory belongs.
pub(crate) enum Sub {
    /// A real directory, opened.
    Dir(Dir),
    /// Nothing.
    Missing,
    /// A symbolic link (or, on Windows, any reparse point): never followed.
    Symlink,
    /// A file, FIFO, socket or device.
    NotDir,
}

/// The kind of a directory entry, as `lstat` sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    /// A symbolic link; on Windows any reparse point (symlink, junction, mount point…).
    Symlink,
    Other,
}

/// An entry's metadata, without following a symlink.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    pub kind: Kind,
    pub len: u64,
    /// Modification time, epoch seconds.
    pub mtime: f64,
}

/// Why `open_file` found no file to open at a name (`not_a_file`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NotAFile {
    /// A symbolic link (Windows: a reparse point): never followed.
    Symlink,
    /// A directory.
    Dir,
    /// A socket, FIFO or device (POSIX only).
    Special,
    /// A component of the path is not a directory.
    NotDir,
}

/// An error of `open_file` (or `open_key`) that says what was at the name instead of a
/// file; `None` for any other error.
pub(crate) fn not_a_file(e: &io::Error) -> Option<NotAFile> {
    imp::classify(e)
}
