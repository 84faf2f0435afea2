//! The PostgreSQL backend's session lock, in one of two modes (`SESSION_DATABASE_LOCK`),
//! and everything in which the modes differ: how the lock is taken with the record's read,
//! what every write of a locked session checks, how it is let go, and what the sweep and
//! `rekey` skip or wait for. The rest of the backend (the table, the other statements, the
//! pool, the handle) is one for both.
//!
//! * `LockMode::Row` (the default, what 0.3.0 shipped): the lock is data, an owner token
//!   and an expiry in the session's row. One `UPDATE … RETURNING record` takes it and reads
//!   in one round trip; writes are compare-and-set on the token and clear it; a read-only
//!   request's release is a pipelined `UPDATE`. No connection is ever kept between
//!   statements, so it works through PgBouncer in transaction pooling and on any
//!   PostgreSQL version; a dead holder's lock lapses after `lock_ttl`. Taking and
//!   releasing commit without waiting for the WAL flush (`LOCK_ONLY`).
//! * `LockMode::Advisory`: a session-level advisory lock (`pg_try_advisory_lock` in the
//!   two-int key space: the table's class, 32 bits of the row id) with the record read by
//!   a second statement pipelined after it. Both are read-only: a read-only request writes
//!   nothing at all. The request keeps that connection (`pool::Held`) until its write,
//!   sent with the unlock pipelined after it, or its bare unlock, sent without waiting. The
//!   lock lives as long as the connection: a killed worker's is gone at once; a hung
//!   holder's when the server closes its idle connection (`idle_session_timeout` =
//!   `lock_ttl`, PostgreSQL 14 or later). It needs the server session to stay with the
//!   client, so not PgBouncer's transaction pooling.
//!
//! Mixed deployments: a row-locking process never looks at advisory locks. To make a
//! rolling switch between the modes fail closed instead of losing updates, the advisory
//! mode also respects the lock row, at no extra round trip: its read reports a live lock
//! row (then it lets go and waits as for a held lock), and its writes succeed only if no
//! live lock row is there and the record's header is still the one it read
//! (`ADVISORY_GUARD`). A row-locking request that slipped in meanwhile thus makes the
//! advisory request's write fail (`StoreError::LockLost`), never the other way round. The
//! header check makes `rekey` wait for a held session's advisory lock (else it would
//! refuse that request's save).

use std::time::{Duration, Instant};

use tokio_postgres::types::Type;

use super::pool::{Held, Param};
use super::{column, Shared, LOCK_ONLY};
use crate::error::StoreResult;
use crate::lock::{generation, lock};
use crate::record;

/// How sessions are locked (`SESSION_DATABASE_LOCK`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LockMode {
    /// An owner token and expiry in the session's row (any server, any pooler).
    #[default]
    Row,
    /// A session-level advisory lock held on a kept connection (PostgreSQL 14+, a
    /// session-pooled or direct connection).
    Advisory,
}

/// The advisory mode's condition on every write of a locked session (`$2`: the header
/// read): no live lock row (a row-locking process's request), and the record unchanged.
const ADVISORY_GUARD: &str = "(lock_token IS NULL OR lock_expires < clock_timestamp())
     AND substring(record FROM 1 FOR 64) = $2";

/// Whether a lock row is live, for the advisory mode's read.
const ROW_LIVE: &str = "lock_token IS NOT NULL AND lock_expires >= clock_timestamp()";

/// A session's advisory lock key, as SQL on the row id (the sweep's): the first four bytes
/// of the SHA-256 hex, as `advisory_key` computes it.
const SQL_KEY: &str = "('x' || substr(id, 1, 8))::bit(32)::int4";

