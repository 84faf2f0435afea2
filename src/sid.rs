//! Session ids: 16 bytes from the OS CSPRNG, shown as exactly 32 lowercase hexadecimal
//! characters (the format of the original's `uuid4().hex`, so existing cookies stay valid).
//! Parsing is strict: anything else — other lengths, upper case, separators, NUL, non-ASCII —
//! is rejected before any I/O, so a client value can never become a path or alias another id.

use std::fmt;

use crate::error::{StoreError, StoreResult};

/// Number of characters in the textual form of an id.
pub const SID_LEN: usize = 32;

/// A validated session id. The raw bytes never leave the core except as the 32-hex string.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId([u8; 16]);

impl SessionId {
    /// Draws a fresh id from the operating system's CSPRNG (128 bits of entropy).
    pub fn generate() -> StoreResult<Self> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|e| {
            StoreError::io(
                "read random bytes from",
                "the OS random source",
                std::io::Error::other(e.to_string()),
            )
        })?;
        Ok(SessionId(bytes))
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
        Some(SessionId(bytes))
    }

    /// The 16 raw bytes (bound into record MACs so a record cannot be moved to another id).
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The 32 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
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
            ones += id.as_bytes().iter().map(|b| b.count_ones()).sum::<u32>();
            assert!(seen.insert(text));
        }
        let fraction = f64::from(ones) / 128_000.0;
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
