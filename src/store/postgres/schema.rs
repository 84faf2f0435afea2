//! The PostgreSQL backend's table: its name (validated identifiers, always quoted), the
//! idempotent migration that creates it, and the check made once per process before the
//! first statement. The check looks before it leaps: when the table exists nothing else
//! is sent, so a role without DDL privileges never issues DDL; when it is missing it is
//! created only if the settings allow it (`create`), under a transaction-scoped advisory
//! lock so that workers starting together do not race on the catalog.
//!
//! ```sql
//! CREATE TABLE <schema>.<table> (
//!     id           text COLLATE "C" PRIMARY KEY, -- SHA-256 hex of the session id
//!     record       bytea NOT NULL,              -- header (times, seq, tag) + payload
//!     expires_at   double precision,            -- injected-clock epoch; NULL: never
//!     touched_at   double precision,            -- last touch (read-only request)
//!     lock_token   text,                        -- session lock: owner token ...
//!     lock_expires timestamptz                  -- ... and the server time it lapses
//! ) WITH (fillfactor = 70);
//! CREATE INDEX <table>_expires_at ON <schema>.<table> (expires_at);
//! ALTER TABLE <schema>.<table> ALTER COLUMN record SET STORAGE EXTERNAL;
//! -- The per-user index (SESSION_USER_KEY; `crate::store::index`), created with the
//! -- table, and on its own by the first index operation of a store whose table predates it:
//! CREATE TABLE <schema>.<table>_users (
//!     user_digest text COLLATE "C",                -- BLAKE3 digest of the user id
//!     id          text COLLATE "C",                -- the session's row id
//!     entry       bytea NOT NULL,                  -- `IndexEntry::encode`
//!     written_at  double precision NOT NULL,       -- injected clock (sweep grace)
//!     PRIMARY KEY (user_digest, id)
//! );
//! ```
//!
//! `fillfactor` leaves room in each page so that the lock's updates (which change no
//! indexed column) are HOT updates: no index write, and pages prune themselves. A record
//! too large for the row (about 2 KB) is moved out of line uncompressed (`EXTERNAL`):
//! the payload is a pickle, often of random-looking bytes (tokens, ids), that `pglz`
//! would spend time on for nothing at every save.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_postgres::types::Type;

use super::pool::Pool;
use crate::error::{StoreError, StoreResult};

/// Longest table name: the index name (`<table>_expires_at`) must fit in 63 bytes.
pub const MAX_TABLE_LEN: usize = 52;

