//! The in-process memory backend (`SESSION_TYPE = 'memory'`): for tests and development.
//! Sessions live in a map owned by one store of one process, so they are lost on restart and
//! not shared between worker processes (the Python side warns when it detects several).
//! Locking and expiry behave as in the other backends: the shared lock preamble (scoped to
//! this store instance), the shared expiry rules, the last access kept as the time of the
//! last save or touch on the injected clock.

use std::collections::HashMap;
use std::sync::Arc;

use std::sync::{Mutex, MutexGuard};

use crate::error::{StoreError, StoreResult};
use crate::expiry;
use crate::lock::{clone_if_free, lock, ForkLocal, LockKey, LockScope, ThreadLock};
use crate::record;
use crate::report::{Report, WalkMode};
use crate::sid::SessionId;
use crate::store::{
    lock_thread, BackendKind, IndexEntry, Loaded, Opened, PayloadKind, SessionHandle, Store,
    StoreConfig,
};

/// A session as kept: its record as one value (`record`, as the network backends store
/// it), shared with the handles that read it, so a large value is neither copied nor
/// opened until it is used.
#[derive(Clone)]
struct Entry {
    value: Arc<Vec<u8>>,
    created: f64,
    last_access: f64,
}

struct Shared {
    cfg: StoreConfig,
    scope: LockScope,
    /// Per fork generation: a forked child starts with a copy of its parent's sessions
    /// (or none, if a parent thread held them at the fork), never with a mutex a vanished
    /// thread holds.
    data: ForkLocal<Mutex<HashMap<SessionId, Entry>>>,
    /// The per-user index (`SESSION_USER_KEY`), by user id then session; per fork
    /// generation as `data`.
    users: ForkLocal<Mutex<Users>>,
}

/// The per-user index of a memory store.
type Users = HashMap<String, HashMap<SessionId, IndexEntry>>;

/// Sessions kept in this process's memory.
pub struct MemoryStore {
    shared: Arc<Shared>,
}

/// A locked session of a `MemoryStore`.
pub struct MemoryHandle {
    store: Arc<Shared>,
    id: SessionId,
    entry: Entry,
    payload: Vec<u8>,
    segments: record::Segments,
    _lock: ThreadLock,
}

impl Shared {
    fn data(&self) -> MutexGuard<'_, HashMap<SessionId, Entry>> {
        lock(self.data.get_or_inherit(clone_if_free))
    }

    fn users(&self) -> MutexGuard<'_, Users> {
        lock(self.users.get_or_inherit(clone_if_free))
    }

    fn expired(&self, now: f64, e: &Entry) -> bool {
        self.cfg
            .expiry
            .is_expired(now, Some(e.created), Some(e.last_access))
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new(cfg: StoreConfig) -> Self {
        MemoryStore {
            shared: Arc::new(Shared {
                cfg,
                scope: LockScope::unique(),
                data: ForkLocal::here(),
                users: ForkLocal::here(),
            }),
        }
    }
}

impl Store for MemoryStore {
    fn kind(&self) -> BackendKind {
        BackendKind::Memory
    }

    fn config(&self) -> &StoreConfig {
        &self.shared.cfg
    }

    fn open(&self, id: &SessionId, now: f64) -> StoreResult<Opened<Box<dyn SessionHandle>>> {
        let key = LockKey {
            scope: self.shared.scope.clone(),
            id: *id,
        };
        let (lock, _) = lock_thread(key, &self.shared.cfg)?;
        let mut data = self.shared.data();
        let Some(entry) = data.get(id).cloned() else {
            return Ok(Opened::Missing);
        };
        if self.shared.expired(now, &entry) {
            data.remove(id);
            return Ok(Opened::Expired);
        }
        // Written by this process with its keys: it only fails to check if garbled.
        let verified =
            match record::check_owned(&self.shared.cfg.keys, id, Arc::clone(&entry.value)) {
                Ok(v) => v,
                Err(refused) => {
                    data.remove(id);
                    return Ok(refused.into());
                }
            };
        Ok(Opened::Found(Box::new(MemoryHandle {
            store: Arc::clone(&self.shared),
            id: *id,
            entry,
            payload: verified.payload,
            segments: verified.segments,
            _lock: lock,
        })))
    }

