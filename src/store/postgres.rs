//! The PostgreSQL backend (`SESSION_TYPE = 'postgresql'`): sessions in one table of a
//! database the application already runs, shared by every server that reaches it. Same
//! record format and tag as the other backends (the whole record, header and payload, is
//! one `bytea`), same per-session lock semantics, expiry checked on every read by the
//! shared rules (`crate::expiry`) and swept by an indexed `expires_at` column.
//!
//! * Table (`schema`): one row per session, keyed by the SHA-256 of the id (the id itself,
//!   a bearer secret, is never stored), created by an idempotent migration.
//! * Connections (`pool`): a bounded per-process pool, opened lazily, every statement
//!   bounded by `statement_timeout` and by a client-side timeout; each statement runs on
//!   its own (autocommit, one round trip). Any failure to reach or hear from the server is
//!   `StoreError::Unavailable` (a 503 with `Retry-After`); a pool found dead after a restart
//!   reconnects by itself.
//! * Lock (`lock`): one of two modes, `LockMode::Row` (the default: an owner token and
//!   expiry in the row, taken and read by one `UPDATE … RETURNING`, works on any server
//!   and through any pooler) or `LockMode::Advisory` (a session-level advisory lock kept
//!   on the holder's connection: a read-only request writes nothing; PostgreSQL 14+, no
//!   transaction pooling). A waiter polls with back-off and holds no connection between
//!   polls. Saves, touches and deletes carry the mode's guard (`LockMode::write_guard`)
//!   and let the lock go in the same round trip; a request whose lock was lost meanwhile
//!   never overwrites newer data (`StoreError::LockLost`). A read-only request's release
//!   is sent without waiting for its answer: it costs one round trip, a read-write one
//!   two, a new session one, in both modes.
//! * A lock row this process may have left behind (its release failed: the server was
//!   down) is remembered with its token; the next request of that session in this process
//!   takes it over at once instead of waiting for it to lapse. Other processes wait
//!   `lock_ttl`. (An advisory lock goes with its connection.)
//! * Every statement is safe to send twice (the pool retries one that met a dead pooled
//!   connection): taking a lock row accepts our own token, and the guarded writes fail
//!   closed (`LockLost`, never a lost update); the advisory mode's lock-holding statements
//!   are never retried on another connection.
//! * Last access, on the injected clock: the later of the record's save time and
//!   `touched_at`, exactly as the Redis backend's `a:` key; a touch writes only
//!   `touched_at` and `expires_at`, never the record.

mod lock;
mod pool;
mod schema;
mod user_index;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio_postgres::types::Type;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{StoreError, StoreResult};
use crate::expiry::{self, Expiry};
use crate::lock::{clear_if_free, lock, ForkLocal, LockKey, LockScope, ThreadLock};
use crate::record::{self, Rekey};
use crate::report::{Report, WalkMode, SIZE_BUCKETS};
use crate::shard;
use crate::sid::SessionId;
use crate::store::{
    lock_thread, BackendKind, IndexEntry, Loaded, Opened, PayloadKind, SessionHandle, Store,
    StoreConfig,
};

use lock::{Hold, LockSql, Locked};
use pool::{Param, Pool};
use schema::Table;

pub use lock::LockMode;
pub use schema::{is_identifier, MAX_TABLE_LEN};

/// Rows removed per statement by a clear, read per page by `rekey` (each statement stays
/// well within the statement timeout, and never holds many row locks; the sweep's batch
/// depends on the lock mode, `LockMode::sweep_batch`).
const BATCH: i64 = 1000;

/// Makes the statement's own transaction commit asynchronously (`synchronous_commit =
/// off` for that transaction only, `set_config(…, true)`), evaluated in its `RETURNING`
/// list, so only when a row was written. Used by the two statements that change nothing
/// but the lock columns (taking the lock, the bare release): they no longer wait for the
/// WAL flush (an fsync where `synchronous_commit` is on, the default) nor for synchronous
/// standbys, so a read-only request waits for none and a read-write one for one, its save.
/// Safe because losing them fails closed: a server crash or a failover may forget the last
/// such commits (at most `wal_writer_delay` × 3). A forgotten lock take leaves the lock
/// free or with its previous holder: the request's save and touch are compare-and-set on
/// its token, so they fail (`LockLost`) instead of writing. A forgotten release leaves the
/// lock held until it lapses (`lock_ttl`), as a worker killed mid-request does. The record,
/// `touched_at` and `expires_at` are never written by these two statements; every
/// statement that writes them (save, touch, delete, create) commits as configured.
const LOCK_ONLY: &str = "set_config('synchronous_commit', 'off', true)";

