//! Session ids: random UUIDs (version 4: 122 bits from the OS CSPRNG), shown as exactly 32
//! lowercase hexadecimal characters, the format of the original's `uuid4().hex`. Parsing
//! accepts any 32 lowercase hex characters, so ids issued by earlier versions (128 random
//! bits) and by the original package stay valid.
//! Parsing is strict: anything else — other lengths, upper case, separators, NUL, non-ASCII —
//! is rejected before any I/O, so a client value can never become a path or alias another id.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::error::{StoreError, StoreResult};

/// Number of characters in the textual form of an id.
pub const SID_LEN: usize = 32;

/// A validated session id. The raw bytes never leave the core except as the 32-hex string.
///
/// It carries the SHA-256 of its hex form, computed once when the id is made: every store
/// names the record by it and a sealed record is bound to it, so one request would
/// otherwise hash the same id three or four times (open, seal, tag, key name).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId {
    bytes: [u8; 16],
    digest: [u8; 32],
}

impl SessionId {
    /// A fresh random UUID (version 4) from the operating system's CSPRNG. The bytes are
    /// drawn with `getrandom` directly rather than `Uuid::new_v4`, which panics when the
    /// random source fails; here that is an error the caller can report.
    pub fn generate() -> StoreResult<Self> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|e| StoreError::Random(e.to_string()))?;
        Ok(SessionId::from_bytes(
            uuid::Builder::from_random_bytes(bytes)
                .into_uuid()
                .into_bytes(),
        ))
    }

    /// Parses the cookie form. Only `[0-9a-f]{32}` is accepted; upper case is rejected so that
    /// an id has exactly one spelling (case-insensitive filesystems cannot alias two ids).
    pub fn parse(text: &str) -> Option<Self> {
        let raw = text.as_bytes();
        if raw.len() != SID_LEN {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (i, pair) in raw.chunks_exact(2).enumerate() {
            bytes[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(SessionId::from_bytes(bytes))
    }

    fn from_bytes(bytes: [u8; 16]) -> Self {
        let mut text = [0u8; SID_LEN];
        // 16 bytes always fit 32 hex characters: this cannot fail.
        let _ = hex::encode_to_slice(bytes, &mut text);
        SessionId {
            bytes,
            digest: Sha256::digest(text).into(),
        }
    }

    /// The 16 raw bytes (bound into record MACs so a record cannot be moved to another id).
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.bytes
    }

    /// SHA-256 of the hex form: the name of the id's record in every store
    /// (`shard::digest_bytes`), and what a sealed record is bound to.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// The 32 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.bytes)
    }
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl fmt::Debug for SessionId {
    /// Never prints the id itself: ids are bearer secrets and must not reach logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn generated_ids_round_trip_and_are_unique() {
        let mut seen = HashSet::new();
        let mut ones = 0u32;
        for _ in 0..1000 {
            let id = SessionId::generate().unwrap();
            let text = id.to_hex();
            assert_eq!(text.len(), 32);
            assert!(text
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
            assert_eq!(SessionId::parse(&text), Some(id));
            // Version 4, RFC 4122 variant: what Python's `uuid.UUID(text)` reports.
            assert_eq!(&text[12..13], "4");
            assert!(matches!(&text[16..17], "8" | "9" | "a" | "b"));
            let parsed = uuid::Uuid::parse_str(&text).unwrap();
            assert_eq!(parsed.get_version_num(), 4);
            assert_eq!(parsed.simple().to_string(), text);
            // The 122 random bits are balanced (the 6 fixed ones are left out).
            let mut random = *id.as_bytes();
            random[6] &= 0x0f;
            random[8] &= 0x3f;
            ones += random.iter().map(|b| b.count_ones()).sum::<u32>();
            assert!(seen.insert(text));
        }
        let fraction = f64::from(ones) / 122_000.0;
        assert!((0.47..0.53).contains(&fraction), "bit balance {fraction}");
    }

    #[test]
    fn hostile_values_are_rejected() {
        let long = "a".repeat(10_000);
        let hostile: &[&str] = &[
            "",
            ".",
            "..",
            "../../../../etc/passwd",
            "/etc/passwd",
            "0123456789abcdef0123456789abcde",   // 31
            "0123456789abcdef0123456789abcdef0", // 33
            "0123456789ABCDEF0123456789ABCDEF",  // upper case
            "0123456789abcdef0123456789abcdeg",
            "0123456789abcdef\u{0}123456789abcde",
            "0123456789abcdef/123456789abcdef",
            "0123456789abcdef.123456789abcdef",
            "0123456789abcdef 123456789abcdef",
            "éééééééééééééééé", // 32 bytes of non-ASCII
            "..%2F..%2F..%2F..%2F..%2F..%2F..",
            &long,
        ];
        for value in hostile {
            assert_eq!(SessionId::parse(value), None, "accepted {value:?}");
        }
    }

    #[test]
    fn debug_does_not_leak_the_id() {
        let id = SessionId::generate().unwrap();
        assert!(!format!("{id:?}").contains(&id.to_hex()));
    }
}