    fn create_payload(
        &self,
        id: &SessionId,
        payload: &record::Payload<'_>,
        created: f64,
        now: f64,
    ) -> StoreResult<()> {
        let value = record::encode_slot(&self.shared.cfg.keys, id, 1, created, now, *payload)?;
        let mut data = self.shared.data();
        if data.contains_key(id) {
            return Err(StoreError::IdCollision);
        }
        let entry = Entry {
            value: Arc::new(value),
            created,
            last_access: now,
        };
        data.insert(*id, entry);
        Ok(())
    }

    /// Counts (`Stats`), removes expired sessions (`Sweep`) or everything (`Clear`).
    fn walk(&self, now: f64, mode: WalkMode, _threads: usize) -> StoreResult<Report> {
        let mut report = Report::default();
        let mut data = self.shared.data();
        let before = data.len() as u64;
        report.records = before;
        crate::report::count_walked(before);
        for entry in data.values() {
            report.bytes += entry.value.len() as u64;
            if self.shared.expired(now, entry) {
                report.expired += 1;
            }
        }
        match mode {
            // Nothing here is sealed: the sessions never leave this process.
            WalkMode::Stats | WalkMode::Rekey | WalkMode::RekeyDryRun => {}
            WalkMode::Sweep => data.retain(|_, e| !self.shared.expired(now, e)),
            WalkMode::Clear => data.clear(),
        }
        report.removed = before - data.len() as u64;
        // As the file store counts: the expired are not live, whether or not this walk
        // removed them.
        report.live = match mode {
            WalkMode::Stats | WalkMode::Rekey | WalkMode::RekeyDryRun => before - report.expired,
            WalkMode::Sweep | WalkMode::Clear => data.len() as u64,
        };
        Ok(report)
    }

    fn index_put(&self, user: &str, entry: &IndexEntry) -> StoreResult<()> {
        let mut users = self.shared.users();
        let sessions = users.entry(user.to_owned()).or_default();
        sessions.insert(entry.id, entry.clone());
        Ok(())
    }

    fn index_remove(&self, user: &str, id: &SessionId) -> StoreResult<()> {
        let mut users = self.shared.users();
        if let Some(sessions) = users.get_mut(user) {
            sessions.remove(id);
            if sessions.is_empty() {
                users.remove(user);
            }
        }
        Ok(())
    }

    fn index_list(&self, user: &str) -> StoreResult<Vec<IndexEntry>> {
        let users = self.shared.users();
        Ok(users
            .get(user)
            .map(|sessions| sessions.values().cloned().collect())
            .unwrap_or_default())
    }

    fn index_sweep(&self, now: f64, grace: f64) -> StoreResult<u64> {
        // The record map first, then the index (never both locks in the other order).
        let live: std::collections::HashSet<SessionId> =
            self.shared.data().keys().copied().collect();
        let mut users = self.shared.users();
        let mut removed = 0u64;
        for sessions in users.values_mut() {
            let before = sessions.len();
            sessions.retain(|id, e| live.contains(id) || now - e.written_at <= grace);
            removed += (before - sessions.len()) as u64;
        }
        users.retain(|_, sessions| !sessions.is_empty());
        Ok(removed)
    }
}

impl SessionHandle for MemoryHandle {
    fn id(&self) -> &SessionId {
        &self.id
    }

    fn loaded(&self) -> Loaded {
        Loaded {
            kind: PayloadKind::Record,
            created: Some(self.entry.created),
            last_access: Some(self.entry.last_access),
            // Kept as Python objects' pickles in this process: never sealed, never stale.
            stale: false,
        }
    }

