//! Version 3 ("segmented") stored bytes: the session's small values in one *head* segment,
//! each large value in a segment of its own, so that a request pays for what it touches
//! (issue 17, item 5). Opening a record verifies and opens the head only; a large value's
//! segment is verified (and decrypted) when it is first used, and a save reuses the stored
//! bytes of every large value that did not change: neither re-encrypted nor re-hashed.
//!
//! ```text
//! stored  = head_len (u32 LE) ‖ head ‖ segment 1 ‖ … ‖ segment n   (contiguous, in order)
//! head    = sealed: nonce (24) ‖ XChaCha20-Poly1305(plain head) ‖ tag (16), AD = the record's
//!           (id digest ‖ header[0..8] ‖ header[16..24]); plain: the plain head itself
//! plain head = n (u32 LE) ‖ n × entry ‖ pickle of the dict of small values
//! entry   = key_len (u32 LE) ‖ key (the pickled key) ‖ kind (u8: 0 pickle, 1 raw bytes)
//!           ‖ segment length (u32 LE) ‖ authenticator (16)
//! segment = sealed: nonce ‖ ciphertext ‖ tag, AD = the record's ‖ "fbs segment v1" ‖ kind
//!           ‖ key; the authenticator is its Poly1305 tag. plain: the value's bytes; the
//!           authenticator is their BLAKE3 hash keyed with the segment subkey (a key of its
//!           own, so that a hash of user-chosen bytes can never stand for a record tag).
//! ```
//!
//! Segments have no stored offset: each starts where the previous one ends, and the last
//! must end exactly at the end of the stored bytes. That leaves no gap or overlap to
//! validate, and a truncated or extended record fails to parse. The record's BLAKE3 tag
//! covers the header, the id and `head_len ‖ head`: the head is authenticated as a whole
//! (the set of keys, each segment's length and authenticator), and each segment through
//! its authenticator, so a segment copied from another record, from another version of
//! this record, or edited, fails when it is first used and never before.

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::aead::{self, NONCE_LEN};
use crate::error::{StoreError, StoreResult};

/// A value whose pickle is at least this long (bytes) is stored in a segment of its own;
/// smaller ones share the head. 4 KiB: below it, a second AEAD call and manifest entry
/// cost more than decrypting the value with the others; above it, the value is large
/// enough that not touching it is worth a segment.
pub const LARGE_VALUE: usize = 4096;

/// How many bytes sealing adds to a segment (nonce and tag).
const OVERHEAD: usize = NONCE_LEN + aead::TAG_LEN;
const AUTH_LEN: usize = 16;
/// A manifest entry's fixed part: key length, kind, segment length, authenticator.
const ENTRY_FIXED: usize = 4 + 1 + 4 + AUTH_LEN;
/// Context of a sealed segment's associated data (after the record's).
const SEGMENT_AD: &[u8] = b"fbs segment v1";
/// Length of the record's associated data (id digest, header[0..8], header[16..24]).
pub(super) const AD_LEN: usize = 48;

/// How a large value's bytes are to be read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A pickle (any value).
    Pickle,
    /// The value itself, a `bytes` object (no pickle: none to make, none to undo).
    Bytes,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Pickle => 0,
            Kind::Bytes => 1,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Kind::Pickle),
            1 => Some(Kind::Bytes),
            _ => None,
        }
    }
}

/// One large value of a save.
#[derive(Clone, Copy, Debug)]
pub enum Value<'a> {
    /// The loaded record's segment `index`, unchanged: its stored bytes are reused.
    Reuse(usize),
    /// A new (or changed) value: `plain` is sealed (or hashed) into a new segment.
    New {
        /// The pickled key.
        key: &'a [u8],
        /// What `plain` is.
        kind: Kind,
        /// The value's bytes.
        plain: &'a [u8],
    },
}

/// What a save stores: the pickle of the small values, and the large values, each new or
/// reused from `loaded` (the segments of the record this save replaces).
#[derive(Clone, Copy, Debug)]
pub struct Payload<'a> {
    /// The pickled dict of the small values (the whole session when there is no large one).
    pub small: &'a [u8],
    /// The large values.
    pub large: &'a [Value<'a>],
    /// The segments `Value::Reuse` refers to.
    pub loaded: Option<&'a Segments>,
}

