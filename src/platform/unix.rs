//! The POSIX side of `platform` (Linux, macOS, the BSDs). Everything below the data
//! directory is reached one name at a time from an open directory descriptor: directories
//! with `O_DIRECTORY | O_NOFOLLOW`, files with `O_NOFOLLOW`, removals with `unlinkat`, so no
//! symlink (or a directory swapped for one) ever takes a call outside the data directory.
//! The data directory itself is opened by its configured path (the operator's choice, which
//! may be a symlink). Files are 0600 and directories 0700, set explicitly whatever the
//! umask; positional I/O is `pread`/`pwrite`; a file's unlinking shows as `nlink == 0`.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::{Entry, Kind, NotAFile, Sub};

/// An open directory of the store.
pub(crate) type Dir = OwnedFd;

/// Idle record files may stay open between requests (`lock::fd_cache`): a record replaced
/// or deleted meanwhile shows as `nlink == 0` and is never used.
pub(crate) const KEEP_IDLE_FILES: bool = true;

/// Directories are created 0700 and files 0600, set explicitly whatever the umask.
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// `bits` as rustix's mode (`mode_t` is 32 bits on Linux, 16 on macOS).
#[allow(clippy::unnecessary_cast)]
fn mode(bits: u32) -> Mode {
    Mode::from_raw_mode(bits as rfs::RawMode)
}

/// `st_dev` and `st_ino` as `u64` (`dev_t` is signed 32 bits on macOS).
#[allow(clippy::unnecessary_cast)]
fn dev_ino(st: &rfs::Stat) -> (u64, u64) {
    (st.st_dev as u64, st.st_ino as u64)
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
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)?;
    let fd = open_root(path)?;
    rfs::fchmod(&fd, mode(DIR_MODE))?;
    Ok(fd)
}

