//! Reading session files written by the original package (Beaker's file backend), so users
//! stay logged in across the upgrade (SPEC §6). Two layouts exist in the wild:
//!
//! * Beaker ≤ 1.10: `pickle({'session': {…the session dict…}})`
//! * Beaker ≥ 1.11: `pickle({'session': base64(pickle(session_dict, protocol=2))})`
//!
//! The outer pickle is decoded here with `serde-pickle` to check its shape and read the
//! `_accessed_time` / `_creation_time` the expiry check needs. The payload handed to Python
//! is never re-encoded, because `serde-pickle` flattens objects of user classes into their
//! `__dict__`: for ≥ 1.11 it is the inner pickle exactly as Beaker wrote it; for ≤ 1.10 it is
//! the whole file (`wrapped`), and Python takes `['session']` after unpickling.

use std::collections::BTreeMap;

use base64::Engine;
use serde_pickle::{DeOptions, HashableValue, Value};

pub mod pickle_scan;
mod trust;

pub use trust::{judge, trusted, Distrust, TreeProbe, PROBE_TTL};

/// A legacy session ready for Python.
#[derive(Debug, PartialEq)]
pub struct LegacySession {
    /// Pickle bytes. If `wrapped`, Beaker's whole outer pickle; else the bare session dict.
    pub payload: Vec<u8>,
    /// Whether Python must take `['session']` of the unpickled payload.
    pub wrapped: bool,
    /// `_accessed_time` if it could be read without Python.
    pub accessed: Option<f64>,
    /// `_creation_time` if it could be read without Python.
    pub created: Option<f64>,
}

/// Why a legacy file was refused.
#[derive(Debug, PartialEq, Eq)]
pub struct NotLegacy;

fn de_options() -> DeOptions {
    // Only the shape and the two times are read from the decoded value (the payload goes to
    // Python byte for byte), so a shared object that serde-pickle cannot expand a second
    // time (nested shared references, e.g. `[x, x]` with `x = [l, l]`) may become None
    // instead of failing the whole file: failing would delete a valid session.
    DeOptions::new()
        .replace_unresolved_globals()
        .replace_recursive_structures()
}

/// What `serde-pickle` made of a pickle.
enum Decoded {
    Value(Value),
    /// Not a pickle it can read.
    Refused,
    /// It panicked. Found by fuzzing, then reproduced with plain Python values: a set that
    /// holds NaN next to other floats makes the standard library's sort panic on
    /// serde-pickle's non-total order. The pickle may well be a valid session, so callers
    /// leave the decision to Python (which reads it fine) rather than drop the session.
    Panicked,
}

/// `serde_pickle::value_from_slice`, hardened for untrusted bytes: values nested too deeply
/// for its recursive build and drop (a planted file could overflow the stack and abort the
/// worker) or that it would copy into gigabytes are refused before anything is decoded
/// (`pickle_scan`), and a panic inside it is contained.
fn decode_value(bytes: &[u8]) -> Result<Decoded, NotLegacy> {
    pickle_scan::scan(bytes).map_err(|_| NotLegacy)?;
    Ok(
        match std::panic::catch_unwind(|| serde_pickle::value_from_slice(bytes, de_options())) {
            Ok(Ok(value)) => Decoded::Value(value),
            Ok(Err(_)) => Decoded::Refused,
            Err(_) => Decoded::Panicked,
        },
    )
}

fn time_of(dict: &BTreeMap<HashableValue, Value>, key: &str) -> Option<f64> {
    match dict.get(&HashableValue::String(key.to_owned()))? {
        Value::F64(v) => Some(*v),
        Value::I64(v) => Some(*v as f64),
        _ => None,
    }
}

