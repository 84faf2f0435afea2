//! The per-user index (`SESSION_USER_KEY`): which sessions belong to a user, so that an
//! application can list them ("your devices") and revoke them ("log out everywhere"). Every
//! backend stores the same entries (`IndexEntry`) in its own way; what they share lives here:
//! the entry's encoding, the name a user is stored under, and the non-secret handle that
//! names a session to the outside.
//!
//! The index is a hint that is never trusted for more than finding candidates: the Python
//! layer writes an entry *before* the record that names the user, and removes it *after* the
//! record stopped naming the user, so a crash anywhere leaves at worst a stale entry (an
//! entry whose record is gone or names someone else), never a session that revocation cannot
//! find. Listing and revocation open each candidate under its session lock and check the
//! user key inside the verified record; stale entries are filtered out there, and removed by
//! the sweep (`Store::index_sweep`) once older than a grace period, so an entry whose record
//! is still being written is never taken for stale.
//!
//! Users are stored under the BLAKE3 digest of their id (`user_digest`): any string is a
//! valid user id, and none becomes a file name or a key name as such.

use crate::record::Keys;
use crate::sid::SessionId;

/// Domain separation of the user digest.
const USER_CONTEXT: &str = "flask-beaker-session 2026-12 user index v1";
/// Domain separation of the session handle's key.
const HANDLE_CONTEXT: &str = "flask-beaker-session 2026-12 session handle v1";
/// The largest metadata an entry carries (user agent, address, application fields): a
/// bound on what one login can make the store keep.
pub const MAX_META: usize = 4096;
/// Magic of an encoded entry (versioned, so a later layout can be told apart).
const MAGIC: &[u8] = b"FBSU1 ";

/// One session of a user, as the index holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexEntry {
    /// The session.
    pub id: SessionId,
    /// When the entry was written (the injected clock): the sweep leaves entries younger
    /// than its grace period alone, as their record may still be on its way.
    pub written_at: f64,
    /// Opaque metadata chosen by the application (JSON from the Python layer), at most
    /// `MAX_META` bytes.
    pub meta: Vec<u8>,
}

impl IndexEntry {
    /// `FBSU1 <id hex> <written_at>\n<meta>`: text up to the newline, so an entry found
    /// on disk or in Redis can be read by an operator.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAGIC.len() + 64 + self.meta.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(self.id.to_hex().as_bytes());
        out.push(b' ');
        out.extend_from_slice(format!("{}", self.written_at).as_bytes());
        out.push(b'\n');
        out.extend_from_slice(&self.meta);
        out
    }

    /// The entry `bytes` encode; `None` for anything else (torn, foreign, oversized).
    pub fn decode(bytes: &[u8]) -> Option<IndexEntry> {
        let rest = bytes.strip_prefix(MAGIC)?;
        let newline = rest.iter().position(|b| *b == b'\n')?;
        let (head, meta) = (&rest[..newline], &rest[newline + 1..]);
        if meta.len() > MAX_META {
            return None;
        }
        let head = std::str::from_utf8(head).ok()?;
        let (id, written_at) = head.split_once(' ')?;
        let written_at: f64 = written_at.parse().ok()?;
        Some(IndexEntry {
            id: SessionId::parse(id)?,
            written_at: if written_at.is_finite() {
                written_at
            } else {
                0.0
            },
            meta: meta.to_vec(),
        })
    }
}

/// The name a user is stored under: 64 hex characters of the BLAKE3 digest of the user id.
pub fn user_digest(user: &str) -> String {
    let mut hasher = blake3::Hasher::new_derive_key(USER_CONTEXT);
    hasher.update(user.as_bytes());
    hasher.finalize().to_hex().to_string()
}

/// Whether `name` has the form of a `user_digest` (or of a record digest): 64 lowercase hex.
pub fn is_digest(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The non-secret handle of session `id`: 32 hex characters of a BLAKE3 hash keyed by a key
/// derived from the store's primary tag key (so from `SECRET_KEY`). It names a session in
/// listings, URLs and logs without giving the id away: the id cannot be recovered from it,
/// and without the secret a handle cannot even be checked against a guessed id. Stable for
/// as long as `SECRET_KEY` is.
pub fn handle_of(keys: &Keys, id: &SessionId) -> String {
    let key = blake3::derive_key(HANDLE_CONTEXT, keys.handle_root());
    let hash = blake3::keyed_hash(&key, id.as_bytes());
    hex::encode(&hash.as_bytes()[..16])
}

/// The error of an index operation on a store that keeps no index (PostgreSQL; the Python
/// layer refuses `SESSION_USER_KEY` there at `init_app`).
pub fn unsupported(backend: &str) -> crate::error::StoreError {
    crate::error::StoreError::Config(format!(
        "SESSION_USER_KEY is not supported with SESSION_TYPE='{backend}'"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_garbage_is_refused() {
        let entry = IndexEntry {
            id: SessionId::generate().unwrap(),
            written_at: 1234.5,
            meta: br#"{"ip": "10.0.0.1"}"#.to_vec(),
        };
        assert_eq!(IndexEntry::decode(&entry.encode()), Some(entry.clone()));
        let mut torn = entry.encode();
        torn.truncate(20);
        assert_eq!(IndexEntry::decode(&torn), None);
        assert_eq!(IndexEntry::decode(b"FBSU1 nothex 1\n"), None);
        assert_eq!(IndexEntry::decode(b""), None);
        let mut big = entry.encode();
        big.extend(std::iter::repeat_n(b'x', MAX_META + 1));
        assert_eq!(IndexEntry::decode(&big), None);
    }

    #[test]
    fn digests_and_handles() {
        assert!(is_digest(&user_digest("alice")));
        assert_ne!(user_digest("alice"), user_digest("alice "));
        assert!(!is_digest("../etc"));
        let id = SessionId::generate().unwrap();
        let a = Keys::new(&[b"one".to_vec()]);
        let b = Keys::new(&[b"two".to_vec()]);
        assert_eq!(handle_of(&a, &id), handle_of(&a, &id));
        assert_ne!(handle_of(&a, &id), handle_of(&b, &id));
        assert_eq!(handle_of(&a, &id).len(), 32);
        assert_ne!(handle_of(&a, &id), id.to_hex());
    }
}
