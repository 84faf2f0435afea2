//! The Windows side of `platform`. Windows has no `openat`: a directory of the store is its
//! path plus an open handle, and a name in it is reached by joining the name to that path,
//! with every step checked so that a symlink, junction or any other reparse point below the
//! data directory is never followed:
//!
//! * directories are opened with `FILE_FLAG_OPEN_REPARSE_POINT` (a reparse point is then
//!   opened itself, not its target) and `FILE_FLAG_BACKUP_SEMANTICS`, and used only if the
//!   handle's attributes say "directory" and not "reparse point";
//! * files are opened with `FILE_FLAG_OPEN_REPARSE_POINT` and refused (like `ELOOP`) when
//!   what was opened is a reparse point; new files are created with `CREATE_NEW`, which
//!   never follows or replaces anything at the name;
//! * removals use `DeleteFileW`/`RemoveDirectoryW`, which remove a link itself.
//!
//! The race this leaves (documented in `docs/platforms.md`): between the check of a
//! directory and the use of a path through it, someone who can write in the data directory
//! could swap a checked directory for a junction. That needs write access to the data
//! directory, which its ACL gives only to its owner (and administrators) by default.
//!
//! Every file is opened with `FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE`, so a
//! record can be renamed over or deleted while another worker holds it open (as POSIX
//! allows); the lock itself is `LockFileEx` through `fs4`. Idle files are not kept open
//! between requests (`KEEP_IDLE_FILES`): where deletion is not POSIX-style (older Windows,
//! some file systems, Wine) a deleted file's name stays taken until its last handle closes.
//!
//! There are no mode bits: files and directories inherit the data directory's ACL (under a
//! user profile, e.g. `%LOCALAPPDATA%`, that is the user, SYSTEM and Administrators). This
//! module sets no ACL and checks none; `docs/platforms.md` says what the operator should do.
//! Positional I/O is `seek_read`/`seek_write` (they move the handle's file pointer, which
//! nothing here uses). A file's identity is its volume serial number and file index.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::windows::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use super::{Entry, Kind, NotAFile, Sub};

const FILE_SHARE_ALL: u32 = 0x1 | 0x2 | 0x4; // READ | WRITE | DELETE
const FILE_FLAG_BACKUP_SEMANTICS: u32 = 0x0200_0000;
const FILE_FLAG_OPEN_REPARSE_POINT: u32 = 0x0020_0000;
const FILE_ATTRIBUTE_DIRECTORY: u32 = 0x10;
const FILE_ATTRIBUTE_REPARSE_POINT: u32 = 0x400;
const FILE_READ_ATTRIBUTES: u32 = 0x80;

/// Idle record files are not kept open between requests (see the module doc).
pub(crate) const KEEP_IDLE_FILES: bool = false;

/// An open directory of the store: its path (names in it are reached through it) and a
/// handle that pins its identity.
pub(crate) struct Dir {
    path: PathBuf,
    handle: File,
}

/// What an open of a name found instead of a file (carried inside an `io::Error`).
#[derive(Debug)]
struct Refused(NotAFile);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            NotAFile::Symlink => "a symbolic link or other reparse point (never followed)",
            NotAFile::Dir => "a directory",
            NotAFile::Special => "not a regular file",
            NotAFile::NotDir => "not a directory",
        })
    }
}

impl std::error::Error for Refused {}

fn refused(what: NotAFile) -> io::Error {
    let kind = match what {
        NotAFile::Dir => ErrorKind::IsADirectory,
        NotAFile::NotDir => ErrorKind::NotADirectory,
        NotAFile::Symlink | NotAFile::Special => ErrorKind::InvalidInput,
    };
    io::Error::new(kind, Refused(what))
}

pub(crate) fn classify(e: &io::Error) -> Option<NotAFile> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<Refused>())
        .map(|r| r.0)
}

fn is_reparse(attributes: u32) -> bool {
    attributes & FILE_ATTRIBUTE_REPARSE_POINT != 0
}

/// A name this package may join to a directory's path: one component, nothing that could
/// climb out (`..`), switch drives or streams (`:`), or name a subdirectory.
fn join(dir: &Dir, name: &str) -> io::Result<PathBuf> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', ':']) {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            format!("not a plain file name: {name:?}"),
        ));
    }
    Ok(dir.path.join(name))
}

