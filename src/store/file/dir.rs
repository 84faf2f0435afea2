//! The file store's descriptor-relative system calls (POSIX), in one place so that a port
//! (issue 19: Windows) replaces this module only. Everything below the data directory is
//! reached one name at a time from an open directory descriptor: directories with
//! `O_DIRECTORY | O_NOFOLLOW`, files with `O_NOFOLLOW`, removals with `unlinkat`, so no
//! symlink (or a directory swapped for one) ever takes a call outside the data directory.
//! The data directory itself is opened by its configured path (the operator's choice, which
//! may be a symlink).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// Directories are created 0700 and files 0600, set explicitly whatever the umask.
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// What is at a name where a directory belongs.
pub(crate) enum Sub {
    /// A real directory, opened.
    Dir(OwnedFd),
    /// Nothing.
    Missing,
    /// A symbolic link: never followed.
    Symlink,
    /// A file, FIFO, socket or device.
    NotDir,
}

/// The kind of a directory entry, as `lstat` sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
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

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Opens the data directory by its configured path (following symlinks in it: the
/// operator's path); `ENOTDIR` when it is a file.
pub(crate) fn open_root(path: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    Ok(rfs::open(path, flags, Mode::empty())?)
}

/// Creates the data directory and its missing parents (0700, set explicitly on the data
/// directory itself), then opens it.
pub(crate) fn make_root(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)?;
    let fd = open_root(path)?;
    rfs::fchmod(&fd, Mode::from_raw_mode(DIR_MODE))?;
    Ok(fd)
}

/// Opens the directory `name` of `parent` without following a symlink.
pub(crate) fn subdir(parent: impl AsFd, name: &str) -> io::Result<Sub> {
    let parent = parent.as_fd();
    match rfs::openat(parent, name, dir_flags(), Mode::empty()) {
        Ok(fd) => Ok(Sub::Dir(fd)),
        Err(Errno::NOENT) => Ok(Sub::Missing),
        Err(Errno::LOOP | Errno::NOTDIR) => Ok(match stat_at(parent, name) {
            Ok(Some(e)) if e.kind == Kind::Symlink => Sub::Symlink,
            Ok(None) => Sub::Missing,
            _ => Sub::NotDir,
        }),
        Err(e) => Err(e.into()),
    }
}

/// `subdir`, creating the directory (0700) if it is missing.
pub(crate) fn make_subdir(parent: impl AsFd, name: &str) -> io::Result<Sub> {
    let parent = parent.as_fd();
    match rfs::mkdirat(parent, name, Mode::from_raw_mode(DIR_MODE)) {
        Ok(()) => {
            let sub = subdir(parent, name)?;
            if let Sub::Dir(fd) = &sub {
                rfs::fchmod(fd, Mode::from_raw_mode(DIR_MODE))?;
            }
            Ok(sub)
        }
        Err(Errno::EXIST) => match subdir(parent, name)? {
            // Something planted where this package's directory belongs (a symlink, a file,
            // a FIFO): the name is ours, so the entry itself goes (`unlinkat` never follows a
            // link) and the directory is made once more. Creating a session must not fail
            // for good because someone planted a link in the data dir.
            Sub::Symlink | Sub::NotDir => {
                unlink(parent, name)?;
                match rfs::mkdirat(parent, name, Mode::from_raw_mode(DIR_MODE)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                let sub = subdir(parent, name)?;
                if let Sub::Dir(fd) = &sub {
                    rfs::fchmod(fd, Mode::from_raw_mode(DIR_MODE))?;
                }
                Ok(sub)
            }
            other => Ok(other),
        },
        Err(e) => Err(e.into()),
    }
}

/// Opens the existing file `name` of `dir` read-write, never following a symlink
/// (`ELOOP`); a directory gives `EISDIR`.
pub(crate) fn open_file(dir: impl AsFd, name: &str) -> io::Result<File> {
    let flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(File::from(rfs::openat(dir, name, flags, Mode::empty())?))
}

/// Creates the new file `name` in `dir` (`O_EXCL`, never through a symlink), mode 0600.
pub(crate) fn create_file(dir: impl AsFd, name: &str) -> io::Result<File> {
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rfs::openat(dir, name, flags, Mode::from_raw_mode(FILE_MODE))?;
    rfs::fchmod(&fd, Mode::from_raw_mode(FILE_MODE))?;
    Ok(File::from(fd))
}

/// Removes the entry `name` of `dir` (a symlink itself, never its target).
pub(crate) fn unlink(dir: impl AsFd, name: &str) -> io::Result<()> {
    Ok(rfs::unlinkat(dir, name, AtFlags::empty())?)
}

/// Removes the directory `name` of `dir` if it is empty (`ENOTEMPTY` otherwise).
pub(crate) fn remove_empty_dir(dir: impl AsFd, name: &str) -> io::Result<()> {
    Ok(rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)?)
}

/// Renames `from` to `to`, both in `dir`.
pub(crate) fn rename(dir: impl AsFd, from: &str, to: &str) -> io::Result<()> {
    let dir = dir.as_fd();
    Ok(rfs::renameat(dir, from, dir, to)?)
}

fn entry_of(st: &rfs::Stat) -> Entry {
    let kind = match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => Kind::File,
        FileType::Directory => Kind::Dir,
        FileType::Symlink => Kind::Symlink,
        _ => Kind::Other,
    };
    Entry {
        kind,
        len: u64::try_from(st.st_size).unwrap_or(0),
        mtime: st.st_mtime as f64 + st.st_mtime_nsec as f64 * 1e-9,
    }
}

/// The metadata of `name` in `dir` without following a symlink; `None` if it is gone.
pub(crate) fn stat_at(dir: impl AsFd, name: &str) -> io::Result<Option<Entry>> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(entry_of(&st))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The names in `dir` (but `.` and `..`), read through a descriptor of its own. Names that
/// are not UTF-8 come back lossily converted: they never match a name this package writes.
pub(crate) fn names(dir: impl AsFd) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in rfs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            out.push(String::from_utf8_lossy(name).into_owned());
        }
    }
    Ok(out)
}

/// Device and inode of an open directory.
pub(crate) fn identity(fd: impl AsFd) -> io::Result<(u64, u64)> {
    let st = rfs::fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

/// Device and inode of what `path` names now (following symlinks, as `open_root` does).
pub(crate) fn identity_of(path: &Path) -> io::Result<(u64, u64)> {
    let st = rfs::stat(path)?;
    Ok((st.st_dev, st.st_ino))
}

/// Whether an open directory has been removed (a removed directory has no links).
pub(crate) fn is_removed(fd: impl AsFd) -> bool {
    rfs::fstat(fd).is_ok_and(|st| st.st_nlink == 0)
}

/// The directory as a `File` (for `flock`, which works on directory descriptors).
pub(crate) fn as_file(fd: OwnedFd) -> File {
    File::from(fd)
}
