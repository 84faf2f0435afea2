//! Unit tests of the file store (see file.rs).
use super::*;

use std::fs::OpenOptions;
#[cfg(unix)]
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::StoreResult;
use crate::expiry::Expiry;
use crate::record::{Keys, HEADER_LEN};

use std::collections::BTreeSet;
use std::io::Write as _;
#[cfg(unix)]
use std::os::unix::fs::symlink;

/// A symbolic link (on Windows a file or directory symlink, a reparse point).
#[cfg(windows)]
fn symlink(target: impl AsRef<Path>, link: impl AsRef<Path>) -> std::io::Result<()> {
    if target.as_ref().is_dir() {
        std::os::windows::fs::symlink_dir(target, link)
    } else {
        std::os::windows::fs::symlink_file(target, link)
    }
}
#[cfg(unix)]
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use base64::Engine as _;
use serde_pickle::{DeOptions, HashableValue, Value};
use sha2::Digest as _;

use crate::record::slot_size_for;

const LONG: Duration = Duration::from_secs(10);
const SHORT: Duration = Duration::from_millis(100);
/// Time given to a waiter thread to reach its lock wait before the holder acts. Nothing is
/// asserted about it: it only makes sure the waiting code path is the one exercised.
const SETTLE: Duration = Duration::from_millis(200);

// ---------------------------------------------------------------------------------------
// Helpers

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn config() -> StoreConfig {
    StoreConfig {
        keys: Keys::new(&[]),
        expiry: Expiry::default(),
        lock_timeout: LONG,
        max_waiters: None,
    }
}

fn files(dir: &Path) -> FileConfig {
    FileConfig {
        data_dir: dir.to_path_buf(),
        read_legacy: true,
        max_size: crate::store::DEFAULT_MAX_SIZE,
        generate_key: false,
    }
}

fn store(dir: &Path) -> FileStore {
    FileStore::new(config(), files(dir))
}

fn keyed(dir: &Path, secrets: &[&[u8]]) -> FileStore {
    let secrets: Vec<Vec<u8>> = secrets.iter().map(|s| s.to_vec()).collect();
    let cfg = StoreConfig {
        keys: Keys::new(&secrets),
        ..config()
    };
    FileStore::new(cfg, files(dir))
}

fn timed(dir: &Path, idle: Option<f64>, absolute: Option<f64>) -> FileStore {
    let cfg = StoreConfig {
        expiry: Expiry { idle, absolute },
        ..config()
    };
    FileStore::new(cfg, files(dir))
}

fn outcome(o: &Opened<FileHandle>) -> &'static str {
    match o {
        Opened::Found(_) => "Found",
        Opened::Missing => "Missing",
        Opened::Expired => "Expired",
        Opened::Corrupt => "Corrupt",
        Opened::Newer => "Newer",
        Opened::Untrusted => "Untrusted",
        Opened::Unauthenticated => "Unauthenticated",
    }
}

/// The outcome of an open that must not fail with an error.
fn outcome_of(r: StoreResult<Opened<FileHandle>>) -> &'static str {
    match r {
        Ok(o) => outcome(&o),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn found(r: StoreResult<Opened<FileHandle>>) -> FileHandle {
    match r {
        Ok(Opened::Found(h)) => h,
        Ok(other) => panic!("expected Found, got {}", outcome(&other)),
        Err(e) => panic!("expected Found, got error: {e}"),
    }
}

/// Removes the session and releases its lock (`SessionHandle::delete`).
fn delete(h: FileHandle) -> StoreResult<()> {
    SessionHandle::delete(Box::new(h))
}

fn new_id() -> SessionId {
    SessionId::generate().unwrap()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// The file's identity (inode; on Windows its file index).
fn inode(path: &Path) -> u64 {
    crate::platform::identity_of(path).unwrap().1
}

/// Every path under `dir` (files, directories, links); empty if `dir` does not exist.
fn tree(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                stack.push(path.clone());
            }
            out.insert(path);
        }
    }
    out
}

fn tmp_files(dir: &Path) -> Vec<PathBuf> {
    tree(dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(shard::TMP_SUFFIX))
        .collect()
}

fn xor_byte(path: &Path, offset: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    crate::platform::read_exact_at(&f, &mut b, offset).unwrap();
    b[0] ^= 0x5a;
    crate::platform::write_all_at(&f, &b, offset).unwrap();
}

/// Replaces the content of `path` (creating it if needed).
fn plant(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

/// Deterministic pseudo-random bytes (xorshift64).
fn garbage(mut seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

fn record_slot_size(h: &FileHandle) -> usize {
    match h.origin() {
        Origin::Record { slot_size, .. } => slot_size,
        other => panic!("not a record: {other:?}"),
    }
}

/// A data dir with one record for `id` holding `v1` in slot 0 and `v2` in slot 1.
fn two_versions(data: &Path, id: &SessionId, v1: &[u8], v2: &[u8], t: f64) -> PathBuf {
    let s = store(data);
    s.create(id, v1, t, t).unwrap();
    let mut h = found(s.open_file(id, t));
    h.write(v2, t + 1.0).unwrap();
    assert!(matches!(
        h.origin(),
        Origin::Record {
            slot: 1,
            seq: 2,
            ..
        }
    ));
    s.record_path(id)
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy")
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `root/data` holding both Beaker fixture trees (1.10 ids aaaa…0N, 1.14 ids bbbb…0N).
fn legacy_data_dir(root: &Path) -> PathBuf {
    let data = root.join("data");
    for label in ["beaker110", "beaker114"] {
        copy_tree(
            &fixtures().join(label).join("container_file"),
            &data.join("container_file"),
        );
    }
    data
}

fn legacy_id(c: char, n: u8) -> SessionId {
    SessionId::parse(&format!("{}{n:02}", c.to_string().repeat(30))).unwrap()
}

fn legacy_file(data: &Path, id: &SessionId) -> PathBuf {
    let h = id.to_hex();
    data.join("container_file")
        .join(&h[..1])
        .join(&h[..2])
        .join(format!("{h}.cache"))
}

fn dict_get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Dict(d) => d.get(&HashableValue::String(key.to_owned())),
        _ => None,
    }
}

/// (Linux: `/proc`; elsewhere the child trusts the shell's `umask`.)
#[cfg(target_os = "linux")]
fn umask_of_this_process() -> u32 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .unwrap();
    u32::from_str_radix(line.trim(), 8).unwrap()
}