    fn payload(&self) -> &[u8] {
        &self.payload
    }

    fn take_segments(&mut self) -> record::Segments {
        std::mem::take(&mut self.segments)
    }

    fn save_payload(
        self: Box<Self>,
        payload: &record::Payload<'_>,
        now: f64,
        _created: Option<f64>,
    ) -> StoreResult<()> {
        let (created, seq) = (self.entry.created, 1);
        let last_access = expiry::save_time(Some(self.entry.last_access), now);
        let keys = &self.store.cfg.keys;
        let value = record::encode_slot(keys, &self.id, seq, created, last_access, *payload)?;
        let entry = Entry {
            value: Arc::new(value),
            created,
            last_access,
        };
        self.store.data().insert(self.id, entry);
        Ok(())
    }

    fn touch(self: Box<Self>, now: f64) -> StoreResult<bool> {
        let due = (self.store.cfg.expiry).touch_due(Some(self.entry.last_access), now);
        if due {
            if let Some(entry) = self.store.data().get_mut(&self.id) {
                entry.last_access = now;
            }
        }
        Ok(due)
    }

    fn delete(self: Box<Self>) -> StoreResult<()> {
        self.store.data().remove(&self.id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expiry::Expiry;
    use crate::record::Keys;
    use std::time::Duration;

    fn store(idle: Option<f64>) -> MemoryStore {
        MemoryStore::new(StoreConfig {
            keys: Keys::new(&[]),
            expiry: Expiry {
                idle,
                absolute: None,
            },
            lock_timeout: Duration::from_millis(50),
            max_waiters: None,
        })
    }

    fn found(o: Opened<Box<dyn SessionHandle>>) -> Box<dyn SessionHandle> {
        match o {
            Opened::Found(h) => h,
            _ => panic!("expected Found"),
        }
    }

    #[test]
    fn round_trip_expiry_and_locking() {
        let s = store(Some(10.0));
        let id = SessionId::generate().unwrap();
        assert!(matches!(s.open(&id, 0.0).unwrap(), Opened::Missing));
        s.create(&id, b"abc", 1.0, 1.0).unwrap();
        let h = found(s.open(&id, 2.0).unwrap());
        assert_eq!(h.payload(), b"abc");
        // Locked: a second open times out.
        assert!(matches!(
            s.open(&id, 2.0),
            Err(StoreError::LockTimeout { .. })
        ));
        h.save(b"xyz", 3.0, None).unwrap();
        let h = found(s.open(&id, 12.0).unwrap());
        assert_eq!(h.payload(), b"xyz");
        assert_eq!(h.loaded().created, Some(1.0));
        assert_eq!(h.loaded().last_access, Some(3.0));
        drop(h);
        assert!(matches!(s.open(&id, 100.0).unwrap(), Opened::Expired));
        assert!(matches!(s.open(&id, 100.0).unwrap(), Opened::Missing));
    }

    #[test]
    fn create_never_overwrites() {
        let s = store(None);
        let id = SessionId::generate().unwrap();
        s.create(&id, b"first", 1.0, 1.0).unwrap();
        assert!(matches!(
            s.create(&id, b"second", 1.0, 1.0),
            Err(StoreError::IdCollision)
        ));
        assert_eq!(found(s.open(&id, 1.0).unwrap()).payload(), b"first");
    }

    #[test]
    fn two_stores_never_share_sessions_or_locks() {
        let (a, b) = (store(None), store(None));
        let id = SessionId::generate().unwrap();
        a.create(&id, b"a", 1.0, 1.0).unwrap();
        b.create(&id, b"b", 1.0, 1.0).unwrap();
        let ha = found(a.open(&id, 1.0).unwrap());
        let hb = found(b.open(&id, 1.0).unwrap());
        assert_eq!((ha.payload(), hb.payload()), (&b"a"[..], &b"b"[..]));
    }
}
