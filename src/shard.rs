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
//! ```

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::sid::SessionId;

/// Name of the directory under the data dir that holds our records (versioned, so a future
/// layout can live next to this one during a migration).
pub const RECORDS_DIR: &str = "fbs1";
/// Hex characters of the digest that name a record's shard directory (256 shards).
pub const SHARD_CHARS: usize = 2;
/// Suffix of temporary files; anything ending with it is a leftover once no save runs.
pub const TMP_SUFFIX: &str = ".tmp";
/// Beaker's file-backend directory (legacy records).
pub const LEGACY_DIR: &str = "container_file";

/// Hex SHA-256 of the id's textual form.
pub fn digest(id: &SessionId) -> String {
    hex::encode(Sha256::digest(id.to_hex().as_bytes()))
}

/// Path of the record of `id` under `data_dir`.
pub fn record_path(data_dir: &Path, id: &SessionId) -> PathBuf {
    let d = digest(id);
    let mut path = data_dir.join(RECORDS_DIR);
    path.push(&d[..SHARD_CHARS]);
    path.push(d);
    path
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
    fn legacy_path_matches_beaker_layout() {
        let id = SessionId::parse("70fa5dd124dd423ba2bf41bd968b3206").unwrap();
        assert_eq!(
            legacy_path(Path::new("/d"), &id),
            Path::new("/d/container_file/7/70/70fa5dd124dd423ba2bf41bd968b3206.cache")
        );
    }
}
