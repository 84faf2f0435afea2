//! The in-process memory backend (`SESSION_TYPE = 'memory'`): for tests and development.
//! Sessions live in a map owned by one process, so they are lost on restart and not shared
//! between worker processes (the Python side warns when it detects several). Locking and
//! expiry behave as in the file backend: the same per-session `ThreadLock`, the same idle
//! timeout and absolute lifetime checks.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use crate::error::{StoreError, StoreResult};
use crate::lock::ThreadLock;
use crate::sid::SessionId;
use crate::store::{expired, Opened, StoreConfig};
use crate::sweep::Report;

static NEXT_UID: AtomicU64 = AtomicU64::new(1);

#[derive(Clone)]
struct Entry {
    payload: Arc<Vec<u8>>,
    created: f64,
    last_access: f64,
}

/// Sessions kept in this process's memory.
pub struct MemoryStore {
    cfg: StoreConfig,
    uid: u64,
    data: Mutex<HashMap<SessionId, Entry>>,
}

/// A locked session of a `MemoryStore`.
pub struct MemoryHandle {
    id: SessionId,
    /// The stored payload as loaded.
    pub payload: Arc<Vec<u8>>,
    /// Creation time.
    pub created: f64,
    /// Previous access time.
    pub last_access: f64,
    _lock: ThreadLock,
}

impl MemoryStore {
    /// An empty store. `cfg.data_dir` is unused.
    pub fn new(cfg: StoreConfig) -> Self {
        MemoryStore {
            cfg,
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
            data: Mutex::new(HashMap::new()),
        }
    }

    fn lock_key(&self, id: &SessionId) -> PathBuf {
        PathBuf::from(format!("memory:{}/{}", self.uid, id.to_hex()))
    }

    /// Locks and returns session `id` (see `FileStore::open`).
    pub fn open(&self, id: &SessionId, now: f64) -> StoreResult<Opened<MemoryHandle>> {
        let deadline = Instant::now() + self.cfg.lock_timeout;
        let Some(lock) = ThreadLock::acquire(&self.lock_key(id), deadline) else {
            return Err(StoreError::LockTimeout {
                waited: self.cfg.lock_timeout,
            });
        };
        let mut data = self.data.lock();
        let Some(entry) = data.get(id).cloned() else {
            return Ok(Opened::Missing);
        };
        if expired(&self.cfg, now, Some(entry.created), Some(entry.last_access)) {
            data.remove(id);
            return Ok(Opened::Expired);
        }
        Ok(Opened::Found(MemoryHandle {
            id: *id,
            payload: entry.payload,
            created: entry.created,
            last_access: entry.last_access,
            _lock: lock,
        }))
    }

    /// Stores a new session.
    pub fn create(&self, id: &SessionId, payload: &[u8], created: f64, now: f64) {
        self.data.lock().insert(
            *id,
            Entry {
                payload: Arc::new(payload.to_vec()),
                created,
                last_access: now,
            },
        );
    }

    /// Counts (`Stats`), removes expired sessions (`Sweep`) or everything (`Clear`).
    pub fn walk(&self, now: f64, mode: crate::sweep::Mode) -> Report {
        use crate::sweep::Mode;
        let mut report = Report::default();
        let mut data = self.data.lock();
        let before = data.len() as u64;
        report.records = before;
        for entry in data.values() {
            report.bytes += entry.payload.len() as u64;
            if expired(&self.cfg, now, Some(entry.created), Some(entry.last_access)) {
                report.expired += 1;
            }
        }
        match mode {
            Mode::Stats => {}
            Mode::Sweep => {
                data.retain(|_, e| !expired(&self.cfg, now, Some(e.created), Some(e.last_access)))
            }
            Mode::Clear => data.clear(),
        }
        report.removed = before - data.len() as u64;
        report.live = data.len() as u64;
        report
    }

    /// Saves through a handle (we hold the session's lock).
    pub fn save(&self, handle: &mut MemoryHandle, payload: &[u8], now: f64) {
        let payload = Arc::new(payload.to_vec());
        handle.payload = Arc::clone(&payload);
        handle.last_access = now;
        self.data.lock().insert(
            handle.id,
            Entry {
                payload,
                created: handle.created,
                last_access: now,
            },
        );
    }

    /// Refreshes the last access if `interval` has passed.
    pub fn touch(&self, handle: &mut MemoryHandle, now: f64, interval: f64) -> bool {
        if now - handle.last_access < interval {
            return false;
        }
        handle.last_access = now;
        if let Some(entry) = self.data.lock().get_mut(&handle.id) {
            entry.last_access = now;
        }
        true
    }

    /// Removes the session; the handle's lock is released when it is dropped.
    pub fn delete(&self, handle: MemoryHandle) {
        self.data.lock().remove(&handle.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Keys;
    use std::time::Duration;

    fn store(idle: Option<f64>) -> MemoryStore {
        MemoryStore::new(StoreConfig {
            data_dir: PathBuf::new(),
            keys: Keys::new(&[]),
            idle_timeout: idle,
            absolute_timeout: None,
            lock_timeout: Duration::from_millis(50),
            read_legacy: false,
        })
    }

    #[test]
    fn round_trip_expiry_and_locking() {
        let s = store(Some(10.0));
        let id = SessionId::generate().unwrap();
        assert!(matches!(s.open(&id, 0.0).unwrap(), Opened::Missing));
        s.create(&id, b"abc", 1.0, 1.0);
        let Opened::Found(mut h) = s.open(&id, 2.0).unwrap() else {
            panic!()
        };
        assert_eq!(h.payload.as_slice(), b"abc");
        // Locked: a second open times out.
        assert!(matches!(
            s.open(&id, 2.0),
            Err(StoreError::LockTimeout { .. })
        ));
        s.save(&mut h, b"xyz", 3.0);
        drop(h);
        let Opened::Found(h) = s.open(&id, 12.0).unwrap() else {
            panic!()
        };
        assert_eq!(h.payload.as_slice(), b"xyz");
        drop(h);
        assert!(matches!(s.open(&id, 100.0).unwrap(), Opened::Expired));
        assert!(matches!(s.open(&id, 100.0).unwrap(), Opened::Missing));
    }
}
