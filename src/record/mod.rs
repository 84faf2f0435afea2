//! The on-disk record: two fixed-size slots in one file, each a 64-byte header followed by
//! the payload (the pickled session dict, opaque to the core). A save of an existing session
//! rewrites only the *older* slot with one positioned write, so a crash at any instant leaves
//! the newer slot intact; a reader takes the valid slot with the highest sequence number.
//! That keeps saves at the in-place `pwrite` floor (≈3.5 µs) instead of temp-file + rename
//! (≈160 µs) while staying crash-safe (SPEC §6). The network backends store one slot as one
//! value.
//!
//! ```text
//! file  = slot 0 | slot 1                 (each `slot_size` bytes; file length = 2 × slot_size)
//! slot  = header (64 bytes) | stored bytes | unused capacity
//! header, little endian:
//!   0  magic        4  b"FBSR"
//!   4  version      2  3: segmented (written now, sealed or not; `segments`); read only:
//!                       1: stored bytes = the pickle; 2: stored bytes sealed (below)
//!   6  flags        2  bit 0: tag is keyed from a secret; bit 1: sealed (versions 2 and 3)
//!   8  seq          8  save counter; the higher valid slot wins
//!  16  created      8  f64 epoch seconds, fixed at creation
//!  24  saved_at     8  f64 epoch seconds of this save (last access; mtime may be newer)
//!  32  payload_len  4  length of the stored bytes
//!  36  reserved    12  zero
//!  48  tag         16  BLAKE3 keyed hash of header[0..48] ‖ binding ‖ covered bytes, truncated:
//!                       version 3: binding = SHA-256 of the id, covered = head_len ‖ head
//!                       (`segments`: each large value's segment is authenticated by the
//!                       head's manifest, and checked when first used); version 2: digest,
//!                       all stored bytes; version 1: the id's 16 bytes, all stored bytes
//! sealed stored bytes (version 2) = nonce (24, random) ‖ XChaCha20-Poly1305 ciphertext of
//!   the pickle ‖ Poly1305 tag (16); associated data = id digest ‖ header[0..8] ‖ header[16..24]
//! version 3 stored bytes: see `segments` (the head is sealed as version 2's stored bytes are)
//! ```
//!
//! The tag authenticates the record *before* anything is decrypted or unpickled: with a
//! secret (`SECRET_KEY`, or the file store's generated key) its key is derived from it (and
//! each fallback key is tried on reads), so a planted file is rejected; without one the key
//! is a public constant and the tag is only a checksum that catches torn and bit-flipped
//! records. Binding the id means a record copied to another session's name does not verify.
//!
//! With a secret, records are also *sealed* (encrypted) unless `SESSION_ENCRYPT = False`:
//! the encryption key is a second subkey derived from the same secret under its own context
//! string, never the raw secret nor the tag key. The header stays in the clear so the
//! sweeper reads times without any key and a touch needs no re-encryption; the AEAD binds
//! the ciphertext to the id and the immutable header fields, the BLAKE3 tag to the whole
//! header. Records of version 1 (0.2/0.3, or written with `SESSION_ENCRYPT = False`) are
//! still read; a record opened under a fallback key or in the other format is *stale*: its
//! next save writes it under the current key and format (`flask beaker-session rekey`).
//! Records of versions 1 and 2 are always stale: their next save writes version 3.

pub mod segments;

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::aead::{self, NONCE_LEN};
use crate::error::{StoreError, StoreResult};
use crate::sid::SessionId;
pub use segments::{Entry, Kind, Payload, Segments, Value, LARGE_VALUE};
use segments::{Sealer, AD_LEN};

/// Magic bytes at the start of every slot header.
pub const MAGIC: [u8; 4] = *b"FBSR";
/// The highest format version this build reads, and the one it writes (sealed or not).
pub const VERSION: u16 = 3;
/// The format version of sealed records before segmentation (unreleased builds of 0.4
/// between encryption and `segments`): read, and rewritten as version 3.
pub const VERSION_SEALED: u16 = 2;
/// The format version of unsealed records (what 0.2 and 0.3 wrote, and still read).
pub const VERSION_PLAIN: u16 = 1;
/// Size of a slot header.
pub const HEADER_LEN: usize = 64;
const TAG_OFFSET: usize = 48;
const TAG_LEN: usize = 16;
const FLAG_KEYED: u16 = 1;
const FLAG_SEALED: u16 = 2;
const AEAD_TAG_LEN: usize = aead::TAG_LEN;
/// How many bytes sealing adds to a payload (nonce and Poly1305 tag).
pub const SEAL_OVERHEAD: usize = NONCE_LEN + AEAD_TAG_LEN;
const KDF_CONTEXT: &str = "flask-beaker-session 2026-11 record tag v1";
const SEAL_CONTEXT: &str = "flask-beaker-session 2026-12 record encryption v1";
const SEGMENT_CONTEXT: &str = "flask-beaker-session 2026-12 record segment hash v1";

/// One secret's two subkeys; both are wiped from memory when dropped.
#[derive(Clone)]
struct KeyPair {
    tag: Zeroizing<[u8; 32]>,
    seal: Zeroizing<[u8; 32]>,
    /// Keys the hashes of unsealed segments (a key of its own: `segments`).
    segment: Zeroizing<[u8; 32]>,
}