// ---------------------------------------------------------------------------------------
// 1. Round trip, modes, names

#[test]
fn create_then_open_round_trips_payload_and_times() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let id = new_id();
    // In the future, so the header's saved_at (not the real mtime) is the last access.
    let t = now() + 1000.0;
    let payload = b"\x80\x04\x95payload bytes\x00\xff".to_vec();
    s.create(&id, &payload, t - 5.0, t).unwrap();
    let h = found(s.open_file(&id, t + 1.0));
    assert_eq!(h.payload, payload);
    assert_eq!(h.created, Some(t - 5.0));
    assert_eq!(h.last_access, Some(t));
    assert!(h.id() == &id);
    let size = slot_size_for(payload.len());
    assert_eq!(
        h.origin(),
        Origin::Record {
            slot: 0,
            seq: 1,
            slot_size: size
        }
    );
    assert_eq!(
        fs::metadata(s.record_path(&id)).unwrap().len(),
        2 * size as u64
    );
    // Opening does not change the record.
    drop(h);
    let before = fs::read(s.record_path(&id)).unwrap();
    let h = found(s.open_file(&id, t + 2.0));
    assert_eq!(h.payload, payload);
    assert_eq!(fs::read(s.record_path(&id)).unwrap(), before);
}

#[test]
fn record_file_is_private_and_named_by_the_ids_digest() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("not-yet").join("data");
    let s = store(&data);
    let id = new_id();
    s.create(&id, b"x", now(), now()).unwrap();
    let path = s.record_path(&id);
    let name = path.file_name().unwrap().to_str().unwrap().to_owned();
    assert_eq!(name, hex::encode(sha2::Sha256::digest(id.to_hex())));
    assert_eq!(
        path.parent().unwrap(),
        data.join("fbs1").join(&name[..shard::SHARD_CHARS])
    );
    for p in tree(dir.path()) {
        assert!(!p.to_string_lossy().contains(&id.to_hex()), "{p:?}");
    }
    // POSIX modes (on Windows the files inherit the data dir's ACL: docs/platforms.md).
    #[cfg(unix)]
    {
        assert_eq!(mode(&path), 0o600);
        for d in [path.parent().unwrap(), &data.join("fbs1"), &data] {
            assert_eq!(mode(d), 0o700, "{d:?}");
        }
    }
}

/// Run in a child process under a chosen umask by `modes_do_not_depend_on_the_umask`
/// (the crate forbids `unsafe`, so the test cannot call `umask(2)` itself).
#[cfg(unix)]
#[test]
#[ignore = "run by modes_do_not_depend_on_the_umask in a child process"]
fn umask_child() {
    #[cfg(target_os = "linux")]
    if let Ok(expected) = std::env::var("FBS_EXPECT_UMASK") {
        assert_eq!(
            umask_of_this_process(),
            u32::from_str_radix(&expected, 8).unwrap()
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = store(&data);
    let id = new_id();
    s.create(&id, b"small", now(), now()).unwrap();
    let path = s.record_path(&id);
    assert_eq!(mode(&path), 0o600);
    for d in [path.parent().unwrap(), &data.join("fbs1"), &data] {
        assert_eq!(mode(d), 0o700, "{d:?}");
    }
    // A file installed by a growing save is private too.
    let mut h = found(s.open_file(&id, now()));
    h.write(&vec![1u8; 10_000], now()).unwrap();
    drop(h);
    assert_eq!(mode(&path), 0o600);
    // A legacy migration creates the record tree in an existing data dir.
    let root = tempfile::tempdir().unwrap();
    let legacy = legacy_data_dir(root.path());
    let s = store(&legacy);
    let lid = legacy_id('b', 1);
    let mut h = found(s.open_file(&lid, now()));
    h.write(b"migrated", now()).unwrap();
    let path = s.record_path(&lid);
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert_eq!(mode(&legacy.join("fbs1")), 0o700);
}

#[cfg(unix)]
#[test]
fn modes_do_not_depend_on_the_umask() {
    let exe = std::env::current_exe().unwrap();
    for umask in ["022", "000", "077"] {
        let out = Command::new("/bin/sh")
            .args(["-c", "umask \"$1\" && shift && exec \"$@\"", "sh", umask])
            .arg(&exe)
            .args([
                "--ignored",
                "--exact",
                "store::file::tests::umask_child",
                "--test-threads=1",
            ])
            .env("FBS_EXPECT_UMASK", umask)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "umask {umask}:\n{stdout}\n{stderr}");
        assert!(stdout.contains("1 passed"), "umask {umask}:\n{stdout}");
    }
}

// ---------------------------------------------------------------------------------------
// 2. Saves

#[test]
fn in_place_saves_alternate_slots_and_reopen_gives_the_latest() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let id = new_id();
    let t = now() + 1000.0;
    s.create(&id, b"v1", t, t).unwrap();
    let path = s.record_path(&id);
    let ino = inode(&path);
    let len = fs::metadata(&path).unwrap().len();
    let mut h = found(s.open_file(&id, t));
    let size = record_slot_size(&h);
    for n in 2..=6u64 {
        let payload = format!("version {n}");
        h.write(payload.as_bytes(), t + n as f64).unwrap();
        assert_eq!(
            h.origin(),
            Origin::Record {
                slot: (n as usize + 1) % 2,
                seq: n,
                slot_size: size
            }
        );
        // `payload` is "as loaded": a save does not keep a copy.
        assert!(h.payload.is_empty());
        assert_eq!(h.last_access, Some(t + n as f64));
        assert_eq!(h.created, Some(t));
    }
    drop(h);
    // Written in place: same file, same size.
    assert_eq!(inode(&path), ino);
    assert_eq!(fs::metadata(&path).unwrap().len(), len);
    let h = found(s.open_file(&id, t + 10.0));
    assert_eq!(h.payload, b"version 6");
    assert_eq!(h.created, Some(t));
    assert_eq!(h.last_access, Some(t + 6.0));
    assert_eq!(
        h.origin(),
        Origin::Record {
            slot: 1,
            seq: 6,
            slot_size: size
        }
    );
    // The other slot still holds the previous version.
    let bytes = fs::read(&path).unwrap();
    assert!(bytes[HEADER_LEN..size]
        .windows(9)
        .any(|w| w == b"version 5"));
}