impl<'a> Payload<'a> {
    /// A payload without large values.
    pub fn small(small: &'a [u8]) -> Self {
        Payload {
            small,
            large: &[],
            loaded: None,
        }
    }

    /// The sum of the plain bytes it holds (small pickle, keys and values), for size checks.
    pub fn plain_len(&self) -> usize {
        self.large
            .iter()
            .map(|v| match *v {
                Value::Reuse(i) => self.loaded.map_or(0, |s| {
                    s.entries.get(i).map_or(0, |e| e.key.len()) + s.plain_len(i).unwrap_or(0)
                }),
                Value::New { key, plain, .. } => key.len() + plain.len(),
            })
            .fold(self.small.len(), usize::saturating_add)
    }
}

impl<'a> From<&'a [u8]> for Payload<'a> {
    fn from(small: &'a [u8]) -> Self {
        Payload::small(small)
    }
}

impl<'a> From<&'a Vec<u8>> for Payload<'a> {
    fn from(small: &'a Vec<u8>) -> Self {
        Payload::small(small)
    }
}

impl<'a, const N: usize> From<&'a [u8; N]> for Payload<'a> {
    fn from(small: &'a [u8; N]) -> Self {
        Payload::small(small)
    }
}

/// One large value of a loaded record, as its head lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The pickled key.
    pub key: Vec<u8>,
    /// What the segment's plain bytes are.
    pub kind: Kind,
    start: usize,
    len: usize,
    auth: [u8; AUTH_LEN],
}

impl Entry {
    fn plain_len(&self, sealed: bool) -> usize {
        if sealed {
            self.len - OVERHEAD
        } else {
            self.len
        }
    }
}

/// How segments are sealed (or hashed) and opened: the keys and associated data of one
/// record under one secret.
#[derive(Clone)]
pub(super) struct Sealer {
    /// Segments are encrypted (else only hashed).
    pub sealed: bool,
    pub seal: Zeroizing<[u8; 32]>,
    pub hash: Zeroizing<[u8; 32]>,
    pub ad: [u8; AD_LEN],
}

impl Sealer {
    fn same_as(&self, other: &Sealer) -> bool {
        self.sealed == other.sealed
            && *self.seal == *other.seal
            && *self.hash == *other.hash
            && self.ad == other.ad
    }

    fn segment_ad(&self, kind: Kind, key: &[u8]) -> Vec<u8> {
        let mut ad = Vec::with_capacity(AD_LEN + SEGMENT_AD.len() + 1 + key.len());
        ad.extend_from_slice(&self.ad);
        ad.extend_from_slice(SEGMENT_AD);
        ad.push(kind.byte());
        ad.extend_from_slice(key);
        ad
    }

    fn hash(&self, bytes: &[u8]) -> [u8; AUTH_LEN] {
        let mut out = [0u8; AUTH_LEN];
        out.copy_from_slice(&blake3::keyed_hash(&self.hash, bytes).as_bytes()[..AUTH_LEN]);
        out
    }

    fn stored_len(&self, plain: usize) -> usize {
        if self.sealed {
            plain + OVERHEAD
        } else {
            plain
        }
    }
}

/// The large values of a loaded record: where their segments are in the stored bytes it
/// was read from (kept, shared, until the session is saved or released), and how to open
/// them. Empty for records without large values and for versions 1 and 2.
#[derive(Clone, Default)]
pub struct Segments {
    buf: Arc<Vec<u8>>,
    entries: Vec<Entry>,
    opener: Option<Sealer>,
}

impl std::fmt::Debug for Segments {
    // Never the keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segments")
            .field("entries", &self.entries)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Segments {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
            && self.segment_bytes().eq(other.segment_bytes())
            && self.opener.is_some() == other.opener.is_some()
    }
}

impl Segments {
    /// The large values, in stored order (the index is what `Value::Reuse` takes).
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Whether there is no large value.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn segment_bytes(&self) -> impl Iterator<Item = &[u8]> {
        self.entries
            .iter()
            .map(|e| self.buf.get(e.start..e.start + e.len).unwrap_or_default())
    }