/// Decodes a legacy Beaker file. Garbage, truncated data and unexpected shapes are refused.
pub fn decode(bytes: &[u8]) -> Result<LegacySession, NotLegacy> {
    // Every Beaker file starts with a pickle protocol marker (protocol 2+).
    if bytes.len() < 2 || bytes[0] != 0x80 {
        return Err(NotLegacy);
    }
    let outer = match decode_value(bytes)? {
        Decoded::Value(Value::Dict(outer)) => outer,
        Decoded::Value(_) | Decoded::Refused => return Err(NotLegacy),
        // Python takes `['session']` and checks it is a dict; it reads the times too.
        Decoded::Panicked => {
            return Ok(LegacySession {
                payload: bytes.to_vec(),
                wrapped: true,
                accessed: None,
                created: None,
            })
        }
    };
    match outer.get(&HashableValue::String("session".to_owned())) {
        Some(Value::String(b64)) => {
            let inner = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| NotLegacy)?;
            // The inner pickle goes to Python as it is, so it must pass the depth check
            // too; beyond that, a value serde-pickle cannot decode (or panics on) only
            // loses the times here: Python reads the payload, and the times, itself.
            let (accessed, created) = match decode_value(&inner)? {
                Decoded::Value(Value::Dict(d)) => {
                    (time_of(&d, "_accessed_time"), time_of(&d, "_creation_time"))
                }
                Decoded::Value(_) => return Err(NotLegacy),
                Decoded::Refused | Decoded::Panicked => (None, None),
            };
            Ok(LegacySession {
                payload: inner,
                wrapped: false,
                accessed,
                created,
            })
        }
        Some(Value::Dict(d)) => {
            let accessed = time_of(d, "_accessed_time");
            let created = time_of(d, "_creation_time");
            Ok(LegacySession {
                payload: bytes.to_vec(),
                wrapped: true,
                accessed,
                created,
            })
        }
        _ => Err(NotLegacy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(rel: &str) -> Vec<u8> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy");
        std::fs::read(root.join(rel)).unwrap()
    }

    fn find(label: &str, suffix: &str) -> Vec<u8> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/legacy")
            .join(label);
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.to_str().unwrap().ends_with(suffix) {
                    return std::fs::read(path).unwrap();
                }
            }
        }
        panic!("fixture {label}/{suffix} missing");
    }

    #[test]
    fn beaker_110_dict_is_handed_over_whole_with_its_times() {
        let s = decode(&find("beaker110", "01.cache")).unwrap();
        assert!(s.wrapped);
        assert_eq!(s.accessed, Some(4102448400.0));
        assert_eq!(s.created, Some(4102444800.0));
        let v = serde_pickle::value_from_slice(&s.payload, DeOptions::new()).unwrap();
        let Value::Dict(outer) = v else { panic!() };
        let Some(Value::Dict(d)) = outer.get(&HashableValue::String("session".into())) else {
            panic!()
        };
        assert_eq!(
            d.get(&HashableValue::String("user".into())),
            Some(&Value::String("alice".into()))
        );
    }

    #[test]
    fn beaker_114_base64_inner_pickle_is_unwrapped() {
        let s = decode(&find("beaker114", "01.cache")).unwrap();
        assert!(!s.wrapped);
        assert_eq!(s.accessed, Some(4102448400.0));
        let v = serde_pickle::value_from_slice(&s.payload, DeOptions::new()).unwrap();
        let Value::Dict(d) = v else { panic!() };
        assert_eq!(
            d.get(&HashableValue::String("n".into())),
            Some(&Value::I64(5))
        );
    }

    #[test]
    fn user_objects_are_handed_to_python() {
        let s110 = decode(&find("beaker110", "02.cache")).unwrap();
        assert!(s110.wrapped);
        let s114 = decode(&find("beaker114", "02.cache")).unwrap();
        assert!(!s114.wrapped);
        // The inner pickle is passed on byte for byte (it names the user's class).
        assert!(s114.payload.windows(11).any(|w| w == b"LegacyThing"));
    }

    #[test]
    fn garbage_is_refused() {
        let good = fixture("manifest.json");
        assert_eq!(decode(&good), Err(NotLegacy));
        assert_eq!(decode(b""), Err(NotLegacy));
        assert_eq!(decode(b"\x80\x04garbage"), Err(NotLegacy));
        let real = find("beaker114", "01.cache");
        assert_eq!(decode(&real[..real.len() / 2]), Err(NotLegacy));
        // pickle of a list, not a dict
        assert_eq!(decode(b"\x80\x04]\x94."), Err(NotLegacy));
    }

    #[test]
    fn deeply_nested_files_are_refused_without_overflowing_the_stack() {
        // Regression: 200,000 nested lists (~400 KB) used to overflow serde-pickle's
        // recursion and abort the process. This runs on the 2 MiB test thread stack.
        let mut deep =
            b"\x80\x02}q\x00X\x07\x00\x00\x00sessionq\x01}q\x02X\x01\x00\x00\x00x".to_vec();
        deep.extend(std::iter::repeat_n(b']', 200_000));
        deep.extend(std::iter::repeat_n(b'a', 199_999));
        deep.extend_from_slice(b"ss.");
        assert_eq!(decode(&deep), Err(NotLegacy));
        // The same inside a Beaker ≥ 1.11 base64 inner pickle.
        let mut inner = b"\x80\x02}q\x00X\x01\x00\x00\x00x".to_vec();
        inner.extend(std::iter::repeat_n(b']', 200_000));
        inner.extend(std::iter::repeat_n(b'a', 199_999));
        inner.extend_from_slice(b"s.");
        let b64 = base64::engine::general_purpose::STANDARD.encode(&inner);
        let mut outer = b"\x80\x02}q\x00X\x07\x00\x00\x00sessionq\x01X".to_vec();
        outer.extend((b64.len() as u32).to_le_bytes());
        outer.extend(b64.as_bytes());
        outer.extend_from_slice(b"s.");
        assert_eq!(decode(&outer), Err(NotLegacy));
    }

    #[test]
    fn nesting_up_to_the_limit_still_decodes() {
        // {'session': {'x': [...]}}: two dicts, then lists up to the limit, decoded on a
        // thread with a 1 MiB stack (a small worker-thread stack; this is a debug build).
        let levels = (pickle_scan::MAX_DEPTH - 2) as usize;
        let mut ok =
            b"\x80\x02}q\x00X\x07\x00\x00\x00sessionq\x01}q\x02X\x01\x00\x00\x00x".to_vec();
        ok.extend(std::iter::repeat_n(b']', levels));
        ok.extend(std::iter::repeat_n(b'a', levels - 1));
        ok.extend_from_slice(b"ss.");
        let decoded = std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(move || decode(&ok).map(|s| s.wrapped))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(decoded, Ok(true));
        let mut over =
            b"\x80\x02}q\x00X\x07\x00\x00\x00sessionq\x01}q\x02X\x01\x00\x00\x00x".to_vec();
        over.extend(std::iter::repeat_n(b']', levels + 1));
        over.extend(std::iter::repeat_n(b'a', levels));
        over.extend_from_slice(b"ss.");
        assert_eq!(decode(&over), Err(NotLegacy));
    }

    #[test]
    fn sets_holding_nan_reach_python_instead_of_panicking() {
        // Regression, found by cargo-fuzz (`legacy-nan-in-a-set.pickle`, its input) and
        // reproduced with real Python values: a session holding a set of floats with NaN
        // among them, as written by Beaker 1.10 and 1.14. serde-pickle's value ordering is
        // not total, so sorting that set panicked inside the decoder.
        let read = |name: &str| {
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz");
            std::fs::read(root.join(name)).unwrap()
        };
        let old = read("beaker110-nan-in-a-set.pickle");
        // The input really makes serde-pickle panic, else this test would prove nothing.
        let direct =
            std::panic::catch_unwind(|| serde_pickle::value_from_slice(&old, de_options()));
        assert!(direct.is_err());
        // ≤ 1.10: the whole file goes to Python, which checks the shape and reads the times.
        let session = decode(&old).unwrap();
        assert!(session.wrapped);
        assert_eq!(session.payload, old);
        assert_eq!((session.accessed, session.created), (None, None));
        // ≥ 1.11: the inner pickle goes to Python; only the times are left to it.
        let session = decode(&read("beaker114-nan-in-a-set.pickle")).unwrap();
        assert!(!session.wrapped);
        assert_eq!(session.payload.first(), Some(&0x80));
        assert_eq!((session.accessed, session.created), (None, None));
        // The fuzzer's own input: refused or handed over, never a panic.
        let found = read("legacy-nan-in-a-set.pickle");
        if let Ok(session) = decode(&found) {
            assert_eq!(session.payload, found);
        }
    }
}