#[test]
fn growing_past_the_slot_installs_a_new_file_then_shrinks_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let id = new_id();
    let t = now() + 1000.0;
    s.create(&id, b"small", t, t).unwrap();
    let path = s.record_path(&id);
    let ino = inode(&path);
    let mut h = found(s.open_file(&id, t));
    let small_slot = record_slot_size(&h);
    let big = garbage(7, small_slot * 3);
    h.write(&big, t + 1.0).unwrap();
    // Version 3 stored bytes: head length and an empty manifest (8 bytes) before the pickle.
    let big_slot = slot_size_for(big.len() + 8);
    assert_eq!(
        h.origin(),
        Origin::Record {
            slot: 0,
            seq: 2,
            slot_size: big_slot
        }
    );
    assert_ne!(inode(&path), ino, "growth must replace the file");
    assert_eq!(fs::metadata(&path).unwrap().len(), 2 * big_slot as u64);
    #[cfg(unix)]
    assert_eq!(mode(&path), 0o600);
    assert!(tmp_files(dir.path()).is_empty());
    // The handle keeps working on the new file: shrinking saves go in place.
    let ino = inode(&path);
    h.write(b"tiny", t + 2.0).unwrap();
    h.write(b"tinier", t + 3.0).unwrap();
    assert!(matches!(
        h.origin(),
        Origin::Record {
            slot: 0,
            seq: 4,
            ..
        }
    ));
    drop(h);
    assert_eq!(inode(&path), ino);
    let h = found(s.open_file(&id, t + 4.0));
    assert_eq!(h.payload, b"tinier");
    assert_eq!(h.created, Some(t));
    assert_eq!(
        h.origin(),
        Origin::Record {
            slot: 0,
            seq: 4,
            slot_size: big_slot
        }
    );
}

// ---------------------------------------------------------------------------------------
// 3. Damage at byte level

#[test]
fn a_damaged_newest_slot_falls_back_to_the_previous_version() {
    // Small records are read in one go, large ones (> 256 KiB) slot by slot.
    for len in [100usize, 300_000] {
        let dir = tempfile::tempdir().unwrap();
        let id = new_id();
        let t = now();
        let v1 = garbage(1, len);
        let v2 = garbage(2, len);
        let path = two_versions(dir.path(), &id, &v1, &v2, t);
        let size = slot_size_for(len);
        // One byte of slot 1's payload.
        xor_byte(&path, (size + HEADER_LEN + len / 2) as u64);
        let s = store(dir.path());
        let h = found(s.open_file(&id, t));
        assert!(h.payload == v1, "len {len}: previous version expected");
        assert!(matches!(
            h.origin(),
            Origin::Record {
                slot: 0,
                seq: 1,
                ..
            }
        ));
        drop(h);
        // The next save goes to the damaged slot, and wins again.
        let mut h = found(s.open_file(&id, t));
        h.write(&v2, t + 2.0).unwrap();
        drop(h);
        let h = found(s.open_file(&id, t));
        assert!(h.payload == v2);
        assert!(matches!(
            h.origin(),
            Origin::Record {
                slot: 1,
                seq: 2,
                ..
            }
        ));
    }
}

#[test]
fn both_slots_damaged_is_corrupt_and_removed() {
    for len in [100usize, 300_000] {
        let dir = tempfile::tempdir().unwrap();
        let id = new_id();
        let t = now();
        let path = two_versions(dir.path(), &id, &garbage(1, len), &garbage(2, len), t);
        let size = slot_size_for(len);
        xor_byte(&path, (HEADER_LEN + 1) as u64);
        xor_byte(&path, (size + 20) as u64); // slot 1's seq
        let s = store(dir.path());
        // Both slots whole but neither tag verifies: as far as the store can tell, written
        // with another key (or altered); removed like a garbled record.
        assert_eq!(outcome_of(s.open_file(&id, t)), "Unauthenticated");
        assert!(!exists(&path));
        assert_eq!(outcome_of(s.open_file(&id, t)), "Missing");
    }
}

#[test]
fn truncated_empty_zeroed_and_garbage_files_are_corrupt_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let id = new_id();
    let t = now();
    // (Stored as version 3: 8 bytes more than the payload, unsealed.)
    let payload = garbage(3, 292);
    let path = two_versions(dir.path(), &id, &payload, &garbage(4, 292), t);
    let full = fs::read(&path).unwrap();
    assert_eq!(full.len(), 1024);
    let mut magic_then_noise = garbage(5, full.len());
    magic_then_noise[..6].copy_from_slice(b"FBSR\x01\x00");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("one byte", full[..1].to_vec()),
        ("one header", full[..HEADER_LEN].to_vec()),
        ("odd length", full[..full.len() - 1].to_vec()),
        ("slot 0 cut", full[..512].to_vec()),
        ("header pair only", full[..2 * HEADER_LEN].to_vec()),
        ("zeros of the right length", vec![0u8; full.len()]),
        ("garbage of the right length", garbage(6, full.len())),
        ("magic then noise", magic_then_noise),
        ("large garbage", garbage(8, 600 << 10)),
        ("text", b"{\"session\": \"not ours\"}\n".to_vec()),
    ];
    let s = store(dir.path());
    for (what, bytes) in cases {
        plant(&path, &bytes);
        assert_eq!(outcome_of(s.open_file(&id, t)), "Corrupt", "{what}");
        assert!(!exists(&path), "{what}: not removed");
    }
}

#[test]
fn every_truncation_reads_as_corrupt_or_a_stored_version() {
    let dir = tempfile::tempdir().unwrap();
    let id = new_id();
    let t = now();
    let (v1, v2) = (garbage(9, 300), garbage(10, 300));
    let path = two_versions(dir.path(), &id, &v1, &v2, t);
    let full = fs::read(&path).unwrap();
    let s = store(dir.path());
    for len in 0..full.len() {
        plant(&path, &full[..len]);
        match s.open_file(&id, t) {
            Ok(Opened::Corrupt) => assert!(!exists(&path), "len {len}"),
            Ok(Opened::Found(h)) => {
                assert!(
                    h.payload == v1 || h.payload == v2,
                    "len {len}: altered data"
                );
                assert!(len % 2 == 0 && len >= 2 * (HEADER_LEN + 300), "len {len}");
            }
            Ok(other) => panic!("len {len}: {}", outcome(&other)),
            Err(e) => panic!("len {len}: {e}"),
        }
    }
}