impl LockMode {
    /// What every write of a locked session (save, touch, delete) requires of the row,
    /// given `$1` = id and `$2` = `Hold::guard`.
    pub(super) fn write_guard(self) -> &'static str {
        match self {
            LockMode::Row => "lock_token = $2",
            LockMode::Advisory => ADVISORY_GUARD,
        }
    }

    /// What the sweep requires of an expired row besides no live lock row (`$3`: the
    /// advisory class): that no request holds its advisory lock, taken for the statement's
    /// transaction so a request arriving meanwhile finds the row gone once it gets it.
    pub(super) fn sweep_guard(self) -> String {
        match self {
            LockMode::Row => String::new(),
            LockMode::Advisory => format!("AND pg_try_advisory_xact_lock($3, {SQL_KEY})"),
        }
    }

    /// Rows removed per sweep statement: in the advisory mode each also holds its
    /// advisory lock until the statement commits (the server's shared lock table has room
    /// for `max_locks_per_transaction` × `max_connections`, 6400 by default, for all).
    pub(super) fn sweep_batch(self) -> i64 {
        match self {
            LockMode::Row => 1000,
            LockMode::Advisory => 200,
        }
    }

    /// What `rekey`'s write of a record requires besides its header unchanged (`$4`, `$5`:
    /// the advisory class and key): the advisory mode waits for a holder (bounded by
    /// `lock_timeout`), whose save would otherwise be refused by `ADVISORY_GUARD`.
    pub(super) fn rekey_guard(self) -> &'static str {
        match self {
            LockMode::Row => "",
            LockMode::Advisory => "AND (SELECT true FROM pg_advisory_xact_lock($4, $5))",
        }
    }
}

/// The lock's own statements, formatted once per table.
pub(super) struct LockSql {
    pub(super) mode: LockMode,
    /// Row: takes the lock if free, lapsed, ours (a repeated statement) or our orphan
    /// ($4), and reads the record; a row with `false` means another holds it, no row means
    /// no session. Committed without waiting for the WAL flush (`LOCK_ONLY`).
    take: String,
    /// Row: the bare release (lock columns only, `LOCK_ONLY`).
    release: String,
    /// Advisory: the record, its last touch, and whether a lock row is live.
    read: String,
}

impl LockSql {
    pub(super) fn new(t: &str, mode: LockMode) -> Self {
        LockSql {
            mode,
            take: format!(
                "WITH got AS (
                   UPDATE {t} SET lock_token = $2,
                     lock_expires = clock_timestamp() + $3 * interval '1 millisecond'
                   WHERE id = $1 AND (lock_token IS NULL OR lock_token = $2 OR lock_token = $4
                                      OR lock_expires < clock_timestamp())
                   RETURNING record, touched_at, {LOCK_ONLY})
                 SELECT true, record, touched_at FROM got
                 UNION ALL
                 SELECT false, NULL, NULL FROM {t}
                 WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM got)"
            ),
            release: format!(
                "UPDATE {t} SET lock_token = NULL, lock_expires = NULL
                 WHERE id = $1 AND lock_token = $2 RETURNING {LOCK_ONLY}"
            ),
            read: format!("SELECT record, touched_at, {ROW_LIVE} FROM {t} WHERE id = $1"),
        }
    }
}

const TRY_LOCK: &str = "SELECT pg_try_advisory_lock($1, $2)";
const UNLOCK: &str = "SELECT pg_advisory_unlock($1, $2)";

/// A session's advisory lock key: the first four bytes of its row id (the SHA-256 hex of
/// the session id). Two sessions sharing one (one chance in 2^32 per pair) only wait for
/// each other.
pub(super) fn advisory_key(digest: &str) -> i32 {
    let bytes = digest.get(..8).unwrap_or("0");
    u32::from_str_radix(bytes, 16).unwrap_or(0) as i32
}

