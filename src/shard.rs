//! Where a session's files live. A record's name is the SHA-256 of its id, so a directory
//! listing reveals no live id, no two ids can alias, and no client input ever becomes a path.
//! Records are spread over 256 shard directories named by the digest's first two hex
//! characters: at 1M sessions that is ~3,900 entries per directory (the SPEC's bound is
//! ~10k), and a sweep can hand whole shards to parallel workers. Fewer, fuller shards are
//! deliberate: a `mkdir` costs ~200 µs on ext4 here (40× a record write), and with 4096
//! shards the first few thousand new sessions would each pay one.
//!
//! ```text
//! <data_dir>/fbs1/<d[0..2]>/<d>          record (d = hex(sha256(id)))
//! <data_dir>/fbs1/<d[0..2]>/<d>.<r>.tmp  temporary file of an install in progress
//! <data_dir>/container_file/<i[0]>/<i[0..2]>/<i>.cache   legacy Beaker file (i = the id)
//! <data_dir>/container_file_lock/<h[0]>/<h[0..2]>/<h>.lock   Beaker lock file (h = sha1 hex)
//! <data_dir>/users1/<u[0..2]>/<u>/<d>   per-user index entry (`store::file::user_index`)
//! ```
//!
//! These names are the only ones the store ever removes (`classify`, `legacy_session_id`,
//! `is_legacy_lock`); anything else found there is foreign and left alone.

use std::path::{Path, PathBuf};

use crate::sid::SessionId;

/// Name of the directory under the data dir that holds our records (versioned, so a future
/// layout can live next to this one during a migration).
pub const RECORDS_DIR: &str = "fbs1";
/// Hex characters of the digest that name a record's shard directory (256 shards).
pub const SHARD_CHARS: usize = 2;
/// Length of a record's name: the hex SHA-256 of its id.
pub const RECORD_NAME_LEN: usize = 64;
/// Suffix of temporary files; anything ending with it is a leftover once no save runs.
pub const TMP_SUFFIX: &str = ".tmp";
/// Beaker's file-backend directory (legacy records).
pub const LEGACY_DIR: &str = "container_file";

/// Hex SHA-256 of the id's textual form (one allocation: the id's hex is built on the stack).
pub fn digest(id: &SessionId) -> String {
    hex::encode(digest_bytes(id))
}

/// SHA-256 of the id's textual form (computed once, when the id was made), without
/// allocating: callers that write the hex into a larger string (the Redis backend's key
/// names) encode it there.
pub fn digest_bytes(id: &SessionId) -> [u8; 32] {
    *id.digest()
}

/// Path of the record of `id` under `data_dir`.
pub fn record_path(data_dir: &Path, id: &SessionId) -> PathBuf {
    record_path_of(data_dir, &digest(id))
}

/// Path of the record whose name (the id's `digest`) is `name`.
pub fn record_path_of(data_dir: &Path, name: &str) -> PathBuf {
    let mut path = data_dir.join(RECORDS_DIR);
    path.push(shard_of(name));
    path.push(name);
    path
}

/// The shard directory's name of the record named `name`.
pub fn shard_of(name: &str) -> &str {
    name.get(..SHARD_CHARS).unwrap_or(name)
}

fn lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Name of Beaker's lock directory (legacy; never used by this package, only swept).
pub const LEGACY_LOCK_DIR: &str = "container_file_lock";

/// What a name found in the store is, by the names this package (or, in the legacy
/// trees, Beaker) writes there. Nothing else is ever removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Name {
    /// `<64 hex>`: a record.
    Record,
    /// `<64 hex>.<8 hex>.tmp`: the temporary file of an install.
    Temp,
    /// A name this package never writes.
    Foreign,
}

/// Whether `name` is a shard directory's name (2 lowercase hex).
pub fn is_shard_name(name: &str) -> bool {
    lower_hex(name, SHARD_CHARS)
}