#[test]
fn a_newer_format_version_is_reported_and_left_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let id = new_id();
    let t = now();
    let path = two_versions(dir.path(), &id, b"one", b"two", t);
    let size = slot_size_for(3) as u64;
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    for at in [4, size + 4] {
        crate::platform::write_all_at(&f, &9u16.to_le_bytes(), at).unwrap();
    }
    drop(f);
    let before = fs::read(&path).unwrap();
    let s = store(dir.path());
    assert_eq!(outcome_of(s.open_file(&id, t)), "Newer");
    assert_eq!(outcome_of(s.open_file(&id, t)), "Newer");
    assert_eq!(fs::read(&path).unwrap(), before);
}

// ---------------------------------------------------------------------------------------
// 4–5. Keys and binding to the id

#[test]
fn records_are_bound_to_the_secret_key_with_fallbacks() {
    let dir = tempfile::tempdir().unwrap();
    let id = new_id();
    let t = now();
    let a = keyed(dir.path(), &[b"key A"]);
    a.create(&id, b"signed with A", t, t).unwrap();
    let path = a.record_path(&id);
    let bytes = fs::read(&path).unwrap();
    for (what, other) in [
        ("key B", keyed(dir.path(), &[b"key B"])),
        ("no key", store(dir.path())),
    ] {
        assert_eq!(
            outcome_of(other.open_file(&id, t)),
            "Unauthenticated",
            "{what}"
        );
        assert!(!exists(&path), "{what}");
        plant(&path, &bytes);
    }
    // B with A as a fallback reads it, and re-signs with B on save.
    let ba = keyed(dir.path(), &[b"key B", b"key A"]);
    let mut h = found(ba.open_file(&id, t));
    assert_eq!(h.payload, b"signed with A");
    h.write(b"signed with B", t).unwrap();
    drop(h);
    let h = found(keyed(dir.path(), &[b"key B"]).open_file(&id, t));
    assert_eq!(h.payload, b"signed with B");
    drop(h);
    // A alone never accepts B's slot, and the older slot (A's) was scrubbed by that save:
    // a retired key opens nothing that was re-sealed.
    assert_eq!(outcome_of(a.open_file(&id, t)), "Unauthenticated");
}

#[test]
fn an_unkeyed_record_is_rejected_by_a_keyed_store() {
    let dir = tempfile::tempdir().unwrap();
    let id = new_id();
    let t = now();
    store(dir.path()).create(&id, b"planted", t, t).unwrap();
    let k = keyed(dir.path(), &[b"secret"]);
    assert_eq!(outcome_of(k.open_file(&id, t)), "Unauthenticated");
    assert!(!exists(&k.record_path(&id)));
}

#[test]
fn a_record_moved_to_another_ids_path_is_corrupt() {
    for secrets in [vec![], vec![b"secret".as_slice()]] {
        let dir = tempfile::tempdir().unwrap();
        let s = keyed(dir.path(), &secrets);
        let (victim, attacker) = (new_id(), new_id());
        let t = now();
        s.create(&attacker, b"attacker data", t, t).unwrap();
        let target = s.record_path(&victim);
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        fs::rename(s.record_path(&attacker), &target).unwrap();
        assert_eq!(outcome_of(s.open_file(&victim, t)), "Unauthenticated");
        assert!(!exists(&target));
    }
}

// ---------------------------------------------------------------------------------------
// 6. Expiry

#[test]
fn idle_timeout_expires_and_removes_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let s = timed(dir.path(), Some(3600.0), None);
    let id = new_id();
    let t = now();
    s.create(&id, b"x", t, t).unwrap();
    drop(found(s.open_file(&id, t + 3599.0)));
    assert_eq!(outcome_of(s.open_file(&id, t + 100_000.0)), "Expired");
    assert!(!exists(&s.record_path(&id)));
    assert_eq!(outcome_of(s.open_file(&id, t)), "Missing");
}

#[test]
fn idle_timeout_counts_from_the_newer_of_saved_at_and_mtime() {
    let dir = tempfile::tempdir().unwrap();
    let s = timed(dir.path(), Some(3600.0), None);
    let id = new_id();
    let t = now();
    s.create(&id, b"x", t, t).unwrap();
    let path = s.record_path(&id);
    let later = t + 5000.0;
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_modified(UNIX_EPOCH + Duration::from_secs_f64(later))
        .unwrap();
    drop(f);
    let h = found(s.open_file(&id, later + 3599.0));
    assert!((h.last_access.unwrap() - later).abs() < 1e-3);
    drop(h);
    assert_eq!(outcome_of(s.open_file(&id, later + 3601.0)), "Expired");
    // And from saved_at when that is the newer one.
    let id = new_id();
    let future = t + 50_000.0;
    s.create(&id, b"x", future, future).unwrap();
    drop(found(s.open_file(&id, future + 3599.0)));
    assert_eq!(outcome_of(s.open_file(&id, future + 3601.0)), "Expired");
}

#[test]
fn touch_refreshes_mtime_after_the_interval_and_keeps_the_session_alive() {
    let dir = tempfile::tempdir().unwrap();
    let s = timed(dir.path(), Some(3600.0), None);
    let t = now();
    let (touched, untouched) = (new_id(), new_id());
    for id in [&touched, &untouched] {
        s.create(id, b"x", t, t).unwrap();
    }
    let path = s.record_path(&touched);
    let bytes = fs::read(&path).unwrap();
    let mtime = |p: &Path| crate::platform::mtime(&fs::metadata(p).unwrap());
    let mut h = found(s.open_file(&touched, t + 100.0));
    assert!(h.refresh(t + 100.0).unwrap());
    assert!((mtime(&path) - (t + 100.0)).abs() < 1e-3);
    assert_eq!(h.last_access, Some(t + 100.0));
    // Within the interval: nothing happens.
    assert!(!h.refresh(t + 130.0).unwrap());
    assert!((mtime(&path) - (t + 100.0)).abs() < 1e-3);
    assert!(h.refresh(t + 161.0).unwrap());
    assert!((mtime(&path) - (t + 161.0)).abs() < 1e-3);
    drop(h);
    assert_eq!(fs::read(&path).unwrap(), bytes, "touch rewrote the record");
    let h = found(s.open_file(&touched, t + 161.0 + 3599.0));
    assert!((h.last_access.unwrap() - (t + 161.0)).abs() < 1e-3);
    drop(h);
    assert_eq!(
        outcome_of(s.open_file(&untouched, t + 161.0 + 3599.0)),
        "Expired"
    );
    // A fresh handle whose last access is recent does not touch.
    let mut h = found(s.open_file(&touched, t + 170.0));
    assert!(!h.refresh(t + 170.0).unwrap());
}

