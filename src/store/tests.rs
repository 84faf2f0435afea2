//! The contract, checked the same way on every backend that runs without a server (file and
//! memory), through `Arc<dyn Store>` as the Python layer uses it; and what `build` accepts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::expiry::Expiry;
use crate::record;

fn real_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn config(idle: Option<f64>, absolute: Option<f64>) -> StoreConfig {
    StoreConfig {
        keys: Keys::new(&[b"secret".to_vec()]),
        expiry: Expiry { idle, absolute },
        lock_timeout: Duration::from_millis(100),
        max_waiters: None,
    }
}

/// A file store and a memory store with the same settings (the directory lives as long as
/// the returned guard).
fn both(idle: Option<f64>, absolute: Option<f64>) -> (tempfile::TempDir, Vec<Arc<dyn Store>>) {
    let dir = tempfile::tempdir().unwrap();
    let file = BackendConfig::File(FileConfig {
        data_dir: dir.path().join("data"),
        read_legacy: true,
        max_size: crate::store::DEFAULT_MAX_SIZE,
        generate_key: false,
    });
    let stores = vec![
        build(config(idle, absolute), file).unwrap(),
        build(config(idle, absolute), BackendConfig::Memory).unwrap(),
    ];
    (dir, stores)
}

fn status<H>(o: &Opened<H>) -> &'static str {
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

fn open(s: &dyn Store, id: &SessionId, now: f64) -> Opened<Box<dyn SessionHandle>> {
    s.open(id, now).unwrap()
}

fn found(s: &dyn Store, id: &SessionId, now: f64) -> Box<dyn SessionHandle> {
    match open(s, id, now) {
        Opened::Found(h) => h,
        other => panic!("{:?}: expected Found, got {}", s.kind(), status(&other)),
    }
}

/// Times read back from a file's mtime are exact to about a microsecond. On Windows the
/// mtime of a write is the system time of the write, which under Wine (CI, loaded) can come
/// a fraction of a second after the test read the clock: within the file store's
/// `CLOCK_SLACK` (1 s) it is kept, by design (`record_io::pin_mtime`).
fn assert_near(value: Option<f64>, expected: f64, what: BackendKind) {
    let value = value.unwrap_or(f64::NAN);
    let tolerance = if cfg!(windows) { 1.0 } else { 1e-3 };
    assert!(
        (value - expected).abs() < tolerance,
        "{what:?}: {value} != {expected}"
    );
}

fn new_id() -> SessionId {
    SessionId::generate().unwrap()
}

#[test]
fn file_and_memory_agree_on_expiry_under_a_clock_in_the_past() {
    // A faked clock a day behind the system clock, as freezegun gives.
    let t = real_now() - 86_400.0;
    let (_dir, stores) = both(Some(3600.0), None);
    for s in &stores {
        let s = &**s;
        let (saved, touched) = (new_id(), new_id());
        s.create(&saved, b"a", t, t).unwrap();
        s.create(&touched, b"b", t, t).unwrap();
        // A save at t + 1000 (in place for files: the kernel stamps the real time).
        found(s, &saved, t + 1000.0)
            .save(b"a2", t + 1000.0, None)
            .unwrap();
        // A touch at t + 2000.
        assert!(found(s, &touched, t + 2000.0).touch(t + 2000.0).unwrap());
        let h = found(s, &saved, t + 4599.0);
        assert_near(h.loaded().last_access, t + 1000.0, s.kind());
        drop(h);
        let h = found(s, &touched, t + 5599.0);
        assert_near(h.loaded().last_access, t + 2000.0, s.kind());
        drop(h);
        let kind = s.kind();
        assert_eq!(status(&open(s, &saved, t + 4601.0)), "Expired", "{kind:?}");
        assert_eq!(
            status(&open(s, &touched, t + 5601.0)),
            "Expired",
            "{kind:?}"
        );
        // A session created at t expires an hour later, not an hour after the real time.
        let created = new_id();
        s.create(&created, b"c", t, t).unwrap();
        assert_eq!(
            status(&open(s, &created, t + 3601.0)),
            "Expired",
            "{kind:?}"
        );
    }
}