/// Opens the directory `name` of `parent` without following a symlink.
pub(crate) fn subdir(parent: &Dir, name: &str) -> io::Result<Sub> {
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
pub(crate) fn make_subdir(parent: &Dir, name: &str) -> io::Result<Sub> {
    match rfs::mkdirat(parent, name, mode(DIR_MODE)) {
        Ok(()) => {
            let sub = subdir(parent, name)?;
            if let Sub::Dir(fd) = &sub {
                rfs::fchmod(fd, mode(DIR_MODE))?;
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
                match rfs::mkdirat(parent, name, mode(DIR_MODE)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                let sub = subdir(parent, name)?;
                if let Sub::Dir(fd) = &sub {
                    rfs::fchmod(fd, mode(DIR_MODE))?;
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
pub(crate) fn open_file(dir: &Dir, name: &str) -> io::Result<File> {
    let flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(File::from(rfs::openat(dir, name, flags, Mode::empty())?))
}

/// Creates the new file `name` in `dir` (`O_EXCL`, never through a symlink), mode 0600.
pub(crate) fn create_file(dir: &Dir, name: &str) -> io::Result<File> {
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rfs::openat(dir, name, flags, mode(FILE_MODE))?;
    rfs::fchmod(&fd, mode(FILE_MODE))?;
    Ok(File::from(fd))
}

/// Removes the entry `name` of `dir` (a symlink itself, never its target).
pub(crate) fn unlink(dir: &Dir, name: &str) -> io::Result<()> {
    Ok(rfs::unlinkat(dir, name, AtFlags::empty())?)
}

/// Removes the directory `name` of `dir` if it is empty (`ENOTEMPTY` otherwise).
pub(crate) fn remove_empty_dir(dir: &Dir, name: &str) -> io::Result<()> {
    Ok(rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)?)
}

/// Renames `from` to `to`, both in `dir`.
pub(crate) fn rename(dir: &Dir, from: &str, to: &str) -> io::Result<()> {
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
pub(crate) fn stat_at(dir: &Dir, name: &str) -> io::Result<Option<Entry>> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(entry_of(&st))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The names in `dir` (but `.` and `..`), read through a descriptor of its own. Names that
/// are not UTF-8 come back lossily converted: they never match a name this package writes.
pub(crate) fn names(dir: &Dir) -> io::Result<Vec<String>> {
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
pub(crate) fn identity(fd: &Dir) -> io::Result<(u64, u64)> {
    Ok(dev_ino(&rfs::fstat(fd)?))
}

/// Device and inode of what `path` names now (following symlinks, as `open_root` does).
pub(crate) fn identity_of(path: &Path) -> io::Result<(u64, u64)> {
    Ok(dev_ino(&rfs::stat(path)?))
}

/// Whether an open directory has been removed (a removed directory has no links).
pub(crate) fn is_removed(fd: &Dir) -> bool {
    rfs::fstat(fd).is_ok_and(|st| st.st_nlink == 0)
}

/// The directory as a `File`, `flock`ed without waiting (`flock` works on directory
/// descriptors); `None` when another process holds it.
pub(crate) fn try_lock_dir(dir: Dir) -> io::Result<Option<File>> {
    let file = File::from(dir);
    Ok(fs4::fs_std::FileExt::try_lock_exclusive(&file)?.then_some(file))
}

/// Deletes the file `path` (a link itself, never its target).
#[cfg(test)]
pub(crate) fn remove_path(path: &Path) -> io::Result<()> {
    std::fs::remove_file(path)
}

/// Renames `from` over `to` (atomic: `rename(2)`).
#[cfg(test)]
pub(crate) fn replace_path(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::rename(from, to)
}

/// Whether the file opened at `name` in `dir` (its metadata `meta`, taken under its lock) is
/// still linked there: deleted or replaced meanwhile, it has no links left. (`dir` and
/// `name` serve the Windows side, which cannot count links.)
pub(crate) fn still_linked(_: &File, meta: &Metadata, _: &Dir, _: &str) -> io::Result<bool> {
    Ok(meta.nlink() > 0)
}

/// Whether an open file has been unlinked (one `fstat`).
pub(crate) fn is_unlinked(file: &File) -> bool {
    file.metadata().is_ok_and(|m| m.nlink() == 0)
}

/// Reads exactly `buf.len()` bytes at `offset` (`pread`).
pub(crate) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    file.read_exact_at(buf, offset)
}

/// Writes all of `buf` at `offset` (`pwrite`).
pub(crate) fn write_all_at(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    file.write_all_at(buf, offset)
}

/// A file's mtime in epoch seconds.
pub(crate) fn mtime(meta: &Metadata) -> f64 {
    meta.mtime() as f64 + meta.mtime_nsec() as f64 * 1e-9
}

/// This process's effective user id.
pub(crate) fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The owner and mode of a file, with this process's effective uid, for the legacy trust
/// rule (`legacy::trusted`).
pub(crate) fn ownership(meta: &Metadata) -> Option<(u32, u32, u32)> {
    Some((meta.uid(), meta.mode(), euid()))
}

/// Opens the key file for reading, never through a symlink (`ELOOP`) and never blocking on
/// a FIFO planted at its name.
pub(crate) fn open_key(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
}

/// Why the key file (`meta`, of the opened file) cannot be trusted, if it cannot: owned by
/// another user, or readable or writable by group or others.
pub(crate) fn key_distrust(meta: &Metadata) -> Option<String> {
    if meta.uid() != euid() {
        return Some(format!(
            "it is owned by uid {}, not by this process's user",
            meta.uid()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Some(format!(
            "its mode is {:o}: other users may read or replace it (expected 600)",
            meta.mode() & 0o7777
        ));
    }
    None
}

/// Creates the new private file `path` (never through a symlink), mode 0600.
pub(crate) fn create_private(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    // Mode 0600 whatever the umask (a umask can only remove bits, but be explicit).
    file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    Ok(file)
}

/// Creates `path` and its missing parents, 0700.
pub(crate) fn make_private_dirs(path: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

pub(crate) fn classify(e: &io::Error) -> Option<NotAFile> {
    match e.raw_os_error()? {
        libc::ELOOP => Some(NotAFile::Symlink),
        libc::EISDIR => Some(NotAFile::Dir),
        libc::ENXIO => Some(NotAFile::Special),
        libc::ENOTDIR => Some(NotAFile::NotDir),
        _ => None,
    }
}
