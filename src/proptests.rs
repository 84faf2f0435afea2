//! Property tests (proptest) of the three decoders that see untrusted bytes: the session id
//! parser (cookie values), the record decoder (files in the data dir) and the legacy Beaker
//! decoder (files written by the original package, or planted). They run as part of
//! `cargo test` with a bounded number of cases; `PROPTEST_CASES=N cargo test proptests` runs
//! more. Any input that once failed is kept as a regression case at the bottom.

use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::Config;

use crate::expiry::Expiry;
use crate::legacy;
use crate::record::{self, Choice, HeaderError, Keys, HEADER_LEN};
use crate::sid::SessionId;
use crate::store::file::{FileConfig, FileStore};
use crate::store::{Opened, StoreConfig};

/// Cases per property unless `PROPTEST_CASES` says otherwise (kept modest so that the whole
/// `cargo test` stays well under 30 s on two cores).
fn cases(default: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

fn is_sid(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

fn sid() -> SessionId {
    SessionId::parse("00112233445566778899aabbccddeeff").expect("valid id")
}

/// A byte edit applied to an encoded record.
#[derive(Clone, Debug)]
enum Edit {
    /// XOR the byte at `pos % len` with `mask` (never 0).
    Flip { pos: usize, mask: u8 },
    /// Overwrite `len` bytes from `pos % len` with `byte`.
    Fill { pos: usize, len: usize, byte: u8 },
    /// Cut the data to `pos % len` bytes.
    Truncate { pos: usize },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), 1u8..=255).prop_map(|(pos, mask)| Edit::Flip { pos, mask }),
        1 => (any::<usize>(), 1usize..64, any::<u8>())
            .prop_map(|(pos, len, byte)| Edit::Fill { pos, len, byte }),
        1 => any::<usize>().prop_map(|pos| Edit::Truncate { pos }),
    ]
}

fn apply(data: &mut Vec<u8>, edits: &[Edit]) {
    for e in edits {
        if data.is_empty() {
            return;
        }
        let n = data.len();
        match *e {
            Edit::Flip { pos, mask } => data[pos % n] ^= mask,
            Edit::Fill { pos, len, byte } => {
                let start = pos % n;
                let end = (start + len).min(n);
                data[start..end].fill(byte);
            }
            Edit::Truncate { pos } => data.truncate(pos % n),
        }
    }
}

/// Opcodes (and small operands) of the pickle protocol, for `legacy_opcode_soup_never_panics`.
const PICKLE_OPCODES: &[u8] = b"(}])uesa.\x94hqGJK\x8cXCcRb\x85\x86\x870N\x88\x89\x95\x01\x02\x00";

/// `len` pseudo-random bytes from `seed` (splitmix64), drawn from `alphabet` 3 times in 4
/// when one is given. Cheap to generate, unlike a proptest vector of `len` value trees,
/// so that thousands of cases stay fast in a debug build; a failure prints the seed.
fn noise(seed: u64, len: usize, alphabet: Option<&[u8]>) -> Vec<u8> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (0..len)
        .map(|_| {
            let r = next();
            match alphabet {
                Some(a) if r % 4 != 0 => a[(r >> 8) as usize % a.len()],
                _ => (r >> 16) as u8,
            }
        })
        .collect()
}

/// Whether one encoded slot (header + stored bytes, maybe followed by spare capacity)
/// verifies and opens with `keys` for `id`, returning its payload if so. Mirrors what the
/// store does.
fn accept(keys: &Keys, id: &SessionId, slot: &[u8]) -> Option<Vec<u8>> {
    let header = record::parse_header(slot).ok()?;
    let stored = slot.get(HEADER_LEN..HEADER_LEN.checked_add(header.payload_len)?)?;
    record::open(keys, slot, &header, id, stored).map(|v| v.payload)
}