/// Opens what is at `path` itself (a reparse point is not followed), for its attributes.
fn open_nofollow(path: &Path, write: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .share_mode(FILE_SHARE_ALL)
        .custom_flags(FILE_FLAG_OPEN_REPARSE_POINT | FILE_FLAG_BACKUP_SEMANTICS)
        .open(path)
}

/// Opens a directory found at `path` (without following a reparse point there).
fn open_dir_at(path: PathBuf) -> io::Result<Sub> {
    let handle = match open_nofollow(&path, false) {
        Ok(h) => h,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Sub::Missing),
        Err(e) => return Err(e),
    };
    let attributes = handle.metadata()?.file_attributes();
    Ok(if is_reparse(attributes) {
        Sub::Symlink
    } else if attributes & FILE_ATTRIBUTE_DIRECTORY == 0 {
        Sub::NotDir
    } else {
        Sub::Dir(Dir { path, handle })
    })
}

/// Opens the data directory by its configured path (following links in it: the operator's
/// path); `NotADirectory` when it is a file.
pub(crate) fn open_root(path: &Path) -> io::Result<Dir> {
    let handle = OpenOptions::new()
        .read(true)
        .share_mode(FILE_SHARE_ALL)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS)
        .open(path)?;
    if !handle.metadata()?.is_dir() {
        return Err(refused(NotAFile::NotDir));
    }
    Ok(Dir {
        path: path.to_path_buf(),
        handle,
    })
}

/// Creates the data directory and its missing parents (they inherit their parent's ACL),
/// then opens it.
pub(crate) fn make_root(path: &Path) -> io::Result<Dir> {
    fs::create_dir_all(path)?;
    open_root(path)
}

/// Opens the directory `name` of `parent` without following a reparse point.
pub(crate) fn subdir(parent: &Dir, name: &str) -> io::Result<Sub> {
    open_dir_at(join(parent, name)?)
}

/// `subdir`, creating the directory if it is missing. Something planted at the name (a
/// link, a file) is removed (the entry itself) and the directory made once more, as on
/// POSIX.
pub(crate) fn make_subdir(parent: &Dir, name: &str) -> io::Result<Sub> {
    let path = join(parent, name)?;
    match fs::create_dir(&path) {
        Ok(()) => subdir(parent, name),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => match subdir(parent, name)? {
            Sub::Symlink | Sub::NotDir => {
                unlink(parent, name)?;
                match fs::create_dir(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
                subdir(parent, name)
            }
            other => Ok(other),
        },
        Err(e) => Err(e),
    }
}

/// Opens the existing file `name` of `dir` read-write, never following a reparse point
/// (refused as `NotAFile::Symlink`); a directory is refused as `NotAFile::Dir`.
pub(crate) fn open_file(dir: &Dir, name: &str) -> io::Result<File> {
    let path = join(dir, name)?;
    let file = match open_nofollow(&path, true) {
        Ok(file) => file,
        // A directory (or a directory link) may refuse write access: say what it is.
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            return Err(match fs::symlink_metadata(&path) {
                Ok(m) if is_reparse(m.file_attributes()) => refused(NotAFile::Symlink),
                Ok(m) if m.is_dir() => refused(NotAFile::Dir),
                _ => e,
            });
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if is_reparse(meta.file_attributes()) {
        return Err(refused(NotAFile::Symlink));
    }
    if meta.is_dir() {
        return Err(refused(NotAFile::Dir));
    }
    Ok(file)
}

/// Creates the new file `name` in `dir` (`CREATE_NEW`: nothing at the name is followed or
/// replaced). It inherits the directory's ACL.
pub(crate) fn create_file(dir: &Dir, name: &str) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .share_mode(FILE_SHARE_ALL)
        .custom_flags(FILE_FLAG_OPEN_REPARSE_POINT)
        .open(join(dir, name)?)
}

/// Removes the entry `name` of `dir`: a link itself, never its target (a directory link
/// or junction is removed as a directory, which removes the link only). A file is removed
/// by `remove_path`, so its name is free at once.
pub(crate) fn unlink(dir: &Dir, name: &str) -> io::Result<()> {
    let path = join(dir, name)?;
    let meta = fs::symlink_metadata(&path)?;
    let attributes = meta.file_attributes();
    if is_reparse(attributes) && attributes & FILE_ATTRIBUTE_DIRECTORY != 0 {
        return fs::remove_dir(&path);
    }
    if meta.is_dir() {
        return Err(refused(NotAFile::Dir));
    }
    remove_path(&path)
}

/// A name next to `path` to move it aside to: `<name>.<8 hex digits>.tmp`, which the
/// sweeper removes as a leftover temporary file past its grace period.
fn aside(path: &Path) -> io::Result<PathBuf> {
    let mut random = [0u8; 4];
    getrandom::fill(&mut random).map_err(|e| io::Error::other(e.to_string()))?;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(
        ".{}{}",
        hex::encode(random),
        crate::shard::TMP_SUFFIX
    ));
    Ok(path.with_file_name(name))
}

