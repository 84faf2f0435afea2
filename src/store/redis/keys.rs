//! The Redis backend's key names, and finding them again. `<prefix>s:<sha256(id)>` holds
//! the record, `<prefix>l:<sha256(id)>` the lock, `<prefix>a:<sha256(id)>` the time of the
//! last touch. The id never appears in a key, so `KEYS`/`SCAN` output cannot be replayed as
//! cookies. The prefix is literal: its glob characters are escaped in `SCAN MATCH`, and
//! every key returned is checked to be ours (prefix, kind, a 64-hex digest) before it is
//! counted or deleted.

use super::Shared;
use crate::error::StoreResult;

/// `pattern` with Redis's glob characters escaped, so that `SCAN MATCH` takes it literally.
pub fn glob_escape(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    for c in pattern.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Shared {
    pub(super) fn key(&self, kind: &str, digest: &str) -> String {
        format!("{}{kind}:{digest}", self.prefix)
    }

    /// Whether `key` is one of ours of `kind`: the literal prefix, the kind, a digest.
    fn is_ours(&self, kind: &str, key: &[u8]) -> bool {
        key.strip_prefix(self.prefix.as_bytes())
            .and_then(|rest| rest.strip_prefix(kind.as_bytes()))
            .and_then(|rest| rest.strip_prefix(b":"))
            .is_some_and(|digest| {
                digest.len() == 64
                    && digest
                        .iter()
                        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            })
    }

    /// The `SCAN MATCH` pattern of our keys of `kind`.
    fn pattern(&self, kind: &str) -> String {
        format!("{}{kind}:{}", glob_escape(&self.prefix), "?".repeat(64))
    }

    /// Every key of ours of `kind`, a `SCAN` batch at a time (never blocks the server); keys
    /// that merely match the pattern (another app's) are left out.
    pub(super) fn scan(
        &self,
        kind: &str,
        mut each: impl FnMut(Vec<Vec<u8>>) -> StoreResult<()>,
    ) -> StoreResult<()> {
        let pattern = self.pattern(kind);
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = self.pool.run(|c| {
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(c)
            })?;
            each(keys.into_iter().filter(|k| self.is_ours(kind, k)).collect())?;
            cursor = next;
            if cursor == 0 {
                return Ok(());
            }
        }
    }

    pub(super) fn delete_keys(&self, keys: &[Vec<u8>]) -> StoreResult<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        self.pool.run(|c| redis::cmd("DEL").arg(keys).query(c))
    }
}