/// Whether `name` is a plain SQL identifier we accept (letters, digits, `_`; not starting
/// with a digit; at most `max` bytes). Quoted everywhere, so reserved words are fine.
pub fn is_identifier(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The table of one store: its quoted, qualified name and whether it is known to exist.
pub struct Table {
    /// `"schema"."table"` or `"table"`.
    pub qualified: String,
    /// The per-user index's table, `"schema"."table_users"` or `"table_users"`.
    pub users: String,
    index: String,
    create: bool,
    ready: AtomicBool,
    users_ready: AtomicBool,
}

impl Table {
    /// Validates the names (`StoreError::Config` naming the setting otherwise).
    pub fn new(schema: Option<&str>, table: &str, create: bool) -> StoreResult<Self> {
        if !is_identifier(table, MAX_TABLE_LEN) {
            return Err(StoreError::Config(format!(
                "invalid table name {table:?}: expected letters, digits and '_' (not \
                 starting with a digit), at most {MAX_TABLE_LEN} characters"
            )));
        }
        let quoted = |name: &str| match schema {
            Some(s) => format!("\"{s}\".\"{name}\""),
            None => format!("\"{name}\""),
        };
        if let Some(s) = schema.filter(|s| !is_identifier(s, 63)) {
            return Err(StoreError::Config(format!(
                "invalid schema name {s:?}: expected letters, digits and '_' (not \
                 starting with a digit), at most 63 characters"
            )));
        }
        Ok(Table {
            qualified: quoted(table),
            users: quoted(&format!("{table}_users")),
            index: format!("\"{table}_expires_at\""),
            create,
            ready: AtomicBool::new(false),
            users_ready: AtomicBool::new(false),
        })
    }

    /// The migration; `fresh`: the table was missing, so the column's storage is set too
    /// (an `ALTER TABLE` takes an exclusive lock: not sent for a table in use).
    fn ddl(&self, fresh: bool) -> String {
        let t = &self.qualified;
        let storage = if fresh {
            format!("ALTER TABLE {t} ALTER COLUMN record SET STORAGE EXTERNAL;")
        } else {
            String::new()
        };
        format!(
            "BEGIN;
             SELECT pg_advisory_xact_lock(hashtext('flask-beaker-session migrate {t}'));
             CREATE TABLE IF NOT EXISTS {t} (
                 id text COLLATE \"C\" PRIMARY KEY,
                 record bytea NOT NULL,
                 expires_at double precision,
                 touched_at double precision,
                 lock_token text,
                 lock_expires timestamptz
             ) WITH (fillfactor = 70);
             CREATE INDEX IF NOT EXISTS {} ON {t} (expires_at);
             {storage}
             CREATE TABLE IF NOT EXISTS {} (
                 user_digest text COLLATE \"C\",
                 id text COLLATE \"C\",
                 entry bytea NOT NULL,
                 written_at double precision NOT NULL,
                 PRIMARY KEY (user_digest, id)
             );
             COMMIT;",
            self.index, self.users
        )
    }

    fn exists(&self, pool: &Pool) -> StoreResult<bool> {
        Self::regclass(pool, &self.qualified)
    }

    fn regclass(pool: &Pool, name: &str) -> StoreResult<bool> {
        let rows = pool.query("SELECT to_regclass($1) IS NOT NULL", &[(&name, Type::TEXT)])?;
        Ok(rows
            .first()
            .and_then(|r| r.try_get::<_, bool>(0).ok())
            .unwrap_or(false))
    }

    /// Creates the table and its index unless they exist (idempotent); true if the table
    /// was missing. `flask beaker-session init-db`.
    pub fn migrate(&self, pool: &Pool, limit: Duration) -> StoreResult<bool> {
        let existed = self.exists(pool)?;
        pool.batch(&self.ddl(!existed), limit)
            .map_err(|e| match e {
                StoreError::Unavailable(why) => StoreError::Unavailable(format!(
                    "could not create the session table {}: {why}; run `flask beaker-session \
                 init-db` as a role that may create it",
                    self.qualified
                )),
                other => other,
            })?;
        self.ready.store(true, Ordering::Release);
        self.users_ready.store(true, Ordering::Release);
        Ok(!existed)
    }

    /// Before the first index statement of this process: the index's table exists (a
    /// table created before 0.3.0 lacks it), or is created as `ensure` creates the table.
    pub fn ensure_users(&self, pool: &Pool, limit: Duration) -> StoreResult<()> {
        if self.users_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        if Self::regclass(pool, &self.users)? {
            self.users_ready.store(true, Ordering::Release);
            return Ok(());
        }
        if !self.create {
            return Err(StoreError::Unavailable(format!(
                "postgresql: the per-user index table {} does not exist and \
                 SESSION_DATABASE_CREATE is off: create it with `flask beaker-session init-db`",
                self.users
            )));
        }
        self.migrate(pool, limit).map(drop)
    }

    /// Before the first statement of this process: the table exists, or is created if
    /// allowed; otherwise `StoreError::Unavailable` saying what to run.
    pub fn ensure(&self, pool: &Pool, limit: Duration) -> StoreResult<()> {
        if self.ready.load(Ordering::Acquire) {
            return Ok(());
        }
        if self.exists(pool)? {
            self.ready.store(true, Ordering::Release);
            return Ok(());
        }
        if !self.create {
            return Err(StoreError::Unavailable(format!(
                "postgresql: the session table {} does not exist and SESSION_DATABASE_CREATE \
                 is off: create it with `flask beaker-session init-db`",
                self.qualified
            )));
        }
        self.migrate(pool, limit).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_plain_and_bounded() {
        assert!(is_identifier("beaker_sessions", MAX_TABLE_LEN));
        assert!(is_identifier("_T1", MAX_TABLE_LEN));
        for bad in ["", "1abc", "a-b", "a\"b", "a.b", "sessions; drop", "é"] {
            assert!(!is_identifier(bad, MAX_TABLE_LEN), "{bad}");
        }
        assert!(!is_identifier(&"a".repeat(53), MAX_TABLE_LEN));
    }

    #[test]
    fn names_are_quoted_and_validated() {
        let table = Table::new(Some("app"), "select", true).map(|t| t.qualified);
        assert_eq!(table.ok().as_deref(), Some("\"app\".\"select\""));
        assert!(Table::new(Some("a;b"), "t", true).is_err());
        assert!(Table::new(None, "t\"x", true).is_err());
    }
}