/// The keys records are tagged (and sealed) with: the first signs new records, all verify
/// and open.
#[derive(Clone)]
pub struct Keys {
    keys: Vec<KeyPair>,
    keyed: bool,
    encrypt: bool,
}

impl Keys {
    /// Derives keys from Flask's `SECRET_KEY` followed by `SECRET_KEY_FALLBACKS`. An empty
    /// list gives the unkeyed (checksum-only, never sealed) mode. Records are sealed
    /// whenever there is a secret, unless [`Keys::encrypting`] turns it off.
    pub fn new(secrets: &[Vec<u8>]) -> Self {
        if secrets.is_empty() {
            return Keys {
                keys: vec![KeyPair {
                    tag: Zeroizing::new(blake3::derive_key(KDF_CONTEXT, b"")),
                    seal: Zeroizing::new([0u8; 32]),
                    segment: Zeroizing::new(blake3::derive_key(SEGMENT_CONTEXT, b"")),
                }],
                keyed: false,
                encrypt: true,
            };
        }
        Keys {
            keys: secrets
                .iter()
                .map(|s| KeyPair {
                    tag: Zeroizing::new(blake3::derive_key(KDF_CONTEXT, s)),
                    seal: Zeroizing::new(blake3::derive_key(SEAL_CONTEXT, s)),
                    segment: Zeroizing::new(blake3::derive_key(SEGMENT_CONTEXT, s)),
                })
                .collect(),
            keyed: true,
            encrypt: true,
        }
    }

    /// The same keys, sealing new records or not (`SESSION_ENCRYPT`). Sealed records are
    /// opened either way, so turning encryption off is as reversible as turning it on.
    pub fn encrypting(mut self, encrypt: bool) -> Self {
        self.encrypt = encrypt;
        self
    }

    /// Whether the keys come from a secret (else the tag is only a checksum).
    pub fn is_keyed(&self) -> bool {
        self.keyed
    }

    /// Whether encryption was asked for (`SESSION_ENCRYPT`), secret or not: a file store
    /// that generates its key carries it over to the generated key's `Keys`.
    pub fn wants_encryption(&self) -> bool {
        self.encrypt
    }

    /// Whether new records are sealed: encryption asked for, under a secret key (a public
    /// key would hide nothing).
    pub fn seals(&self) -> bool {
        self.encrypt && self.keyed
    }

    /// The tag key new records are written with: also the root of the session handles' key
    /// (`store::index`), which is derived from it under its own context.
    pub(crate) fn handle_root(&self) -> &[u8; 32] {
        &self.primary().tag
    }

    fn primary(&self) -> &KeyPair {
        &self.keys[0]
    }
}

/// What a record is bound to: its id's 16 bytes (version 1), or the SHA-256 of the id that
/// names the record in every store (versions 2 and 3), so that a walk over the store
/// (`rekey`), which sees names and never ids, can verify and re-seal a record.
fn binding(id: &SessionId, version: u16) -> &[u8] {
    if version == VERSION_PLAIN {
        id.as_bytes()
    } else {
        id.digest()
    }
}

fn tag(key: &[u8; 32], head: &[u8], bind: &[u8], stored: &[u8]) -> [u8; TAG_LEN] {
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(&head[..TAG_OFFSET]);
    hasher.update(bind);
    hasher.update(stored);
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..TAG_LEN]);
    out
}

/// The AEAD's associated data: the id's digest and the header fields a record keeps for
/// life (magic, version, flags, created); `seq`, `saved_at` and the length are covered by
/// the BLAKE3 tag.
fn associated_data(digest: &[u8], head8: &[u8], created: &[u8]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(48);
    ad.extend_from_slice(digest);
    ad.extend_from_slice(head8);
    ad.extend_from_slice(created);
    ad
}

/// The first 8 header bytes of a version 3 record written under `keys`.
fn head8(keys: &Keys, sealed: bool) -> [u8; 8] {
    let mut h = [0u8; 8];
    h[..4].copy_from_slice(&MAGIC);
    h[4..6].copy_from_slice(&VERSION.to_le_bytes());
    let mut flags = if keys.keyed { FLAG_KEYED } else { 0 };
    if sealed {
        flags |= FLAG_SEALED;
    }
    h[6..8].copy_from_slice(&flags.to_le_bytes());
    h
}

/// The record's associated data as one array (`associated_data`).
fn ad_array(digest: &[u8], head8: &[u8], created: &[u8]) -> [u8; AD_LEN] {
    let mut ad = [0u8; AD_LEN];
    let v = associated_data(digest, head8, created);
    ad[..v.len().min(AD_LEN)].copy_from_slice(&v[..v.len().min(AD_LEN)]);
    ad
}

/// How a new record for the id of `digest` created at `created` seals (or hashes) its
/// head and segments: under the current key, sealed if `sealed`.
fn sealer_for(keys: &Keys, digest: &[u8], created: f64, sealed: bool) -> Sealer {
    let pair = keys.primary();
    Sealer {
        sealed,
        seal: pair.seal.clone(),
        hash: pair.segment.clone(),
        ad: ad_array(
            digest,
            &head8(keys, sealed),
            &created.to_bits().to_le_bytes(),
        ),
    }
}