#[test]
fn file_and_memory_agree_on_expiry_under_a_clock_in_the_future() {
    let t = real_now() + 7200.0;
    let (_dir, stores) = both(Some(600.0), Some(2000.0));
    for s in &stores {
        let s = &**s;
        let kind = s.kind();
        let (id, idle) = (new_id(), new_id());
        s.create(&id, b"x", t, t).unwrap();
        s.create(&idle, b"x", t, t).unwrap();
        found(s, &id, t + 500.0)
            .save(b"y", t + 500.0, None)
            .unwrap();
        assert!(found(s, &id, t + 1000.0).touch(t + 1000.0).unwrap());
        assert!(found(s, &id, t + 1599.0).touch(t + 1599.0).unwrap());
        assert_eq!(status(&open(s, &idle, t + 601.0)), "Expired", "{kind:?}");
        // The absolute lifetime counts from creation whatever the activity.
        assert_eq!(status(&open(s, &id, t + 2001.0)), "Expired", "{kind:?}");
    }
}

#[test]
fn a_save_during_a_backward_clock_step_keeps_the_session_alive() {
    // Created at t; the clock steps back two hours and the session is saved; the clock
    // comes back. The save must not record a last access two hours old.
    let t = real_now();
    let (_dir, stores) = both(Some(60.0), None);
    for s in &stores {
        let s = &**s;
        let id = new_id();
        s.create(&id, b"a", t, t).unwrap();
        found(s, &id, t - 7200.0)
            .save(b"b", t - 7200.0, None)
            .unwrap();
        let h = found(s, &id, t + 30.0);
        // The file's mtime is the system time of the writes, after `t` by what they took
        // (sealing makes that more than a millisecond in an unoptimised build).
        let last_access = h.loaded().last_access.unwrap_or(f64::NAN);
        assert!(
            (t - 1e-3..t + 1.0).contains(&last_access),
            "{:?}: {last_access} is not just after {t}",
            s.kind()
        );
        assert_eq!(h.payload(), b"b");
    }
}

#[test]
fn every_ending_releases_the_lock() {
    let t = real_now();
    let (_dir, stores) = both(Some(3600.0), None);
    for s in &stores {
        let s = &**s;
        let id = new_id();
        s.create(&id, b"v1", t, t).unwrap();
        let h = found(s, &id, t);
        // Held: another open waits for the lock timeout.
        assert!(matches!(
            s.open(&id, t),
            Err(StoreError::LockTimeout { .. })
        ));
        h.save(b"v2", t + 1.0, None).unwrap();
        // Not due yet (interval: 60 s): no write, released all the same.
        assert!(!found(s, &id, t + 2.0).touch(t + 2.0).unwrap());
        assert!(found(s, &id, t + 100.0).touch(t + 100.0).unwrap());
        let h = found(s, &id, t + 101.0);
        assert_eq!(h.payload(), b"v2");
        assert_eq!(h.loaded().created, Some(t));
        assert_near(h.loaded().last_access, t + 100.0, s.kind());
        assert_eq!(h.loaded().kind, PayloadKind::Record);
        drop(h); // a release
        found(s, &id, t + 102.0).delete().unwrap();
        assert_eq!(status(&open(s, &id, t + 103.0)), "Missing");
    }
}

#[test]
fn without_an_idle_timeout_touch_never_writes() {
    let t = real_now();
    let (_dir, stores) = both(None, Some(3600.0));
    for s in &stores {
        let s = &**s;
        let id = new_id();
        s.create(&id, b"x", t, t).unwrap();
        assert!(!found(s, &id, t + 1000.0).touch(t + 1000.0).unwrap());
        assert_near(found(s, &id, t).loaded().last_access, t, s.kind());
    }
}