/// Deletes the file `path` so that its name is free at once, even where deletion is not
/// POSIX-style (a file deleted while open stays at its name until its last handle closes):
/// it is renamed aside first (allowed while others hold it open: they share delete), then
/// deleted under the new name. A waiter holding the old file then finds it gone
/// (`still_linked`), as on POSIX.
pub(crate) fn remove_path(path: &Path) -> io::Result<()> {
    let moved = aside(path)?;
    match fs::rename(path, &moved) {
        Ok(()) => {
            // Gone from its name; the file itself goes when its last handle closes (if this
            // fails, the sweeper removes it later).
            let _ = fs::remove_file(&moved);
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Err(e),
        Err(_) => fs::remove_file(path),
    }
}

/// Renames `from` over `to`. `fs::rename` first: with POSIX rename semantics (which std
/// asks for where the system has them) it replaces `to` atomically even while others hold
/// it open. Where that is refused (the target is open and the system's rename is not
/// POSIX-style: older Windows, Wine), `to` is moved aside, `from` renamed to its name and
/// the old file deleted: no reader ever sees a partial file, but a crash between the two
/// renames leaves no file at `to` (the session is gone, never corrupt; the old one is
/// swept as a leftover). If the second rename fails, the old file is put back.
pub(crate) fn replace_path(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {}
        other => return other,
    }
    let moved = aside(to)?;
    fs::rename(to, &moved)?;
    if let Err(e) = fs::rename(from, to) {
        let _ = fs::rename(&moved, to);
        return Err(e);
    }
    let _ = fs::remove_file(&moved);
    Ok(())
}

/// Removes the directory `name` of `dir` if it is empty.
pub(crate) fn remove_empty_dir(dir: &Dir, name: &str) -> io::Result<()> {
    fs::remove_dir(join(dir, name)?)
}

/// Renames `from` to `to`, both in `dir`, replacing `to` even while another worker holds
/// it open (`replace_path`).
pub(crate) fn rename(dir: &Dir, from: &str, to: &str) -> io::Result<()> {
    replace_path(&join(dir, from)?, &join(dir, to)?)
}

fn secs(meta: &Metadata) -> f64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The metadata of `name` in `dir` without following a reparse point; `None` if it is gone.
pub(crate) fn stat_at(dir: &Dir, name: &str) -> io::Result<Option<Entry>> {
    let meta = match fs::symlink_metadata(join(dir, name)?) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let kind = if is_reparse(meta.file_attributes()) {
        Kind::Symlink
    } else if meta.is_dir() {
        Kind::Dir
    } else if meta.is_file() {
        Kind::File
    } else {
        Kind::Other
    };
    Ok(Some(Entry {
        kind,
        len: meta.len(),
        mtime: secs(&meta),
    }))
}

/// The names in `dir`. Names that are not valid Unicode come back lossily converted: they
/// never match a name this package writes.
pub(crate) fn names(dir: &Dir) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir.path)? {
        out.push(entry?.file_name().to_string_lossy().into_owned());
    }
    Ok(out)
}

fn file_identity(file: &File) -> io::Result<(u64, u64)> {
    let info = winapi_util::file::information(file)?;
    Ok((info.volume_serial_number(), info.file_index()))
}

/// Volume serial number and file index of an open directory.
pub(crate) fn identity(dir: &Dir) -> io::Result<(u64, u64)> {
    file_identity(&dir.handle)
}

/// Volume serial number and file index of what `path` names now (following links, as
/// `open_root` does).
pub(crate) fn identity_of(path: &Path) -> io::Result<(u64, u64)> {
    let file = OpenOptions::new()
        .access_mode(FILE_READ_ATTRIBUTES)
        .share_mode(FILE_SHARE_ALL)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS)
        .open(path)?;
    file_identity(&file)
}

