//! The Redis backend's orphaned locks. The token is chosen before `SET NX` is sent, so a
//! request whose lock command, save or release timed out (Redis stalled, restarted) knows
//! the lock it may have left behind. It hands (key, token) to the store's *orphans*: a
//! background thread retries a compare-and-delete (it only ever deletes a lock holding that
//! token) with back-off until it succeeds or the lock would have expired anyway, so the
//! session is usable again within about a second of Redis answering again; a later request
//! of the same session in this process releases it first thing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::scripts::RELEASE_ORPHANS_LUA;
use super::Shared;
use crate::error::StoreResult;
use crate::lock::{clear_if_free, lock};

/// Longest pause of the orphan releaser between two attempts.
const ORPHAN_PAUSE_MAX: Duration = Duration::from_millis(500);

/// A lock this process may have left in Redis: its key, its token, and when it expires
/// by itself at the latest.
#[derive(Clone)]
struct Orphan {
    key: String,
    token: String,
    expires: Instant,
}

/// This process's orphaned locks and whether a thread is releasing them.
#[derive(Default)]
pub(super) struct Orphans {
    locks: Mutex<Vec<Orphan>>,
    releasing: AtomicBool,
}

impl Shared {
    fn orphans(&self) -> &Orphans {
        self.orphans
            .get_or_retire(|old: &Orphans| clear_if_free(&old.locks))
    }

    /// Records a lock this process may have left behind (its command failed or timed
    /// out), and makes sure a thread releases it once Redis answers.
    pub(super) fn orphan(self: &Arc<Self>, key: String, token: String) {
        let expires = crate::lock::deadline_after(Duration::from_millis(self.lock_ttl_ms));
        let orphans = self.orphans();
        lock(&orphans.locks).push(Orphan {
            key,
            token,
            expires,
        });
        if !orphans.releasing.swap(true, Ordering::AcqRel) {
            let shared = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name("flask-beaker-session-redis-unlock".to_owned())
                .spawn(move || shared.release_orphans());
            if spawned.is_err() {
                orphans.releasing.store(false, Ordering::Release);
            }
        }
    }

    /// The releasing thread: retries until every orphan is released or expired.
    fn release_orphans(&self) {
        let orphans = self.orphans();
        let mut pause = Duration::from_millis(20);
        loop {
            std::thread::sleep(pause);
            pause = (pause * 2).min(ORPHAN_PAUSE_MAX);
            let batch = {
                let mut locks = lock(&orphans.locks);
                let now = Instant::now();
                locks.retain(|o| o.expires > now);
                if locks.is_empty() {
                    orphans.releasing.store(false, Ordering::Release);
                    return;
                }
                locks.clone()
            };
            if let Ok(released) = self.release_now(&batch) {
                let mut locks = lock(&orphans.locks);
                locks.retain(|o| {
                    !released
                        .iter()
                        .any(|r| r.key == o.key && r.token == o.token)
                });
            }
        }
    }

    /// Releases what it can of `batch` in one round trip; returns the orphans it deleted.
    /// One that is absent stays an orphan (its `SET NX` may still be on its way).
    /// On a Cluster, one script per lock (locks of several sessions are in several slots).
    fn release_now(&self, batch: &[Orphan]) -> StoreResult<Vec<Orphan>> {
        let chunk = if self.pool.is_cluster() {
            1
        } else {
            batch.len().max(1)
        };
        let mut outcome: Vec<i64> = Vec::with_capacity(batch.len());
        for part in batch.chunks(chunk) {
            let released: Vec<i64> = self.pool.run(|c| {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(RELEASE_ORPHANS_LUA).arg(part.len());
                for o in part {
                    cmd.arg(&o.key);
                }
                for o in part {
                    cmd.arg(&o.token);
                }
                cmd.query(c)
            })?;
            outcome.extend(released);
        }
        Ok((batch.iter().zip(outcome))
            .filter(|(_, r)| *r == 1)
            .map(|(o, _)| o.clone())
            .collect())
    }

    /// Before a request of this process locks a session, releases this process's orphaned
    /// lock of it, if any (a request that timed out, retried).
    pub(super) fn adopt_orphan(&self, lock_key: &str) -> StoreResult<()> {
        let orphans = self.orphans();
        let mine: Vec<Orphan> = {
            let locks = lock(&orphans.locks);
            if locks.is_empty() {
                return Ok(());
            }
            locks
                .iter()
                .filter(|o| o.key == lock_key)
                .cloned()
                .collect()
        };
        if mine.is_empty() {
            return Ok(());
        }
        let released = self.release_now(&mine)?;
        lock(&orphans.locks).retain(|o| {
            !released
                .iter()
                .any(|r| r.key == o.key && r.token == o.token)
        });
        Ok(())
    }
}
