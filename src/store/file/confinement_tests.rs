//! Confinement to the data directory (issue 14, items 1, 7a, 7e) and what `stats` counts
//! (issue 15, item 11): symlinks where directories belong are never followed, only names
//! this package writes are removed, non-files at record paths give a fresh session.
//! A child of `tests`, whose helpers it uses.

use super::*;
use crate::report::{Report, WalkMode};
use filetime_free::set_age;

/// Ages files without a dependency: `File::set_modified`.
mod filetime_free {
    use std::fs::OpenOptions;
    use std::path::Path;
    use std::time::{Duration, SystemTime};

    pub fn set_age(path: &Path, secs: u64) {
        let f = OpenOptions::new().write(true).open(path).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(secs))
            .unwrap();
    }
}

/// A directory outside the data dir holding files that must survive everything:
/// old and fresh, with names a sweep might like (`.cache`, `.lock`, `.tmp`).
fn victim(root: &Path) -> (PathBuf, Vec<PathBuf>) {
    let dir = root.join("victim");
    fs::create_dir_all(dir.join(".ssh")).unwrap();
    fs::create_dir_all(dir.join("a").join("aa")).unwrap();
    let files = vec![
        dir.join("report.pdf"),
        dir.join(".ssh").join("id_rsa"),
        dir.join("authorized_keys"),
        dir.join("x.cache"),
        dir.join("x.lock"),
        dir.join("x.tmp"),
        dir.join("a")
            .join("aa")
            .join(format!("{}.cache", "a".repeat(32))),
        dir.join("a")
            .join("aa")
            .join(format!("aa{}.lock", "0".repeat(38))),
    ];
    for (i, f) in files.iter().enumerate() {
        plant(f, b"precious");
        // Half of them older than any timeout.
        if i % 2 == 0 {
            set_age(f, 10 * 86400);
        }
    }
    (dir, files)
}

fn intact(files: &[PathBuf]) {
    for f in files {
        assert_eq!(fs::read(f).ok().as_deref(), Some(&b"precious"[..]), "{f:?}");
    }
}

fn walk(s: &FileStore, mode: WalkMode) -> Report {
    Store::walk(s, now() + 7.0 * 86400.0, mode, 2).unwrap()
}

/// An id whose record lives in shard `shard`.
fn id_in_shard(shard: &str) -> SessionId {
    loop {
        let id = new_id();
        if shard::digest(&id).starts_with(shard) {
            return id;
        }
    }
}

fn short_idle(dir: &Path) -> FileStore {
    timed(dir, Some(60.0), None)
}

#[test]
#[cfg_attr(
    windows,
    ignore = "needs symlinks, which Wine (CI) cannot create; run with --ignored on Windows"
)]
fn a_symlinked_shard_is_never_followed() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let (victim, files) = victim(root.path());
    let s = short_idle(&data);
    // A real session elsewhere, so fbs1 exists.
    let kept = new_id();
    s.create(&kept, b"mine", now(), now()).unwrap();
    let shard = (0..=255u8)
        .map(|b| format!("{b:02x}"))
        .find(|x| !exists(&data.join("fbs1").join(x)))
        .unwrap();
    symlink(&victim, data.join("fbs1").join(&shard)).unwrap();
    // A record-like name in the victim dir is not ours either.
    let id = id_in_shard(&shard);
    let fake = victim.join(shard::digest(&id));
    plant(&fake, b"precious");
    set_age(&fake, 10 * 86400);

    // Request path: no session through the link. The walk reports it and leaves it.
    assert_eq!(outcome_of(s.open_file(&id, now())), "Missing");
    let stats = walk(&s, WalkMode::Stats);
    assert_eq!(stats.symlinks, 1);
    assert_eq!(stats.records, 1, "{stats:?}");
    let r = walk(&s, WalkMode::Sweep);
    assert_eq!(r.symlinks, 1);
    assert!(fs::symlink_metadata(data.join("fbs1").join(&shard))
        .unwrap()
        .file_type()
        .is_symlink());
    // A new session there replaces the link (never its target) with the shard directory.
    s.create(&id, b"mine too", now(), now()).unwrap();
    assert!(fs::symlink_metadata(data.join("fbs1").join(&shard))
        .unwrap()
        .file_type()
        .is_dir());
    let r = walk(&s, WalkMode::Clear);
    // (The sweep a week later removed the first session.)
    assert_eq!((r.symlinks, r.records), (0, 1));
    intact(&files);
    intact(&[fake]);
    assert_eq!(fs::read_dir(&victim).unwrap().count(), 8);
}