#[test]
fn absolute_timeout_counts_from_creation() {
    let dir = tempfile::tempdir().unwrap();
    let s = timed(dir.path(), None, Some(100.0));
    let t = now();
    let old = new_id();
    s.create(&old, b"x", t - 200.0, t).unwrap();
    assert_eq!(outcome_of(s.open_file(&old, t)), "Expired");
    assert!(!exists(&s.record_path(&old)));
    let young = new_id();
    s.create(&young, b"x", t - 50.0, t).unwrap();
    let mut h = found(s.open_file(&young, t));
    // Activity does not extend the absolute lifetime.
    h.write(b"y", t + 40.0).unwrap();
    drop(h);
    drop(found(s.open_file(&young, t + 49.0)));
    assert_eq!(outcome_of(s.open_file(&young, t + 51.0)), "Expired");
}

#[test]
fn a_clock_behind_the_last_access_does_not_expire() {
    let dir = tempfile::tempdir().unwrap();
    let s = timed(dir.path(), Some(3600.0), Some(7200.0));
    let t = now();
    let id = new_id();
    let future = t + 100_000.0;
    s.create(&id, b"x", future, future).unwrap();
    let h = found(s.open_file(&id, t));
    assert_eq!(h.last_access, Some(future));
    assert_eq!(h.payload, b"x");
}

// ---------------------------------------------------------------------------------------
// 7. Lookups create nothing; hostile filesystem states

#[test]
fn unknown_ids_are_missing_and_create_nothing() {
    let root = tempfile::tempdir().unwrap();
    // Data dir that does not exist.
    let absent = root.path().join("absent");
    let s = store(&absent);
    for _ in 0..20 {
        assert_eq!(outcome_of(s.open_file(&new_id(), now())), "Missing");
    }
    assert!(!exists(&absent));
    // Existing data dir with records and a legacy tree.
    let data = legacy_data_dir(root.path());
    let s = store(&data);
    assert!(s.legacy_present());
    s.create(&new_id(), b"x", now(), now()).unwrap();
    let before = tree(&data);
    for _ in 0..20 {
        assert_eq!(outcome_of(s.open_file(&new_id(), now())), "Missing");
    }
    assert_eq!(
        outcome_of(s.open_file(&legacy_id('c', 1), now())),
        "Missing"
    );
    assert_eq!(tree(&data), before);
}

#[test]
fn a_data_dir_that_is_a_file_gives_an_io_error_and_is_left_alone() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("data");
    fs::write(&file, b"not a directory").unwrap();
    let s = store(&file);
    assert!(!s.legacy_present());
    let id = new_id();
    // Current behaviour: an I/O error naming the failing call (not Missing).
    match s.open_file(&id, now()) {
        Err(StoreError::Io { op, source, .. }) => {
            assert_eq!(op, "open");
            assert_eq!(source.kind(), ErrorKind::NotADirectory);
        }
        Ok(o) => panic!("expected an I/O error, got {}", outcome(&o)),
        Err(e) => panic!("expected an I/O error, got {e}"),
    }
    assert!(matches!(
        s.create(&id, b"x", now(), now()),
        Err(StoreError::Io { .. })
    ));
    assert_eq!(fs::read(&file).unwrap(), b"not a directory");
    assert_eq!(tree(root.path()), BTreeSet::from([file]));
}

#[test]
#[cfg_attr(
    windows,
    ignore = "needs symlinks, which Wine (CI) cannot create; run with --ignored on Windows"
)]
fn a_symlink_at_the_record_path_is_never_followed() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let id = new_id();
    let t = now();
    // The link points to a perfectly valid record of the same id, outside the data dir.
    let elsewhere = root.path().join("elsewhere");
    let other = store(&elsewhere);
    other.create(&id, b"outside", t, t).unwrap();
    let target = other.record_path(&id);
    let target_bytes = fs::read(&target).unwrap();
    let s = store(&data);
    let link = s.record_path(&id);
    fs::create_dir_all(link.parent().unwrap()).unwrap();
    symlink(&target, &link).unwrap();
    // create() refuses to write through it.
    assert!(s.create(&id, b"through the link", t, t).is_err());
    assert_eq!(outcome_of(s.open_file(&id, t)), "Corrupt");
    assert!(!exists(&link), "link not removed");
    assert_eq!(fs::read(&target).unwrap(), target_bytes);
    // A dangling link is removed too.
    symlink(root.path().join("nowhere"), &link).unwrap();
    assert_eq!(outcome_of(s.open_file(&id, t)), "Corrupt");
    assert!(!exists(&link));
    assert!(!exists(&root.path().join("nowhere")));
}

// ---------------------------------------------------------------------------------------
// 8. Locking

#[test]
fn a_second_opener_waits_until_the_handle_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let id = new_id();
    let t = now();
    s.create(&id, b"first", t, t).unwrap();
    let h = found(s.open_file(&id, t));
    let released = AtomicBool::new(false);
    let returned = AtomicBool::new(false);
    thread::scope(|sc| {
        let waiter = sc.spawn(|| {
            let mut h2 = found(s.open_file(&id, t));
            returned.store(true, Ordering::SeqCst);
            assert!(released.load(Ordering::SeqCst), "opened while held");
            assert_eq!(h2.payload, b"first");
            h2.write(b"second", t).unwrap();
        });
        thread::sleep(SETTLE);
        assert!(!returned.load(Ordering::SeqCst));
        released.store(true, Ordering::SeqCst);
        drop(h);
        waiter.join().unwrap();
    });
    assert_eq!(found(s.open_file(&id, t)).payload, b"second");
}