#[test]
fn create_refuses_a_taken_id_on_every_backend() {
    let t = real_now();
    let (_dir, stores) = both(None, None);
    for s in &stores {
        let id = new_id();
        s.create(&id, b"first", t, t).unwrap();
        assert!(
            matches!(s.create(&id, b"second", t, t), Err(StoreError::IdCollision)),
            "{:?}",
            s.kind()
        );
        assert_eq!(found(&**s, &id, t).payload(), b"first");
    }
}

#[test]
fn walks_count_and_sweep_expired_sessions() {
    let t = real_now();
    let (_dir, stores) = both(Some(100.0), None);
    for s in &stores {
        let (live, old) = (new_id(), new_id());
        s.create(&live, b"x", t, t).unwrap();
        s.create(&old, b"y", t - 1000.0, t - 1000.0).unwrap();
        let stats = s.walk(t, WalkMode::Stats, 0).unwrap();
        assert_eq!(
            (stats.records, stats.expired, stats.live),
            (2, 1, 1),
            "{:?}",
            s.kind()
        );
        let swept = s.sweep_if_due(t, 0.0, 1).unwrap().unwrap();
        assert_eq!((swept.expired, swept.live), (1, 1), "{:?}", s.kind());
        let cleared = s.walk(t, WalkMode::Clear, 1).unwrap();
        assert_eq!(cleared.records, 1, "{:?}", s.kind());
        assert_eq!(status(&open(&**s, &live, t)), "Missing");
    }
}

#[test]
fn build_gives_the_kind_asked_for_and_connects_to_nothing() {
    let (_dir, stores) = both(None, None);
    assert_eq!(stores[0].kind(), BackendKind::File);
    assert!(stores[0].data_dir().is_some());
    assert_eq!(stores[1].kind(), BackendKind::Memory);
    assert!(stores[1].data_dir().is_none());
    assert!(stores[1].legacy_ids().is_empty());
    let redis = |url: &str| {
        let cfg = RedisConfig {
            url: url.to_owned(),
            prefix: "fbs:".to_owned(),
            connect_timeout: Duration::from_millis(100),
            io_timeout: Duration::from_millis(100),
            lock_ttl: Duration::from_secs(60),
            tls: RedisTls::default(),
            sentinel_password: None,
            wait_replicas: 0,
            wait_timeout: Duration::from_secs(1),
        };
        build(config(None, None), BackendConfig::Redis(cfg))
    };
    // Nothing listens there; building does not notice (no connection before first use).
    let s = redis("redis://127.0.0.1:9/0").unwrap();
    assert_eq!(s.kind(), BackendKind::Redis);
    assert!(s.sweep_if_due(0.0, 0.0, 0).unwrap().is_none());
    assert!(matches!(
        s.open(&new_id(), 0.0),
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(redis("not a url"), Err(StoreError::Config(_))));
}

#[test]
fn the_lock_preamble_times_out_with_the_configured_wait() {
    let cfg = config(None, None);
    let key = LockKey {
        scope: crate::lock::LockScope::unique(),
        id: new_id(),
    };
    let (held, deadline) = lock_thread(key.clone(), &cfg).unwrap();
    assert!(deadline > std::time::Instant::now());
    match lock_thread(key.clone(), &cfg) {
        Err(StoreError::LockTimeout { waited }) => assert_eq!(waited, cfg.lock_timeout),
        other => panic!("expected LockTimeout, got {:?}", other.err()),
    }
    drop(held);
    assert!(lock_thread(key, &cfg).is_ok());
}

#[test]
fn two_file_stores_on_one_directory_exclude_each_other_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let file = || {
        BackendConfig::File(FileConfig {
            data_dir: dir.path().to_path_buf(),
            read_legacy: false,
            max_size: crate::store::DEFAULT_MAX_SIZE,
            generate_key: false,
        })
    };
    let a = build(config(None, None), file()).unwrap();
    let b = build(config(None, None), file()).unwrap();
    let id = new_id();
    a.create(&id, b"x", 1.0, 1.0).unwrap();
    let h = found(&*a, &id, 1.0);
    assert!(matches!(
        b.open(&id, 1.0),
        Err(StoreError::LockTimeout { .. })
    ));
    drop(h);
    drop(found(&*b, &id, 1.0));
}