    /// Length of value `i`'s plain bytes (what [`Segments::open_into`] fills).
    pub fn plain_len(&self, i: usize) -> Option<usize> {
        let sealed = self.opener.as_ref()?.sealed;
        Some(self.entries.get(i)?.plain_len(sealed))
    }

    /// Verifies segment `i` and writes its plain bytes into `out` (of [`Segments::plain_len`]
    /// bytes: decrypted in place there, no other buffer); false if it does not verify (the
    /// record was altered: the value must be treated as absent), and `out` is then garbage.
    pub fn open_into(&self, i: usize, out: &mut [u8]) -> bool {
        let (Some(opener), Some(e)) = (self.opener.as_ref(), self.entries.get(i)) else {
            return false;
        };
        let Some(seg) = self.buf.get(e.start..e.start + e.len) else {
            return false;
        };
        if out.len() != e.plain_len(opener.sealed) {
            return false;
        }
        if !opener.sealed {
            if !ct_eq(&opener.hash(seg), &e.auth) {
                return false;
            }
            out.copy_from_slice(seg);
            return true;
        }
        let (nonce, rest) = seg.split_at(NONCE_LEN);
        let (cipher, tag) = rest.split_at(rest.len() - aead::TAG_LEN);
        let (Ok(nonce), Ok(tag)) = (
            <[u8; NONCE_LEN]>::try_from(nonce),
            <[u8; aead::TAG_LEN]>::try_from(tag),
        ) else {
            return false;
        };
        if !ct_eq(&tag, &e.auth) {
            return false;
        }
        out.copy_from_slice(cipher);
        let ad = opener.segment_ad(e.kind, &e.key);
        aead::open_in_place(&opener.seal, &nonce, &ad, out, &tag)
    }