#[test]
fn lock_wait_is_bounded_by_lock_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let impatient = FileStore::new(
        StoreConfig {
            lock_timeout: SHORT,
            max_waiters: None,
            ..config()
        },
        files(dir.path()),
    );
    let id = new_id();
    let t = now();
    s.create(&id, b"x", t, t).unwrap();
    let h = found(s.open_file(&id, t));
    thread::scope(|sc| {
        sc.spawn(|| {
            let start = Instant::now();
            match impatient.open_file(&id, t) {
                Err(StoreError::LockTimeout { waited }) => assert_eq!(waited, SHORT),
                Ok(o) => panic!("expected LockTimeout, got {}", outcome(&o)),
                Err(e) => panic!("expected LockTimeout, got {e}"),
            }
            assert!(start.elapsed() >= SHORT);
        })
        .join()
        .unwrap();
    });
    drop(h);
    assert_eq!(found(impatient.open_file(&id, t)).payload, b"x");
}

#[test]
fn a_waiter_on_a_deleted_session_gets_missing() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let id = new_id();
    let t = now();
    s.create(&id, b"x", t, t).unwrap();
    let h = found(s.open_file(&id, t));
    thread::scope(|sc| {
        let waiter = sc.spawn(|| outcome_of(s.open_file(&id, t)));
        thread::sleep(SETTLE);
        delete(h).unwrap();
        assert_eq!(waiter.join().unwrap(), "Missing");
    });
    assert!(!exists(&s.record_path(&id)));
}

#[test]
fn a_waiter_on_a_replaced_record_loads_the_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let id = new_id();
    let t = now();
    s.create(&id, b"x", t, t).unwrap();
    let mut h = found(s.open_file(&id, t));
    let big = garbage(11, 5000);
    thread::scope(|sc| {
        let waiter = sc.spawn(|| {
            let h2 = found(s.open_file(&id, t));
            (h2.payload.clone(), h2.origin())
        });
        thread::sleep(SETTLE);
        h.write(&big, t).unwrap();
        drop(h);
        let (payload, origin) = waiter.join().unwrap();
        assert!(payload == big);
        assert_eq!(
            origin,
            Origin::Record {
                slot: 0,
                seq: 2,
                slot_size: slot_size_for(big.len())
            }
        );
    });
}

#[test]
fn a_foreign_flock_makes_open_time_out_until_it_is_released() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStore::new(
        StoreConfig {
            lock_timeout: SHORT,
            max_waiters: None,
            ..config()
        },
        files(dir.path()),
    );
    let id = new_id();
    let t = now();
    s.create(&id, b"x", t, t).unwrap();
    let path = s.record_path(&id);
    let before = fs::read(&path).unwrap();
    // Another open file description behaves like another process.
    let foreign = File::open(&path).unwrap();
    assert!(fs4::fs_std::FileExt::try_lock_exclusive(&foreign).unwrap());
    let start = Instant::now();
    match s.open_file(&id, t) {
        Err(StoreError::LockTimeout { waited }) => assert_eq!(waited, SHORT),
        Ok(o) => panic!("expected LockTimeout, got {}", outcome(&o)),
        Err(e) => panic!("expected LockTimeout, got {e}"),
    }
    assert!(start.elapsed() >= SHORT);
    drop(foreign);
    // (Read once the lock is gone: Windows' locks are mandatory, even for readers.)
    assert_eq!(fs::read(&path).unwrap(), before);
    let mut h = found(s.open_file(&id, t));
    assert_eq!(h.payload, b"x");
    // While we hold it, the foreign side cannot lock it either.
    let foreign = File::open(&path).unwrap();
    assert!(!fs4::fs_std::FileExt::try_lock_exclusive(&foreign).unwrap());
    h.write(b"y", t).unwrap();
    drop(h);
    assert!(fs4::fs_std::FileExt::try_lock_exclusive(&foreign).unwrap());
}

/// Run in a child process by `a_session_held_by_another_process_waits_for_it`: opens the
/// session `FBS_HOLD_ID` of the store in `FBS_HOLD_DATA`, says so on stdout, and holds it
/// until its stdin closes (or it is killed).
#[test]
#[ignore = "run by a_session_held_by_another_process_waits_for_it in a child process"]
fn lock_holder_child() {
    use std::io::{BufRead as _, Read as _};
    let data = PathBuf::from(std::env::var("FBS_HOLD_DATA").unwrap());
    let id = SessionId::parse(&std::env::var("FBS_HOLD_ID").unwrap()).unwrap();
    let h = found(store(&data).open_file(&id, now()));
    println!("held {}", String::from_utf8_lossy(&h.payload));
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).unwrap();
    if line.trim() == "save" {
        let mut h = h;
        h.write(b"saved by the child", now()).unwrap();
    }
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