/// The stored bytes (version 3) for `payload`: the head and each large value sealed under
/// the current key when the keys seal, else in the clear with the segments hashed. The
/// nonces are 24 random bytes from the OS (XChaCha20's extended nonce makes random nonces
/// safe at any realistic write rate). Fails only if the OS random source does, or for a
/// `Value::Reuse` the payload's loaded segments do not have.
pub fn seal(
    keys: &Keys,
    id: &SessionId,
    created: f64,
    payload: &Payload<'_>,
) -> StoreResult<Vec<u8>> {
    segments::build(
        &sealer_for(keys, id.digest(), created, keys.seals()),
        payload,
    )
}

/// `plain` sealed under `key` with a fresh random nonce: nonce ‖ ciphertext ‖ tag. Fails
/// only if the OS random source does (or `plain` is beyond ChaCha20's 256 GiB).
fn seal_with(key: &[u8; 32], ad: &[u8], plain: &[u8]) -> StoreResult<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| StoreError::Random(e.to_string()))?;
    let mut out = Vec::with_capacity(plain.len() + SEAL_OVERHEAD);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plain);
    let tag = aead::seal_in_place(key, &nonce, ad, &mut out[NONCE_LEN..])
        .ok_or(StoreError::TooLarge(plain.len()))?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// What [`seal_with`] made under `key`, decrypted in place (no second buffer: for a large
/// session, a fresh allocation's page faults cost as much as the decryption); None if it
/// does not open.
fn open_with(key: &[u8; 32], ad: &[u8], mut sealed: Vec<u8>) -> Option<Vec<u8>> {
    let len = sealed.len();
    if len < SEAL_OVERHEAD {
        return None;
    }
    let nonce: [u8; NONCE_LEN] = sealed[..NONCE_LEN].try_into().ok()?;
    let tag: [u8; AEAD_TAG_LEN] = sealed[len - AEAD_TAG_LEN..].try_into().ok()?;
    if !aead::open_in_place(
        key,
        &nonce,
        ad,
        &mut sealed[NONCE_LEN..len - AEAD_TAG_LEN],
        &tag,
    ) {
        return None;
    }
    sealed.truncate(len - AEAD_TAG_LEN);
    sealed.drain(..NONCE_LEN);
    Some(sealed)
}

/// Associated data of a sealed per-user index entry (`store::index`): its own context, so
/// that nothing sealed for one purpose opens as the other (a record's is 48 bytes of id
/// digest and header).
const ENTRY_AD: &[u8] = b"flask-beaker-session 2026-12 user index entry v2";

/// `plain` sealed under the current key's encryption subkey with a random nonce (nonce ‖
/// ciphertext ‖ tag), for a per-user index entry: whenever the keys are keyed, whether or
/// not records are sealed, since an entry names a live session id. Fails only if the OS
/// random source does.
pub fn seal_entry(keys: &Keys, plain: &[u8]) -> StoreResult<Vec<u8>> {
    seal_with(&keys.primary().seal, ENTRY_AD, plain)
}

/// What [`seal_entry`] sealed, opened with whichever key (current or fallback) sealed it;
/// None if none does.
pub fn open_entry(keys: &Keys, sealed: &[u8]) -> Option<Vec<u8>> {
    if !keys.keyed {
        return None;
    }
    keys.keys
        .iter()
        .find_map(|pair| open_with(&pair.seal, ENTRY_AD, sealed.to_vec()))
}

/// The largest stored bytes a record holding at most `max_payload` bytes of pickles (and
/// keys) can have: each large value's segment adds a nonce, a tag and a manifest entry, and
/// there is at most one large value per `LARGE_VALUE` bytes.
pub fn max_stored(max_payload: usize) -> usize {
    max_payload
        .saturating_add(max_payload / 32)
        .saturating_add(1024)
}

/// A record's sealed stored bytes (version 2), decrypted (in place) under `pair`.
fn unseal(pair: &KeyPair, head: &[u8], digest: &[u8], stored: Vec<u8>) -> Option<Vec<u8>> {
    let ad = associated_data(digest, &head[..8], &head[16..24]);
    open_with(&pair.seal, &ad, stored)
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
    /// Length of the stored bytes following the header.
    pub payload_len: usize,
    /// Format version (1, 2 or 3).
    pub version: u16,
    flags: u16,
}

impl SlotHeader {
    /// Whether the stored bytes are sealed (encrypted).
    pub fn sealed(&self) -> bool {
        self.flags & FLAG_SEALED != 0
    }
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

/// Parses the 64-byte header at the start of `slot`. Version 1 (plain), version 2 (sealed,
/// always keyed) and version 3 (sealed and keyed, or plain) are read; a sealed flag on the
/// wrong version, or without a key, is garbage.
pub fn parse_header(slot: &[u8]) -> Result<SlotHeader, HeaderError> {
    if slot.len() < HEADER_LEN || slot[..4] != MAGIC {
        return Err(HeaderError::Garbage);
    }
    let version = u16_at(slot, 4);
    if version > VERSION {
        return Err(HeaderError::Newer(version));
    }
    let flags = u16_at(slot, 6);
    let sealed = flags & FLAG_SEALED != 0;
    let keyed = flags & FLAG_KEYED != 0;
    let well_formed = match version {
        VERSION_PLAIN => !sealed,
        VERSION_SEALED => sealed && keyed,
        VERSION => !sealed || keyed,
        _ => false,
    };
    if !well_formed {
        return Err(HeaderError::Garbage);
    }
    let mut len = [0u8; 4];
    len.copy_from_slice(&slot[32..36]);
    Ok(SlotHeader {
        seq: u64_at(slot, 8),
        created: f64::from_bits(u64_at(slot, 16)),
        saved_at: f64::from_bits(u64_at(slot, 24)),
        payload_len: u32::from_le_bytes(len) as usize,
        version,
        flags,
    })
}

/// Why a whole stored value is not a usable record (see [`check_value`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Written by a newer format version: left in place.
    Newer,
    /// Torn or garbled.
    Corrupt,
    /// Whole, but no key verifies (and opens) it.
    Unauthenticated,
}