    /// Segment `i` verified and opened, in a new buffer; None if it does not verify.
    pub fn open(&self, i: usize) -> Option<Vec<u8>> {
        let mut out = vec![0u8; self.plain_len(i)?];
        self.open_into(i, &mut out).then_some(out)
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn u32_at(b: &[u8], at: usize) -> Option<usize> {
    let raw: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(raw) as usize)
}

/// The part of version 3 stored bytes the record's tag covers: `head_len ‖ head`; None if
/// the stored bytes are too short to hold it.
pub(super) fn covered(stored: &[u8]) -> Option<&[u8]> {
    let head_len = u32_at(stored, 0)?;
    stored.get(..4usize.checked_add(head_len)?)
}

/// Version 3 stored bytes for `payload` under `sealer`. Large values reused from a record
/// loaded under the same sealer keep their stored bytes; others (new ones, and reused ones
/// of a record under another key, mode, id or creation time) are sealed anew.
pub(super) fn build(sealer: &Sealer, payload: &Payload<'_>) -> StoreResult<Vec<u8>> {
    let loaded = payload.loaded;
    let reusable = loaded
        .and_then(|s| s.opener.as_ref())
        .is_some_and(|o| o.same_as(sealer));
    // Each large value as (key, kind, what its segment is made of).
    enum Source<'s> {
        Copy(&'s [u8], [u8; AUTH_LEN]),
        Seal(Cow<'s>),
    }
    type Cow<'s> = std::borrow::Cow<'s, [u8]>;
    let mut parts: Vec<(&[u8], Kind, Source<'_>)> = Vec::with_capacity(payload.large.len());
    for value in payload.large {
        match *value {
            Value::New { key, kind, plain } => {
                parts.push((key, kind, Source::Seal(Cow::Borrowed(plain))))
            }
            Value::Reuse(i) => {
                let segs = loaded.ok_or(StoreError::BadPayload("no loaded segments"))?;
                let e = segs
                    .entries
                    .get(i)
                    .ok_or(StoreError::BadPayload("no such loaded segment"))?;
                if reusable {
                    let seg = segs
                        .buf
                        .get(e.start..e.start + e.len)
                        .ok_or(StoreError::BadPayload("no such loaded segment"))?;
                    parts.push((&e.key, e.kind, Source::Copy(seg, e.auth)));
                } else {
                    // Under another key or mode: opened and sealed again (a segment that
                    // does not verify any more is dropped, as it reads as absent).
                    if let Some(plain) = segs.open(i) {
                        parts.push((&e.key, e.kind, Source::Seal(Cow::Owned(plain))));
                    }
                }
            }
        }
    }
    let manifest_len = parts
        .iter()
        .map(|(k, _, _)| ENTRY_FIXED + k.len())
        .fold(4usize, usize::saturating_add);
    let head_plain = manifest_len.saturating_add(payload.small.len());
    let head_len = sealer.stored_len(head_plain);
    let seg_lens: Vec<usize> = parts
        .iter()
        .map(|(_, _, s)| match s {
            Source::Copy(b, _) => b.len(),
            Source::Seal(p) => sealer.stored_len(p.len()),
        })
        .collect();
    let total = seg_lens
        .iter()
        .fold(4usize.saturating_add(head_len), |a, b| a.saturating_add(*b));
    let too_large = || StoreError::TooLarge(total);
    let len32 = |n: usize| u32::try_from(n).map_err(|_| too_large());
    len32(total)?;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&len32(head_len)?.to_le_bytes());
    out.resize(4 + head_len, 0);
    let mut auths = Vec::with_capacity(parts.len());
    for (key, kind, source) in &parts {
        match source {
            Source::Copy(bytes, auth) => {
                out.extend_from_slice(bytes);
                auths.push(*auth);
            }
            Source::Seal(plain) if sealer.sealed => {
                let start = out.len();
                let tag = seal_into(
                    &mut out,
                    &sealer.seal,
                    &sealer.segment_ad(*kind, key),
                    plain,
                )?;
                debug_assert_eq!(out.len() - start, plain.len() + OVERHEAD);
                auths.push(tag);
            }
            Source::Seal(plain) => {
                out.extend_from_slice(plain);
                auths.push(sealer.hash(plain));
            }
        }
    }
    // The head, now that every authenticator is known.
    let mut head = Vec::with_capacity(head_plain);
    head.extend_from_slice(&len32(parts.len())?.to_le_bytes());
    for (((key, kind, _), len), auth) in parts.iter().zip(&seg_lens).zip(&auths) {
        head.extend_from_slice(&len32(key.len())?.to_le_bytes());
        head.extend_from_slice(key);
        head.push(kind.byte());
        head.extend_from_slice(&len32(*len)?.to_le_bytes());
        head.extend_from_slice(auth);
    }
    head.extend_from_slice(payload.small);
    let region = &mut out[4..4 + head_len];
    if sealer.sealed {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| StoreError::Random(e.to_string()))?;
        region[..NONCE_LEN].copy_from_slice(&nonce);
        let body = &mut region[NONCE_LEN..NONCE_LEN + head_plain];
        body.copy_from_slice(&head);
        let tag =
            aead::seal_in_place(&sealer.seal, &nonce, &sealer.ad, body).ok_or_else(too_large)?;
        region[NONCE_LEN + head_plain..].copy_from_slice(&tag);
    } else {
        region.copy_from_slice(&head);
    }
    Ok(out)
}

/// Appends nonce ‖ ciphertext of `plain` ‖ tag to `out` (one copy of `plain`, encrypted in
/// place there); returns the tag.
fn seal_into(
    out: &mut Vec<u8>,
    key: &[u8; 32],
    ad: &[u8],
    plain: &[u8],
) -> StoreResult<[u8; aead::TAG_LEN]> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| StoreError::Random(e.to_string()))?;
    out.extend_from_slice(&nonce);
    let start = out.len();
    out.extend_from_slice(plain);
    let tag = aead::seal_in_place(key, &nonce, ad, &mut out[start..])
        .ok_or(StoreError::TooLarge(plain.len()))?;
    out.extend_from_slice(&tag);
    Ok(tag)
}