/// Longest pause between two attempts to take a session lock another request holds.
const POLL_MAX: Duration = Duration::from_millis(10);

/// Settings of the PostgreSQL backend.
#[derive(Clone)]
pub struct PostgresConfig {
    /// `postgresql://user:password@host:port/dbname?sslmode=…` (or key=value form).
    pub url: String,
    /// Schema of the table (`None`: the role's `search_path`).
    pub schema: Option<String>,
    /// The table's name.
    pub table: String,
    /// Most connections open at once per process.
    pub pool_size: usize,
    /// Bound on establishing a connection (and on waiting for a pooled one).
    pub connect_timeout: Duration,
    /// Bound on each statement (`statement_timeout`, and client-side).
    pub timeout: Duration,
    /// How long a session lock lives if its holder never releases it: a lock row's
    /// expiry; the advisory mode's `idle_session_timeout` (a hung holder).
    pub lock_ttl: Duration,
    /// How sessions are locked.
    pub lock: LockMode,
    /// Whether the first use creates the table when it is missing.
    pub create: bool,
    /// PEM CA certificates to trust for TLS instead of the public ones.
    pub tls_ca_certs: Option<Vec<u8>>,
}

/// Never shows the URL (it may hold a password).
impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("schema", &self.schema)
            .field("table", &self.table)
            .field("pool_size", &self.pool_size)
            .field("lock", &self.lock)
            .finish_non_exhaustive()
    }
}

/// The rustls connector for `sslmode=prefer/require`: the server's certificate is always
/// verified (against `ca_certs`, else the public CAs), as libpq's `verify-full` does.
fn tls_for(ca_certs: Option<&[u8]>) -> StoreResult<MakeRustlsConnect> {
    let bad = |e: &dyn std::fmt::Display| {
        StoreError::Config(format!("invalid PostgreSQL TLS settings: {e}"))
    };
    let mut roots = rustls::RootCertStore::empty();
    match ca_certs {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// The statements of one table, formatted once.
struct Sql {
    save: String,
    touch: String,
    delete: String,
    create: String,
    stats: String,
    sweep: String,
    clear: String,
    rekey_page: String,
    rekey: String,
}

impl Sql {
    fn new(t: &str, mode: LockMode) -> Self {
        let buckets: String = SIZE_BUCKETS
            .iter()
            .map(|b| format!(", count(*) FILTER (WHERE octet_length(record) <= {b})"))
            .collect();
        // What every write of a locked session requires of its row ($1 id, $2 the lock's
        // token or the header read); each also clears the lock row (in the advisory mode
        // there is none but a lapsed one, which it may as well clear).
        let guard = mode.write_guard();
        let sweep_guard = mode.sweep_guard();
        let rekey_guard = mode.rekey_guard();
        Sql {
            save: format!(
                "UPDATE {t} SET record = $3, expires_at = $4, touched_at = NULL,
                   lock_token = NULL, lock_expires = NULL
                 WHERE id = $1 AND {guard} RETURNING 1"
            ),
            touch: format!(
                "UPDATE {t} SET touched_at = $3, expires_at = $4, lock_token = NULL,
                   lock_expires = NULL
                 WHERE id = $1 AND {guard} RETURNING 1"
            ),
            delete: format!("DELETE FROM {t} WHERE id = $1 AND {guard} RETURNING 1"),
            create: format!(
                "INSERT INTO {t} (id, record, expires_at) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO NOTHING RETURNING 1"
            ),
            stats: format!(
                "SELECT count(*), coalesce(sum(octet_length(record)), 0)::int8,
                   count(*) FILTER (WHERE expires_at < $1){buckets}
                 FROM {t}"
            ),
            // Expired and not locked by a live request (its save would find it gone).
            sweep: format!(
                "WITH d AS (DELETE FROM {t} WHERE id IN (
                   SELECT id FROM {t} WHERE expires_at < $1
                     AND (lock_token IS NULL OR lock_expires < clock_timestamp())
                     {sweep_guard}
                   LIMIT $2 FOR UPDATE SKIP LOCKED)
                   RETURNING octet_length(record) AS n)
                 SELECT count(*), coalesce(sum(n), 0)::int8 FROM d"
            ),
            clear: format!(
                "WITH d AS (DELETE FROM {t} WHERE id IN (SELECT id FROM {t} LIMIT $1)
                   RETURNING octet_length(record) AS n)
                 SELECT count(*), coalesce(sum(n), 0)::int8 FROM d"
            ),
            // `rekey`: the table a page at a time in id order, then each re-sealed record
            // written back only if its header is still the one read (a request that saved
            // meanwhile wrote under the current key already).
            rekey_page: format!("SELECT id, record FROM {t} WHERE id > $1 ORDER BY id LIMIT $2"),
            rekey: format!(
                "UPDATE {t} SET record = $3 WHERE id = $1 AND substring(record FROM 1 FOR 64) = $2
                   {rekey_guard}
                 RETURNING 1"
            ),
        }
    }
}