/// The identity of what is at `path` itself (not following a reparse point); `None` when
/// nothing is there, or a deleted file whose name is still pending removal.
fn identity_nofollow(path: &Path) -> io::Result<Option<(u64, u64)>> {
    let opened = OpenOptions::new()
        .access_mode(FILE_READ_ATTRIBUTES)
        .share_mode(FILE_SHARE_ALL)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OPEN_REPARSE_POINT)
        .open(path);
    match opened {
        Ok(file) => file_identity(&file).map(Some),
        // `ERROR_ACCESS_DENIED` is also what a delete-pending name gives.
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::PermissionDenied) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether an open directory is no longer at its path (removed, or replaced).
pub(crate) fn is_removed(dir: &Dir) -> bool {
    match (identity(dir), identity_nofollow(&dir.path)) {
        (Ok(ours), Ok(Some(now))) => ours != now,
        _ => true,
    }
}

/// `LockFileEx` cannot lock a directory: the handle comes back unlocked, so when the sweep
/// stamp's name is taken by something else, processes are not elected; each still sweeps
/// at most once per interval (`sweep::claim`), and concurrent sweeps are safe.
pub(crate) fn try_lock_dir(dir: Dir) -> io::Result<Option<File>> {
    Ok(Some(dir.handle))
}

/// Whether `file`, opened at `name` in `dir`, is still the file at that name: Windows does
/// not count a file's links portably (a delete-pending file keeps its name), so the file at
/// the name now is compared with the open one (volume serial number and file index).
pub(crate) fn still_linked(file: &File, _: &Metadata, dir: &Dir, name: &str) -> io::Result<bool> {
    let ours = file_identity(file)?;
    Ok(identity_nofollow(&join(dir, name)?)? == Some(ours))
}

/// Whether an open file has no links left (idle files are not kept on Windows; this serves
/// the interface).
pub(crate) fn is_unlinked(file: &File) -> bool {
    winapi_util::file::information(file).is_ok_and(|i| i.number_of_links() == 0)
}

/// Reads exactly `buf.len()` bytes at `offset` (`seek_read`, repeated on short reads).
pub(crate) fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.seek_read(buf, offset) {
            Ok(0) => return Err(io::Error::from(ErrorKind::UnexpectedEof)),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // Reading at or past the end of a file gives `ERROR_HANDLE_EOF`.
            Err(e) if e.raw_os_error() == Some(38) => {
                return Err(io::Error::from(ErrorKind::UnexpectedEof))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes all of `buf` at `offset` (`seek_write`, repeated on short writes).
pub(crate) fn write_all_at(file: &File, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.seek_write(buf, offset) {
            Ok(0) => return Err(io::Error::from(ErrorKind::WriteZero)),
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A file's mtime in epoch seconds.
pub(crate) fn mtime(meta: &Metadata) -> f64 {
    secs(meta)
}

/// No owner or mode bits to judge (the legacy trust rule then needs a regular file only).
pub(crate) fn ownership(_: &Metadata) -> Option<(u32, u32, u32)> {
    None
}

/// Opens the key file for reading, never through a reparse point.
pub(crate) fn open_key(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .share_mode(FILE_SHARE_ALL)
        .custom_flags(FILE_FLAG_OPEN_REPARSE_POINT)
        .open(path)?;
    if is_reparse(file.metadata()?.file_attributes()) {
        return Err(refused(NotAFile::Symlink));
    }
    Ok(file)
}

/// Nothing to distrust beyond what `open_key` and the caller check (a regular file of the
/// key's length): its privacy is the data directory's ACL.
pub(crate) fn key_distrust(_: &Metadata) -> Option<String> {
    None
}

/// Creates the new file `path` (`CREATE_NEW`, never through a reparse point); it inherits
/// its directory's ACL.
pub(crate) fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .share_mode(FILE_SHARE_ALL)
        .custom_flags(FILE_FLAG_OPEN_REPARSE_POINT)
        .open(path)
}

/// Creates `path` and its missing parents (they inherit their parent's ACL).
pub(crate) fn make_private_dirs(path: &Path) -> io::Result<()> {
    fs::create_dir_all(path)
}