/// Opens the head of version 3 stored bytes (`buf[base..]`, whose tag has verified under
/// `sealer`'s secret): the small values' pickle and the large values' segments. None if the
/// head does not open or does not describe exactly the stored bytes.
pub(super) fn open_head(
    sealer: Sealer,
    buf: Arc<Vec<u8>>,
    base: usize,
    len: usize,
) -> Option<(Vec<u8>, Segments)> {
    let stored = buf.get(base..base.checked_add(len)?)?;
    let head_len = u32_at(stored, 0)?;
    let head_end = 4usize.checked_add(head_len)?;
    let head = stored.get(4..head_end)?;
    let mut plain = if sealer.sealed {
        open_sealed(&sealer.seal, &sealer.ad, head)?
    } else {
        head.to_vec()
    };
    let count = u32_at(&plain, 0)?;
    if count > plain.len() / ENTRY_FIXED {
        return None;
    }
    let mut entries = Vec::with_capacity(count);
    let mut at = 4usize;
    let mut seg_at = head_end;
    for _ in 0..count {
        let key_len = u32_at(&plain, at)?;
        let key = plain.get(at + 4..(at + 4).checked_add(key_len)?)?.to_vec();
        at += 4 + key_len;
        let kind = Kind::from_byte(*plain.get(at)?)?;
        let seg_len = u32_at(&plain, at + 1)?;
        let auth: [u8; AUTH_LEN] = plain.get(at + 5..at + 5 + AUTH_LEN)?.try_into().ok()?;
        at += 5 + AUTH_LEN;
        if sealer.sealed && seg_len < OVERHEAD {
            return None;
        }
        let end = seg_at.checked_add(seg_len)?;
        if end > stored.len() {
            return None;
        }
        entries.push(Entry {
            key,
            kind,
            start: base + seg_at,
            len: seg_len,
            auth,
        });
        seg_at = end;
    }
    if seg_at != stored.len() {
        return None;
    }
    plain.drain(..at);
    let segments = if entries.is_empty() {
        Segments::default()
    } else {
        Segments {
            buf,
            entries,
            opener: Some(sealer),
        }
    };
    Some((plain, segments))
}

/// What [`parse_unsealed`] found: the small pickle, and each segment opened (None: it does
/// not verify).
pub type Parsed = (Vec<u8>, Vec<Option<Vec<u8>>>);

/// The head parser alone, on unsealed stored bytes taken as authentic (for the fuzz target
/// and property tests: the parser must never panic nor describe bytes outside the input,
/// whatever the head says). Returns the small pickle and every segment, opened.
#[doc(hidden)]
pub fn parse_unsealed(stored: &[u8]) -> Option<Parsed> {
    let sealer = Sealer {
        sealed: false,
        seal: Zeroizing::new([0u8; 32]),
        hash: Zeroizing::new([0u8; 32]),
        ad: [0u8; AD_LEN],
    };
    let (small, segs) = open_head(sealer, Arc::new(stored.to_vec()), 0, stored.len())?;
    let opened = (0..segs.entries.len()).map(|i| segs.open(i)).collect();
    Some((small, opened))
}

