//! The PostgreSQL backend's connections: at most `pool_size` per process, opened lazily,
//! each a `tokio_postgres` client driven by its own current-thread tokio runtime (no
//! background thread: the connection is polled only while a caller waits on it), so that
//! every round trip is bounded by a client-side timeout as well as by the server's
//! `statement_timeout` (which a stalled or unreachable server never enforces).
//!
//! Each statement runs on its own (autocommit): no connection is ever left inside a
//! transaction. A connection is taken from the pool for the duration of a statement (or
//! of two pipelined in one round trip, `Conn::pair`), never while a request waits for a
//! session lock. In the advisory lock mode the request that gets the lock keeps the
//! connection that holds it (`Held`: an advisory lock lives in its server session) until
//! it releases, and at most `size - 1` are kept so, so that one is always left for other
//! statements; in the lock row mode no connection is ever kept. Each connection prepares a
//! statement the first time it sends it and keeps it (the server then neither parses nor
//! plans it again); a connection that met a server error forgets its statements (the
//! table may have been dropped and created again). One statement is not waited for
//! (`Pool::send` and `Pool::release`, the lock release of a read-only request): it is
//! written out and the connection goes back to the pool; its answer is read, in order,
//! before the next one.
//!
//! Fork safety: the pool is per fork generation (`crate::lock::ForkLocal`). A child never
//! uses, drops or waits on what it inherited: dropping an inherited client could send the
//! server a `Terminate` on the parent's socket, so inherited idle connections are leaked
//! (`mem::forget`), and a connection taken out before a fork is never given back after it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Condvar, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::runtime::{Builder, Runtime};
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Config, NoTls, Row, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{StoreError, StoreResult};
use crate::lock::{generation, lock, ForkLocal};

/// One parameter of a statement with its type (statements are sent unprepared).
pub type Param<'a> = (&'a (dyn ToSql + Sync), Type);

/// An open connection, the runtime that drives it, and its prepared statements.
pub struct Conn {
    rt: Runtime,
    client: Client,
    prepared: RefCell<HashMap<String, Statement>>,
}

/// What went wrong with a statement.
enum Failure {
    /// The client-side bound passed: the connection is in an unknown state.
    Timeout,
    /// The server or the connection reported an error.
    Pg(tokio_postgres::Error),
}

/// The error of a failed statement or connection, as `StoreError::Unavailable` (the
/// server's own message and SQLSTATE when it sent one; a missing table says what to run).
pub fn unavailable(e: &tokio_postgres::Error) -> StoreError {
    let text = match e.as_db_error() {
        Some(db) if *db.code() == SqlState::UNDEFINED_TABLE => format!(
            "{} (SQLSTATE {}): create the table with `flask beaker-session init-db`, or \
             let the first request create it (SESSION_DATABASE_CREATE)",
            db.message(),
            db.code().code()
        ),
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    };
    StoreError::Unavailable(format!("postgresql: {text}"))
}

fn timed_out(what: &str, limit: Duration) -> StoreError {
    StoreError::Unavailable(format!(
        "postgresql: no answer to {what} within {:.1}s",
        limit.as_secs_f64()
    ))
}

