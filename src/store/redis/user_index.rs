//! The Redis backend's per-user index (`crate::store::index`): one hash per user,
//! `<prefix>u:<user digest>` (hash-tagged on a Cluster, so in the user's own slot), from
//! record digest to encoded entry. Each operation is one single-key command, so it runs on
//! a Cluster wherever the user's slot lives; the entry is written (and, with
//! `SESSION_REDIS_WAIT_REPLICAS`, replicated) before the record that names the user, which
//! is in another slot. Redis expires records by itself and nothing sweeps it, so stale
//! entries are dropped by `index_sweep` (the `sweep` command) and ignored by readers.

use super::Shared;
use crate::error::StoreResult;
use crate::shard;
use crate::sid::SessionId;
use crate::store::IndexEntry;

impl Shared {
    pub(super) fn index_put(&self, user: &str, entry: &IndexEntry) -> StoreResult<()> {
        let key = self.user_key(user);
        let field = shard::digest(&entry.id);
        let value = entry.encode(&self.cfg.keys)?;
        self.pool.run(|c| {
            redis::cmd("HSET")
                .arg(&key)
                .arg(&field)
                .arg(value.as_slice())
                .query::<i64>(c)?;
            self.wait_replicas(c, &key)
        })
    }

    pub(super) fn index_remove(&self, user: &str, id: &SessionId) -> StoreResult<()> {
        let key = self.user_key(user);
        let field = shard::digest(id);
        self.pool
            .run(|c| redis::cmd("HDEL").arg(&key).arg(&field).query::<i64>(c))
            .map(drop)
    }

    pub(super) fn index_list(&self, user: &str) -> StoreResult<Vec<IndexEntry>> {
        let key = self.user_key(user);
        let fields: Vec<(Vec<u8>, Vec<u8>)> = self
            .pool
            .run(|c| redis::cmd("HGETALL").arg(&key).query(c))?;
        Ok(fields
            .iter()
            .filter_map(|(_, value)| IndexEntry::decode(&self.cfg.keys, value))
            .collect())
    }

    /// Every user hash, a `SCAN` batch at a time: unreadable entries and entries past
    /// `grace` whose record key is gone are deleted (`HDEL`, so an entry written meanwhile
    /// under another field survives).
    pub(super) fn index_sweep(&self, now: f64, grace: f64) -> StoreResult<u64> {
        let mut removed = 0u64;
        self.scan("u", |keys| {
            for key in keys {
                let fields: Vec<(Vec<u8>, Vec<u8>)> = self
                    .pool
                    .run(|c| redis::cmd("HGETALL").arg(&key).query(c))?;
                for (field, value) in fields {
                    let stale = match IndexEntry::decode(&self.cfg.keys, &value) {
                        None => true,
                        Some(entry) if now - entry.written_at > grace => {
                            let record = self.session_keys(&entry.id).record;
                            let exists: i64 = self
                                .pool
                                .run(|c| redis::cmd("EXISTS").arg(&record).query(c))?;
                            exists == 0
                        }
                        Some(_) => false,
                    };
                    if stale {
                        removed += self
                            .pool
                            .run(|c| redis::cmd("HDEL").arg(&key).arg(&field).query::<u64>(c))?;
                    }
                }
            }
            Ok(())
        })?;
        Ok(removed)
    }
}