#[test]
#[cfg_attr(
    windows,
    ignore = "needs symlinks, which Wine (CI) cannot create; run with --ignored on Windows"
)]
fn a_symlinked_records_dir_is_never_followed() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let (victim, files) = victim(root.path());
    // The victim looks like a store: a shard with an expired-looking record name.
    let id = new_id();
    let d = shard::digest(&id);
    fs::create_dir_all(victim.join(&d[..2])).unwrap();
    let fake = victim.join(&d[..2]).join(&d);
    plant(&fake, b"precious");
    set_age(&fake, 10 * 86400);
    fs::create_dir_all(&data).unwrap();
    symlink(&victim, data.join("fbs1")).unwrap();
    let s = short_idle(&data);

    assert_eq!(outcome_of(s.open_file(&id, now())), "Missing");
    for mode in [WalkMode::Stats, WalkMode::Sweep] {
        let r = walk(&s, mode);
        assert_eq!((r.symlinks, r.records, r.removed), (1, 0, 0), "{mode:?}");
    }
    // A new session replaces the link (never its target) with the store's own directory.
    s.create(&new_id(), b"x", now(), now()).unwrap();
    assert!(!fs::symlink_metadata(data.join("fbs1"))
        .unwrap()
        .file_type()
        .is_symlink());
    let r = walk(&s, WalkMode::Clear);
    assert_eq!((r.symlinks, r.records, r.removed), (0, 1, 1));
    intact(&files);
    intact(&[fake]);
}

#[test]
#[cfg_attr(
    windows,
    ignore = "needs symlinks, which Wine (CI) cannot create; run with --ignored on Windows"
)]
fn a_symlinked_legacy_tree_is_never_followed_at_any_depth() {
    let root = tempfile::tempdir().unwrap();
    let data = legacy_data_dir(root.path());
    let (victim, files) = victim(root.path());
    // container_file/<c> a link (below the top), and container_file_lock a link (the top).
    symlink(&victim, data.join("container_file").join("f")).unwrap();
    symlink(&victim, data.join("container_file_lock")).unwrap();
    let s = short_idle(&data);
    let stats = walk(&s, WalkMode::Stats);
    assert_eq!(stats.symlinks, 2);
    assert_eq!(stats.legacy, 6);
    walk(&s, WalkMode::Sweep);
    walk(&s, WalkMode::Clear);
    intact(&files);
    assert_eq!(s.legacy_ids().len(), 0, "all legacy files cleared");

    // container_file itself a link: nothing below it is read, listed or removed.
    let data2 = root.path().join("data2");
    fs::create_dir_all(&data2).unwrap();
    symlink(&victim, data2.join("container_file")).unwrap();
    let s2 = short_idle(&data2);
    assert!(s2.legacy_ids().is_empty());
    let a_id = SessionId::parse(&"a".repeat(32)).unwrap();
    assert_eq!(outcome_of(s2.open_file(&a_id, now())), "Missing");
    for mode in [WalkMode::Stats, WalkMode::Sweep, WalkMode::Clear] {
        let r = walk(&s2, mode);
        assert_eq!((r.symlinks, r.legacy, r.removed), (1, 0, 0), "{mode:?}");
    }
    intact(&files);
}

#[test]
fn only_names_this_package_writes_are_removed() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let s = short_idle(&data);
    let id = new_id();
    s.create(&id, b"x", now(), now()).unwrap();
    let shard_dir = s.record_path(&id).parent().unwrap().to_path_buf();
    let foreign = [
        shard_dir.join("report.pdf"),
        shard_dir.join("x.tmp"),
        shard_dir.join("notes.cache"),
        data.join("fbs1").join("README"),
        data.join("container_file_lock")
            .join("a")
            .join("aa")
            .join("old.lock"),
        data.join("container_file")
            .join("a")
            .join("aa")
            .join("evil.cache"),
    ];
    for f in &foreign {
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        plant(f, b"precious");
        set_age(f, 10 * 86400);
    }
    let stats = walk(&s, WalkMode::Stats);
    assert_eq!(stats.foreign, 6, "{stats:?}");
    assert_eq!(
        stats.records, 1,
        "foreign files are not sessions: {stats:?}"
    );
    assert_eq!(stats.temp, 0);
    let swept = walk(&s, WalkMode::Sweep);
    assert_eq!(swept.removed, 1, "only the expired record: {swept:?}");
    walk(&s, WalkMode::Clear);
    intact(&foreign);
}