fn entry(id: SessionId, written_at: f64, meta: &[u8]) -> IndexEntry {
    IndexEntry {
        id,
        written_at,
        meta: meta.to_vec(),
    }
}

fn listed(s: &dyn Store, user: &str) -> Vec<SessionId> {
    let mut ids: Vec<SessionId> = s.index_list(user).unwrap().iter().map(|e| e.id).collect();
    ids.sort_by_key(|id| id.to_hex());
    ids
}

#[test]
fn the_user_index_puts_lists_removes_and_sweeps_alike() {
    let t = real_now();
    let (_dir, stores) = both(Some(3600.0), None);
    for s in &stores {
        let s = &**s;
        let kind = s.kind();
        let (a, b, ahead) = (new_id(), new_id(), new_id());
        assert!(listed(s, "alice").is_empty(), "{kind:?}");
        // Entries first, records after (as the Python layer orders them).
        s.index_put("alice", &entry(a, t, b"{\"ip\":\"1\"}"))
            .unwrap();
        s.index_put("alice", &entry(b, t, b"")).unwrap();
        s.index_put("alice ", &entry(ahead, t, b"")).unwrap();
        s.create(&a, b"a", t, t).unwrap();
        s.create(&b, b"b", t, t).unwrap();
        let mut both_ids = vec![a, b];
        both_ids.sort_by_key(|id| id.to_hex());
        assert_eq!(listed(s, "alice"), both_ids, "{kind:?}");
        assert_eq!(
            listed(s, "alice "),
            vec![ahead],
            "{kind:?}: users are exact strings"
        );
        // Replacing an entry keeps one, with the new metadata.
        s.index_put("alice", &entry(a, t + 1.0, b"{}")).unwrap();
        let entries = s.index_list("alice").unwrap();
        assert_eq!(entries.len(), 2, "{kind:?}");
        assert!(entries.iter().any(|e| e.id == a && e.meta == b"{}"));
        // Removing is idempotent.
        s.index_remove("alice", &b).unwrap();
        s.index_remove("alice", &b).unwrap();
        s.index_remove("nobody", &b).unwrap();
        assert_eq!(listed(s, "alice"), vec![a], "{kind:?}");
        // The sweep keeps entries with a record, and young ones without (their record may
        // be on its way); it drops old ones whose record is gone.
        assert_eq!(s.index_sweep(t + 10.0, 60.0).unwrap(), 0, "{kind:?}");
        assert_eq!(listed(s, "alice "), vec![ahead]);
        assert_eq!(s.index_sweep(t + 100.0, 60.0).unwrap(), 1, "{kind:?}");
        assert!(listed(s, "alice ").is_empty());
        found(s, &a, t + 1.0).delete().unwrap();
        assert_eq!(s.index_sweep(t + 100.0, 60.0).unwrap(), 1, "{kind:?}");
        assert!(listed(s, "alice").is_empty(), "{kind:?}");
    }
}

/// Every byte of every file under `dir`.
fn all_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(all_bytes(&path));
        } else {
            out.extend(std::fs::read(&path).unwrap());
        }
    }
    out
}

fn file_store(dir: &std::path::Path, keys: Keys) -> Arc<dyn Store> {
    let cfg = StoreConfig {
        keys,
        ..config(Some(600.0), None)
    };
    let file = BackendConfig::File(FileConfig {
        data_dir: dir.to_path_buf(),
        read_legacy: true,
        max_size: crate::store::DEFAULT_MAX_SIZE,
        generate_key: true,
    });
    build(cfg, file).unwrap()
}

