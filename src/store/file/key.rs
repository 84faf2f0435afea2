//! The key a file store generates when the application has no `SECRET_KEY` ("no secret, no
//! trust"): 32 random bytes from the OS, kept in `<data_dir>/session.key` (0600), shared by
//! every process using the data dir, so records are still tagged with a secret key and a
//! record planted by someone who cannot read that file is rejected before unpickling.
//!
//! * Generated on first *write* (a lookup never creates it: nothing we wrote can exist
//!   before it), by writing a private temporary file and hard-linking it to the final name:
//!   `link` fails if the name exists, so when several workers race exactly one key wins and
//!   every worker reads that one. The file is never partly written under its final name.
//! * Read with `O_NOFOLLOW` and trusted only if it is a regular file of exactly 32 bytes,
//!   owned by this process's user and neither readable nor writable by group or others
//!   (POSIX; on Windows, where it inherits the data dir's ACL, not a reparse point);
//!   otherwise every operation that needs it fails with an error naming the file.
//! * The derivation of tag and encryption keys is `record::Keys`' (the file's bytes stand
//!   in for `SECRET_KEY`, so records are sealed under them unless `SESSION_ENCRYPT =
//!   False`). Each process reads the file once and keeps the keys.

use std::fs;
use std::io::{self, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{StoreError, StoreResult};
use crate::platform::{self, NotAFile};
use crate::record::Keys;
use crate::sid::SessionId;

/// Name of the generated key file in the data dir.
pub const KEY_FILE: &str = "session.key";
/// Length of a generated key.
pub const KEY_LEN: usize = 32;

/// Where a file store's tag keys come from.
pub(crate) enum KeySource {
    /// `StoreConfig::keys` as configured (from `SECRET_KEY`, or unkeyed by choice).
    Configured(Keys),
    /// Generated and kept in `path`; loaded once per process.
    Generated {
        path: PathBuf,
        keys: OnceLock<Keys>,
        /// `SESSION_ENCRYPT`, carried over to the generated key's `Keys`.
        encrypt: bool,
    },
}

impl KeySource {
    /// Keys from `SECRET_KEY` when there are any; without, a generated key in `data_dir`
    /// if `generate` (else the configured, checksum-only keys). No I/O.
    pub(crate) fn new(configured: &Keys, data_dir: &Path, generate: bool) -> Self {
        if configured.is_keyed() || !generate {
            return KeySource::Configured(configured.clone());
        }
        KeySource::Generated {
            path: data_dir.join(KEY_FILE),
            keys: OnceLock::new(),
            encrypt: configured.wants_encryption(),
        }
    }

    /// The keys to verify a record with; `None` if the key is to be generated and does not
    /// exist yet (then no record of ours can verify).
    pub(crate) fn existing(&self) -> StoreResult<Option<&Keys>> {
        match self {
            KeySource::Configured(keys) => Ok(Some(keys)),
            KeySource::Generated {
                path,
                keys,
                encrypt,
            } => {
                if let Some(k) = keys.get() {
                    return Ok(Some(k));
                }
                match read_key(path)? {
                    Some(secret) => Ok(Some(remember(keys, &secret, *encrypt))),
                    None => Ok(None),
                }
            }
        }
    }

    /// The keys to sign a new record version with, generating the key file if needed.
    pub(crate) fn signing(&self) -> StoreResult<&Keys> {
        match self {
            KeySource::Configured(keys) => Ok(keys),
            KeySource::Generated {
                path,
                keys,
                encrypt,
            } => {
                if let Some(k) = keys.get() {
                    return Ok(k);
                }
                let secret = match read_key(path)? {
                    Some(secret) => secret,
                    None => generate(path)?,
                };
                Ok(remember(keys, &secret, *encrypt))
            }
        }
    }
}

fn remember<'a>(cell: &'a OnceLock<Keys>, secret: &[u8], encrypt: bool) -> &'a Keys {
    // The I/O is done; `get_or_init` only moves the value in (when another thread won the
    // race, both read the same file, so either value is the same key). The key file's
    // bytes are a secret like `SECRET_KEY`: records are sealed under them too.
    cell.get_or_init(|| Keys::new(&[secret.to_vec()]).encrypting(encrypt))
}

fn untrusted(path: &Path, why: String) -> StoreError {
    StoreError::io(
        "use the generated session key",
        path,
        io::Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "{why}; remove it to have a new key generated (this logs every user out), \
                 or set SECRET_KEY"
            ),
        ),
    )
}