/// The keys of a case: unkeyed, keyed authenticated-only, or keyed and sealing.
fn keys_of(kind: u8) -> Keys {
    match kind % 3 {
        0 => Keys::new(&[]),
        1 => Keys::new(&[b"secret".to_vec()]).encrypting(false),
        _ => Keys::new(&[b"secret".to_vec()]),
    }
}

/// The legacy Beaker fixture files (read once).
fn legacy_fixtures() -> &'static [Vec<u8>] {
    static FIXTURES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    FIXTURES.get_or_init(read_legacy_fixtures)
}

fn read_legacy_fixtures() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy");
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).expect("fixture dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "cache") {
                out.push(std::fs::read(&path).expect("fixture"));
            }
        }
    }
    out.sort();
    assert!(out.len() >= 4, "legacy fixtures missing");
    out
}

// ---------------------------------------------------------------------------------------
// Session ids

proptest! {
    #![proptest_config(cases(4_000))]

    /// Any string: no panic, and accepted exactly when it is 32 lowercase hex characters;
    /// an accepted id prints back as the same text.
    #[test]
    fn sid_parse_accepts_exactly_lowercase_hex_32(text in any::<String>()) {
        let parsed = SessionId::parse(&text);
        prop_assert_eq!(parsed.is_some(), is_sid(&text));
        if let Some(id) = parsed {
            prop_assert_eq!(id.to_hex(), text);
        }
    }

    /// Near misses (32 characters from a wider alphabet, upper case, NUL, dots, slashes,
    /// multi-byte characters): accepted exactly when every character is lowercase hex.
    #[test]
    fn sid_parse_near_misses(text in "[0-9a-fA-Fg./\\x00 %é]{30,34}") {
        prop_assert_eq!(SessionId::parse(&text).is_some(), is_sid(&text));
    }

    /// Every well-formed id is accepted and round-trips; changing one character to
    /// anything but another lowercase hex digit makes it invalid.
    #[test]
    fn sid_round_trip_and_single_char_mutation(
        text in "[0-9a-f]{32}",
        pos in 0usize..32,
        replacement in any::<char>(),
    ) {
        let id = SessionId::parse(&text);
        prop_assert!(id.is_some());
        prop_assert_eq!(id.map(|i| i.to_hex()), Some(text.clone()));
        let mut chars: Vec<char> = text.chars().collect();
        chars[pos] = replacement;
        let mutated: String = chars.into_iter().collect();
        let hex = replacement.is_ascii_digit() || ('a'..='f').contains(&replacement);
        prop_assert_eq!(SessionId::parse(&mutated).is_some(), hex);
    }
}

// ---------------------------------------------------------------------------------------
// Record decoder