struct Shared {
    cfg: StoreConfig,
    table: Table,
    sql: Sql,
    /// The lock's own statements, and its mode.
    lock: LockSql,
    /// The advisory locks' class (first key; `lock::advisory_class`).
    class: i32,
    pool: Pool,
    lock_ttl_ms: f64,
    timeout: Duration,
    scope: LockScope,
    /// Locks this process may have left behind: digest → (token, when it lapses).
    orphans: ForkLocal<Mutex<HashMap<String, (String, Instant)>>>,
}

/// Sessions in a PostgreSQL table.
pub struct PostgresStore {
    shared: Arc<Shared>,
}

/// A locked session of a `PostgresStore`.
pub struct PostgresHandle {
    store: Arc<Shared>,
    id: SessionId,
    digest: String,
    /// The session lock (`None` once let go).
    hold: Option<Hold>,
    payload: Vec<u8>,
    /// The large values as loaded (taken by the Python handle).
    segments: record::Segments,
    created: f64,
    last_access: f64,
    seq: u64,
    /// Opened under a fallback key or in the other format (`record::Verified::stale`).
    stale: bool,
    _lock: ThreadLock,
}

/// When a session expires on the injected clock (for the sweep; `None`: never): the
/// earlier of idle timeout after its last access and absolute lifetime after creation.
fn expires_at(expiry: &Expiry, created: f64, last_access: f64) -> Option<f64> {
    let idle = expiry.idle.map(|i| last_access + i);
    let absolute = expiry.absolute.map(|a| created + a);
    match (idle, absolute) {
        (Some(i), Some(a)) => Some(i.min(a)),
        (i, a) => i.or(a),
    }
}

/// Column `i` of `row` as `T`; a table whose columns were altered to other types is an
/// unusable store (`StoreError::Unavailable`), never a panic.
fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a tokio_postgres::Row,
    i: usize,
) -> StoreResult<T> {
    row.try_get(i)
        .map_err(|e| StoreError::Unavailable(format!("postgresql: unexpected column {i}: {e}")))
}

fn count(row: &tokio_postgres::Row, i: usize) -> StoreResult<u64> {
    Ok(u64::try_from(column::<i64>(row, i)?).unwrap_or(0))
}

