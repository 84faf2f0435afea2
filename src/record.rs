//! The on-disk record: two fixed-size slots in one file, each a 64-byte header followed by
//! the payload (the pickled session dict, opaque to the core). A save of an existing session
//! rewrites only the *older* slot with one positioned write, so a crash at any instant leaves
//! the newer slot intact; a reader takes the valid slot with the highest sequence number.
//! That keeps saves at the in-place `pwrite` floor (≈3.5 µs) instead of temp-file + rename
//! (≈160 µs) while staying crash-safe (SPEC §6).
//!
//! ```text
//! file  = slot 0 | slot 1                 (each `slot_size` bytes; file length = 2 × slot_size)
//! slot  = header (64 bytes) | payload | unused capacity
//! header, little endian:
//!   0  magic        4  b"FBSR"
//!   4  version      2  format version (1)
//!   6  flags        2  bit 0: tag is keyed from SECRET_KEY
//!   8  seq          8  save counter; the higher valid slot wins
//!  16  created      8  f64 epoch seconds, fixed at creation
//!  24  saved_at     8  f64 epoch seconds of this save (last access; mtime may be newer)
//!  32  payload_len  4
//!  36  reserved    12  zero
//!  48  tag         16  BLAKE3 keyed hash of header[0..48] ‖ id bytes ‖ payload, truncated
//! ```
//!
//! The tag authenticates the record *before* Python unpickles it: with a `SECRET_KEY` the key
//! is derived from it (and each fallback key is tried on reads), so a planted file is
//! rejected; without one the key is a public constant and the tag is only a checksum that
//! catches torn and bit-flipped records. Binding the id means a record copied to another
//! session's name does not verify either.

use crate::sid::SessionId;

/// Magic bytes at the start of every slot header.
pub const MAGIC: [u8; 4] = *b"FBSR";
/// The format version this build writes and reads.
pub const VERSION: u16 = 1;
/// Size of a slot header.
pub const HEADER_LEN: usize = 64;
const TAG_OFFSET: usize = 48;
const TAG_LEN: usize = 16;
const FLAG_KEYED: u16 = 1;
const KDF_CONTEXT: &str = "flask-beaker-session 2026-11 record tag v1";

/// The keys records are tagged with: the first signs new records, all verify.
#[derive(Clone)]
pub struct Keys {
    keys: Vec<[u8; 32]>,
    keyed: bool,
}

impl Keys {
    /// Derives tag keys from Flask's `SECRET_KEY` followed by `SECRET_KEY_FALLBACKS`.
    /// An empty list gives the unkeyed (checksum-only) mode.
    pub fn new(secrets: &[Vec<u8>]) -> Self {
        if secrets.is_empty() {
            return Keys {
                keys: vec![blake3::derive_key(KDF_CONTEXT, b"")],
                keyed: false,
            };
        }
        Keys {
            keys: secrets
                .iter()
                .map(|s| blake3::derive_key(KDF_CONTEXT, s))
                .collect(),
            keyed: true,
        }
    }

    /// Whether the keys come from a secret (else the tag is only a checksum).
    pub fn is_keyed(&self) -> bool {
        self.keyed
    }

    /// The key new records are tagged with (also the root of the session handles' key).
    pub(crate) fn primary(&self) -> &[u8; 32] {
        &self.keys[0]
    }
}

fn tag(key: &[u8; 32], head: &[u8], id: &SessionId, payload: &[u8]) -> [u8; TAG_LEN] {
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(&head[..TAG_OFFSET]);
    hasher.update(id.as_bytes());
    hasher.update(payload);
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..TAG_LEN]);
    out
}

/// Header fields of one slot, as parsed (not yet verified).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SlotHeader {
    /// Save counter.
    pub seq: u64,
    /// Creation time of the session (epoch seconds).
    pub created: f64,
    /// Time of this save (epoch seconds).
    pub saved_at: f64,
    /// Length of the payload following the header.
    pub payload_len: usize,
    flags: u16,
}

/// Why a slot header could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Not a slot header at all (never written, torn, or not our file).
    Garbage,
    /// Written by a newer version of this library; left alone.
    Newer(u16),
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(raw)
}