#[test]
fn a_directory_at_a_record_path_gives_a_fresh_session_and_is_swept() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let s = store(&data);
    let (empty, full) = (new_id(), new_id());
    for id in [&empty, &full] {
        fs::create_dir_all(s.record_path(id)).unwrap();
    }
    plant(&s.record_path(&full).join("inside"), b"precious");
    // Not an error (a permanent 500): a corrupt record, i.e. a fresh session.
    assert_eq!(outcome_of(s.open_file(&empty, now())), "Corrupt");
    assert!(
        !exists(&s.record_path(&empty)),
        "an empty directory is removed"
    );
    assert_eq!(outcome_of(s.open_file(&full, now())), "Corrupt");
    assert_eq!(outcome_of(s.open_file(&full, now())), "Corrupt");
    // The sweeper reports what it cannot remove, removes what it can.
    fs::create_dir_all(s.record_path(&empty)).unwrap();
    let stats = walk(&s, WalkMode::Stats);
    assert_eq!((stats.corrupt, stats.records), (2, 0));
    let swept = walk(&s, WalkMode::Sweep);
    assert_eq!((swept.corrupt, swept.removed, swept.foreign), (1, 1, 1));
    assert!(!exists(&s.record_path(&empty)));
    assert_eq!(
        fs::read(s.record_path(&full).join("inside")).unwrap(),
        b"precious"
    );
}

#[test]
fn stats_counts_a_garbled_record_as_corrupt_at_once() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let s = store(&data);
    let (good, bad) = (new_id(), new_id());
    for id in [&good, &bad] {
        s.create(id, b"payload", now(), now()).unwrap();
    }
    let path = s.record_path(&bad);
    let len = fs::metadata(&path).unwrap().len() as usize;
    plant(&path, &garbage(7, len));
    let stats = Store::walk(&s, now(), WalkMode::Stats, 1).unwrap();
    assert_eq!((stats.records, stats.live, stats.corrupt), (2, 1, 1));
    // A sweep leaves a young one (it may be a record being written) ...
    let swept = Store::walk(&s, now(), WalkMode::Sweep, 1).unwrap();
    assert_eq!(swept.removed, 0);
    // ... and its next use removes it.
    assert_eq!(outcome_of(s.open_file(&bad, now())), "Corrupt");
    assert!(!exists(&path));
}

#[test]
fn a_directory_at_the_stamp_does_not_stop_automatic_sweeps() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let s = timed(&data, Some(60.0), None);
    let stamp = data.join(sweep::STAMP);
    fs::create_dir_all(stamp.join("planted")).unwrap();
    let old = new_id();
    s.create(&old, b"x", now() - 3600.0, now() - 3600.0)
        .unwrap();
    set_age(&s.record_path(&old), 3600);
    let t = now();
    let report = s.sweep_if_due(t, 100.0, 1).unwrap().expect("swept anyway");
    assert_eq!(report.removed, 1);
    assert_eq!(report.foreign, 1, "the obstacle is reported");
    // Still at most once per interval (in this process).
    assert!(s.sweep_if_due(t + 1.0, 100.0, 1).unwrap().is_none());
    assert!(s.sweep_if_due(t + 101.0, 100.0, 1).unwrap().is_some());
    assert!(exists(&stamp.join("planted")));

    // An empty directory there is replaced by the stamp.
    let data2 = root.path().join("data2");
    let s2 = store(&data2);
    fs::create_dir_all(data2.join(sweep::STAMP)).unwrap();
    assert!(s2.sweep_if_due(now(), 100.0, 1).unwrap().is_some());
    assert!(fs::symlink_metadata(data2.join(sweep::STAMP))
        .unwrap()
        .is_file());

    // A symlink there: the link is replaced, its target untouched (not under Wine, which
    // cannot create symlinks).
    if cfg!(windows) {
        return;
    }
    let data3 = root.path().join("data3");
    fs::create_dir_all(&data3).unwrap();
    let target = root.path().join("target");
    plant(&target, b"precious");
    symlink(&target, data3.join(sweep::STAMP)).unwrap();
    let s3 = store(&data3);
    assert!(s3.sweep_if_due(now(), 100.0, 1).unwrap().is_some());
    assert_eq!(fs::read(&target).unwrap(), b"precious");
    assert!(fs::symlink_metadata(data3.join(sweep::STAMP))
        .unwrap()
        .is_file());
}

