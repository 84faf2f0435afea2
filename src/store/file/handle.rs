//! The file store's open session: saving in place or through an installed new file
//! (migrating a legacy session on its first save), touching by mtime, deleting, and handing
//! the unlocked descriptor to the cache when released. Split from `file.rs`, which opens.

use std::io::{self, ErrorKind};
use std::sync::Arc;

use super::record_io::{self, check_len, fill_new, pin_mtime, to_system_time};
use super::tree::Found;
use super::{FileHandle, Origin, SMALL_WRITE};
use crate::error::{StoreError, StoreResult};
use crate::expiry;
use crate::lock::{fd_cache, LockedFile};
use crate::platform;
use crate::record::{self, Payload, Segments, HEADER_LEN};
use crate::shard;
use crate::sid::SessionId;
use crate::store::{Loaded, PayloadKind, SessionHandle};

impl FileHandle {
    /// Where the payload came from.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// Stores `payload` as the new version of the session and keeps the lock (`save` is
    /// this, then the release). In place when it fits the older slot, otherwise through a
    /// new file installed by `rename`.
    pub fn write<'a>(&mut self, payload: impl Into<Payload<'a>>, now: f64) -> StoreResult<()> {
        let payload = payload.into();
        check_len(payload.plain_len())?;
        let created = self.created.unwrap_or(now);
        let keys = self.store.keys.signing()?;
        let stored = record::seal(keys, &self.id, created, &payload)?;
        check_len(stored.len())?;
        match self.origin {
            Origin::Record {
                slot,
                seq,
                slot_size,
            } if HEADER_LEN + stored.len() <= slot_size => {
                let header = record::encode_header(keys, &self.id, seq + 1, created, now, &stored);
                let target = 1 - slot;
                self.write_slot(&header, &stored, (target * slot_size) as u64, now)?;
                if self.stale {
                    // The slot just superseded holds this session unencrypted (0.3) or
                    // under a retired key: once the new version is whole, nothing of it
                    // may stay behind (the file is rewritten in place, not replaced).
                    self.scrub_slot(slot, slot_size, now)?;
                }
                self.origin = Origin::Record {
                    slot: target,
                    seq: seq + 1,
                    slot_size,
                };
            }
            Origin::Record { seq, .. } => drop(self.install(&stored, created, now, seq + 1)?),
            Origin::Legacy { .. } => {
                // Keep the legacy file locked until it is unlinked: a waiter in another
                // process must then see `nlink == 0` and move to the new record, never load
                // the stale legacy session.
                let legacy_file = self.install(&stored, created, now, 1)?;
                if let Some(old) = self.legacy.take() {
                    let _ = platform::unlink(&old.dir, &old.name);
                }
                drop(legacy_file);
            }
        }
        // `payload` means "as loaded"; the caller has the saved bytes already, and keeping
        // a copy would cost a large session an allocation and a copy per save.
        self.payload = Vec::new();
        self.segments = Segments::default();
        self.stale = false;
        self.created = Some(created);
        self.last_access = Some(now);
        Ok(())
    }

    /// Writes one slot in place. Small slots go out in one `pwrite`; large ones as payload
    /// then header, which spares copying the payload into a buffer. A crash between the two
    /// writes leaves a slot whose tag does not verify, so the other slot wins: still safe.
    fn write_slot(&self, header: &[u8], payload: &[u8], offset: u64, now: f64) -> StoreResult<()> {
        let io = |e| StoreError::io("write", &self.path, e);
        let file = self.file.file().map_err(io)?;
        if payload.len() <= SMALL_WRITE {
            let mut buf = Vec::with_capacity(HEADER_LEN + payload.len());
            buf.extend_from_slice(header);
            buf.extend_from_slice(payload);
            platform::write_all_at(file, &buf, offset).map_err(io)?;
        } else {
            platform::write_all_at(file, payload, offset + HEADER_LEN as u64).map_err(io)?;
            platform::write_all_at(file, header, offset).map_err(io)?;
        }
        pin_mtime(file, &self.path, now)
    }

    /// Overwrites slot `slot` with zeros (a superseded version; the current one is the
    /// other slot, so a crash during this leaves the session intact).
    fn scrub_slot(&self, slot: usize, slot_size: usize, now: f64) -> StoreResult<()> {
        let io = |e| StoreError::io("write", &self.path, e);
        let file = self.file.file().map_err(io)?;
        record_io::scrub_slot(file, slot, slot_size).map_err(io)?;
        pin_mtime(file, &self.path, now)
    }

    /// Writes a complete new record to a temporary file, locks it, and renames it over the
    /// record path. Waiters on the old file see it unlinked and move to the new one, whose
    /// lock we already hold. Returns the old file, still locked, for the caller to drop.
    fn install(
        &mut self,
        stored: &[u8],
        created: f64,
        now: f64,
        seq: u64,
    ) -> StoreResult<LockedFile> {
        let suffix = SessionId::generate()?.to_hex();
        let tmp_name = format!("{}.{}{}", self.name, &suffix[..8], shard::TMP_SUFFIX);
        let tmp = self.path.with_file_name(&tmp_name);
        let keys = self.store.keys.signing()?;
        let mut slot = Vec::with_capacity(HEADER_LEN + stored.len());
        slot.extend_from_slice(&record::encode_header(
            keys, &self.id, seq, created, now, stored,
        ));
        slot.extend_from_slice(stored);
        let slot_size = record::slot_size_for(slot.len() - HEADER_LEN);
        // The record's shard: known for a record; for a legacy session, reached (and
        // created, 0700) from the data dir without following symlinks.
        let shard = match &self.shard {
            Some(fd) => Arc::clone(fd),
            None => match self.store.tree.shard(shard::shard_of(&self.name), true) {
                Ok(Found::Dir(fd)) => fd,
                Ok(_) => {
                    let e = io::Error::new(
                        ErrorKind::NotADirectory,
                        "a symlink or a file is where the shard directory belongs \
                         (never followed)",
                    );
                    return Err(StoreError::io("create", &tmp, e));
                }
                Err(e) => return Err(StoreError::io("create", &tmp, e)),
            },
        };
        let created_file = platform::create_file(&shard, &tmp_name);
        let locked = LockedFile::new(created_file.map_err(|e| StoreError::io("create", &tmp, e))?);
        let result = (|| {
            let file = locked
                .file()
                .map_err(|e| StoreError::io("create", &tmp, e))?;
            // Uncontended: nobody else can know the temporary name.
            if !fs4::fs_std::FileExt::try_lock_exclusive(file)
                .map_err(|e| StoreError::io("lock", &tmp, e))?
            {
                let busy = io::Error::from(ErrorKind::WouldBlock);
                return Err(StoreError::io("lock", &tmp, busy));
            }
            fill_new(file, &tmp, &slot, slot_size, now)?;
            platform::rename(&shard, &tmp_name, &self.name)
                .map_err(|e| StoreError::io("rename", &self.path, e))
        })();
        if let Err(e) = result {
            let _ = platform::unlink(&shard, &tmp_name);
            return Err(e);
        }
        self.shard = Some(shard);
        let old = std::mem::replace(&mut self.file, locked);
        self.origin = Origin::Record {
            slot: 0,
            seq,
            slot_size,
        };
        Ok(old)
    }

    /// Refreshes the last access without rewriting the record, and keeps the lock (`touch`
    /// is this, then the release): a metadata-only update of the file's mtime to `now`,
    /// done only when the touch interval has passed, so read-only traffic costs at most one
    /// `futimens` per interval. Legacy sessions are never touched (their next save migrates
    /// them).
    pub fn refresh(&mut self, now: f64) -> StoreResult<bool> {
        if !matches!(self.origin, Origin::Record { .. })
            || !self.store.cfg.expiry.touch_due(self.last_access, now)
        {
            return Ok(false);
        }
        self.file
            .file()
            .and_then(|f| f.set_modified(to_system_time(now)))
            .map_err(|e| StoreError::io("touch", &self.path, e))?;
        self.last_access = Some(now);
        Ok(true)
    }

    /// Removes the session's record (or legacy file); the lock goes with the handle.
    fn remove(&mut self) -> StoreResult<()> {
        self.reusable = false;
        let (dir, name, path) = match (&self.legacy, &self.shard) {
            (Some(legacy), _) => (&legacy.dir, legacy.name.as_str(), &legacy.path),
            (None, Some(shard)) => (shard, self.name.as_str(), &self.path),
            (None, None) => return Ok(()),
        };
        match platform::unlink(dir, name) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("remove", path, e)),
        }
    }
}