impl Refused {
    /// Whether the stored value must be removed (a newer version's record is left alone).
    pub fn removes(self) -> bool {
        !matches!(self, Refused::Newer)
    }
}

/// A record that verified and, if sealed, whose head decrypted.
#[derive(Clone, Debug, PartialEq)]
pub struct Verified {
    /// Its header.
    pub header: SlotHeader,
    /// The pickle of the small values in the clear (of every value, for versions 1 and 2).
    pub payload: Vec<u8>,
    /// The large values, each opened on demand ([`Segments::open_into`]).
    pub segments: Segments,
    /// Opened under a fallback key, sealed when the keys do not seal (or the reverse), or
    /// of version 1 or 2: the next save rewrites it under the current key and format.
    pub stale: bool,
    /// Opened under a fallback key (`SECRET_KEY_FALLBACKS`).
    pub fallback: bool,
}

/// Checks a record stored as one value, header and stored bytes together (the network
/// backends store it so): its header, its exact length, its tag, and opens its head.
pub fn check_value(keys: &Keys, id: &SessionId, value: &[u8]) -> Result<Verified, Refused> {
    check_owned(keys, id, Arc::new(value.to_vec()))
}

/// [`check_value`] for a value the caller owns: kept (shared) by the returned segments,
/// never copied whole.
pub fn check_owned(keys: &Keys, id: &SessionId, value: Arc<Vec<u8>>) -> Result<Verified, Refused> {
    match parse_header(&value) {
        Ok(h) if value.len() == HEADER_LEN + h.payload_len => {
            let mut head = [0u8; HEADER_LEN];
            head.copy_from_slice(&value[..HEADER_LEN]);
            let bind = binding(id, h.version);
            open_bound(keys, &head, &h, bind, value, HEADER_LEN).ok_or(Refused::Unauthenticated)
        }
        Ok(_) | Err(HeaderError::Garbage) => Err(Refused::Corrupt),
        Err(HeaderError::Newer(_)) => Err(Refused::Newer),
    }
}

/// The part of a record's stored bytes its tag covers: all of them before version 3, the
/// head (with its length) from version 3; None if they are too short for that.
fn tagged_part(version: u16, stored: &[u8]) -> Option<&[u8]> {
    if version == VERSION {
        segments::covered(stored)
    } else {
        Some(stored)
    }
}

/// Which key's tag verifies a slot, by index (0 = the current key), given its header bytes
/// and stored bytes. A keyed store accepts only keyed records; an unkeyed store only
/// unkeyed ones (a planted checksum-only file must not pass once a secret is configured).
fn verifying_key(
    keys: &Keys,
    head: &[u8],
    header: &SlotHeader,
    bind: &[u8],
    stored: &[u8],
) -> Option<usize> {
    if (header.flags & FLAG_KEYED != 0) != keys.keyed || head.len() < HEADER_LEN {
        return None;
    }
    let covered = tagged_part(header.version, stored)?;
    let expected_tag = &head[TAG_OFFSET..TAG_OFFSET + TAG_LEN];
    keys.keys.iter().position(|pair| {
        let expected = tag(&pair.tag, head, bind, covered);
        // Constant-time comparison: the tag is a MAC when keyed.
        expected
            .iter()
            .zip(expected_tag)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    })
}

/// Checks the tag of a slot given its header bytes and stored bytes (no decryption).
pub fn verify(
    keys: &Keys,
    head: &[u8],
    header: &SlotHeader,
    id: &SessionId,
    stored: &[u8],
) -> bool {
    verifying_key(keys, head, header, binding(id, header.version), stored).is_some()
}

/// Verifies a slot and, if sealed, decrypts it (its head, for version 3) with the subkey of
/// the secret whose tag verified. `None` if no key verifies, or the ciphertext does not
/// open (never happens for a record this package wrote and whose tag verified).
pub fn open(
    keys: &Keys,
    head: &[u8],
    header: &SlotHeader,
    id: &SessionId,
    stored: &[u8],
) -> Option<Verified> {
    open_bound(
        keys,
        head,
        header,
        binding(id, header.version),
        Arc::new(stored.to_vec()),
        0,
    )
}

