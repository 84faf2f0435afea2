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

use crate::error::StoreResult;
use crate::record::{self, Keys};
use crate::sid::SessionId;

/// Domain separation of the user digest.
const USER_CONTEXT: &str = "flask-beaker-session 2026-12 user index v1";
/// Domain separation of the session handle's key.
const HANDLE_CONTEXT: &str = "flask-beaker-session 2026-12 session handle v1";
/// The largest metadata an entry carries (user agent, address, application fields): a
/// bound on what one login can make the store keep.
pub const MAX_META: usize = 4096;
/// Magic of an entry in the clear (only where there is no secret: the memory store's
/// fallback, which never writes it anywhere).
const MAGIC: &[u8] = b"FBSU1 ";
/// Magic of a sealed entry: `FBSU2 ` ‖ nonce ‖ XChaCha20-Poly1305 of what follows
/// `FBSU1 ` in the clear form ‖ tag (`record::seal_entry`).
const MAGIC_SEALED: &[u8] = b"FBSU2 ";

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
    /// The stored form. With a secret (every store that writes entries outside the
    /// process has one) the entry is sealed: it names a live session id, which must not be
    /// read off the data dir, a backup or a Redis dump any more than a record's data may.
    /// Without one: `FBSU1 <id hex> <written_at>\n<meta>`.
    pub fn encode(&self, keys: &Keys) -> StoreResult<Vec<u8>> {
        let mut body = Vec::with_capacity(64 + self.meta.len());
        body.extend_from_slice(self.id.to_hex().as_bytes());
        body.push(b' ');
        body.extend_from_slice(format!("{}", self.written_at).as_bytes());
        body.push(b'\n');
        body.extend_from_slice(&self.meta);
        let (magic, rest) = if keys.is_keyed() {
            (MAGIC_SEALED, record::seal_entry(keys, &body)?)
        } else {
            (MAGIC, body)
        };
        let mut out = Vec::with_capacity(magic.len() + rest.len());
        out.extend_from_slice(magic);
        out.extend_from_slice(&rest);
        Ok(out)
    }

    /// The entry `bytes` encode under `keys`; `None` for anything else (torn, foreign,
    /// oversized, sealed under no key of ours, or in the clear where entries are sealed).
    pub fn decode(keys: &Keys, bytes: &[u8]) -> Option<IndexEntry> {
        if keys.is_keyed() {
            let sealed = bytes.strip_prefix(MAGIC_SEALED)?;
            Self::decode_body(&record::open_entry(keys, sealed)?)
        } else {
            Self::decode_body(bytes.strip_prefix(MAGIC)?)
        }
    }

    fn decode_body(body: &[u8]) -> Option<IndexEntry> {
        let newline = body.iter().position(|b| *b == b'\n')?;
        let (head, meta) = (&body[..newline], &body[newline + 1..]);
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
        let clear = Keys::new(&[]);
        assert_eq!(
            IndexEntry::decode(&clear, &entry.encode(&clear).unwrap()),
            Some(entry.clone())
        );
        let mut torn = entry.encode(&clear).unwrap();
        torn.truncate(20);
        assert_eq!(IndexEntry::decode(&clear, &torn), None);
        assert_eq!(IndexEntry::decode(&clear, b"FBSU1 nothex 1\n"), None);
        assert_eq!(IndexEntry::decode(&clear, b""), None);
        let mut big = entry.encode(&clear).unwrap();
        big.extend(std::iter::repeat_n(b'x', MAX_META + 1));
        assert_eq!(IndexEntry::decode(&clear, &big), None);
    }

    /// With a secret, an entry shows neither the session id nor the metadata, opens under
    /// the current key and a fallback, and nothing else is accepted in its place.
    #[test]
    fn entries_are_sealed_under_a_secret() {
        let entry = IndexEntry {
            id: SessionId::generate().unwrap(),
            written_at: 99.25,
            meta: br#"{"ip": "192.0.2.7"}"#.to_vec(),
        };
        let old = Keys::new(&[b"old".to_vec()]);
        let bytes = entry.encode(&old).unwrap();
        let hex_id = entry.id.to_hex();
        let shown = String::from_utf8_lossy(&bytes);
        assert!(
            !shown.contains(&hex_id) && !shown.contains("192.0.2.7"),
            "{shown}"
        );
        assert_eq!(IndexEntry::decode(&old, &bytes), Some(entry.clone()));
        let rotated = Keys::new(&[b"new".to_vec(), b"old".to_vec()]);
        assert_eq!(IndexEntry::decode(&rotated, &bytes), Some(entry.clone()));
        assert_eq!(
            IndexEntry::decode(&Keys::new(&[b"new".to_vec()]), &bytes),
            None
        );
        // A planted entry in the clear, or a sealed one altered, is refused.
        let clear = entry.encode(&Keys::new(&[])).unwrap();
        assert_eq!(IndexEntry::decode(&old, &clear), None);
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(IndexEntry::decode(&old, &flipped), None);
        // Encryption off for records: entries are still sealed.
        let unsealed_records = Keys::new(&[b"old".to_vec()]).encrypting(false);
        let bytes = entry.encode(&unsealed_records).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(&hex_id));
        assert_eq!(IndexEntry::decode(&old, &bytes), Some(entry));
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