proptest! {
    #![proptest_config(cases(5_000))]

    /// Arbitrary bytes: parse_header and verify never panic, and never accept (a random
    /// 16-byte tag cannot match).
    #[test]
    fn record_arbitrary_bytes_never_accepted(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
        kind in any::<u8>(),
    ) {
        let keys = keys_of(kind);
        if let Ok(header) = record::parse_header(&bytes) {
            // verify on whatever payload slice is available, even a wrong-sized one.
            let end = HEADER_LEN.saturating_add(header.payload_len).min(bytes.len());
            prop_assert!(!record::verify(&keys, &bytes, &header, &sid(), &bytes[HEADER_LEN..end]));
        }
        prop_assert!(accept(&keys, &sid(), &bytes).is_none());
    }

    /// Arbitrary bytes behind a valid magic and version (so the parser goes deeper):
    /// never accepted, never a panic.
    #[test]
    fn record_plausible_header_never_accepted(
        rest in proptest::collection::vec(any::<u8>(), 0..300),
        version in prop_oneof![Just(record::VERSION), any::<u16>()],
    ) {
        let mut bytes = record::MAGIC.to_vec();
        bytes.extend_from_slice(&version.to_le_bytes());
        bytes.extend_from_slice(&rest);
        match record::parse_header(&bytes) {
            Err(HeaderError::Newer(v)) => prop_assert!(v > record::VERSION),
            Err(HeaderError::Garbage) | Ok(_) => {}
        }
        prop_assert!(accept(&Keys::new(&[]), &sid(), &bytes).is_none());
        prop_assert!(accept(&keys_of(2), &sid(), &bytes).is_none());
        let digest = crate::shard::digest_bytes(&sid());
        let rekeyed = record::rekey_value(&keys_of(2), &digest, &bytes).expect("no I/O");
        prop_assert!(!matches!(rekeyed, record::Rekey::Reseal(_) | record::Rekey::Current));
    }

    /// An encoded slot round-trips; any edit of its header or payload bytes is rejected
    /// (keyed and unkeyed), and so is the intact slot under another id or another key.
    #[test]
    fn record_mutated_slot_never_accepted(
        payload in proptest::collection::vec(any::<u8>(), 0..200),
        seq in any::<u64>(),
        created in any::<f64>(),
        saved in any::<f64>(),
        kind in any::<u8>(),
        edits in proptest::collection::vec(edit(), 1..4),
    ) {
        let keys = keys_of(kind);
        let slot = record::encode_slot(&keys, &sid(), seq, created, saved, &payload).expect("random");
        prop_assert_eq!(accept(&keys, &sid(), &slot), Some(payload.clone()));
        let other_id = SessionId::parse("ffeeddccbbaa99887766554433221100").expect("id");
        prop_assert!(accept(&keys, &other_id, &slot).is_none());
        let other_keys = if keys.is_keyed() { Keys::new(&[]) } else { keys_of(2) };
        prop_assert!(accept(&other_keys, &sid(), &slot).is_none());
        prop_assert!(accept(&Keys::new(&[b"other".to_vec()]), &sid(), &slot).is_none());
        let mut bad = slot.clone();
        apply(&mut bad, &edits);
        if bad != slot {
            prop_assert!(accept(&keys, &sid(), &bad).is_none(), "edited slot accepted");
            // Nor does a walk by digest re-seal an edited record.
            let digest = crate::shard::digest_bytes(&sid());
            let rekeyed = record::rekey_value(&keys_of(2), &digest, &bad).expect("no I/O");
            prop_assert!(!matches!(rekeyed, record::Rekey::Reseal(_) | record::Rekey::Current));
        }
    }

    /// Version 3 with large values: the record round-trips (each segment opens to its
    /// value), and after any edit of its bytes it is refused, or opens to the same small
    /// values with each large value either intact or failing to open: never altered.
    #[test]
    fn record_segmented_round_trip_and_edits(
        small in proptest::collection::vec(any::<u8>(), 0..100),
        values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 0..4),
        kind in any::<u8>(),
        edits in proptest::collection::vec(edit(), 1..4),
    ) {
        let keys = keys_of(kind);
        let names: Vec<Vec<u8>> = (0..values.len()).map(|i| format!("key{i}").into_bytes()).collect();
        let large: Vec<record::Value<'_>> = values
            .iter()
            .zip(&names)
            .map(|(v, k)| record::Value::New { key: k, kind: record::Kind::Pickle, plain: v })
            .collect();
        let payload = record::Payload { small: &small, large: &large, loaded: None };
        let slot = record::encode_slot(&keys, &sid(), 1, 1.0, 2.0, payload).expect("random");
        let v = record::check_value(&keys, &sid(), &slot).expect("round trip");
        prop_assert_eq!(&v.payload, &small);
        for (i, value) in values.iter().enumerate() {
            prop_assert_eq!(v.segments.open(i), Some(value.clone()));
        }
        let mut bad = slot.clone();
        apply(&mut bad, &edits);
        if bad != slot {
            if let Ok(w) = record::check_value(&keys, &sid(), &bad) {
                prop_assert_eq!(&w.payload, &small);
                prop_assert_eq!(w.segments.entries().len(), values.len());
                for (i, value) in values.iter().enumerate() {
                    if let Some(opened) = w.segments.open(i) {
                        prop_assert_eq!(&opened, value, "altered segment opened");
                    }
                }
            }
        }
    }

    /// The version 3 head parser on arbitrary (unsealed, taken as authentic) stored bytes:
    /// never a panic, and what it describes lies within the input.
    #[test]
    fn record_segmented_head_parser_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
        count in 0u32..4,
    ) {
        let mut stored = bytes.clone();
        if stored.len() >= 8 {
            // Often a plausible head: its length within the input, a small count.
            let head_len = (u32::from(stored[0]) % (stored.len() as u32 - 3)).to_le_bytes();
            stored[..4].copy_from_slice(&head_len);
            stored[4..8].copy_from_slice(&count.to_le_bytes());
        }
        if let Some((small, segments)) = record::segments::parse_unsealed(&stored) {
            let total: usize = small.len() + segments.iter().flatten().map(Vec::len).sum::<usize>();
            prop_assert!(total <= stored.len());
        }
        let _ = record::segments::parse_unsealed(&bytes);
    }

    /// Rotation: a record sealed under an old key and opened through a fallback re-seals
    /// (by digest, as `rekey` does) into a record the new key alone opens, with the same
    /// payload and times; the re-sealed record is current.
    #[test]
    fn record_rekey_round_trip(
        payload in proptest::collection::vec(any::<u8>(), 0..200),
        created in any::<f64>(),
        saved in any::<f64>(),
    ) {
        let old = Keys::new(&[b"old".to_vec()]);
        let rotated = Keys::new(&[b"new".to_vec(), b"old".to_vec()]);
        let new = Keys::new(&[b"new".to_vec()]);
        let value = record::encode_slot(&old, &sid(), 3, created, saved, &payload).expect("random");
        let digest = crate::shard::digest_bytes(&sid());
        let record::Rekey::Reseal(resealed) = record::rekey_value(&rotated, &digest, &value).expect("random") else {
            return Err(TestCaseError::fail("not re-sealed"));
        };
        prop_assert_eq!(accept(&new, &sid(), &resealed), Some(payload.clone()));
        prop_assert!(accept(&old, &sid(), &resealed).is_none());
        let h = record::parse_header(&resealed).expect("header");
        prop_assert_eq!((h.seq, h.created.to_bits(), h.saved_at.to_bits()), (4, created.to_bits(), saved.to_bits()));
        prop_assert_eq!(record::rekey_value(&rotated, &digest, &resealed).expect("random"), record::Rekey::Current);
        // Another digest (a record moved to another name) does not open.
        let other = SessionId::parse("ffeeddccbbaa99887766554433221100").expect("id");
        let moved = crate::shard::digest_bytes(&other);
        prop_assert_eq!(record::rekey_value(&rotated, &moved, &value).expect("random"), record::Rekey::Unopenable);
    }

    /// Two slots in one buffer (as on disk), then random edits anywhere: `choose` never
    /// panics and returns either nothing or exactly one of the two stored versions; if the
    /// newer slot's bytes are untouched it wins.
    #[test]
    fn record_choose_never_returns_altered_data(
        old in proptest::collection::vec(any::<u8>(), 0..120),
        new in proptest::collection::vec(any::<u8>(), 0..120),
        edits in proptest::collection::vec(edit(), 0..4),
        newer_first in any::<bool>(),
    ) {
        let keys = Keys::new(&[b"secret".to_vec()]);
        let slot_size = record::slot_size_for(120 + record::SEAL_OVERHEAD);
        let a = record::encode_slot(&keys, &sid(), 7, 1.0, 2.0, &old).expect("random");
        let b = record::encode_slot(&keys, &sid(), 8, 1.0, 3.0, &new).expect("random");
        let (first, second) = if newer_first { (&b, &a) } else { (&a, &b) };
        let mut file = vec![0u8; 2 * slot_size];
        file[..first.len()].copy_from_slice(first);
        file[slot_size..slot_size + second.len()].copy_from_slice(second);
        let pristine = file.clone();
        apply(&mut file, &edits);
        let new_at = if newer_first { 0 } else { slot_size };
        let new_intact = file.len() >= new_at + b.len()
            && file[new_at..new_at + b.len()] == pristine[new_at..new_at + b.len()];
        let heads: [Vec<u8>; 2] = [
            file.get(..HEADER_LEN).unwrap_or(&[]).to_vec(),
            file.get(slot_size..slot_size + HEADER_LEN).unwrap_or(&[]).to_vec(),
        ];
        let choice = record::choose(&keys, &sid(), [&heads[0], &heads[1]], slot_size, |i, h| {
            let start = i * slot_size + HEADER_LEN;
            file.get(start..start.checked_add(h.payload_len)?).map(<[u8]>::to_vec)
        });
        match choice {
            Choice::Valid(_, v) => {
                let (h, payload) = (v.header, v.payload);
                prop_assert!(
                    (h.seq == 8 && payload == new) || (h.seq == 7 && payload == old),
                    "altered data accepted"
                );
                if new_intact {
                    prop_assert_eq!(h.seq, 8);
                }
            }
            Choice::Newer(_) | Choice::Unauthenticated | Choice::Corrupt | Choice::Unbound => {
                prop_assert!(!new_intact)
            }
        }
    }
}