/// Verifies and opens the record whose header bytes are `head` and whose stored bytes are
/// `buf[base..base + header.payload_len]`.
fn open_bound(
    keys: &Keys,
    head: &[u8],
    header: &SlotHeader,
    bind: &[u8],
    buf: Arc<Vec<u8>>,
    base: usize,
) -> Option<Verified> {
    let end = base.checked_add(header.payload_len)?;
    let index = verifying_key(keys, head, header, bind, buf.get(base..end)?)?;
    let pair = &keys.keys[index];
    let fallback = index != 0;
    if header.version == VERSION {
        let sealer = Sealer {
            sealed: header.sealed(),
            seal: pair.seal.clone(),
            hash: pair.segment.clone(),
            ad: ad_array(bind, &head[..8], &head[16..24]),
        };
        let (payload, segments) = segments::open_head(sealer, buf, base, header.payload_len)?;
        return Some(Verified {
            header: *header,
            payload,
            segments,
            stale: fallback || header.sealed() != keys.seals(),
            fallback,
        });
    }
    // Versions 1 and 2: the stored bytes are the payload (sealed, for version 2), taken
    // without a copy when nothing else holds them.
    let stored = match Arc::try_unwrap(buf) {
        Ok(mut v) if base == 0 && v.len() == end => {
            v.truncate(end);
            v
        }
        Ok(v) => v[base..end].to_vec(),
        Err(shared) => shared[base..end].to_vec(),
    };
    let payload = if header.sealed() {
        unseal(pair, head, bind, stored)?
    } else {
        stored
    };
    Some(Verified {
        header: *header,
        payload,
        segments: Segments::default(),
        stale: true,
        fallback,
    })
}

/// The 64-byte header of a slot holding `stored` (what [`seal`] returned) for `id`, tag
/// included. The caller guarantees `stored.len()` fits in `u32` (checked by the store).
pub fn encode_header(
    keys: &Keys,
    id: &SessionId,
    seq: u64,
    created: f64,
    saved_at: f64,
    stored: &[u8],
) -> [u8; HEADER_LEN] {
    header_for(
        keys,
        id.digest(),
        keys.seals(),
        seq,
        created,
        saved_at,
        stored,
    )
}

fn header_for(
    keys: &Keys,
    digest: &[u8],
    sealed: bool,
    seq: u64,
    created: f64,
    saved_at: f64,
    stored: &[u8],
) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[..8].copy_from_slice(&head8(keys, sealed));
    out[8..16].copy_from_slice(&seq.to_le_bytes());
    out[16..24].copy_from_slice(&created.to_bits().to_le_bytes());
    out[24..32].copy_from_slice(&saved_at.to_bits().to_le_bytes());
    let len = u32::try_from(stored.len()).unwrap_or(u32::MAX);
    out[32..36].copy_from_slice(&len.to_le_bytes());
    let covered = segments::covered(stored).unwrap_or(stored);
    let t = tag(&keys.primary().tag, &out, digest, covered);
    out[TAG_OFFSET..].copy_from_slice(&t);
    out
}

/// Serialises one slot (header + stored bytes) for `id`, sealing `payload` when the keys
/// seal. Fails only if the OS random source does (or a `Reuse` names no loaded segment).
pub fn encode_slot<'a>(
    keys: &Keys,
    id: &SessionId,
    seq: u64,
    created: f64,
    saved_at: f64,
    payload: impl Into<Payload<'a>>,
) -> StoreResult<Vec<u8>> {
    let stored = seal(keys, id, created, &payload.into())?;
    let mut out = Vec::with_capacity(HEADER_LEN + stored.len());
    out.extend_from_slice(&encode_header(keys, id, seq, created, saved_at, &stored));
    out.extend_from_slice(&stored);
    Ok(out)
}

/// A slot in a format this build no longer writes (version 1 when the keys do not seal,
/// else 2), for tests of upgrades: what 0.3 wrote, and builds before `segments`.
#[doc(hidden)]
pub fn encode_slot_v2(
    keys: &Keys,
    id: &SessionId,
    seq: u64,
    created: f64,
    saved_at: f64,
    payload: &[u8],
) -> StoreResult<Vec<u8>> {
    let (version, flags, stored) = if keys.seals() {
        let mut h8 = [0u8; 8];
        h8[..4].copy_from_slice(&MAGIC);
        h8[4..6].copy_from_slice(&VERSION_SEALED.to_le_bytes());
        h8[6..8].copy_from_slice(&(FLAG_KEYED | FLAG_SEALED).to_le_bytes());
        let ad = associated_data(id.digest(), &h8, &created.to_bits().to_le_bytes());
        (
            VERSION_SEALED,
            FLAG_KEYED | FLAG_SEALED,
            seal_with(&keys.primary().seal, &ad, payload)?,
        )
    } else {
        let flags = if keys.keyed { FLAG_KEYED } else { 0 };
        (VERSION_PLAIN, flags, payload.to_vec())
    };
    let mut out = vec![0u8; HEADER_LEN];
    out[..4].copy_from_slice(&MAGIC);
    out[4..6].copy_from_slice(&version.to_le_bytes());
    out[6..8].copy_from_slice(&flags.to_le_bytes());
    out[8..16].copy_from_slice(&seq.to_le_bytes());
    out[16..24].copy_from_slice(&created.to_bits().to_le_bytes());
    out[24..32].copy_from_slice(&saved_at.to_bits().to_le_bytes());
    let len = u32::try_from(stored.len()).map_err(|_| StoreError::TooLarge(stored.len()))?;
    out[32..36].copy_from_slice(&len.to_le_bytes());
    let t = tag(&keys.primary().tag, &out, binding(id, version), &stored);
    out[TAG_OFFSET..].copy_from_slice(&t);
    out.extend_from_slice(&stored);
    Ok(out)
}

