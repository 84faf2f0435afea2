//! The PostgreSQL backend's per-user index (`crate::store::index`): rows of
//! `<table>_users`, keyed by (user digest, session row id), each one autocommitted
//! statement. The entry is written before the record that names the user (the Python layer
//! orders the calls), so the two tables need no transaction between them; the sweep removes
//! entries past the grace period whose session row is gone, in one statement.

use tokio_postgres::types::Type;

use super::Shared;
use crate::error::StoreResult;
use crate::shard;
use crate::sid::SessionId;
use crate::store::index::user_digest;
use crate::store::IndexEntry;

impl Shared {
    fn index_query(
        &self,
        sql: &str,
        params: &[super::pool::Param<'_>],
    ) -> StoreResult<Vec<tokio_postgres::Row>> {
        self.table.ensure(&self.pool, self.timeout)?;
        self.table.ensure_users(&self.pool, self.timeout)?;
        self.pool.query(sql, params)
    }

    pub(super) fn index_put(&self, user: &str, entry: &IndexEntry) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO {} (user_digest, id, entry, written_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_digest, id)
             DO UPDATE SET entry = EXCLUDED.entry, written_at = EXCLUDED.written_at",
            self.table.users
        );
        let bytes = entry.encode(&self.cfg.keys)?;
        let (user, id) = (user_digest(user), shard::digest(&entry.id));
        self.index_query(
            &sql,
            &[
                (&user, Type::TEXT),
                (&id, Type::TEXT),
                (&bytes, Type::BYTEA),
                (&entry.written_at, Type::FLOAT8),
            ],
        )
        .map(drop)
    }

    pub(super) fn index_remove(&self, user: &str, id: &SessionId) -> StoreResult<()> {
        let sql = format!(
            "DELETE FROM {} WHERE user_digest = $1 AND id = $2",
            self.table.users
        );
        let (user, id) = (user_digest(user), shard::digest(id));
        self.index_query(&sql, &[(&user, Type::TEXT), (&id, Type::TEXT)])
            .map(drop)
    }

    pub(super) fn index_list(&self, user: &str) -> StoreResult<Vec<IndexEntry>> {
        let sql = format!(
            "SELECT entry FROM {} WHERE user_digest = $1",
            self.table.users
        );
        let user = user_digest(user);
        let rows = self.index_query(&sql, &[(&user, Type::TEXT)])?;
        Ok(rows
            .iter()
            .filter_map(|row| row.try_get::<_, Vec<u8>>(0).ok())
            .filter_map(|bytes| IndexEntry::decode(&self.cfg.keys, &bytes))
            .collect())
    }

    pub(super) fn index_sweep(&self, now: f64, grace: f64) -> StoreResult<u64> {
        let sql = format!(
            "WITH d AS (DELETE FROM {u} AS e WHERE e.written_at < $1
               AND NOT EXISTS (SELECT 1 FROM {t} AS s WHERE s.id = e.id) RETURNING 1)
             SELECT count(*) FROM d",
            u = self.table.users,
            t = self.table.qualified
        );
        let before = now - grace;
        let rows = self.index_query(&sql, &[(&before, Type::FLOAT8)])?;
        Ok(rows
            .first()
            .and_then(|r| r.try_get::<_, i64>(0).ok())
            .map_or(0, |n| u64::try_from(n).unwrap_or(0)))
    }
}