impl Shared {
    fn query(&self, sql: &str, params: &[Param<'_>]) -> StoreResult<Vec<tokio_postgres::Row>> {
        self.table.ensure(&self.pool, self.timeout)?;
        self.pool.query(sql, params)
    }

    fn orphans(&self) -> &Mutex<HashMap<String, (String, Instant)>> {
        self.orphans.get_or_retire(clear_if_free)
    }

    /// Remembers a lock whose release may not have reached the server.
    fn orphan(&self, digest: &str, token: &str) {
        let lapses = crate::lock::deadline_after(Duration::from_secs_f64(self.lock_ttl_ms / 1e3));
        let mut orphans = lock(self.orphans());
        if orphans.len() >= 1000 {
            let now = Instant::now();
            orphans.retain(|_, (_, lapses)| *lapses > now);
        }
        orphans.insert(digest.to_owned(), (token.to_owned(), lapses));
    }

    /// Counts the table's rows (`records`, `bytes`, `expired`, `live`, `sizes`).
    fn stats(&self, now: f64) -> StoreResult<Report> {
        let rows = self.query(&self.sql.stats, &[(&now, Type::FLOAT8)])?;
        let mut report = Report::default();
        let Some(row) = rows.first() else {
            return Ok(report);
        };
        report.records = count(row, 0)?;
        report.bytes = count(row, 1)?;
        report.expired = count(row, 2)?;
        report.live = report.records.saturating_sub(report.expired);
        let mut below = 0;
        for (i, slot) in report.sizes.iter_mut().take(SIZE_BUCKETS.len()).enumerate() {
            let upto = count(row, 3 + i)?;
            *slot = upto.saturating_sub(below);
            below = upto;
        }
        report.sizes[SIZE_BUCKETS.len()] = report.records.saturating_sub(below);
        Ok(report)
    }

    /// `Rekey` (or its dry run, `write` false) over the whole table, a page at a time.
    fn rekey(&self, write: bool) -> StoreResult<Report> {
        let mut report = Report::default();
        let mut after = String::new();
        loop {
            let rows = self.query(
                &self.sql.rekey_page,
                &[(&after, Type::TEXT), (&BATCH, Type::INT8)],
            )?;
            for row in &rows {
                let id: String = column(row, 0)?;
                let value: Vec<u8> = column(row, 1)?;
                report.records += 1;
                crate::report::count_walked(1);
                report.bytes += value.len() as u64;
                report.add_size(value.len() as u64);
                let mut digest = [0u8; 32];
                if hex::decode_to_slice(&id, &mut digest).is_err() {
                    report.foreign += 1;
                } else {
                    self.rekey_one(&id, &digest, &value, write, &mut report)?;
                }
                after = id;
            }
            if rows.len() < BATCH as usize {
                return Ok(report);
            }
        }
    }

    fn rekey_one(
        &self,
        id: &str,
        digest: &[u8; 32],
        value: &[u8],
        write: bool,
        report: &mut Report,
    ) -> StoreResult<()> {
        match record::rekey_value(&self.cfg.keys, digest, value)? {
            Rekey::Reseal(new) if write => {
                let head = &value[..record::HEADER_LEN];
                let key = lock::advisory_key(id);
                let mut params: Vec<Param<'_>> =
                    vec![(&id, Type::TEXT), (&head, Type::BYTEA), (&new, Type::BYTEA)];
                if self.lock.mode == LockMode::Advisory {
                    params.extend_from_slice(&[(&self.class, Type::INT4), (&key, Type::INT4)]);
                }
                if self.query(&self.sql.rekey, &params)?.is_empty() {
                    report.current += 1; // saved by a request meanwhile
                } else {
                    report.rekeyed += 1;
                }
            }
            Rekey::Reseal(_) => report.rekeyed += 1,
            Rekey::Current => report.current += 1,
            Rekey::Plain => report.plain += 1,
            Rekey::Unopenable => report.unopenable += 1,
            Rekey::Newer => report.live += 1,
            Rekey::Corrupt => report.corrupt += 1,
        }
        Ok(())
    }

    /// Deletes in batches until a batch is short: the sweep's (expired at `now`) or the
    /// clear's (`None`); (rows, bytes) removed.
    fn delete_batches(&self, now: Option<f64>) -> StoreResult<(u64, u64)> {
        let (mut rows_total, mut bytes_total) = (0, 0);
        let batch = match now {
            Some(_) => self.lock.mode.sweep_batch(),
            None => BATCH,
        };
        loop {
            let rows = match now {
                Some(now) => {
                    let mut params: Vec<Param<'_>> =
                        vec![(&now, Type::FLOAT8), (&batch, Type::INT8)];
                    if self.lock.mode == LockMode::Advisory {
                        params.push((&self.class, Type::INT4));
                    }
                    self.query(&self.sql.sweep, &params)?
                }
                None => self.query(&self.sql.clear, &[(&batch, Type::INT8)])?,
            };
            let (n, bytes) = match rows.first() {
                Some(r) => (count(r, 0)?, count(r, 1)?),
                None => (0, 0),
            };
            rows_total += n;
            bytes_total += bytes;
            if n < batch as u64 {
                return Ok((rows_total, bytes_total));
            }
        }
    }
}

impl PostgresStore {
    /// Builds a store; connects lazily (nothing is opened before a pre-fork server forks).
    pub fn new(cfg: StoreConfig, pcfg: PostgresConfig) -> StoreResult<Self> {
        static PROVIDER: Once = Once::new();
        PROVIDER.call_once(|| {
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        let table = Table::new(pcfg.schema.as_deref(), &pcfg.table, pcfg.create)?;
        let tls = tls_for(pcfg.tls_ca_certs.as_deref())?;
        // The advisory mode keeps a connection per held session, and always leaves one
        // for the other statements: two at least; `idle_session_timeout` bounds a hung
        // holder there.
        let (size, idle) = match pcfg.lock {
            LockMode::Row => (pcfg.pool_size, None),
            LockMode::Advisory => (pcfg.pool_size.max(2), Some(pcfg.lock_ttl)),
        };
        let pool = Pool::new(
            &pcfg.url,
            Some(tls),
            size,
            pcfg.connect_timeout,
            pcfg.timeout,
            idle,
        )?;
        let scope = LockScope::Server(Arc::from(format!(
            "postgresql\n{}\n{}",
            pcfg.url, table.qualified
        )));
        Ok(PostgresStore {
            shared: Arc::new(Shared {
                cfg,
                sql: Sql::new(&table.qualified, pcfg.lock),
                lock: LockSql::new(&table.qualified, pcfg.lock),
                class: lock::advisory_class(&table.qualified),
                table,
                pool,
                lock_ttl_ms: pcfg.lock_ttl.as_secs_f64() * 1e3,
                timeout: pcfg.timeout,
                scope,
                orphans: ForkLocal::here(),
            }),
        })
    }
}

impl Store for PostgresStore {
    fn kind(&self) -> BackendKind {
        BackendKind::Postgres
    }

    fn config(&self) -> &StoreConfig {
        &self.shared.cfg
    }

    fn open(&self, id: &SessionId, now: f64) -> StoreResult<Opened<Box<dyn SessionHandle>>> {
        let shared = &self.shared;
        let key = LockKey {
            scope: shared.scope.clone(),
            id: *id,
        };
        let (thread_lock, deadline) = lock_thread(key, &shared.cfg)?;
        let digest = shard::digest(id);
        let Some(Locked {
            value,
            touched,
            hold,
        }) = shared.lock_and_read(&digest, deadline)?
        else {
            return Ok(Opened::Missing);
        };
        let mut handle = PostgresHandle {
            store: Arc::clone(shared),
            id: *id,
            digest,
            hold: Some(hold),
            payload: Vec::new(),
            segments: record::Segments::default(),
            created: now,
            last_access: now,
            seq: 0,
            stale: false,
            _lock: thread_lock,
        };
        let verified = match record::check_owned(&shared.cfg.keys, id, std::sync::Arc::new(value)) {
            Ok(v) => v,
            Err(refused) => {
                if refused.removes() {
                    handle.remove()?;
                } else {
                    handle.release();
                }
                return Ok(refused.into());
            }
        };
        let header = verified.header;
        let last_access = expiry::last_access(header.saved_at, touched);
        let expired = (shared.cfg.expiry).is_expired(now, Some(header.created), Some(last_access));
        if expired {
            handle.remove()?;
            return Ok(Opened::Expired);
        }
        handle.payload = verified.payload;
        handle.segments = verified.segments;
        handle.stale = verified.stale;
        handle.created = header.created;
        handle.last_access = last_access;
        handle.seq = header.seq;
        Ok(Opened::Found(Box::new(handle)))
    }

    /// `INSERT … ON CONFLICT DO NOTHING`: never overwrites.
    fn create_payload(
        &self,
        id: &SessionId,
        payload: &record::Payload<'_>,
        created: f64,
        now: f64,
    ) -> StoreResult<()> {
        let shared = &self.shared;
        let value = record::encode_slot(&shared.cfg.keys, id, 1, created, now, *payload)?;
        let expires = expires_at(&shared.cfg.expiry, created, now);
        let rows = shared.query(
            &shared.sql.create,
            &[
                (&shard::digest(id), Type::TEXT),
                (&value, Type::BYTEA),
                (&expires, Type::FLOAT8),
            ],
        )?;
        if rows.is_empty() {
            return Err(StoreError::IdCollision);
        }
        Ok(())
    }

    /// Counts (`Stats`), deletes expired sessions by the indexed `expires_at` (`Sweep`,
    /// after counting), or deletes every session (`Clear`), in batches.
    fn walk(&self, now: f64, mode: WalkMode, _threads: usize) -> StoreResult<Report> {
        let shared = &self.shared;
        match mode {
            WalkMode::Stats => shared.stats(now),
            WalkMode::Rekey => shared.rekey(true),
            WalkMode::RekeyDryRun => shared.rekey(false),
            WalkMode::Sweep => {
                let mut report = shared.stats(now)?;
                let (removed, bytes) = shared.delete_batches(Some(now))?;
                report.removed = removed;
                report.bytes_freed = bytes;
                Ok(report)
            }
            WalkMode::Clear => {
                let (removed, bytes) = shared.delete_batches(None)?;
                Ok(Report {
                    records: removed,
                    bytes,
                    removed,
                    bytes_freed: bytes,
                    ..Report::default()
                })
            }
        }
    }

    /// The sweeper thread's pass: only the indexed `DELETE`s (no count of the whole
    /// table, which `walk` makes for `flask beaker-session sweep`). Concurrent sweeps of
    /// several workers skip each other's rows (`SKIP LOCKED`), so none is coordinated.
    fn sweep_if_due(&self, now: f64, _interval: f64, _: usize) -> StoreResult<Option<Report>> {
        let shared = &self.shared;
        let (removed, bytes) = shared.delete_batches(Some(now))?;
        Ok(Some(Report {
            expired: removed,
            removed,
            bytes_freed: bytes,
            ..Report::default()
        }))
    }

    fn init_schema(&self) -> StoreResult<Option<bool>> {
        let shared = &self.shared;
        shared.table.migrate(&shared.pool, shared.timeout).map(Some)
    }

    fn index_put(&self, user: &str, entry: &IndexEntry) -> StoreResult<()> {
        self.shared.index_put(user, entry)
    }

    fn index_remove(&self, user: &str, id: &SessionId) -> StoreResult<()> {
        self.shared.index_remove(user, id)
    }

    fn index_list(&self, user: &str) -> StoreResult<Vec<IndexEntry>> {
        self.shared.index_list(user)
    }

    fn index_sweep(&self, now: f64, grace: f64) -> StoreResult<u64> {
        self.shared.index_sweep(now, grace)
    }
}

impl PostgresHandle {
    /// Runs one of the guarded writes (`Sql::save`, `touch`, `delete`: `$1` the id, `$2`
    /// the lock's guard, then `extra`), which lets the lock go in the same round trip; the
    /// lock is gone afterwards whatever the outcome. No row changed: the lock was lost
    /// (or the session is gone), `LockLost`.
    fn run(&mut self, sql: &str, extra: &[Param<'_>]) -> StoreResult<()> {
        let Some(hold) = self.hold.take() else {
            return Err(StoreError::LockLost);
        };
        let rows = self.store.write_locked(hold, &self.digest, sql, extra)?;
        if rows.is_empty() {
            return Err(StoreError::LockLost);
        }
        Ok(())
    }

    /// Removes the session and its lock.
    fn remove(&mut self) -> StoreResult<()> {
        let store = Arc::clone(&self.store);
        self.run(&store.sql.delete, &[])
    }

    /// Lets the lock go without waiting for the server's answer (`Shared::release`).
    fn release(&mut self) {
        if let Some(hold) = self.hold.take() {
            self.store.release(hold, &self.digest);
        }
    }
}

impl SessionHandle for PostgresHandle {
    fn id(&self) -> &SessionId {
        &self.id
    }

    fn loaded(&self) -> Loaded {
        Loaded {
            kind: PayloadKind::Record,
            created: Some(self.created),
            last_access: Some(self.last_access),
            stale: self.stale,
        }
    }

    fn payload(&self) -> &[u8] {
        &self.payload
    }

    fn take_segments(&mut self) -> record::Segments {
        std::mem::take(&mut self.segments)
    }

    /// Writes the new record and releases the lock in one statement (if still ours).
    fn save_payload(
        mut self: Box<Self>,
        payload: &record::Payload<'_>,
        now: f64,
        _: Option<f64>,
    ) -> StoreResult<()> {
        let store = Arc::clone(&self.store);
        let now = expiry::save_time(Some(self.last_access), now);
        let value = record::encode_slot(
            &store.cfg.keys,
            &self.id,
            self.seq + 1,
            self.created,
            now,
            *payload,
        )?;
        let expires = expires_at(&store.cfg.expiry, self.created, now);
        self.run(
            &store.sql.save,
            &[(&value, Type::BYTEA), (&expires, Type::FLOAT8)],
        )
    }

    /// Touches and releases in one statement; a bare release when no touch is due.
    fn touch(mut self: Box<Self>, now: f64) -> StoreResult<bool> {
        let store = Arc::clone(&self.store);
        if !store.cfg.expiry.touch_due(Some(self.last_access), now) {
            self.release();
            return Ok(false);
        }
        let expires = expires_at(&store.cfg.expiry, self.created, now);
        self.run(
            &store.sql.touch,
            &[(&now, Type::FLOAT8), (&expires, Type::FLOAT8)],
        )?;
        Ok(true)
    }

    fn delete(mut self: Box<Self>) -> StoreResult<()> {
        self.remove()
    }
}

impl Drop for PostgresHandle {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Keys;

    #[test]
    fn expires_at_is_the_earlier_limit() {
        let both = Expiry {
            idle: Some(100.0),
            absolute: Some(1000.0),
        };
        assert_eq!(expires_at(&both, 0.0, 50.0), Some(150.0));
        assert_eq!(expires_at(&both, 0.0, 950.0), Some(1000.0));
        assert_eq!(expires_at(&Expiry::default(), 0.0, 5.0), None);
    }

    #[test]
    fn bad_urls_and_names_are_config_errors() {
        let cfg = StoreConfig {
            keys: Keys::new(&[b"k".to_vec()]),
            expiry: Expiry::default(),
            lock_timeout: Duration::from_secs(1),
            max_waiters: None,
        };
        let pcfg = PostgresConfig {
            url: "postgresql://u@127.0.0.1:1/db".to_owned(),
            schema: None,
            table: "sessions".to_owned(),
            pool_size: 2,
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            lock_ttl: Duration::from_secs(1),
            lock: LockMode::Row,
            create: true,
            tls_ca_certs: None,
        };
        assert!(PostgresStore::new(cfg.clone(), pcfg.clone()).is_ok());
        let bad_url = PostgresConfig {
            url: "postgresql://u@h:notaport/db".to_owned(),
            ..pcfg.clone()
        };
        assert!(matches!(
            PostgresStore::new(cfg.clone(), bad_url),
            Err(StoreError::Config(_))
        ));
        let bad_table = PostgresConfig {
            table: "x; drop table y".to_owned(),
            ..pcfg
        };
        assert!(matches!(
            PostgresStore::new(cfg, bad_table),
            Err(StoreError::Config(_))
        ));
    }

    #[test]
    fn unreachable_server_is_unavailable_within_the_timeouts() {
        let cfg = StoreConfig {
            keys: Keys::new(&[b"k".to_vec()]),
            expiry: Expiry::default(),
            lock_timeout: Duration::from_secs(1),
            max_waiters: None,
        };
        let pcfg = PostgresConfig {
            url: "postgresql://u@127.0.0.1:1/db?sslmode=disable".to_owned(),
            schema: None,
            table: "sessions".to_owned(),
            pool_size: 2,
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            lock_ttl: Duration::from_secs(1),
            lock: LockMode::Row,
            create: true,
            tls_ca_certs: None,
        };
        let store = PostgresStore::new(cfg, pcfg).map_err(|e| e.to_string());
        let Ok(store) = store else {
            panic!("store: {store:?}", store = store.err());
        };
        let started = Instant::now();
        let id = SessionId::parse("0123456789abcdef0123456789abcdef");
        let Some(id) = id else { panic!("id") };
        let opened = store.open(&id, 0.0);
        assert!(matches!(opened, Err(StoreError::Unavailable(_))));
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