/// What a walk over the store (`flask beaker-session rekey`) does with one record.
#[derive(Clone, Debug, PartialEq)]
pub enum Rekey {
    /// Sealed under the current key already (or plain under it with encryption off).
    Current,
    /// Opened: these bytes (one slot: header and stored bytes, sequence number one higher,
    /// times unchanged) re-seal it under the current key.
    Reseal(Vec<u8>),
    /// A version 1 (unsealed) record: bound to its id, which the store does not keep, so
    /// it is re-sealed by its session's next save, not by a walk.
    Plain,
    /// No key verifies or opens it (left for the next request or sweep to remove).
    Unopenable,
    /// Written by a newer version.
    Newer,
    /// Torn or garbled.
    Corrupt,
}

/// The new slot re-sealing `v` (opened by digest) under the current key, in version 3,
/// head and every large segment; `None` if it is current already. A rewritten record is
/// sealed whenever the keys are keyed, even with encryption off (as version 2 was), so a walk
/// never turns a sealed record into a plain one.
pub fn reseal(keys: &Keys, digest: &[u8; 32], v: &Verified) -> StoreResult<Option<Vec<u8>>> {
    let h = &v.header;
    if h.version == VERSION && !v.fallback && (h.sealed() || !keys.seals()) {
        return Ok(None);
    }
    let sealed = keys.keyed;
    let reuse: Vec<Value<'_>> = (0..v.segments.entries().len()).map(Value::Reuse).collect();
    let payload = Payload {
        small: &v.payload,
        large: &reuse,
        loaded: Some(&v.segments),
    };
    let stored = segments::build(&sealer_for(keys, digest, h.created, sealed), &payload)?;
    u32::try_from(stored.len()).map_err(|_| StoreError::TooLarge(stored.len()))?;
    let head = header_for(
        keys,
        digest,
        sealed,
        h.seq.wrapping_add(1),
        h.created,
        h.saved_at,
        &stored,
    );
    let mut out = Vec::with_capacity(HEADER_LEN + stored.len());
    out.extend_from_slice(&head);
    out.extend_from_slice(&stored);
    Ok(Some(out))
}

/// [`Rekey`] for a record stored as one value (the network backends), known by the digest
/// of its id.
pub fn rekey_value(keys: &Keys, digest: &[u8; 32], value: &[u8]) -> StoreResult<Rekey> {
    let header = match parse_header(value) {
        Ok(h) if value.len() == HEADER_LEN + h.payload_len => h,
        Ok(_) | Err(HeaderError::Garbage) => return Ok(Rekey::Corrupt),
        Err(HeaderError::Newer(_)) => return Ok(Rekey::Newer),
    };
    if header.version == VERSION_PLAIN {
        return Ok(Rekey::Plain);
    }
    let Some(v) = open_bound(
        keys,
        &value[..HEADER_LEN],
        &header,
        digest,
        Arc::new(value[HEADER_LEN..].to_vec()),
        0,
    ) else {
        return Ok(Rekey::Unopenable);
    };
    Ok(match reseal(keys, digest, &v)? {
        Some(slot) => Rekey::Reseal(slot),
        None => Rekey::Current,
    })
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
    /// Slot index and what it holds, verified and opened.
    Valid(usize, Box<Verified>),
    /// No valid slot; at least one was written by a newer format version.
    Newer(u16),
    /// No valid slot, but at least one is whole and well-formed and only its tag fails under
    /// every key: most likely written with another key (workers or hosts with different
    /// `SECRET_KEY`s, a key changed without a fallback), or forged.
    Unauthenticated,
    /// No valid slot.
    Corrupt,
    /// Read by digest only (`Name::Digest`): the newest slot is a version 1 record, bound to
    /// the id, which the reader does not know; left for its session's next save.
    Unbound,
}

/// Picks the newest slot that verifies (and opens). `payload_of(i, header)` returns slot
/// `i`'s stored bytes (the caller may have them in memory already or read them on demand).
pub fn choose<F>(
    keys: &Keys,
    id: &SessionId,
    heads: [&[u8]; 2],
    slot_size: usize,
    payload_of: F,
) -> Choice
where
    F: FnMut(usize, &SlotHeader) -> Option<Vec<u8>>,
{
    choose_named(keys, Name::Id(id), heads, slot_size, payload_of)
}

/// How a record is known to whoever reads it: by its session id (a request), or only by
/// the digest of its id that names it in the store (a walk over the store, which never
/// sees ids).
#[derive(Clone, Copy, Debug)]
pub enum Name<'a> {
    /// The session id.
    Id(&'a SessionId),
    /// SHA-256 of the id's hex form (`shard::digest_bytes`).
    Digest(&'a [u8; 32]),
}

/// The bytes a record under `name` is bound to, if `name` is enough to know them (a version
/// 1 record is bound to the id itself).
fn bound_to<'a>(name: Name<'a>, version: u16) -> Option<&'a [u8]> {
    match name {
        Name::Id(id) => Some(binding(id, version)),
        Name::Digest(_) if version == VERSION_PLAIN => None,
        Name::Digest(digest) => Some(digest),
    }
}