/// Parses the 64-byte header at the start of `slot`.
pub fn parse_header(slot: &[u8]) -> Result<SlotHeader, HeaderError> {
    if slot.len() < HEADER_LEN || slot[..4] != MAGIC {
        return Err(HeaderError::Garbage);
    }
    let version = u16_at(slot, 4);
    if version > VERSION {
        return Err(HeaderError::Newer(version));
    }
    if version != VERSION {
        return Err(HeaderError::Garbage);
    }
    let mut len = [0u8; 4];
    len.copy_from_slice(&slot[32..36]);
    Ok(SlotHeader {
        seq: u64_at(slot, 8),
        created: f64::from_bits(u64_at(slot, 16)),
        saved_at: f64::from_bits(u64_at(slot, 24)),
        payload_len: u32::from_le_bytes(len) as usize,
        flags: u16_at(slot, 6),
    })
}

/// Why a whole stored value is not a usable record (see [`check_value`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Written by a newer format version: left in place.
    Newer,
    /// Torn or garbled.
    Corrupt,
    /// Whole, but its tag fails under every key.
    Unauthenticated,
}

impl Refused {
    /// Whether the stored value must be removed (a newer version's record is left alone).
    pub fn removes(self) -> bool {
        !matches!(self, Refused::Newer)
    }
}

/// Checks a record stored as one value, header and payload together (the network
/// backends store it so): its header, its exact length and its tag.
pub fn check_value(keys: &Keys, id: &SessionId, value: &[u8]) -> Result<SlotHeader, Refused> {
    match parse_header(value) {
        Ok(h) if value.len() == HEADER_LEN + h.payload_len => {
            if verify(keys, value, &h, id, &value[HEADER_LEN..]) {
                Ok(h)
            } else {
                Err(Refused::Unauthenticated)
            }
        }
        Ok(_) | Err(HeaderError::Garbage) => Err(Refused::Corrupt),
        Err(HeaderError::Newer(_)) => Err(Refused::Newer),
    }
}

/// Checks the tag of a slot given its header bytes and payload. A keyed store accepts only
/// keyed records; an unkeyed store only unkeyed ones (a planted checksum-only file must not
/// pass once a `SECRET_KEY` is configured).
pub fn verify(
    keys: &Keys,
    head: &[u8],
    header: &SlotHeader,
    id: &SessionId,
    payload: &[u8],
) -> bool {
    if (header.flags & FLAG_KEYED != 0) != keys.keyed || head.len() < HEADER_LEN {
        return false;
    }
    let stored = &head[TAG_OFFSET..TAG_OFFSET + TAG_LEN];
    keys.keys.iter().any(|key| {
        let expected = tag(key, head, id, payload);
        // Constant-time comparison: the tag is a MAC when keyed.
        expected
            .iter()
            .zip(stored)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    })
}

/// The 64-byte header of a slot holding `payload` for `id` (tag included). The caller
/// guarantees `payload.len()` fits in `u32` (checked by the store).
pub fn encode_header(
    keys: &Keys,
    id: &SessionId,
    seq: u64,
    created: f64,
    saved_at: f64,
    payload: &[u8],
) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[..4].copy_from_slice(&MAGIC);
    out[4..6].copy_from_slice(&VERSION.to_le_bytes());
    let flags = if keys.keyed { FLAG_KEYED } else { 0 };
    out[6..8].copy_from_slice(&flags.to_le_bytes());
    out[8..16].copy_from_slice(&seq.to_le_bytes());
    out[16..24].copy_from_slice(&created.to_bits().to_le_bytes());
    out[24..32].copy_from_slice(&saved_at.to_bits().to_le_bytes());
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out[32..36].copy_from_slice(&len.to_le_bytes());
    let t = tag(keys.primary(), &out, id, payload);
    out[TAG_OFFSET..].copy_from_slice(&t);
    out
}

/// Serialises one slot (header + payload) for `id`.
pub fn encode_slot(
    keys: &Keys,
    id: &SessionId,
    seq: u64,
    created: f64,
    saved_at: f64,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&encode_header(keys, id, seq, created, saved_at, payload));
    out.extend_from_slice(payload);
    out
}

/// Slot size for a payload of `len` bytes: room for 25% growth before the file must be
/// rebuilt, rounded up to 512 bytes (a small session's two slots share one 4 KiB block).
pub fn slot_size_for(len: usize) -> usize {
    let want = HEADER_LEN + len + len / 4 + 64;
    want.div_ceil(512) * 512
}