/// The key in `path`, `None` if there is no such file; an error if it cannot be trusted.
fn read_key(path: &Path) -> StoreResult<Option<Vec<u8>>> {
    let mut file = match platform::open_key(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) if platform::not_a_file(&e) == Some(NotAFile::Symlink) => {
            return Err(untrusted(path, "it is a symbolic link".to_owned()))
        }
        Err(e) => return Err(StoreError::io("open", path, e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| StoreError::io("stat", path, e))?;
    if !meta.file_type().is_file() {
        return Err(untrusted(path, "it is not a regular file".to_owned()));
    }
    if let Some(why) = platform::key_distrust(&meta) {
        return Err(untrusted(path, why));
    }
    let mut secret = Vec::with_capacity(KEY_LEN);
    (&mut file)
        .take(KEY_LEN as u64 + 1)
        .read_to_end(&mut secret)
        .map_err(|e| StoreError::io("read", path, e))?;
    if secret.len() != KEY_LEN {
        return Err(untrusted(
            path,
            format!("it holds {} bytes, not a {KEY_LEN}-byte key", secret.len()),
        ));
    }
    Ok(Some(secret))
}

/// Creates the key file (and the data dir, 0700) unless another process does it first;
/// returns the key that won.
fn generate(path: &Path) -> StoreResult<Vec<u8>> {
    let dir = path.parent().unwrap_or(Path::new("."));
    platform::make_private_dirs(dir).map_err(|e| StoreError::io("create directory", dir, e))?;
    let mut secret = vec![0u8; KEY_LEN];
    getrandom::fill(&mut secret).map_err(|e| StoreError::Random(e.to_string()))?;
    let suffix = SessionId::generate()?.to_hex();
    let tmp = dir.join(format!(".{KEY_FILE}.{}.tmp", &suffix[..12]));
    let written = write_private(&tmp, &secret).and_then(|()| match fs::hard_link(&tmp, path) {
        Ok(()) => Ok(()),
        // Another process generated it first: theirs is the key.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::io("create", path, e)),
    });
    let _ = fs::remove_file(&tmp);
    written?;
    read_key(path)?.ok_or_else(|| {
        StoreError::io(
            "read",
            path,
            io::Error::new(ErrorKind::NotFound, "the key file vanished"),
        )
    })
}

fn write_private(tmp: &Path, secret: &[u8]) -> StoreResult<()> {
    let mut file = platform::create_private(tmp).map_err(|e| StoreError::io("create", tmp, e))?;
    file.write_all(secret)
        .and_then(|()| file.sync_all())
        .map_err(|e| StoreError::io("write", tmp, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(unix)]
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn generated(dir: &Path) -> KeySource {
        KeySource::new(&Keys::new(&[]), dir, true)
    }

    #[test]
    fn a_key_is_generated_on_first_write_only_and_shared() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        let a = generated(&data);
        assert!(a.existing().unwrap().is_none());
        assert!(!data.exists(), "a lookup creates nothing");
        let keys = a.signing().unwrap();
        assert!(keys.is_keyed());
        let meta = fs::metadata(data.join(KEY_FILE)).unwrap();
        #[cfg(unix)]
        {
            assert_eq!(meta.mode() & 0o7777, 0o600);
            assert_eq!(fs::metadata(&data).unwrap().mode() & 0o7777, 0o700);
        }
        assert_eq!(meta.len(), KEY_LEN as u64);
        // Another process (a fresh source) reads the same key.
        let b = generated(&data);
        let id = SessionId::generate().unwrap();
        let slot = crate::record::encode_slot(keys, &id, 1, 1.0, 1.0, b"x").unwrap();
        let h = crate::record::parse_header(&slot).unwrap();
        assert!(h.sealed(), "sealed under the generated key");
        let other = b.existing().unwrap().unwrap();
        let stored = &slot[crate::record::HEADER_LEN..];
        let opened = crate::record::open(other, &slot, &h, &id, stored).unwrap();
        assert_eq!(opened.payload, b"x");
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(KEY_FILE)]);
    }

    #[test]
    fn racing_processes_agree_on_one_key() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        let secrets: Vec<Vec<u8>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| generate(&data.join(KEY_FILE)).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(secrets.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(fs::read(data.join(KEY_FILE)).unwrap(), secrets[0]);
    }

    /// Modes and owners are POSIX's (on Windows the key inherits the data dir's ACL).
    #[cfg(unix)]
    #[test]
    fn an_untrusted_key_file_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join(KEY_FILE);
        fs::write(&path, [7u8; KEY_LEN]).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_key(&path).unwrap_err().to_string();
        assert!(err.contains("644") && err.contains(KEY_FILE), "{err}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_key(&path).unwrap(), Some(vec![7u8; KEY_LEN]));
        fs::write(&path, b"short").unwrap();
        assert!(read_key(&path).unwrap_err().to_string().contains("5 bytes"));
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(root.path().join("elsewhere"), &path).unwrap();
        assert!(read_key(&path)
            .unwrap_err()
            .to_string()
            .contains("symbolic link"));
    }

    #[test]
    fn a_secret_key_wins_and_nothing_is_generated() {
        let root = tempfile::tempdir().unwrap();
        let configured = Keys::new(&[b"secret".to_vec()]);
        let source = KeySource::new(&configured, root.path(), true);
        assert!(source.signing().unwrap().is_keyed());
        assert!(!root.path().join(KEY_FILE).exists());
        let unkeyed = KeySource::new(&Keys::new(&[]), root.path(), false);
        assert!(!unkeyed.signing().unwrap().is_keyed());
        assert!(!root.path().join(KEY_FILE).exists());
    }
}