#[test]
fn file_records_are_sealed_rotated_and_rekeyed_in_place() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let marker = b"MARKER-rust-3f9d1c-oauth-token";
    let old = file_store(&dir, Keys::new(&[b"old".to_vec()]));
    let rotated = file_store(&dir, Keys::new(&[b"new".to_vec(), b"old".to_vec()]));
    let new = file_store(&dir, Keys::new(&[b"new".to_vec()]));
    let t = real_now() - 100.0;
    let (a, b) = (new_id(), new_id());
    old.create(&a, marker, t, t).unwrap();
    // A 0.3 record (version 1: authenticated only, bound to the id) under the old key.
    let v1 = record::encode_slot_v2(
        &Keys::new(&[b"old".to_vec()]).encrypting(false),
        &b,
        1,
        t,
        t,
        marker,
    )
    .unwrap();
    let path = crate::shard::record_path(&dir, &b);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let size = record::slot_size_for(v1.len() - record::HEADER_LEN);
    let mut file = v1.clone();
    file.resize(2 * size, 0);
    std::fs::write(&path, &file).unwrap();
    let bytes = all_bytes(&dir);
    let found_at = |hay: &[u8]| hay.windows(marker.len()).filter(|w| w == marker).count();
    assert_eq!(
        found_at(&bytes),
        1,
        "only the unencrypted record shows the marker"
    );

    // Through the fallback both open, stale.
    let h = found(&*rotated, &a, t + 1.0);
    assert!(h.loaded().stale);
    assert_eq!(h.payload(), marker);
    drop(h);

    let dry = rotated.walk(t + 1.0, WalkMode::RekeyDryRun, 1).unwrap();
    assert_eq!(
        (dry.records, dry.rekeyed, dry.current, dry.plain),
        (2, 1, 0, 1)
    );
    assert_eq!(all_bytes(&dir), bytes, "a dry run writes nothing");
    let done = rotated.walk(t + 1.0, WalkMode::Rekey, 2).unwrap();
    assert_eq!(
        (done.rekeyed, done.current, done.plain, done.errors),
        (1, 0, 1, 0)
    );
    let again = rotated.walk(t + 1.0, WalkMode::Rekey, 2).unwrap();
    assert_eq!((again.rekeyed, again.current, again.plain), (0, 1, 1));

    // The new key alone opens the re-sealed record, with its times kept.
    let h = found(&*new, &a, t + 2.0);
    assert!(!h.loaded().stale);
    assert_eq!(h.payload(), marker);
    assert_near(h.loaded().created, t, BackendKind::File);
    assert_near(h.loaded().last_access, t, BackendKind::File);
    drop(h);
    // The plain record opens through the fallback, and its next save seals it.
    let h = found(&*rotated, &b, t + 2.0);
    assert!(h.loaded().stale);
    h.save(marker, t + 2.0, None).unwrap();
    assert_eq!(
        found_at(&all_bytes(&dir)),
        0,
        "no record shows the marker any more"
    );
    let h = found(&*new, &b, t + 3.0);
    assert!(!h.loaded().stale);
    drop(h);
    // The old key alone opens nothing now: no session (and the record is removed).
    assert_eq!(status(&open(&*old, &a, t + 3.0)), "Unauthenticated");
    assert_eq!(status(&open(&*new, &a, t + 3.0)), "Missing");
}

#[test]
fn the_generated_key_seals_too_unless_encryption_is_off() {
    let root = tempfile::tempdir().unwrap();
    let marker = b"MARKER-generated-key-77ab";
    for (name, encrypt, shown) in [("on", true, 0), ("off", false, 1)] {
        let dir = root.path().join(name);
        let store = file_store(&dir, Keys::new(&[]).encrypting(encrypt));
        let t = real_now();
        let id = new_id();
        store.create(&id, marker, t, t).unwrap();
        let bytes = all_bytes(&dir);
        let count = bytes.windows(marker.len()).filter(|w| w == marker).count();
        assert_eq!(count, shown, "SESSION_ENCRYPT={encrypt}");
        assert_eq!(found(&*store, &id, t).payload(), marker);
    }
}
