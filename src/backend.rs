//! One front for the three backends (file, memory, Redis), so the Python layer makes the
//! same calls whichever is configured. `Session` owns a locked session of any backend and
//! releases its lock when dropped (for Redis that is a compare-and-delete on the server;
//! for the others closing the file / dropping the in-process lock does it).

use std::path::Path;
use std::sync::Arc;

use crate::error::{StoreError, StoreResult};
use crate::memory::{MemoryHandle, MemoryStore};
use crate::redis_store::{RedisHandle, RedisStore};
use crate::sid::SessionId;
use crate::store::{FileStore, Handle, Opened, Origin};
use crate::sweep::{self, Mode, Report};

/// A configured store.
pub enum Backend {
    /// Files under a data directory.
    File(FileStore),
    /// This process's memory.
    Memory(MemoryStore),
    /// A Redis server (boxed: it is much larger than the others).
    Redis(Box<RedisStore>),
}

enum Inner {
    File(Handle),
    Memory(MemoryHandle),
    Redis(RedisHandle),
}

/// A locked, open session of any backend.
pub struct Session {
    backend: Arc<Backend>,
    inner: Option<Inner>,
}

/// Where a session's payload came from, as the Python layer needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Our record format: the payload is the pickled user dict.
    Record,
    /// A legacy Beaker session whose payload is the bare session dict.
    Legacy,
    /// A legacy Beaker session whose payload is Beaker's whole outer pickle.
    LegacyWrapped,
}

fn wrap<H>(opened: Opened<H>, f: impl FnOnce(H) -> Session) -> Opened<Session> {
    match opened {
        Opened::Found(h) => Opened::Found(f(h)),
        Opened::Missing => Opened::Missing,
        Opened::Expired => Opened::Expired,
        Opened::Corrupt => Opened::Corrupt,
        Opened::Newer => Opened::Newer,
    }
}

impl Backend {
    /// Locks and reads session `id`.
    pub fn open(self: &Arc<Self>, id: &SessionId, now: f64) -> StoreResult<Opened<Session>> {
        let session = |inner| Session {
            backend: Arc::clone(self),
            inner: Some(inner),
        };
        Ok(match &**self {
            Backend::File(s) => wrap(s.open(id, now)?, |h| session(Inner::File(h))),
            Backend::Memory(s) => wrap(s.open(id, now)?, |h| session(Inner::Memory(h))),
            Backend::Redis(s) => wrap(s.open(id, now)?, |h| session(Inner::Redis(h))),
        })
    }

    /// Stores a new session under a fresh id.
    pub fn create(
        &self,
        id: &SessionId,
        payload: &[u8],
        created: f64,
        now: f64,
    ) -> StoreResult<()> {
        match self {
            Backend::File(s) => s.create(id, payload, created, now),
            Backend::Memory(s) => {
                s.create(id, payload, created, now);
                Ok(())
            }
            Backend::Redis(s) => s.create(id, payload, created, now),
        }
    }

    /// Stats / sweep / clear.
    pub fn walk(&self, now: f64, mode: Mode, threads: usize) -> StoreResult<Report> {
        match self {
            Backend::File(s) => Ok(sweep::walk(s.config(), now, mode, threads)),
            Backend::Memory(s) => Ok(s.walk(now, mode)),
            Backend::Redis(s) => s.walk(mode),
        }
    }

    /// The data directory of a file store.
    pub fn data_dir(&self) -> Option<&Path> {
        match self {
            Backend::File(s) => Some(&s.config().data_dir),
            _ => None,
        }
    }
}

impl Session {
    fn inner(&self) -> StoreResult<&Inner> {
        self.inner.as_ref().ok_or(StoreError::Released)
    }

    /// The stored payload as loaded.
    pub fn payload(&self) -> StoreResult<&[u8]> {
        Ok(match self.inner()? {
            Inner::File(h) => &h.payload,
            Inner::Memory(h) => &h.payload,
            Inner::Redis(h) => &h.payload,
        })
    }

    /// Creation time, when known without unpickling.
    pub fn created(&self) -> Option<f64> {
        match self.inner.as_ref()? {
            Inner::File(h) => h.created,
            Inner::Memory(h) => Some(h.created),
            Inner::Redis(h) => Some(h.created),
        }
    }

    /// Previous access time, when known without unpickling.
    pub fn last_access(&self) -> Option<f64> {
        match self.inner.as_ref()? {
            Inner::File(h) => h.last_access,
            Inner::Memory(h) => Some(h.last_access),
            Inner::Redis(h) => Some(h.last_access),
        }
    }

    /// What the payload is.
    pub fn kind(&self) -> Kind {
        match &self.inner {
            Some(Inner::File(h)) => match h.origin() {
                Origin::Record { .. } => Kind::Record,
                Origin::Legacy { wrapped: false } => Kind::Legacy,
                Origin::Legacy { wrapped: true } => Kind::LegacyWrapped,
            },
            _ => Kind::Record,
        }
    }

    /// Saves a new version; `created` fills in an unknown creation time (legacy sessions).
    /// With `release`, the lock is given up right after (in the same round trip for Redis).
    pub fn save(
        &mut self,
        payload: &[u8],
        now: f64,
        created: Option<f64>,
        release: bool,
    ) -> StoreResult<()> {
        let backend = Arc::clone(&self.backend);
        match (&*backend, self.inner.as_mut().ok_or(StoreError::Released)?) {
            (Backend::File(s), Inner::File(h)) => {
                if h.created.is_none() {
                    h.created = created;
                }
                h.save(s, payload, now)?;
            }
            (Backend::Memory(s), Inner::Memory(h)) => s.save(h, payload, now),
            (Backend::Redis(s), Inner::Redis(h)) => s.save(h, payload, now, release)?,
            _ => return Err(StoreError::Released),
        }
        if release {
            self.inner = None;
        }
        Ok(())
    }

    /// Refreshes the last access (metadata only) if `interval` has passed; with `release`,
    /// gives up the lock afterwards whether or not it touched.
    pub fn touch(&mut self, now: f64, interval: f64, release: bool) -> StoreResult<bool> {
        let backend = Arc::clone(&self.backend);
        let touched = match (&*backend, self.inner.as_mut().ok_or(StoreError::Released)?) {
            (Backend::File(_), Inner::File(h)) => h.touch(now, interval)?,
            (Backend::Memory(s), Inner::Memory(h)) => s.touch(h, now, interval),
            (Backend::Redis(s), Inner::Redis(h)) => s.touch(h, now, interval, release)?,
            _ => return Err(StoreError::Released),
        };
        if release {
            self.inner = None;
        }
        Ok(touched)
    }

    /// Removes the stored session and releases the lock.
    pub fn delete(mut self) -> StoreResult<()> {
        let backend = Arc::clone(&self.backend);
        match (&*backend, self.inner.take().ok_or(StoreError::Released)?) {
            (Backend::File(_), Inner::File(h)) => h.delete(),
            (Backend::Memory(s), Inner::Memory(h)) => {
                s.delete(h);
                Ok(())
            }
            (Backend::Redis(s), Inner::Redis(h)) => s.delete(h),
            _ => Err(StoreError::Released),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let (Backend::Redis(s), Some(Inner::Redis(h))) = (&*self.backend, self.inner.as_mut()) {
            s.release(h);
        }
    }
}