/// Outcome of choosing the current slot among the two.
#[derive(Debug, PartialEq)]
pub enum Choice {
    /// Slot index, its header and its payload.
    Valid(usize, SlotHeader, Vec<u8>),
    /// No valid slot; at least one was written by a newer format version.
    Newer(u16),
    /// No valid slot, but at least one is whole and well-formed and only its tag fails under
    /// every key: most likely written with another key (workers or hosts with different
    /// `SECRET_KEY`s, a key changed without a fallback), or forged.
    Unauthenticated,
    /// No valid slot.
    Corrupt,
}

/// Picks the newest slot that verifies. `read_slot(i, header)` returns the bytes of slot `i`'s
/// header and payload (the caller may have them in memory already or read them on demand).
pub fn choose<F>(
    keys: &Keys,
    id: &SessionId,
    heads: [&[u8]; 2],
    slot_size: usize,
    mut payload_of: F,
) -> Choice
where
    F: FnMut(usize, &SlotHeader) -> Option<Vec<u8>>,
{
    let mut newer = None;
    let mut candidates: Vec<(usize, SlotHeader)> = Vec::with_capacity(2);
    for (i, head) in heads.iter().enumerate() {
        match parse_header(head) {
            Ok(h) if h.payload_len <= slot_size.saturating_sub(HEADER_LEN) => {
                candidates.push((i, h))
            }
            Ok(_) | Err(HeaderError::Garbage) => {}
            Err(HeaderError::Newer(v)) => newer = Some(v),
        }
    }
    candidates.sort_by_key(|c| std::cmp::Reverse(c.1.seq));
    let mut whole = false;
    for (i, header) in candidates {
        if let Some(payload) = payload_of(i, &header) {
            if payload.len() == header.payload_len {
                if verify(keys, heads[i], &header, id, &payload) {
                    return Choice::Valid(i, header, payload);
                }
                whole = true;
            }
        }
    }
    match newer {
        Some(v) => Choice::Newer(v),
        None if whole => Choice::Unauthenticated,
        None => Choice::Corrupt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> SessionId {
        SessionId::parse("0123456789abcdef0123456789abcdef").unwrap()
    }

    fn check(keys: &Keys, bytes: &[u8]) -> bool {
        let h = parse_header(bytes).unwrap();
        verify(
            keys,
            bytes,
            &h,
            &id(),
            &bytes[HEADER_LEN..HEADER_LEN + h.payload_len],
        )
    }

    #[test]
    fn round_trip() {
        let keys = Keys::new(&[b"secret".to_vec()]);
        let slot = encode_slot(&keys, &id(), 7, 1.5, 2.5, b"payload");
        let h = parse_header(&slot).unwrap();
        assert_eq!(
            (h.seq, h.created, h.saved_at, h.payload_len),
            (7, 1.5, 2.5, 7)
        );
        assert!(check(&keys, &slot));
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let keys = Keys::new(&[]);
        let slot = encode_slot(&keys, &id(), 1, 1.0, 1.0, b"some pickled bytes");
        for byte in 0..slot.len() {
            for bit in 0..8 {
                let mut bad = slot.clone();
                bad[byte] ^= 1 << bit;
                let ok = match parse_header(&bad) {
                    Ok(h) if HEADER_LEN + h.payload_len <= bad.len() => verify(
                        &keys,
                        &bad,
                        &h,
                        &id(),
                        &bad[HEADER_LEN..HEADER_LEN + h.payload_len],
                    ),
                    _ => false,
                };
                // Flipping a reserved byte is covered by the tag as well.
                assert!(!ok, "flip of byte {byte} bit {bit} went unnoticed");
            }
        }
    }

    #[test]
    fn keys_and_ids_are_bound() {
        let signed = Keys::new(&[b"k1".to_vec()]);
        let other = Keys::new(&[b"k2".to_vec()]);
        let unkeyed = Keys::new(&[]);
        let with_fallback = Keys::new(&[b"k2".to_vec(), b"k1".to_vec()]);
        let slot = encode_slot(&signed, &id(), 1, 1.0, 1.0, b"x");
        assert!(check(&signed, &slot));
        assert!(!check(&other, &slot));
        assert!(!check(&unkeyed, &slot));
        assert!(check(&with_fallback, &slot));
        // A checksum-only (planted) record is refused by a keyed store.
        let planted = encode_slot(&unkeyed, &id(), 1, 1.0, 1.0, b"x");
        assert!(!check(&signed, &planted));
        // Another id does not verify.
        let h = parse_header(&slot).unwrap();
        let other_id = SessionId::parse("ffffffffffffffffffffffffffffffff").unwrap();
        assert!(!verify(&signed, &slot, &h, &other_id, b"x"));
    }

    #[test]
    fn whole_values_are_checked_for_length_tag_and_version() {
        let keys = Keys::new(&[b"k".to_vec()]);
        let value = encode_slot(&keys, &id(), 1, 1.0, 2.0, b"payload");
        let header = check_value(&keys, &id(), &value).unwrap();
        assert_eq!((header.created, header.payload_len), (1.0, 7));
        // One byte more or less than the header announces: torn.
        assert_eq!(
            check_value(&keys, &id(), &value[..value.len() - 1]),
            Err(Refused::Corrupt)
        );
        let mut longer = value.clone();
        longer.push(0);
        assert_eq!(check_value(&keys, &id(), &longer), Err(Refused::Corrupt));
        // Another key, another id, a flipped payload byte: unauthenticated.
        let other = Keys::new(&[b"other".to_vec()]);
        assert_eq!(
            check_value(&other, &id(), &value),
            Err(Refused::Unauthenticated)
        );
        let moved = SessionId::parse("ffffffffffffffffffffffffffffffff").unwrap();
        assert_eq!(
            check_value(&keys, &moved, &value),
            Err(Refused::Unauthenticated)
        );
        let mut flipped = value.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(
            check_value(&keys, &id(), &flipped),
            Err(Refused::Unauthenticated)
        );
        // A newer format version is left alone; garbage is removed.
        let mut newer = value.clone();
        newer[4..6].copy_from_slice(&9u16.to_le_bytes());
        assert_eq!(check_value(&keys, &id(), &newer), Err(Refused::Newer));
        assert!(!Refused::Newer.removes() && Refused::Corrupt.removes());
        assert_eq!(check_value(&keys, &id(), b"garbage"), Err(Refused::Corrupt));
    }

    #[test]
    fn newer_versions_and_garbage_are_told_apart() {
        let keys = Keys::new(&[]);
        let mut slot = encode_slot(&keys, &id(), 1, 1.0, 1.0, b"x");
        slot[4] = 9;
        assert_eq!(parse_header(&slot), Err(HeaderError::Newer(9)));
        assert_eq!(parse_header(b"short"), Err(HeaderError::Garbage));
        assert_eq!(parse_header(&[0u8; 64]), Err(HeaderError::Garbage));
    }

    #[test]
    fn choose_prefers_the_newest_valid_slot() {
        let keys = Keys::new(&[]);
        let size = 512;
        let a = encode_slot(&keys, &id(), 1, 1.0, 1.0, b"old");
        let b = encode_slot(&keys, &id(), 2, 1.0, 2.0, b"new");
        fn payload<'a>(
            slots: [&'a Vec<u8>; 2],
        ) -> impl FnMut(usize, &SlotHeader) -> Option<Vec<u8>> + 'a {
            move |i, h| Some(slots[i][HEADER_LEN..HEADER_LEN + h.payload_len].to_vec())
        }
        assert!(matches!(
            choose(&keys, &id(), [&a, &b], size, payload([&a, &b])),
            Choice::Valid(1, _, _)
        ));
        let mut torn = b.clone();
        let last = torn.len() - 1;
        torn[last] ^= 0xff;
        assert!(matches!(
            choose(&keys, &id(), [&a, &torn], size, payload([&a, &torn])),
            Choice::Valid(0, _, _)
        ));
        let zero = vec![0u8; 64];
        assert_eq!(
            choose(&keys, &id(), [&zero, &zero], size, payload([&zero, &zero])),
            Choice::Corrupt
        );
    }

    #[test]
    fn slot_sizes_leave_room_and_align() {
        assert_eq!(slot_size_for(0), 512);
        assert!(slot_size_for(100) >= HEADER_LEN + 100);
        let big = slot_size_for(1 << 20);
        assert!(big >= HEADER_LEN + (1 << 20) + (1 << 18));
        assert_eq!(big % 512, 0);
    }
}
