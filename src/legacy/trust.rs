//! Which legacy Beaker files may be unpickled, and whether a legacy tree is there at all.
//!
//! A legacy file is a raw pickle: unlike our records it carries no tag, so reading it means
//! trusting whoever wrote it. The rule (`trusted`): it must be a regular file, owned by this
//! process's effective user, and writable by nobody else (no group or other write bit). A
//! file that fails it is never read: the session is treated as absent and the file is left
//! where it is (it may be a real session whose ownership an operator can fix).
//!
//! What remains trusted: this user itself, root, and anyone who can act as this user (or
//! replace directories above the file, which the store's confinement rules deal with).
//! On Windows there are no owner and mode bits to check (`platform::ownership`): a regular
//! file is trusted, and who may write the legacy tree is the data dir's ACL's business.
//!
//! `TreeProbe` answers "is there a legacy tree?" with at most one `lstat` of
//! `<data_dir>/container_file` per `PROBE_TTL` per process, so a store whose Beaker tree is
//! gone (or never existed) stops probing for legacy files, and one whose tree appears later
//! (a rolling deploy: old workers still write it) starts reading it within `PROBE_TTL`.

use std::fs::{self, Metadata};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::platform;

/// How long a probe's answer is reused.
pub const PROBE_TTL: Duration = Duration::from_secs(1);

/// Why a legacy file is not trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distrust {
    /// Not a regular file (a FIFO, a device, a directory…).
    NotRegular,
    /// Owned by another user (this uid).
    Owner(u32),
    /// Writable by its group or by others (these permission bits).
    Writable(u32),
}

/// The trust rule on the metadata of an opened legacy file (`fstat`, not the path).
pub fn trusted(meta: &Metadata) -> Result<(), Distrust> {
    let regular = meta.file_type().is_file();
    match platform::ownership(meta) {
        Some((uid, mode, euid)) => judge(regular, uid, mode, euid),
        None if regular => Ok(()),
        None => Err(Distrust::NotRegular),
    }
}

/// The rule itself, on plain values.
pub fn judge(regular: bool, uid: u32, mode: u32, euid: u32) -> Result<(), Distrust> {
    if !regular {
        return Err(Distrust::NotRegular);
    }
    if uid != euid {
        return Err(Distrust::Owner(uid));
    }
    if mode & 0o022 != 0 {
        return Err(Distrust::Writable(mode & 0o7777));
    }
    Ok(())
}

/// Whether `<data_dir>/container_file` is a directory (not a symlink to one), re-checked at
/// most once per `PROBE_TTL`. Lock-free (atomics only), so it is safe across `fork`.
pub struct TreeProbe {
    /// The tree's path; `None` when legacy reading is off.
    dir: Option<PathBuf>,
    epoch: Instant,
    /// Milliseconds after `epoch` of the last check, plus one (0: never checked).
    checked: AtomicU64,
    present: AtomicBool,
}

impl TreeProbe {
    /// A probe of `dir` (`None`: legacy reading off, never present). Does no I/O.
    pub fn new(dir: Option<PathBuf>) -> Self {
        TreeProbe {
            dir,
            epoch: Instant::now(),
            checked: AtomicU64::new(0),
            present: AtomicBool::new(false),
        }
    }

    /// Whether the tree is there (as of at most `PROBE_TTL` ago).
    pub fn present(&self) -> bool {
        let Some(dir) = &self.dir else {
            return false;
        };
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        let checked = self.checked.load(Ordering::Acquire);
        let ttl = u64::try_from(PROBE_TTL.as_millis()).unwrap_or(u64::MAX);
        if checked != 0 && now.saturating_sub(checked) < ttl {
            return self.present.load(Ordering::Acquire);
        }
        let present = fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir());
        self.present.store(present, Ordering::Release);
        self.checked.store(now, Ordering::Release);
        present
    }

    /// Forgets the cached answer: the next `present` looks again.
    pub fn invalidate(&self) {
        self.checked.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(unix)]
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_rule_needs_a_regular_private_file_of_ours() {
        assert_eq!(judge(true, 1000, 0o100600, 1000), Ok(()));
        assert_eq!(judge(true, 1000, 0o100644, 1000), Ok(()));
        assert_eq!(judge(true, 1000, 0o100400, 1000), Ok(()));
        assert_eq!(
            judge(false, 1000, 0o010600, 1000),
            Err(Distrust::NotRegular)
        );
        assert_eq!(
            judge(true, 65534, 0o100600, 1000),
            Err(Distrust::Owner(65534))
        );
        assert_eq!(judge(true, 0, 0o100600, 1000), Err(Distrust::Owner(0)));
        assert_eq!(
            judge(true, 1000, 0o100660, 1000),
            Err(Distrust::Writable(0o660))
        );
        assert_eq!(
            judge(true, 1000, 0o100602, 1000),
            Err(Distrust::Writable(0o602))
        );
        assert_eq!(
            judge(true, 1000, 0o100666, 1000),
            Err(Distrust::Writable(0o666))
        );
    }

    /// Owners and modes are POSIX's; on Windows only "a regular file" is judged.
    #[cfg(unix)]
    #[test]
    fn real_files_are_judged_by_their_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.cache");
        fs::write(&path, b"x").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(trusted(&fs::metadata(&path).unwrap()), Ok(()));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o664)).unwrap();
        assert_eq!(
            trusted(&fs::metadata(&path).unwrap()),
            Err(Distrust::Writable(0o664))
        );
        assert_eq!(
            trusted(&fs::metadata(dir.path()).unwrap()),
            Err(Distrust::NotRegular)
        );
    }

    #[test]
    fn the_probe_sees_a_tree_that_appears_or_goes_within_its_ttl() {
        let root = tempfile::tempdir().unwrap();
        let tree = root.path().join("container_file");
        let probe = TreeProbe::new(Some(tree.clone()));
        assert!(!probe.present());
        fs::create_dir(&tree).unwrap();
        // Cached: still absent until the TTL passes (or the cache is dropped).
        assert!(!probe.present());
        probe.invalidate();
        assert!(probe.present());
        fs::remove_dir(&tree).unwrap();
        assert!(probe.present());
        std::thread::sleep(PROBE_TTL + Duration::from_millis(50));
        assert!(!probe.present());
        // A symlink to a directory is not a tree.
        let elsewhere = root.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(&elsewhere, &tree).unwrap();
        #[cfg(windows)]
        std::os::windows::fs::symlink_dir(&elsewhere, &tree).unwrap();
        probe.invalidate();
        assert!(!probe.present());
        // Legacy reading off: never present, no I/O.
        assert!(!TreeProbe::new(None).present());
    }

    #[cfg(windows)]
    #[test]
    fn on_windows_a_regular_file_is_trusted_and_a_directory_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.cache");
        fs::write(&path, b"x").unwrap();
        assert_eq!(trusted(&fs::metadata(&path).unwrap()), Ok(()));
        assert_eq!(
            trusted(&fs::metadata(dir.path()).unwrap()),
            Err(Distrust::NotRegular)
        );
    }
}