fn open_sealed(key: &[u8; 32], ad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    let len = sealed.len();
    if len < OVERHEAD {
        return None;
    }
    let nonce: [u8; NONCE_LEN] = sealed[..NONCE_LEN].try_into().ok()?;
    let tag: [u8; aead::TAG_LEN] = sealed[len - aead::TAG_LEN..].try_into().ok()?;
    let mut body = sealed[NONCE_LEN..len - aead::TAG_LEN].to_vec();
    aead::open_in_place(key, &nonce, ad, &mut body, &tag).then_some(body)
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;

    fn id() -> SessionId {
        SessionId::parse("0123456789abcdef0123456789abcdef").unwrap()
    }

    fn keys(sealed: bool) -> Keys {
        Keys::new(&[b"secret".to_vec()]).encrypting(sealed)
    }

    fn blob(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
    }

    fn open_value(keys: &Keys, id: &SessionId, slot: &[u8]) -> Option<Verified> {
        check_value(keys, id, slot).ok()
    }

    /// A slot with small pickle `small` and two large values.
    fn slot_with(keys: &Keys, seq: u64, small: &[u8], a: &[u8], b: &[u8]) -> Vec<u8> {
        let large = [
            Value::New {
                key: b"ka",
                kind: Kind::Pickle,
                plain: a,
            },
            Value::New {
                key: b"kb",
                kind: Kind::Bytes,
                plain: b,
            },
        ];
        let payload = Payload {
            small,
            large: &large,
            loaded: None,
        };
        encode_slot(keys, &id(), seq, 1.0, 2.0, payload).unwrap()
    }

    #[test]
    fn large_values_round_trip_and_open_one_at_a_time() {
        for sealed in [true, false] {
            let keys = keys(sealed);
            let (a, b) = (blob(10_000, 1), blob(5_000, 2));
            let slot = slot_with(&keys, 1, b"small", &a, &b);
            let v = open_value(&keys, &id(), &slot).unwrap();
            assert_eq!(v.header.version, VERSION);
            assert_eq!((v.payload.as_slice(), v.stale), (&b"small"[..], false));
            let e = v.segments.entries();
            assert_eq!(
                (e.len(), &e[0].key[..], e[0].kind, e[1].kind),
                (2, &b"ka"[..], Kind::Pickle, Kind::Bytes)
            );
            assert_eq!(v.segments.open(0).unwrap(), a);
            assert_eq!(v.segments.open(1).unwrap(), b);
            assert!(v.segments.open(2).is_none());
            // Sealed: neither value nor key shows in the stored bytes.
            let shows = |needle: &[u8]| slot.windows(needle.len()).any(|w| w == needle);
            assert_eq!(shows(&a[..64]), !sealed);
            assert_eq!(shows(b"ka\x00"), !sealed);
        }
    }

    #[test]
    fn a_bad_segment_fails_alone_and_only_when_used() {
        for sealed in [true, false] {
            let keys = keys(sealed);
            let (a, b) = (blob(10_000, 1), blob(5_000, 2));
            let slot = slot_with(&keys, 1, b"small", &a, &b);
            // The last byte belongs to segment 2: the record opens, segment 1 too.
            let mut bad = slot.clone();
            *bad.last_mut().unwrap() ^= 1;
            let v = open_value(&keys, &id(), &bad).unwrap();
            assert_eq!(v.segments.open(0).unwrap(), a);
            assert!(v.segments.open(1).is_none());
            // A flipped byte anywhere in the head (or header): the record does not open.
            let head_end = HEADER_LEN + 4 + covered(&slot[HEADER_LEN..]).unwrap().len() - 4;
            for at in (0..head_end).step_by(7) {
                let mut bad = slot.clone();
                bad[at] ^= 0x40;
                assert!(open_value(&keys, &id(), &bad).is_none(), "byte {at}");
            }
            // Truncated or extended: refused.
            assert!(open_value(&keys, &id(), &slot[..slot.len() - 1]).is_none());
            let mut longer = slot.clone();
            longer.push(0);
            assert!(open_value(&keys, &id(), &longer).is_none());
            // Another id: refused.
            let other = SessionId::parse("ffffffffffffffffffffffffffffffff").unwrap();
            assert!(open_value(&keys, &other, &slot).is_none());
        }
    }

    #[test]
    fn segments_swapped_from_another_record_or_version_do_not_open() {
        for sealed in [true, false] {
            let keys = keys(sealed);
            let (a, b) = (blob(10_000, 1), blob(5_000, 2));
            let first = slot_with(&keys, 1, b"small", &a, &b);
            // Same sizes, other contents: a later version of this record.
            let later = slot_with(&keys, 2, b"small", &blob(10_000, 3), &blob(5_000, 4));
            let len = first.len();
            assert_eq!(len, later.len());
            let seg2 = 5_000 + if sealed { OVERHEAD } else { 0 };
            let mut mixed = first.clone();
            mixed[len - seg2..].copy_from_slice(&later[len - seg2..]);
            let v = open_value(&keys, &id(), &mixed).unwrap();
            assert_eq!(v.segments.open(0).unwrap(), a);
            assert!(v.segments.open(1).is_none(), "older/newer segment accepted");
            // Another record's segment (another id), same key and size (other contents:
            // unsealed, identical bytes are the same value and may well verify).
            let other = SessionId::parse("ffffffffffffffffffffffffffffffff").unwrap();
            let theirs_b = if sealed { b.clone() } else { blob(5_000, 7) };
            let large = [Value::New {
                key: b"kb",
                kind: Kind::Bytes,
                plain: &theirs_b,
            }];
            let theirs = encode_slot(
                &keys,
                &other,
                1,
                1.0,
                2.0,
                Payload {
                    small: b"",
                    large: &large,
                    loaded: None,
                },
            )
            .unwrap();
            let mut mixed = first.clone();
            mixed[len - seg2..].copy_from_slice(&theirs[theirs.len() - seg2..]);
            let v = open_value(&keys, &id(), &mixed).unwrap();
            assert!(
                v.segments.open(1).is_none(),
                "another record's segment accepted"
            );
        }
    }

    #[test]
    fn unchanged_segments_are_reused_byte_for_byte_and_resealed_under_a_new_key() {
        for sealed in [true, false] {
            let keys = keys(sealed);
            let (a, b) = (blob(10_000, 1), blob(5_000, 2));
            let slot = slot_with(&keys, 1, b"small", &a, &b);
            let v = open_value(&keys, &id(), &slot).unwrap();
            let large = [
                Value::Reuse(0),
                Value::New {
                    key: b"kc",
                    kind: Kind::Pickle,
                    plain: &blob(6_000, 9),
                },
            ];
            let payload = Payload {
                small: b"changed",
                large: &large,
                loaded: Some(&v.segments),
            };
            let next = encode_slot(&keys, &id(), 2, 1.0, 3.0, payload).unwrap();
            let seg1 = 10_000 + if sealed { OVERHEAD } else { 0 };
            let start = |s: &[u8]| HEADER_LEN + covered(&s[HEADER_LEN..]).unwrap().len();
            assert_eq!(
                &next[start(&next)..start(&next) + seg1],
                &slot[start(&slot)..start(&slot) + seg1],
                "segment not reused as stored"
            );
            let w = open_value(&keys, &id(), &next).unwrap();
            assert_eq!(w.payload, b"changed");
            assert_eq!(w.segments.open(0).unwrap(), a);
            assert_eq!(w.segments.open(1).unwrap(), blob(6_000, 9));
            // A reuse index the record does not have is the caller's error.
            let bad = [Value::Reuse(5)];
            let payload = Payload {
                small: b"",
                large: &bad,
                loaded: Some(&v.segments),
            };
            assert!(matches!(
                encode_slot(&keys, &id(), 2, 1.0, 3.0, payload),
                Err(StoreError::BadPayload(_))
            ));
            // Under a new key (the old as fallback): opened stale, and a save re-seals the
            // reused segment under the new key, which then opens it alone.
            let rotated = Keys::new(&[b"new".to_vec(), b"secret".to_vec()]).encrypting(sealed);
            let v = open_value(&rotated, &id(), &slot).unwrap();
            assert!(v.stale && v.fallback);
            let reuse = [Value::Reuse(0), Value::Reuse(1)];
            let payload = Payload {
                small: b"small",
                large: &reuse,
                loaded: Some(&v.segments),
            };
            let resealed = encode_slot(&rotated, &id(), 2, 1.0, 3.0, payload).unwrap();
            let only_new = Keys::new(&[b"new".to_vec()]).encrypting(sealed);
            let w = open_value(&only_new, &id(), &resealed).unwrap();
            assert_eq!(
                (w.segments.open(0).unwrap(), w.segments.open(1).unwrap()),
                (a.clone(), b.clone())
            );
            // A rekey walk does the same, known by digest only.
            let digest = crate::shard::digest_bytes(&id());
            let Ok(Rekey::Reseal(walked)) = rekey_value(&rotated, &digest, &slot) else {
                panic!("not resealed");
            };
            let w = open_value(&only_new, &id(), &walked).unwrap();
            assert_eq!(
                (w.segments.open(0).unwrap(), w.segments.open(1).unwrap()),
                (a.clone(), b.clone())
            );
            assert!(matches!(
                rekey_value(&only_new, &digest, &walked),
                Ok(Rekey::Current)
            ));
        }
    }

    #[test]
    fn version_2_records_are_rekeyed_to_version_3() {
        let keys = keys(true);
        let old = encode_slot_v2(&keys, &id(), 4, 1.0, 2.0, b"pickle").unwrap();
        let digest = crate::shard::digest_bytes(&id());
        let Ok(Rekey::Reseal(new)) = rekey_value(&keys, &digest, &old) else {
            panic!("not rewritten");
        };
        let v = open_value(&keys, &id(), &new).unwrap();
        assert_eq!(
            (v.header.version, v.header.seq, v.stale),
            (VERSION, 5, false)
        );
        assert_eq!(v.payload, b"pickle");
    }
}