/// The advisory lock class of a table: 32 bits of a BLAKE3 hash of its qualified name,
/// so that two tables (or another application's two-int advisory locks) never share one.
pub(super) fn advisory_class(qualified: &str) -> i32 {
    let hash = blake3::hash(format!("flask-beaker-session lock {qualified}").as_bytes());
    let b = hash.as_bytes();
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// A held session lock.
pub(super) enum Hold {
    /// The lock row's owner token, taken in fork generation `generation`.
    Row { token: String, generation: u64 },
    /// The connection holding the advisory lock `key`, and the header read under it.
    Advisory {
        held: Box<Held>,
        key: i32,
        header: Vec<u8>,
    },
}

/// A session locked by us: its record, its last touch and the lock.
pub(super) struct Locked {
    pub(super) value: Vec<u8>,
    pub(super) touched: Option<f64>,
    pub(super) hold: Hold,
}

/// One attempt at the lock.
enum Attempt {
    /// No row: no session.
    Missing,
    /// Held by another request.
    Busy,
    /// Ours.
    Got(Locked),
}

impl Shared {
    /// Takes the session lock and reads the record, polling with back-off until
    /// `deadline`. A waiter holds no connection between attempts (threads of one process
    /// queue on the in-process `ThreadLock` first, so only one of them polls).
    pub(super) fn lock_and_read(
        &self,
        digest: &str,
        deadline: Instant,
    ) -> StoreResult<Option<Locked>> {
        self.table.ensure(&self.pool, self.timeout)?;
        let token = match self.lock.mode {
            LockMode::Row => crate::sid::SessionId::generate()?.to_hex(),
            LockMode::Advisory => String::new(),
        };
        let orphan = match self.lock.mode {
            LockMode::Row => lock(self.orphans())
                .get(digest)
                .map(|(t, _)| t.clone())
                .unwrap_or_default(),
            LockMode::Advisory => String::new(),
        };
        let mut backoff = Duration::from_micros(500);
        loop {
            let attempt = match self.lock.mode {
                LockMode::Row => self.try_row(digest, &token, &orphan)?,
                LockMode::Advisory => self.try_advisory(digest)?,
            };
            match attempt {
                Attempt::Missing => return Ok(None),
                Attempt::Got(locked) => return Ok(Some(locked)),
                Attempt::Busy => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.cfg.lock_timed_out());
            }
            std::thread::sleep(backoff.min(left));
            backoff = (backoff * 2).min(super::POLL_MAX);
        }
    }

    /// The lock row: one `UPDATE … RETURNING`.
    fn try_row(&self, digest: &str, token: &str, orphan: &str) -> StoreResult<Attempt> {
        let rows = self.pool.query(
            &self.lock.take,
            &[
                (&digest, Type::TEXT),
                (&token, Type::TEXT),
                (&self.lock_ttl_ms, Type::FLOAT8),
                (&orphan, Type::TEXT),
            ],
        );
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                // The lock may have been taken before the reply was lost.
                self.orphan(digest, token);
                return Err(e);
            }
        };
        let Some(row) = rows.first() else {
            return Ok(Attempt::Missing);
        };
        if !column::<bool>(row, 0)? {
            return Ok(Attempt::Busy);
        }
        if !orphan.is_empty() {
            lock(self.orphans()).remove(digest);
        }
        let hold = Hold::Row {
            token: token.to_owned(),
            generation: generation(),
        };
        Ok(Attempt::Got(Locked {
            value: column(row, 1)?,
            touched: column(row, 2)?,
            hold,
        }))
    }

    /// The advisory lock: `pg_try_advisory_lock` then the read, pipelined (one round
    /// trip, both read-only); the read is its own statement, so its snapshot is taken
    /// after the lock is ours and sees every save committed before the previous holder
    /// let go. A lock taken on a session that is missing, or whose lock row is live, is
    /// let go at once.
    fn try_advisory(&self, digest: &str) -> StoreResult<Attempt> {
        let key = advisory_key(digest);
        let lock_params: [Param<'_>; 2] = [(&self.class, Type::INT4), (&key, Type::INT4)];
        let read_params: [Param<'_>; 1] = [(&digest, Type::TEXT)];
        let (_, rows, held) = self.pool.lock(
            (TRY_LOCK, &lock_params),
            (&self.lock.read, &read_params),
            |locked| {
                locked
                    .first()
                    .and_then(|r| r.try_get::<_, bool>(0).ok())
                    .unwrap_or(false)
            },
        )?;
        let (held, row) = match (held, rows.first()) {
            (None, None) => return Ok(Attempt::Missing),
            (None, Some(_)) => return Ok(Attempt::Busy),
            (Some(held), None) => {
                self.pool.release(held, (UNLOCK, &lock_params));
                return Ok(Attempt::Missing);
            }
            (Some(held), Some(row)) => (held, row),
        };
        let read = column::<Vec<u8>>(row, 0).and_then(|value| {
            let touched: Option<f64> = column(row, 1)?;
            let row_live: bool = column(row, 2)?;
            Ok((value, touched, row_live))
        });
        match read {
            Ok((value, touched, false)) => {
                let header = value[..value.len().min(record::HEADER_LEN)].to_vec();
                let hold = Hold::Advisory {
                    held: Box::new(held),
                    key,
                    header,
                };
                Ok(Attempt::Got(Locked {
                    value,
                    touched,
                    hold,
                }))
            }
            Ok((_, _, true)) => {
                self.pool.release(held, (UNLOCK, &lock_params));
                Ok(Attempt::Busy)
            }
            Err(e) => {
                self.pool.release(held, (UNLOCK, &lock_params));
                Err(e)
            }
        }
    }

    /// Runs a write of a locked session (`sql`: `$1` the id, `$2` the guard, then
    /// `extra`) and lets the lock go; the lock is gone afterwards whatever the outcome.
    /// Its rows (none: the guard failed, `LockLost` for the caller).
    pub(super) fn write_locked(
        &self,
        hold: Hold,
        digest: &str,
        sql: &str,
        extra: &[Param<'_>],
    ) -> StoreResult<Vec<tokio_postgres::Row>> {
        match hold {
            Hold::Row { token, .. } => {
                let mut params: Vec<Param<'_>> = vec![(&digest, Type::TEXT), (&token, Type::TEXT)];
                params.extend_from_slice(extra);
                let rows = self.query(sql, &params);
                if rows.is_err() {
                    // The write may have run (and released) before the answer was lost.
                    self.orphan(digest, &token);
                }
                rows
            }
            Hold::Advisory { held, key, header } => {
                // On the connection holding the lock, the unlock pipelined after the
                // write (it runs once the write has committed); never retried elsewhere.
                let mut params: Vec<Param<'_>> =
                    vec![(&digest, Type::TEXT), (&header, Type::BYTEA)];
                params.extend_from_slice(extra);
                let lock_params: [Param<'_>; 2] = [(&self.class, Type::INT4), (&key, Type::INT4)];
                self.pool
                    .finish(*held, (sql, &params), (UNLOCK, &lock_params))
            }
        }
    }

    /// Lets the lock go without waiting for the server's answer: nothing the request does
    /// depends on it, and it saves a read-only request a round trip. The statement is on
    /// the wire when this returns, so the lock is free as soon as the server reads it.
    /// Row: when it cannot be sent the lock is remembered as an orphan of this process;
    /// nothing in a forked child (the lock is the parent's). Advisory: a connection that
    /// cannot take the unlock is closed, which frees the lock as well (in a forked child
    /// the connection is the parent's: left alone).
    pub(super) fn release(&self, hold: Hold, digest: &str) {
        match hold {
            Hold::Row {
                token,
                generation: born,
            } => {
                if born != generation() {
                    return;
                }
                let released = self.table.ensure(&self.pool, self.timeout).and_then(|()| {
                    self.pool.send(
                        &self.lock.release,
                        &[(&digest, Type::TEXT), (&token, Type::TEXT)],
                    )
                });
                if released.is_err() {
                    self.orphan(digest, &token);
                }
            }
            Hold::Advisory { held, key, .. } => {
                let lock_params: [Param<'_>; 2] = [(&self.class, Type::INT4), (&key, Type::INT4)];
                self.pool.release(*held, (UNLOCK, &lock_params));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advisory_key_matches_the_sweeps_sql_key() {
        // `('x' || substr(id, 1, 8))::bit(32)::int4`: the first 8 hex digits, two's
        // complement.
        assert_eq!(advisory_key("7fffffff00"), i32::MAX);
        assert_eq!(advisory_key("80000000ab"), i32::MIN);
        assert_eq!(advisory_key("ffffffff"), -1);
        assert_eq!(advisory_key("00000001ff"), 1);
    }

    #[test]
    fn classes_differ_by_table() {
        assert_ne!(advisory_class("\"a\""), advisory_class("\"b\""));
        assert_eq!(advisory_class("\"s\".\"t\""), advisory_class("\"s\".\"t\""));
    }

    #[test]
    fn modes_guard_their_writes_differently() {
        assert_eq!(LockMode::default(), LockMode::Row);
        assert!(LockMode::Row.write_guard().contains("lock_token = $2"));
        assert!(LockMode::Advisory.write_guard().contains("lock_expires"));
        assert!(LockMode::Row.sweep_guard().is_empty());
        assert!(LockMode::Advisory
            .sweep_guard()
            .contains("pg_try_advisory_xact_lock"));
        assert!(LockMode::Row.rekey_guard().is_empty());
    }
}