#[test]
fn a_session_held_by_another_process_waits_for_it() {
    use std::io::{BufRead as _, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let s = FileStore::new(
        StoreConfig {
            lock_timeout: SHORT,
            ..config()
        },
        files(dir.path()),
    );
    let id = new_id();
    let t = now();
    s.create(&id, b"x", t, t).unwrap();
    let child = || {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "store::file::tests::lock_holder_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("FBS_HOLD_DATA", dir.path())
            .env("FBS_HOLD_ID", id.to_hex())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        // (libtest's "test … ... " precedes it on the same line.)
        while !line.contains("held ") {
            line.clear();
            assert_ne!(
                out.read_line(&mut line).unwrap(),
                0,
                "the child ended early"
            );
        }
        let held = line[line.find("held ").unwrap_or(0)..].trim().to_owned();
        (child, out, held)
    };
    // Held by another process: an open here times out, the record untouched.
    let (mut holder, _out, line) = child();
    assert_eq!(line, "held x");
    match s.open_file(&id, t) {
        Err(StoreError::LockTimeout { waited }) => assert_eq!(waited, SHORT),
        Ok(o) => panic!("expected LockTimeout, got {}", outcome(&o)),
        Err(e) => panic!("expected LockTimeout, got {e}"),
    }
    // The holder saves and exits: the waiter (a thread here) gets the lock and its data.
    let slow = FileStore::new(config(), files(dir.path()));
    thread::scope(|sc| {
        let waiter = sc.spawn(|| found(slow.open_file(&id, now())).payload.clone());
        thread::sleep(SETTLE);
        let mut stdin = holder.stdin.take().unwrap();
        stdin.write_all(b"save\n").unwrap();
        drop(stdin);
        assert!(holder.wait().unwrap().success());
        assert_eq!(waiter.join().unwrap(), b"saved by the child");
    });
    // A holder that is killed releases the session (the OS drops its lock).
    let (mut holder, _out, _) = child();
    assert!(matches!(
        s.open_file(&id, now()),
        Err(StoreError::LockTimeout { .. })
    ));
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(
        found(s.open_file(&id, now())).payload,
        b"saved by the child"
    );
}

#[test]
fn a_waiter_follows_a_foreign_delete_or_replace() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let s = store(&data);
    let t = now();
    // Deleted by the foreign holder: the waiter sees the unlinked inode and finds nothing.
    let id = new_id();
    s.create(&id, b"x", t, t).unwrap();
    let path = s.record_path(&id);
    let foreign = File::open(&path).unwrap();
    assert!(fs4::fs_std::FileExt::try_lock_exclusive(&foreign).unwrap());
    thread::scope(|sc| {
        let waiter = sc.spawn(|| outcome_of(s.open_file(&id, t)));
        thread::sleep(SETTLE);
        crate::platform::remove_path(&path).unwrap();
        drop(foreign);
        assert_eq!(waiter.join().unwrap(), "Missing");
    });
    assert!(!exists(&path));
    // Replaced by the foreign holder (rename of a complete new record).
    let id = new_id();
    s.create(&id, b"old", t, t).unwrap();
    let path = s.record_path(&id);
    let other = store(&root.path().join("other"));
    other.create(&id, b"replacement", t, t).unwrap();
    let foreign = File::open(&path).unwrap();
    assert!(fs4::fs_std::FileExt::try_lock_exclusive(&foreign).unwrap());
    thread::scope(|sc| {
        let waiter = sc.spawn(|| found(s.open_file(&id, t)).payload.clone());
        thread::sleep(SETTLE);
        crate::platform::replace_path(&other.record_path(&id), &path).unwrap();
        drop(foreign);
        assert_eq!(waiter.join().unwrap(), b"replacement");
    });
}

/// Two stores over two spellings of one directory share no in-process lock, so they
/// interact only through `flock`, like two worker processes.
fn two_workers(root: &Path, data: &Path) -> (FileStore, FileStore) {
    #[cfg(unix)]
    let alias = {
        let alias = root.join("alias");
        symlink(data, &alias).unwrap();
        alias
    };
    // Windows: the same directory by its verbatim (`\\?\`) path.
    #[cfg(windows)]
    let alias = {
        let _ = root;
        PathBuf::from(format!(r"\\?\{}", data.display()))
    };
    (store(data), store(&alias))
}

#[test]
fn a_waiter_in_another_worker_follows_install_and_delete() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    fs::create_dir(&data).unwrap();
    let (w1, w2) = two_workers(root.path(), &data);
    let t = now();
    let id = new_id();
    w1.create(&id, b"small", t, t).unwrap();
    let big = garbage(12, 5000);
    let mut h = found(w1.open_file(&id, t));
    let released = AtomicBool::new(false);
    let deleted = AtomicBool::new(false);
    thread::scope(|sc| {
        let waiter = sc.spawn(|| {
            let h2 = found(w2.open_file(&id, t));
            assert!(released.load(Ordering::SeqCst), "opened while held");
            h2
        });
        thread::sleep(SETTLE);
        h.write(&big, t).unwrap(); // install: the waiter's inode is unlinked
        released.store(true, Ordering::SeqCst);
        drop(h);
        let h2 = waiter.join().unwrap();
        assert!(h2.payload == big);
        assert!(matches!(h2.origin(), Origin::Record { seq: 2, .. }));
        // Now the other way round, with a delete.
        let waiter = sc.spawn(|| {
            let r = outcome_of(w1.open_file(&id, t));
            assert!(deleted.load(Ordering::SeqCst));
            r
        });
        thread::sleep(SETTLE);
        deleted.store(true, Ordering::SeqCst);
        delete(h2).unwrap();
        assert_eq!(waiter.join().unwrap(), "Missing");
    });
    assert!(tree(&data.join("fbs1")).iter().all(|p| p.is_dir()));
}

// ---------------------------------------------------------------------------------------
// 9. Legacy Beaker files

#[test]
fn legacy_files_are_read_with_their_payloads() {
    let root = tempfile::tempdir().unwrap();
    let data = legacy_data_dir(root.path());
    let s = timed(&data, Some(3600.0), None);
    assert!(s.legacy_present());
    let t = now();
    for n in [1, 2] {
        // Beaker 1.10: the whole outer pickle, wrapped.
        let id = legacy_id('a', n);
        let file = fs::read(legacy_file(&data, &id)).unwrap();
        let h = found(s.open_file(&id, t));
        assert_eq!(h.origin(), Origin::Legacy { wrapped: true });
        assert_eq!(h.payload, file);
        assert_eq!(h.created, Some(4102444800.0));
        assert_eq!(h.last_access, Some(4102448400.0));
        drop(h);
        // Beaker 1.14: the inner pickle exactly as Beaker wrote it.
        let id = legacy_id('b', n);
        let file = fs::read(legacy_file(&data, &id)).unwrap();
        let outer = serde_pickle::value_from_slice(&file, DeOptions::new()).unwrap();
        let Some(Value::String(b64)) = dict_get(&outer, "session") else {
            panic!("fixture layout changed")
        };
        let inner = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .unwrap();
        let h = found(s.open_file(&id, t));
        assert_eq!(h.origin(), Origin::Legacy { wrapped: false });
        assert_eq!(h.payload, inner);
        assert_eq!(h.created, Some(4102444800.0));
        assert_eq!(h.last_access, Some(4102448400.0));
    }
    // Contents of the plain sessions.
    let h = found(s.open_file(&legacy_id('a', 1), t));
    let outer = serde_pickle::value_from_slice(&h.payload, DeOptions::new()).unwrap();
    let session = dict_get(&outer, "session").unwrap();
    assert_eq!(
        dict_get(session, "user"),
        Some(&Value::String("alice".into()))
    );
    drop(h);
    let h = found(s.open_file(&legacy_id('b', 1), t));
    let session = serde_pickle::value_from_slice(&h.payload, DeOptions::new()).unwrap();
    assert_eq!(dict_get(&session, "n"), Some(&Value::I64(5)));
    assert_eq!(
        dict_get(&session, "user"),
        Some(&Value::String("alice".into()))
    );
    // The object sessions carry the user's class by name.
    let h = found(s.open_file(&legacy_id('b', 2), t));
    assert!(h.payload.windows(11).any(|w| w == b"LegacyThing"));
    drop(h);
    // Reading migrated nothing.
    assert!(!exists(&data.join("fbs1")));
}