// The same property through the real file store: a record file damaged on disk opens as
// one of its two stored versions or as "corrupt", never as altered data, never a panic.
proptest! {
    #![proptest_config(cases(200))]

    #[test]
    fn store_open_of_damaged_file_gives_old_new_or_nothing(
        edits in proptest::collection::vec(edit(), 1..4),
        extend in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..64)),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::new(
            StoreConfig {
                keys: Keys::new(&[b"secret".to_vec()]),
                expiry: Expiry::default(),
                lock_timeout: Duration::from_secs(5),
                max_waiters: None,
            },
            FileConfig {
                data_dir: dir.path().to_path_buf(),
                read_legacy: false,
                max_size: crate::store::DEFAULT_MAX_SIZE,
                generate_key: false,
            },
        );
        let id = sid();
        store.create_file(&id, b"version one", 1.0, 1.0).expect("create");
        match store.open_file(&id, 2.0).expect("open") {
            Opened::Found(mut h) => h.write(b"version two", 2.0).expect("save"),
            _ => prop_assert!(false, "fresh record not found"),
        }
        let path = store.record_path(&id);
        let pristine = std::fs::read(&path).expect("read");
        let mut bytes = pristine.clone();
        apply(&mut bytes, &edits);
        if let Some(tail) = &extend {
            bytes.extend_from_slice(tail);
        }
        std::fs::write(&path, &bytes).expect("write");
        match store.open_file(&id, 3.0).expect("open after damage") {
            Opened::Found(h) => {
                prop_assert!(
                    h.payload == b"version two" || h.payload == b"version one",
                    "altered data: {:?}", h.payload
                );
                if bytes == pristine {
                    prop_assert_eq!(&h.payload[..], b"version two");
                }
            }
            Opened::Corrupt | Opened::Unauthenticated | Opened::Missing => {
                prop_assert!(bytes != pristine);
                // A record found corrupt is removed.
                prop_assert!(!path.exists());
            }
            Opened::Newer => prop_assert!(bytes != pristine),
            Opened::Untrusted => prop_assert!(false, "a record is never a legacy file"),
            Opened::Expired => prop_assert!(false, "no timeout configured"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Legacy Beaker decoder

proptest! {
    #![proptest_config(cases(5_000))]

    /// Arbitrary bytes, with and without a pickle protocol prefix: never a panic.
    #[test]
    fn legacy_arbitrary_bytes_never_panic(
        proto in 2u8..=5,
        prefixed in any::<bool>(),
        seed in any::<u64>(),
        len in 0usize..512,
    ) {
        let mut bytes = if prefixed { vec![0x80, proto] } else { Vec::new() };
        bytes.extend(noise(seed, len, None));
        let _ = legacy::decode(&bytes);
    }

    /// Pickle-shaped noise: mostly opcodes the decoder understands (marks, dicts, lists,
    /// strings, memo get/put, numbers, globals, reduce, stop), so that decoding goes past
    /// the first opcode far more often than with uniform bytes.
    #[test]
    fn legacy_opcode_soup_never_panics(seed in any::<u64>(), len in 0usize..400) {
        let mut bytes = vec![0x80, 4];
        bytes.extend(noise(seed, len, Some(PICKLE_OPCODES)));
        let _ = legacy::decode(&bytes);
    }

    /// The real Beaker fixtures, edited at random: never a panic; an edit that leaves a
    /// file decodable still yields a session whose payload is part of the file (no
    /// fabricated data for the ≤ 1.10 layout, where the file is handed over whole).
    #[test]
    fn legacy_mutated_fixtures_never_panic(
        which in any::<prop::sample::Index>(),
        edits in proptest::collection::vec(edit(), 1..4),
    ) {
        let mut bytes = which.get(legacy_fixtures()).clone();
        apply(&mut bytes, &edits);
        if let Ok(s) = legacy::decode(&bytes) {
            if s.wrapped {
                prop_assert_eq!(s.payload, bytes);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Regressions: inputs that once broke a decoder are pinned here.

#[test]
fn legacy_fixtures_still_decode() {
    for bytes in legacy_fixtures() {
        assert!(legacy::decode(bytes).is_ok());
    }
}

/// Found while fuzzing the legacy decoder: a Beaker ≤ 1.10 file whose session holds nested
/// shared references (`{'a': [x, x]}` with `x = [l, l]`, pickled by Python 3 protocol 2)
/// was refused as "not legacy" (serde-pickle's memo bookkeeping reports a recursive
/// structure), so the store removed a valid session. It must decode, with its times.
#[test]
fn legacy_nested_shared_references_decode() {
    let bytes = hex::decode(
        "80027d7100580700000073657373696f6e71017d710228580e0000005f61636365737365645f74696d\
         6571034741ee90cca2000000580e0000005f6372656174696f6e5f74696d6571044741ee90cae000000058\
         010000006171055d7106285d7107285d7108284b014b026568086568076575732e",
    )
    .expect("hex");
    let s = legacy::decode(&bytes).expect("nested shared references refused");
    assert!(s.wrapped);
    assert_eq!(s.payload, bytes);
    assert_eq!(s.accessed, Some(4102448400.0));
    assert_eq!(s.created, Some(4102444800.0));
}

/// A memo "billion laughs" (40 levels of `x = [x, x]`, 600 bytes) decodes in bounded work:
/// shared objects are never expanded more often than the file references them.
#[test]
fn legacy_memo_bomb_is_cheap() {
    // PROTO 2, EMPTY_DICT, 'session' -> {'a': x}, x built as 40 nested [x, x] lists.
    let mut p = vec![0x80, 0x02, b'}', b'X', 7, 0, 0, 0];
    p.extend_from_slice(b"session");
    p.extend_from_slice(&[b'}', b'X', 1, 0, 0, 0, b'a']);
    p.extend_from_slice(&[b']', b'q', 0]); // x0 = [], memo 0
    for level in 1u8..=40 {
        // pop x(level-1) (it stays in the memo); x(level) = [get, get], memo level
        p.extend_from_slice(&[
            b'0',
            b'(',
            b'h',
            level - 1,
            b'h',
            level - 1,
            b'l',
            b'q',
            level,
        ]);
    }
    p.extend_from_slice(b"ss.");
    let started = std::time::Instant::now();
    let s = legacy::decode(&p).expect("bomb decodes as a (huge) legacy session");
    assert!(s.wrapped);
    assert!(started.elapsed() < Duration::from_secs(5));
}