/// Classifies a name found in shard directory `shard`.
pub fn classify(shard: &str, name: &str) -> Name {
    if !name.starts_with(shard) {
        return Name::Foreign;
    }
    if lower_hex(name, RECORD_NAME_LEN) {
        return Name::Record;
    }
    match name
        .strip_suffix(TMP_SUFFIX)
        .and_then(|n| n.split_once('.'))
    {
        Some((record, random)) if lower_hex(record, RECORD_NAME_LEN) && lower_hex(random, 8) => {
            Name::Temp
        }
        _ => Name::Foreign,
    }
}

/// Whether `name`, in `container_file/<c>/<cc>/` (`prefix` = `cc`), is a Beaker session
/// file of a valid id; the id if so.
pub fn legacy_session_id<'a>(prefix: &str, name: &'a str) -> Option<&'a str> {
    let stem = name.strip_suffix(".cache")?;
    (stem.starts_with(prefix) && SessionId::parse(stem).is_some()).then_some(stem)
}

/// Whether `name`, in `container_file_lock/<h>/<hh>/` (`prefix` = `hh`), is a Beaker lock
/// file (`<sha1 hex>.lock`).
pub fn is_legacy_lock(prefix: &str, name: &str) -> bool {
    name.strip_suffix(".lock")
        .is_some_and(|h| h.starts_with(prefix) && lower_hex(h, 40))
}

/// Path where Beaker (the original package) stored the session `id`.
pub fn legacy_path(data_dir: &Path, id: &SessionId) -> PathBuf {
    let h = id.to_hex();
    let mut path = data_dir.join(LEGACY_DIR);
    path.push(&h[..1]);
    path.push(&h[..2]);
    path.push(format!("{h}.cache"));
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_path_is_a_sharded_digest_without_the_id() {
        let id = SessionId::parse("70fa5dd124dd423ba2bf41bd968b3206").unwrap();
        let path = record_path(Path::new("/data"), &id);
        let text = path.to_str().unwrap();
        assert!(!text.contains("70fa5dd124dd423ba2bf41bd968b3206"));
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(name.len(), 64);
        let shard = path.parent().unwrap();
        assert_eq!(
            shard.file_name().unwrap().to_str().unwrap(),
            &name[..SHARD_CHARS]
        );
        assert_eq!(shard.parent().unwrap(), Path::new("/data/fbs1"));
    }

    #[test]
    fn only_the_names_this_package_writes_are_ours() {
        let id = SessionId::parse("70fa5dd124dd423ba2bf41bd968b3206").unwrap();
        let name = digest(&id);
        let shard = shard_of(&name);
        assert!(is_shard_name(shard));
        assert_eq!(classify(shard, &name), Name::Record);
        let tmp = format!("{name}.0123abcd.tmp");
        assert_eq!(classify(shard, &tmp), Name::Temp);
        for foreign in [
            "report.pdf".to_owned(),
            "x.tmp".to_owned(),
            "authorized_keys".to_owned(),
            name.to_uppercase(),
            format!("{name}.tmp"),
            format!("{name}.0123ABCD.tmp"),
            format!("{name}x"),
        ] {
            assert_eq!(classify(shard, &foreign), Name::Foreign, "{foreign}");
        }
        // A record name in the wrong shard is not ours either.
        assert_eq!(classify("zz", &name), Name::Foreign);
        for bad in ["A0", "0", "000", "g0", ".."] {
            assert!(!is_shard_name(bad), "{bad}");
        }
        let hex = "70fa5dd124dd423ba2bf41bd968b3206";
        assert_eq!(legacy_session_id("70", &format!("{hex}.cache")), Some(hex));
        assert_eq!(legacy_session_id("71", &format!("{hex}.cache")), None);
        assert_eq!(legacy_session_id("x.", "x.cache"), None);
        assert!(is_legacy_lock("ab", &format!("ab{}.lock", "0".repeat(38))));
        assert!(!is_legacy_lock("ab", "abc.lock"));
        assert!(!is_legacy_lock("ab", &format!("cd{}.lock", "0".repeat(38))));
    }

    #[test]
    fn legacy_path_matches_beaker_layout() {
        let id = SessionId::parse("70fa5dd124dd423ba2bf41bd968b3206").unwrap();
        assert_eq!(
            legacy_path(Path::new("/d"), &id),
            Path::new("/d/container_file/7/70/70fa5dd124dd423ba2bf41bd968b3206.cache")
        );
    }
}