#[test]
fn expired_legacy_files_are_removed() {
    let root = tempfile::tempdir().unwrap();
    let data = legacy_data_dir(root.path());
    let s = timed(&data, Some(3600.0), None);
    for c in ['a', 'b'] {
        let id = legacy_id(c, 3);
        let file = legacy_file(&data, &id);
        assert!(exists(&file));
        assert_eq!(outcome_of(s.open_file(&id, now())), "Expired", "{c}");
        assert!(!exists(&file));
        assert_eq!(outcome_of(s.open_file(&id, now())), "Missing");
    }
    // Without an idle timeout the same kind of file is still valid.
    let root = tempfile::tempdir().unwrap();
    let data = legacy_data_dir(root.path());
    let h = found(store(&data).open_file(&legacy_id('a', 3), now()));
    assert_eq!(h.last_access, Some(1000000000.0));
}

#[test]
fn saving_a_legacy_session_migrates_it() {
    let root = tempfile::tempdir().unwrap();
    let data = legacy_data_dir(root.path());
    let s = store(&data);
    let t = now();
    for c in ['a', 'b'] {
        let id = legacy_id(c, 1);
        let file = legacy_file(&data, &id);
        let mut h = found(s.open_file(&id, t));
        h.write(b"our format", t).unwrap();
        assert!(matches!(
            h.origin(),
            Origin::Record {
                slot: 0,
                seq: 1,
                ..
            }
        ));
        assert!(!exists(&file), "{c}: legacy file left behind");
        drop(h);
        let h = found(s.open_file(&id, t));
        assert!(matches!(h.origin(), Origin::Record { .. }), "{c}");
        assert_eq!(h.payload, b"our format");
        assert_eq!(h.created, Some(4102444800.0), "{c}: creation time kept");
        #[cfg(unix)]
        assert_eq!(mode(&s.record_path(&id)), 0o600);
    }
    assert!(tmp_files(&data).is_empty());
}

#[test]
fn deleting_a_legacy_session_removes_the_legacy_file() {
    let root = tempfile::tempdir().unwrap();
    let data = legacy_data_dir(root.path());
    let s = store(&data);
    let id = legacy_id('b', 2);
    delete(found(s.open_file(&id, now()))).unwrap();
    assert!(!exists(&legacy_file(&data, &id)));
    assert_eq!(outcome_of(s.open_file(&id, now())), "Missing");
    assert!(!exists(&data.join("fbs1")));
}

#[test]
fn legacy_reading_can_be_disabled_and_follows_the_tree() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    // Built before the legacy tree exists (a rolling deploy): reads it once it appears.
    let early = store(&data);
    let data = legacy_data_dir(root.path());
    assert!(early.legacy_present());
    assert_eq!(
        outcome_of(early.open_file(&legacy_id('a', 1), now())),
        "Found"
    );
    let off = FileStore::new(
        config(),
        FileConfig {
            read_legacy: false,
            ..files(&data)
        },
    );
    assert!(!off.legacy_present());
    let before = tree(&data);
    for c in ['a', 'b'] {
        for n in 1..=3 {
            assert_eq!(
                outcome_of(off.open_file(&legacy_id(c, n), now())),
                "Missing"
            );
        }
    }
    assert_eq!(tree(&data), before);
}

#[test]
fn a_waiter_in_another_worker_follows_a_legacy_migration() {
    let root = tempfile::tempdir().unwrap();
    let data = legacy_data_dir(root.path());
    let (w1, w2) = two_workers(root.path(), &data);
    let t = now();
    let id = legacy_id('a', 2);
    let mut h = found(w1.open_file(&id, t));
    thread::scope(|sc| {
        // Finds no record yet and waits on the legacy file's lock.
        let waiter = sc.spawn(|| {
            let h2 = found(w2.open_file(&id, t));
            (h2.origin(), h2.payload.clone())
        });
        thread::sleep(SETTLE);
        h.write(b"migrated", t).unwrap();
        drop(h);
        let (origin, payload) = waiter.join().unwrap();
        assert!(matches!(origin, Origin::Record { .. }), "{origin:?}");
        assert_eq!(payload, b"migrated");
    });
    assert!(!exists(&legacy_file(&data, &id)));
}

// ---------------------------------------------------------------------------------------
// 10. Creation

#[test]
fn create_never_overwrites_an_existing_record() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let id = new_id();
    let t = now();
    s.create(&id, b"original", t, t).unwrap();
    let path = s.record_path(&id);
    let before = fs::read(&path).unwrap();
    // An id collision has its own error (FileExistsError in Python), not an I/O one.
    match s.create(&id, b"intruder", t, t) {
        Err(StoreError::IdCollision) => {}
        other => panic!("expected IdCollision, got {:?}", other.err()),
    }
    assert_eq!(fs::read(&path).unwrap(), before);
    assert_eq!(found(s.open_file(&id, t)).payload, b"original");
}

#[test]
fn create_makes_a_missing_data_dir_0700() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("a").join("b");
    let s = store(&data);
    s.create(&new_id(), b"x", now(), now()).unwrap();
    #[cfg(unix)]
    for d in [root.path().join("a"), data.clone(), data.join("fbs1")] {
        assert_eq!(mode(&d), 0o700, "{d:?}");
    }
    assert!(data.join("fbs1").is_dir());
}

#[path = "confinement_tests.rs"]
mod confinement;