#[test]
#[cfg_attr(
    windows,
    ignore = "Wine (CI) deletes directories the store holds open only when they close"
)]
fn cached_directories_follow_a_data_dir_removed_or_replaced() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let s = store(&data);
    let id = new_id();
    s.create(&id, b"one", now(), now()).unwrap();
    drop(found(s.open_file(&id, now())));
    // Removed while running: a miss, then the next create recreates it.
    fs::remove_dir_all(&data).unwrap();
    assert_eq!(outcome_of(s.open_file(&id, now())), "Missing");
    s.create(&id, b"two", now(), now()).unwrap();
    assert!(exists(&s.record_path(&id)));
    // Replaced under its path (moved away, a new one written by another process): the
    // records there are found, new ones go there, none into the old directory.
    fs::rename(&data, root.path().join("old")).unwrap();
    let other = store(&data);
    let theirs = new_id();
    other.create(&theirs, b"theirs", now(), now()).unwrap();
    assert_eq!(found(s.open_file(&theirs, now())).payload, b"theirs");
    let mine = new_id();
    s.create(&mine, b"mine", now(), now()).unwrap();
    assert!(exists(&s.record_path(&mine)));
}

#[test]
#[cfg_attr(
    windows,
    ignore = "needs symlinks, which Wine (CI) cannot create; run with --ignored on Windows"
)]
fn the_user_index_never_follows_a_symlink_and_removes_only_its_names() {
    use crate::store::index::user_digest;
    use crate::store::IndexEntry;
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let (victim, files) = victim(root.path());
    let s = short_idle(&data);
    s.create(&new_id(), b"mine", now(), now()).unwrap();
    // A symlink where the index's directory belongs: replaced, never followed.
    symlink(&victim, data.join("users1")).unwrap();
    let id = new_id();
    let e = IndexEntry {
        id,
        written_at: now(),
        meta: Vec::new(),
    };
    s.index_put("alice", &e).unwrap();
    assert!(fs::symlink_metadata(data.join("users1")).unwrap().is_dir());
    intact(&files);
    // A symlink at a user's directory: nothing listed through it, the link stays, and the
    // next put replaces it.
    let u = user_digest("bob");
    let shard_dir = data.join("users1").join(&u[..2]);
    fs::create_dir_all(&shard_dir).unwrap();
    symlink(&victim, shard_dir.join(&u)).unwrap();
    let fake = victim.join(shard::digest(&id));
    let entry_bytes = e.encode(s.shared.keys.signing().unwrap()).unwrap();
    plant(&fake, &entry_bytes);
    assert!(Store::index_list(&s, "bob").unwrap().is_empty());
    // A symlink at an entry's name: not read, and not removed either (only files are).
    let alice_dir = data.join("users1").join(&user_digest("alice")[..2]);
    let alice_dir = alice_dir.join(user_digest("alice"));
    let name = shard::digest(&id);
    fs::remove_file(alice_dir.join(&name)).unwrap();
    symlink(&fake, alice_dir.join(&name)).unwrap();
    assert!(Store::index_list(&s, "alice").unwrap().is_empty());
    // Foreign names are left alone by the sweep, however old.
    plant(&alice_dir.join("notes.txt"), b"precious");
    let swept = Store::index_sweep(&s, now() + 86400.0, 0.0).unwrap();
    assert_eq!(swept, 0);
    assert!(alice_dir.join("notes.txt").exists());
    s.index_put("bob", &e).unwrap();
    assert!(fs::symlink_metadata(shard_dir.join(&u)).unwrap().is_dir());
    intact(&files);
    intact(&[victim.join("report.pdf")]);
    assert_eq!(fs::read(&fake).unwrap(), entry_bytes);
}
