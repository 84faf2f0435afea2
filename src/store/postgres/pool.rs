//! The PostgreSQL backend's connections: at most `pool_size` per process, opened lazily,
//! each a `tokio_postgres` client driven by its own current-thread tokio runtime (no
//! background thread: the connection is polled only while a caller waits on it), so that
//! every round trip is bounded by a client-side timeout as well as by the server's
//! `statement_timeout` (which a stalled or unreachable server never enforces).
//!
//! Each statement runs on its own (autocommit, one round trip): no connection is ever left
//! inside a transaction, and one is taken from the pool only for the duration of a
//! statement, never while a request waits for a session lock. Each connection prepares a
//! statement the first time it sends it and keeps it (the server then neither parses nor
//! plans it again); a connection that met a server error forgets its statements (the
//! table may have been dropped and created again). One statement is not waited for
//! (`Pool::send`, the lock release of a read-only request): it is written out and the
//! connection goes back to the pool; its answer is read, in order, before the next one.
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
fn tune(config: &mut Config, connect_timeout: Duration, timeout: Duration) {
    let ms = timeout.as_millis().max(1);
    let mut options = config.get_options().unwrap_or_default().to_owned();
    if !options.is_empty() {
        options.push(' ');
    }
    options.push_str(&format!(
        "-c statement_timeout={ms} -c lock_timeout={ms} -c idle_in_transaction_session_timeout={}",
        ms * 2
    ));
    config.options(options);
    if config.get_application_name().is_none() {
        config.application_name("flask-beaker-session");
    }
    config.connect_timeout(connect_timeout);
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(30));
}

impl Pool {
    /// An empty pool for `url` (no connection is made until the first statement).
    pub fn new(
        url: &str,
        tls: Option<MakeRustlsConnect>,
        size: usize,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> StoreResult<Self> {
        let mut config: Config = url
            .parse()
            .map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL: {e}")))?;
        tune(&mut config, connect_timeout, timeout);
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
            Ok(Err(e)) => Err(unavailable(&e)),
            Err(_) => Err(timed_out("the connection", limit)),
        }
    }

    /// A pooled connection (second value: true) or a new one if fewer than `size` are
    /// open, waiting at most the connect timeout for one to be given back.
    fn get(&self) -> StoreResult<(Conn, bool, u64)> {
        let born = generation();
        let slots = self.slots();
        let deadline = Instant::now() + self.connect_timeout;
        let mut state = lock(&slots.state);
        loop {
            if let Some(conn) = state.idle.pop() {
                return Ok((conn, true, born));
            }
            if state.open < self.size {
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
        if born != generation() {
            return;
        }
        let slots = self.slots();
        let mut state = lock(&slots.state);
        state.open = state.open.saturating_sub(1);
        drop(state);
        slots.freed.notify_one();
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
    /// a proxy) is not an outage: the idle ones are dropped and `op` runs once more on a
    /// new connection. A timeout is never retried, so a call stays bounded. Every
    /// statement the store sends is safe to repeat (see `store::postgres`).
    fn with<T>(&self, what: &str, op: impl Fn(&Conn) -> Result<T, Failure>) -> StoreResult<T> {
        let (conn, pooled, born) = self.get()?;
        let err = match op(&conn) {
            Ok(v) => {
                self.give_back(conn, born);
                return Ok(v);
            }
            Err(e) => e,
        };
        let dead = match &err {
            Failure::Timeout => true,
            Failure::Pg(e) => e.as_db_error().is_none() || e.is_closed() || is_fatal(e),
        };
        if !dead {
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
        let (conn, _, born) = self.get()?;
        match op(&conn) {
            Ok(v) => {
                self.give_back(conn, born);
                Ok(v)
            }
            Err(e) => {
                drop(conn);
                self.forget_one(born);
                Err(self.error(what, &e))
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
    /// release of a read-only request, whose outcome changes nothing for the caller.
    pub fn send(&self, sql: &str, params: &[Param<'_>]) -> StoreResult<()> {
        self.with("a statement", |conn| conn.send(self.timeout, sql, params))
    }

    /// Several statements in one round trip (the migration), bounded by `limit`.
    pub fn batch(&self, sql: &str, limit: Duration) -> StoreResult<()> {
        self.with("the migration", |conn| conn.batch(limit, sql))
    }
}

/// Whether the server ended the session (shutdown, crash recovery, a terminated backend),
/// or the connection leads to a server that can no longer take writes (a primary demoted
/// by a failover): either way a new connection (with `target_session_attrs=read-write`
/// in the URL, to the new primary) is the way out.
fn is_fatal(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|code| {
        [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::READ_ONLY_SQL_TRANSACTION,
        ]
        .contains(code)
    })
}