impl SessionHandle for FileHandle {
    fn id(&self) -> &SessionId {
        &self.id
    }

    fn loaded(&self) -> Loaded {
        Loaded {
            kind: match self.origin {
                Origin::Record { .. } => PayloadKind::Record,
                Origin::Legacy { wrapped: false } => PayloadKind::Legacy,
                Origin::Legacy { wrapped: true } => PayloadKind::LegacyWrapped,
            },
            created: self.created,
            last_access: self.last_access,
            // A legacy file is always rewritten (as a record) by its next save.
            stale: self.stale || !matches!(self.origin, Origin::Record { .. }),
        }
    }

    fn payload(&self) -> &[u8] {
        &self.payload
    }

    fn take_segments(&mut self) -> Segments {
        std::mem::take(&mut self.segments)
    }

    fn save_payload(
        mut self: Box<Self>,
        payload: &Payload<'_>,
        now: f64,
        created: Option<f64>,
    ) -> StoreResult<()> {
        if self.created.is_none() {
            self.created = created;
        }
        self.write(*payload, expiry::save_time(self.last_access, now))
    }

    fn touch(mut self: Box<Self>, now: f64) -> StoreResult<bool> {
        self.refresh(now)
    }

    fn delete(mut self: Box<Self>) -> StoreResult<()> {
        self.remove()
    }
}

impl Drop for FileHandle {
    fn drop(&mut self) {
        // Unlock first (the waiters then go), keep the descriptor for the next request on
        // this session; a legacy file (still ours only until migrated) is not kept.
        if self.reusable && matches!(self.origin, Origin::Record { .. }) {
            if let Some(file) = self.file.take_unlocked() {
                fd_cache::put(self.path.clone(), file);
            }
        }
    }
}