impl Conn {
    /// `sql` prepared on this connection (once: the server then neither parses nor plans
    /// it again).
    async fn statement(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<Statement, tokio_postgres::Error> {
        let known = self.prepared.borrow().get(sql).cloned();
        if let Some(statement) = known {
            return Ok(statement);
        }
        let types: Vec<Type> = params.iter().map(|(_, t)| t.clone()).collect();
        let statement = self.client.prepare_typed(sql, &types).await?;
        self.prepared
            .borrow_mut()
            .insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    fn query(&self, limit: Duration, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, Failure> {
        let values: Vec<&(dyn ToSql + Sync)> = params.iter().map(|(v, _)| *v).collect();
        let outcome = self.rt.block_on(async {
            tokio::time::timeout(limit, async {
                let statement = self.statement(sql, params).await?;
                self.client.query(&statement, &values).await
            })
            .await
        });
        self.settle(outcome)
    }

    /// Two statements in one round trip (pipelined), each its own autocommit transaction:
    /// the second starts (and takes its snapshot) only after the first has committed.
    fn pair(
        &self,
        limit: Duration,
        first: (&str, &[Param<'_>]),
        second: (&str, &[Param<'_>]),
    ) -> Result<(Vec<Row>, Vec<Row>), Failure> {
        let a: Vec<&(dyn ToSql + Sync)> = first.1.iter().map(|(v, _)| *v).collect();
        let b: Vec<&(dyn ToSql + Sync)> = second.1.iter().map(|(v, _)| *v).collect();
        let outcome = self.rt.block_on(async {
            tokio::time::timeout(limit, async {
                let one = self.statement(first.0, first.1).await?;
                let two = self.statement(second.0, second.1).await?;
                futures_util::future::try_join(
                    self.client.query(&one, &a),
                    self.client.query(&two, &b),
                )
                .await
            })
            .await
        });
        self.settle(outcome)
    }

    /// Sends a statement without waiting for its answer (pipelining): it is on the wire
    /// when this returns, and the server runs it as soon as it reads it; its answer is
    /// read and dropped by the connection in order, before the answer of the next
    /// statement sent on it. An error of the statement itself is not seen (a broken
    /// connection is: here, or by the next statement, which the pool then retries).
    fn send(&self, limit: Duration, sql: &str, params: &[Param<'_>]) -> Result<(), Failure> {
        let values: Vec<&(dyn ToSql + Sync)> = params.iter().map(|(v, _)| *v).collect();
        let outcome = self.rt.block_on(async {
            tokio::time::timeout(limit, async {
                let statement = self.statement(sql, params).await?;
                let query = self.client.query(&statement, &values);
                let mut query = std::pin::pin!(query);
                // The first poll hands the request to the connection task (it cannot
                // complete: nothing was read yet; a closed connection fails here).
                let first = std::future::poll_fn(|cx| Poll::Ready(query.as_mut().poll(cx)));
                if let Poll::Ready(Err(e)) = first.await {
                    return Err(e);
                }
                // The connection task, woken by the request, writes it out when this
                // task yields: the runtime runs every ready task before polling this
                // one again (twice, should a tick ever leave it for the next).
                tokio::task::yield_now().await;
                tokio::task::yield_now().await;
                Ok(())
            })
            .await
        });
        self.settle(outcome).map(drop)
    }

    /// The outcome of a bounded statement; a connection that met a server error forgets
    /// its statements (the table may have been dropped and created again).
    fn settle<T>(
        &self,
        outcome: Result<Result<T, tokio_postgres::Error>, tokio::time::error::Elapsed>,
    ) -> Result<T, Failure> {
        let result = outcome.map_err(|_| Failure::Timeout)?;
        if result.is_err() {
            self.prepared.borrow_mut().clear();
        }
        result.map_err(Failure::Pg)
    }

    fn batch(&self, limit: Duration, sql: &str) -> Result<(), Failure> {
        self.rt
            .block_on(async { tokio::time::timeout(limit, self.client.batch_execute(sql)).await })
            .map_err(|_| Failure::Timeout)?
            .map_err(Failure::Pg)
    }
}

#[derive(Default)]
struct State {
    idle: Vec<Conn>,
    /// Connections of this generation open now (idle or in use).
    open: usize,
    /// Connections of this generation kept out by a session lock (`Held`).
    held: usize,
}

/// A connection kept out of the pool by the request that holds a session lock on it
/// (a session-level advisory lock lives as long as its connection).
pub struct Held {
    conn: Conn,
    born: u64,
}

#[derive(Default)]
struct Slots {
    state: Mutex<State>,
    freed: Condvar,
}

/// Pooled connections to one database.
pub struct Pool {
    config: Config,
    tls: Option<MakeRustlsConnect>,
    size: usize,
    connect_timeout: Duration,
    timeout: Duration,
    slots: ForkLocal<Slots>,
}

/// What a statement needs: a server-side bound (`statement_timeout`), this process's
/// name in `pg_stat_activity`, and TCP keepalives (a peer that vanished is noticed).
/// `idle` (advisory lock mode only: the lock TTL) is sent as `idle_session_timeout`,
/// which bounds how long a connection may sit idle outside a transaction: the server then
/// closes it, which frees the session lock of a request that holds one but hangs with its
/// TCP connection open. The setting exists from PostgreSQL 14 on; an older server refuses
/// the connection (`refused_setting` says so).
fn tune(config: &mut Config, connect_timeout: Duration, timeout: Duration, idle: Option<Duration>) {
    let ms = timeout.as_millis().max(1);
    let mut options = config.get_options().unwrap_or_default().to_owned();
    if !options.is_empty() {
        options.push(' ');
    }
    options.push_str(&format!(
        "-c statement_timeout={ms} -c lock_timeout={ms} -c idle_in_transaction_session_timeout={}",
        ms * 2
    ));
    if let Some(idle) = idle {
        let idle_ms = idle.as_millis().clamp(1, i32::MAX as u128);
        options.push_str(&format!(" -c idle_session_timeout={idle_ms}"));
    }
    config.options(options);
    if config.get_application_name().is_none() {
        config.application_name("flask-beaker-session");
    }
    config.connect_timeout(connect_timeout);
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(30));
}

/// The error of a connection the server refused because it does not know
/// `idle_session_timeout` (a server older than 14): the advisory lock mode cannot bound a
/// hung holder there, so it is not used at all; the message says what to set instead.
fn refused_setting(code: &SqlState, message: &str) -> Option<StoreError> {
    (*code == SqlState::UNDEFINED_OBJECT && message.contains("idle_session_timeout")).then(|| {
        StoreError::Unavailable(format!(
            "postgresql: {message}: SESSION_DATABASE_LOCK = 'advisory' needs PostgreSQL 14 \
             or later (idle_session_timeout bounds how long a hung request keeps its \
             session locked); use SESSION_DATABASE_LOCK = 'row' with this server"
        ))
    })
}

impl Pool {
    /// An empty pool for `url` (no connection is made until the first statement).
    pub fn new(
        url: &str,
        tls: Option<MakeRustlsConnect>,
        size: usize,
        connect_timeout: Duration,
        timeout: Duration,
        idle: Option<Duration>,
    ) -> StoreResult<Self> {
        let mut config: Config = url
            .parse()
            .map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL: {e}")))?;
        tune(&mut config, connect_timeout, timeout, idle);
        let tls = match config.get_ssl_mode() {
            SslMode::Disable => None,
            _ => tls,
        };
        Ok(Pool {
            config,
            tls,
            size: size.max(1),
            connect_timeout,
            timeout,
            slots: ForkLocal::here(),
        })
    }

    /// This generation's slots; inherited idle connections are leaked, never dropped
    /// (see the module doc), and never waited for.
    fn slots(&self) -> &Slots {
        self.slots.get_or_retire(|old: &Slots| {
            if let Ok(mut state) = old.state.try_lock() {
                for conn in state.idle.drain(..) {
                    std::mem::forget(conn);
                }
            }
        })
    }

    fn connect(&self) -> StoreResult<Conn> {
        let rt = Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| StoreError::Unavailable(format!("postgresql: no runtime: {e}")))?;
        // The connect timeout bounds each address; this bounds the whole handshake.
        let limit = self.connect_timeout + self.timeout;
        let client = rt.block_on(async {
            let connected = async {
                match &self.tls {
                    None => {
                        let (client, connection) = self.config.connect(NoTls).await?;
                        tokio::spawn(async move { drop(connection.await) });
                        Ok(client)
                    }
                    Some(tls) => {
                        let (client, connection) = self.config.connect(tls.clone()).await?;
                        tokio::spawn(async move { drop(connection.await) });
                        Ok(client)
                    }
                }
            };
            tokio::time::timeout(limit, connected).await
        });
        match client {
            Ok(Ok(client)) => Ok(Conn {
                rt,
                client,
                prepared: RefCell::default(),
            }),
            Ok(Err(e)) => Err((&e as &tokio_postgres::Error)
                .as_db_error()
                .and_then(|db| refused_setting(db.code(), db.message()))
                .unwrap_or_else(|| unavailable(&e))),
            Err(_) => Err(timed_out("the connection", limit)),
        }
    }

    /// A pooled connection (second value: true) or a new one if fewer than `size` are
    /// open, waiting at most the connect timeout for one to be given back.
    /// `for_lock`: the connection may be kept by a session lock, which at most
    /// `size - 1` connections are at once, so that one is always left for the other
    /// statements of the requests holding them (a create, the user index).
    fn get(&self, for_lock: bool) -> StoreResult<(Conn, bool, u64)> {
        let born = generation();
        let slots = self.slots();
        let deadline = Instant::now() + self.connect_timeout;
        let mut state = lock(&slots.state);
        loop {
            let blocked = for_lock && state.held + 1 >= self.size;
            if blocked {
                // wait below
            } else if let Some(conn) = state.idle.pop() {
                return Ok((conn, true, born));
            }
            if !blocked && state.open < self.size {
                state.open += 1;
                drop(state);
                return match self.connect() {
                    Ok(conn) => Ok((conn, false, born)),
                    Err(e) => {
                        self.forget_one(born);
                        Err(e)
                    }
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreError::Unavailable(format!(
                    "postgresql: all {} connections of this process stayed busy for {:.1}s \
                     (SESSION_DATABASE_POOL_SIZE)",
                    self.size,
                    self.connect_timeout.as_secs_f64()
                )));
            }
            state = slots
                .freed
                .wait_timeout(state, left)
                .map_or_else(|e| e.into_inner().0, |(s, _)| s);
        }
    }

    /// Returns a healthy connection (unless a fork happened since it was taken: then the
    /// parent owns its socket and it is leaked).
    fn give_back(&self, conn: Conn, born: u64) {
        if born != generation() {
            std::mem::forget(conn);
            return;
        }
        let slots = self.slots();
        lock(&slots.state).idle.push(conn);
        slots.freed.notify_one();
    }

    /// A connection of generation `born` was closed (or never opened): frees its slot.
    fn forget_one(&self, born: u64) {
        self.count_down(born, |state| &mut state.open, false);
    }

    /// Takes one off the counter `field` picks (if `born` is this generation's: counts
    /// of an earlier one were left behind with the fork) and wakes one waiter, or all of
    /// them (`all`) where the count bounds several.
    fn count_down(&self, born: u64, field: fn(&mut State) -> &mut usize, all: bool) {
        if born != generation() {
            return;
        }
        let slots = self.slots();
        let mut state = lock(&slots.state);
        let count = field(&mut state);
        *count = count.saturating_sub(1);
        drop(state);
        if all {
            slots.freed.notify_all();
        } else {
            slots.freed.notify_one();
        }
    }

    /// Drops every idle connection (they are as old as one found dead).
    fn drop_idle(&self) {
        let slots = self.slots();
        let idle = {
            let mut state = lock(&slots.state);
            let idle = std::mem::take(&mut state.idle);
            state.open = state.open.saturating_sub(idle.len());
            idle
        };
        drop(idle);
        slots.freed.notify_all();
    }

    /// Runs `op` on a pooled connection. A failed statement discards the connection
    /// unless the server answered it (a SQL error leaves the connection usable).
    ///
    /// A pooled connection found closed (a server restart, a failover, an idle timeout of
    /// a proxy or of the server, `idle_session_timeout`) is not an outage: the idle ones
    /// are dropped and `op` runs once more on a new connection. A timeout is never
    /// retried, so a call stays bounded. Every statement the store sends on a pooled
    /// connection is safe to repeat (see `store::postgres`).
    fn with<T>(&self, what: &str, op: impl Fn(&Conn) -> Result<T, Failure>) -> StoreResult<T> {
        let (value, conn, born) = self.take(what, false, op)?;
        self.give_back(conn, born);
        Ok(value)
    }

    /// As `with`, but the connection is handed to the caller, who gives it back.
    fn take<T>(
        &self,
        what: &str,
        for_lock: bool,
        op: impl Fn(&Conn) -> Result<T, Failure>,
    ) -> StoreResult<(T, Conn, u64)> {
        let (conn, pooled, born) = self.get(for_lock)?;
        let err = match op(&conn) {
            Ok(v) => return Ok((v, conn, born)),
            Err(e) => e,
        };
        let dead = match &err {
            Failure::Timeout => true,
            Failure::Pg(e) => e.as_db_error().is_none() || e.is_closed() || is_fatal(e),
        };
        // A failed lock attempt may have taken the lock before its read failed: that
        // connection is closed (the server drops the lock), never pooled with it.
        if !dead && !for_lock {
            self.give_back(conn, born);
        } else {
            drop(conn);
            self.forget_one(born);
        }
        let retry = pooled && dead && matches!(err, Failure::Pg(_));
        if !retry {
            return Err(self.error(what, &err));
        }
        self.drop_idle();
        let (conn, _, born) = self.get(for_lock)?;
        match op(&conn) {
            Ok(v) => Ok((v, conn, born)),
            Err(e) => {
                drop(conn);
                self.forget_one(born);
                Err(self.error(what, &e))
            }
        }
    }

    /// The session lock's attempt: `try_lock` then `read`, in one round trip (`Conn::pair`).
    /// When `keep` says the lock was taken, the connection stays out of the pool (`Held`)
    /// until `finish` or `release`; otherwise it goes back at once (a waiter holds none).
    pub fn lock(
        &self,
        try_lock: (&str, &[Param<'_>]),
        read: (&str, &[Param<'_>]),
        keep: impl Fn(&[Row]) -> bool,
    ) -> StoreResult<(Vec<Row>, Vec<Row>, Option<Held>)> {
        let ((locked, rows), conn, born) = self.take("a statement", true, |conn| {
            conn.pair(self.timeout, try_lock, read)
        })?;
        if !keep(&locked) {
            self.give_back(conn, born);
            return Ok((locked, rows, None));
        }
        if born == generation() {
            lock(&self.slots().state).held += 1;
        }
        Ok((locked, rows, Some(Held { conn, born })))
    }

    /// The connection of a lock is no longer kept: counted out of `held`.
    fn unhold(&self, born: u64) {
        self.count_down(born, |state| &mut state.held, true);
    }

    /// A statement and the lock's release, in one round trip on the connection that holds
    /// the lock (never retried elsewhere: another connection does not hold it). The
    /// connection goes back to the pool if both were answered; otherwise it is closed,
    /// and the server drops the lock with it. A connection found closed means the lock
    /// was already gone (`idle_session_timeout`, a restart): `StoreError::LockLost`.
    pub fn finish(
        &self,
        held: Held,
        statement: (&str, &[Param<'_>]),
        unlock: (&str, &[Param<'_>]),
    ) -> StoreResult<Vec<Row>> {
        let Held { conn, born } = held;
        self.unhold(born);
        if born != generation() {
            std::mem::forget(conn);
            return Err(StoreError::LockLost);
        }
        match conn.pair(self.timeout, statement, unlock) {
            Ok((rows, _)) => {
                self.give_back(conn, born);
                Ok(rows)
            }
            Err(e) => {
                drop(conn);
                self.forget_one(born);
                match e {
                    Failure::Pg(pg)
                        if pg.as_db_error().is_none()
                            || pg.is_closed()
                            || pg.code() == Some(&SqlState::IDLE_SESSION_TIMEOUT) =>
                    {
                        Err(StoreError::LockLost)
                    }
                    other => Err(self.error("a statement", &other)),
                }
            }
        }
    }

    /// Releases the lock without waiting for the answer (`Conn::send`) and gives the
    /// connection back; one that cannot take it is closed (the lock goes with it). In a
    /// forked child the connection is the parent's: leaked, never used.
    pub fn release(&self, held: Held, unlock: (&str, &[Param<'_>])) {
        let Held { conn, born } = held;
        self.unhold(born);
        if born != generation() {
            std::mem::forget(conn);
            return;
        }
        match conn.send(self.timeout, unlock.0, unlock.1) {
            Ok(()) => self.give_back(conn, born),
            Err(_) => {
                drop(conn);
                self.forget_one(born);
            }
        }
    }

    fn error(&self, what: &str, failure: &Failure) -> StoreError {
        match failure {
            Failure::Timeout => timed_out(what, self.timeout),
            Failure::Pg(e) => unavailable(e),
        }
    }

    /// One statement, its rows.
    pub fn query(&self, sql: &str, params: &[Param<'_>]) -> StoreResult<Vec<Row>> {
        self.with("a statement", |conn| conn.query(self.timeout, sql, params))
    }

    /// One statement sent without waiting for its answer (`Conn::send`): for the lock
    /// row's release by a read-only request, whose outcome changes nothing for the caller.
    pub fn send(&self, sql: &str, params: &[Param<'_>]) -> StoreResult<()> {
        self.with("a statement", |conn| conn.send(self.timeout, sql, params))
    }

    /// Several statements in one round trip (the migration), bounded by `limit`.
    pub fn batch(&self, sql: &str, limit: Duration) -> StoreResult<()> {
        self.with("the migration", |conn| conn.batch(limit, sql))
    }
}

/// Whether the server ended the session (shutdown, crash recovery, a terminated backend,
/// `idle_session_timeout`),
/// or the connection leads to a server that can no longer take writes (a primary demoted
/// by a failover): either way a new connection (with `target_session_attrs=read-write`
/// in the URL, to the new primary) is the way out.
fn is_fatal(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|code| {
        [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::IDLE_SESSION_TIMEOUT,
            SqlState::READ_ONLY_SQL_TRANSACTION,
        ]
        .contains(code)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_without_idle_session_timeout_is_told_apart() {
        // What a server older than 14 answers the advisory mode's startup options.
        let refused = refused_setting(
            &SqlState::UNDEFINED_OBJECT,
            "unrecognized configuration parameter \"idle_session_timeout\"",
        );
        let Some(StoreError::Unavailable(text)) = refused else {
            panic!("not refused: {refused:?}");
        };
        assert!(text.contains("PostgreSQL 14") && text.contains("SESSION_DATABASE_LOCK = 'row'"));
        let other = refused_setting(&SqlState::UNDEFINED_OBJECT, "unrecognized parameter \"x\"");
        assert!(other.is_none());
        assert!(refused_setting(&SqlState::ADMIN_SHUTDOWN, "idle_session_timeout").is_none());
    }

    #[test]
    fn idle_session_timeout_only_when_asked() {
        let mut row: Config = "postgresql://u@h/db"
            .parse()
            .unwrap_or_else(|_| Config::new());
        tune(
            &mut row,
            Duration::from_secs(1),
            Duration::from_secs(2),
            None,
        );
        assert!(!row
            .get_options()
            .unwrap_or_default()
            .contains("idle_session_timeout"));
        let mut advisory = Config::new();
        let ttl = Some(Duration::from_millis(1500));
        tune(
            &mut advisory,
            Duration::from_secs(1),
            Duration::from_secs(2),
            ttl,
        );
        let options = advisory.get_options().unwrap_or_default();
        assert!(
            options.contains("-c idle_session_timeout=1500"),
            "{options}"
        );
        assert!(options.contains("-c statement_timeout=2000"), "{options}");
    }
}