/// [`choose`] for a record known by its id or only by its digest: by digest, a version 1
/// slot cannot be verified, and [`Choice::Unbound`] says the newest slot is one.
pub fn choose_named<F>(
    keys: &Keys,
    name: Name<'_>,
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
        let Some(bind) = bound_to(name, header.version) else {
            return Choice::Unbound;
        };
        if let Some(stored) = payload_of(i, &header) {
            if stored.len() == header.payload_len {
                let stored = Arc::new(stored);
                if let Some(verified) = open_bound(keys, heads[i], &header, bind, stored, 0) {
                    return Choice::Valid(i, Box::new(verified));
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

    fn slot(keys: &Keys, seq: u64, payload: &[u8]) -> Vec<u8> {
        encode_slot(keys, &id(), seq, 1.0, seq as f64, payload).unwrap()
    }

    /// The payload a slot opens to under `keys` for `id`, if any.
    fn opened(keys: &Keys, id: &SessionId, bytes: &[u8]) -> Option<Verified> {
        let h = parse_header(bytes).ok()?;
        let stored = bytes.get(HEADER_LEN..HEADER_LEN.checked_add(h.payload_len)?)?;
        open(keys, bytes, &h, id, stored)
    }

    fn check(keys: &Keys, bytes: &[u8]) -> bool {
        opened(keys, &id(), bytes).is_some()
    }

    #[test]
    fn round_trip() {
        for encrypt in [true, false] {
            let keys = Keys::new(&[b"secret".to_vec()]).encrypting(encrypt);
            let slot = encode_slot(&keys, &id(), 7, 1.5, 2.5, b"payload").unwrap();
            let h = parse_header(&slot).unwrap();
            // head_len, an empty manifest, the payload (sealed: with nonce and tag).
            let len = 4 + 4 + 7 + if encrypt { SEAL_OVERHEAD } else { 0 };
            assert_eq!(
                (h.seq, h.created, h.saved_at, h.payload_len, h.sealed()),
                (7, 1.5, 2.5, len, encrypt)
            );
            assert_eq!(slot.len(), HEADER_LEN + len);
            let v = opened(&keys, &id(), &slot).unwrap();
            assert_eq!((v.payload.as_slice(), v.stale), (&b"payload"[..], false));
        }
    }

    #[test]
    fn sealed_records_hide_the_payload_and_use_fresh_nonces() {
        let keys = Keys::new(&[b"secret".to_vec()]);
        let marker = b"MARKER-7f3a9c-oauth-token";
        let a = slot(&keys, 1, marker);
        let b = slot(&keys, 1, marker);
        assert!(!a.windows(marker.len()).any(|w| w == marker));
        assert_ne!(a[HEADER_LEN..], b[HEADER_LEN..]);
        assert_eq!(parse_header(&a).unwrap().created, 1.0);
        // Without a secret nothing is sealed (a public key would hide nothing).
        let unkeyed = Keys::new(&[]);
        assert!(!unkeyed.seals() && unkeyed.wants_encryption());
        let plain = slot(&unkeyed, 1, marker);
        assert!(!parse_header(&plain).unwrap().sealed());
        assert!(plain.ends_with(marker));
    }

    #[test]
    fn every_bit_flip_is_detected() {
        for keys in [Keys::new(&[]), Keys::new(&[b"k".to_vec()])] {
            let slot = slot(&keys, 1, b"some pickled bytes");
            for byte in 0..slot.len() {
                for bit in 0..8 {
                    let mut bad = slot.clone();
                    bad[byte] ^= 1 << bit;
                    // Flipping a reserved byte is covered by the tag as well.
                    assert!(
                        !check(&keys, &bad),
                        "flip of byte {byte} bit {bit} went unnoticed"
                    );
                }
            }
        }
    }

    #[test]
    fn a_valid_tag_over_forged_ciphertext_does_not_open() {
        // Someone holding the tag key but not the encryption key (impossible with one
        // secret, but the two checks must each hold): the AEAD still refuses the bytes.
        let keys = Keys::new(&[b"k".to_vec()]);
        // A valid tag over whatever the slot now holds.
        let retag = |s: &mut Vec<u8>| {
            let t = tag(
                &keys.primary().tag,
                s,
                binding(&id(), VERSION),
                segments::covered(&s[HEADER_LEN..]).unwrap(),
            );
            s[TAG_OFFSET..HEADER_LEN].copy_from_slice(&t);
        };
        let mut s = slot(&keys, 1, b"payload");
        s[HEADER_LEN + NONCE_LEN] ^= 1;
        let h = parse_header(&s).unwrap();
        retag(&mut s);
        assert!(verify(&keys, &s, &h, &id(), &s[HEADER_LEN..]));
        assert!(opened(&keys, &id(), &s).is_none());
        // Nor does a sealed record whose created time was rewritten (associated data).
        let mut s = slot(&keys, 1, b"payload");
        s[16..24].copy_from_slice(&5.0f64.to_bits().to_le_bytes());
        retag(&mut s);
        assert!(opened(&keys, &id(), &s).is_none());
    }

    #[test]
    fn keys_and_ids_are_bound() {
        let signed = Keys::new(&[b"k1".to_vec()]);
        let other = Keys::new(&[b"k2".to_vec()]);
        let unkeyed = Keys::new(&[]);
        let with_fallback = Keys::new(&[b"k2".to_vec(), b"k1".to_vec()]);
        let slot = slot(&signed, 1, b"x");
        assert!(check(&signed, &slot));
        assert!(!check(&other, &slot));
        assert!(!check(&unkeyed, &slot));
        // A fallback opens it, and marks it stale (re-sealed under k2 on its next save).
        let v = opened(&with_fallback, &id(), &slot).unwrap();
        assert_eq!((v.payload.as_slice(), v.stale), (&b"x"[..], true));
        // A checksum-only (planted) record is refused by a keyed store.
        let planted = encode_slot(&unkeyed, &id(), 1, 1.0, 1.0, b"x").unwrap();
        assert!(!check(&signed, &planted));
        // Another id does not verify.
        let other_id = SessionId::parse("ffffffffffffffffffffffffffffffff").unwrap();
        assert!(opened(&signed, &other_id, &slot).is_none());
    }

    #[test]
    fn plain_records_of_0_3_still_open_and_are_stale_when_sealing() {
        let plain_keys = Keys::new(&[b"k".to_vec()]).encrypting(false);
        let old = encode_slot_v2(&plain_keys, &id(), 1, 1.0, 1.0, b"pickle").unwrap();
        assert_eq!(u16_at(&old, 4), VERSION_PLAIN);
        let sealing = Keys::new(&[b"k".to_vec()]);
        let v = opened(&sealing, &id(), &old).unwrap();
        assert_eq!((v.payload.as_slice(), v.stale), (&b"pickle"[..], true));
        // And a sealed record opens with encryption turned off (stale: saved plain next).
        let sealed = slot(&sealing, 1, b"pickle");
        let v = opened(&plain_keys, &id(), &sealed).unwrap();
        assert_eq!((v.payload.as_slice(), v.stale), (&b"pickle"[..], true));
        // A version 2 record (before segments) opens, stale: its next save writes version 3.
        let sealed = encode_slot_v2(&sealing, &id(), 1, 1.0, 1.0, b"pickle").unwrap();
        assert_eq!(u16_at(&sealed, 4), VERSION_SEALED);
        let v = opened(&sealing, &id(), &sealed).unwrap();
        assert_eq!((v.payload.as_slice(), v.stale), (&b"pickle"[..], true));
        let v = opened(&plain_keys, &id(), &sealed).unwrap();
        assert_eq!((v.payload.as_slice(), v.stale), (&b"pickle"[..], true));
    }

    #[test]
    fn the_sealed_flag_must_match_the_version() {
        let keys = Keys::new(&[b"k".to_vec()]);
        let mut s = slot(&keys, 1, b"x");
        s[4..6].copy_from_slice(&VERSION_PLAIN.to_le_bytes());
        assert_eq!(parse_header(&s), Err(HeaderError::Garbage));
        let mut p = slot(&keys.clone().encrypting(false), 1, b"x");
        p[4..6].copy_from_slice(&VERSION_SEALED.to_le_bytes());
        assert_eq!(parse_header(&p), Err(HeaderError::Garbage));
        // Too short to hold a nonce and a tag: never opens, never panics.
        let mut short = s[..HEADER_LEN].to_vec();
        short[32..36].copy_from_slice(&0u32.to_le_bytes());
        assert!(opened(&keys, &id(), &short).is_none());
    }

    #[test]
    fn whole_values_are_checked_for_length_tag_and_version() {
        let keys = Keys::new(&[b"k".to_vec()]);
        let value = encode_slot(&keys, &id(), 1, 1.0, 2.0, b"payload").unwrap();
        let v = check_value(&keys, &id(), &value).unwrap();
        assert_eq!(
            (v.header.created, v.payload.as_slice()),
            (1.0, &b"payload"[..])
        );
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
        let mut slot = slot(&keys, 1, b"x");
        slot[4] = 9;
        assert_eq!(parse_header(&slot), Err(HeaderError::Newer(9)));
        assert_eq!(parse_header(b"short"), Err(HeaderError::Garbage));
        assert_eq!(parse_header(&[0u8; 64]), Err(HeaderError::Garbage));
    }

    #[test]
    fn choose_prefers_the_newest_valid_slot() {
        let keys = Keys::new(&[b"k".to_vec()]);
        let size = 512;
        let a = slot(&keys, 1, b"old");
        let b = slot(&keys, 2, b"new");
        fn payload<'a>(
            slots: [&'a Vec<u8>; 2],
        ) -> impl FnMut(usize, &SlotHeader) -> Option<Vec<u8>> + 'a {
            move |i, h| Some(slots[i][HEADER_LEN..HEADER_LEN + h.payload_len].to_vec())
        }
        match choose(&keys, &id(), [&a, &b], size, payload([&a, &b])) {
            Choice::Valid(1, v) => assert_eq!(v.payload, b"new"),
            other => panic!("{other:?}"),
        }
        let mut torn = b.clone();
        let last = torn.len() - 1;
        torn[last] ^= 0xff;
        match choose(&keys, &id(), [&a, &torn], size, payload([&a, &torn])) {
            Choice::Valid(0, v) => assert_eq!(v.payload, b"old"),
            other => panic!("{other:?}"),
        }
        let zero = vec![0u8; 64];
        assert_eq!(
            choose(&keys, &id(), [&zero, &zero], size, payload([&zero, &zero])),
            Choice::Corrupt
        );
        let other = Keys::new(&[b"other".to_vec()]);
        assert_eq!(
            choose(&other, &id(), [&a, &b], size, payload([&a, &b])),
            Choice::Unauthenticated
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
