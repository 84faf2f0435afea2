//! The Redis backend's connections: a small pool of blocking connections with bounded
//! connect and I/O timeouts, so a request never waits on Redis for longer than configured.
//! The idle connections are per fork generation (`crate::lock::ForkLocal`): a forked child
//! never uses (nor waits on the mutex of) what it inherited, whose sockets are shared with
//! the parent; a connection taken out before a fork is never given back after it.

use std::sync::Mutex;
use std::time::Duration;

use redis::{Client, Connection, RedisError};

use crate::error::{StoreError, StoreResult};
use crate::lock::{clear_if_free, generation, lock, ForkLocal};

/// Idle connections kept per store.
const POOL_MAX: usize = 32;

/// The error of a failed command or connection.
pub fn unavailable(e: &RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

/// Pooled connections to one server.
pub struct Pool {
    client: Client,
    idle: ForkLocal<Mutex<Vec<Connection>>>,
    connect_timeout: Duration,
    io_timeout: Duration,
}

impl Pool {
    /// An empty pool (no connection is made until the first command).
    pub fn new(client: Client, connect_timeout: Duration, io_timeout: Duration) -> Self {
        Pool {
            client,
            idle: ForkLocal::here(),
            connect_timeout,
            io_timeout,
        }
    }

    /// A new connection with the configured timeouts.
    fn connect(&self) -> StoreResult<Connection> {
        let con = self
            .client
            .get_connection_with_timeout(self.connect_timeout)
            .map_err(|e| unavailable(&e))?;
        con.set_read_timeout(Some(self.io_timeout))
            .map_err(|e| unavailable(&e))?;
        con.set_write_timeout(Some(self.io_timeout))
            .map_err(|e| unavailable(&e))?;
        Ok(con)
    }

    /// This generation's idle connections (those inherited across a fork are dropped if
    /// their mutex is free, else left alone: never waited for).
    fn idle(&self) -> &Mutex<Vec<Connection>> {
        self.idle.get_or_retire(clear_if_free)
    }

    /// A pooled connection if there is one (second value: true), else a new one; with the
    /// fork generation it belongs to.
    fn get(&self) -> StoreResult<(Connection, bool, u64)> {
        let generation = generation();
        let reused = lock(self.idle()).pop();
        match reused {
            Some(con) => Ok((con, true, generation)),
            None => Ok((self.connect()?, false, generation)),
        }
    }

    /// Returns a connection whose last command succeeded to the idle pool (unless a fork
    /// happened meanwhile, or the pool is full).
    fn give_back(&self, con: Connection, born: u64) {
        if born != generation() {
            return;
        }
        let mut idle = lock(self.idle());
        if idle.len() < POOL_MAX {
            idle.push(con);
        }
    }

    /// Runs `f` on a pooled connection; a failed command discards the connection (it may be
    /// half-way through a reply) and maps to `StoreError::Unavailable`.
    ///
    /// A pooled connection found dead (closed by a Redis restart, by Redis's idle-client
    /// `timeout`, or by a proxy) is not an outage: the idle pool is emptied (its other
    /// connections are as old) and `f` runs once more on a new connection. Timeouts are
    /// never retried, so a request stays bounded by the configured timeouts.
    pub fn run<T>(&self, f: impl Fn(&mut Connection) -> redis::RedisResult<T>) -> StoreResult<T> {
        let (mut con, pooled, born) = self.get()?;
        let err = match f(&mut con) {
            Ok(v) => {
                self.give_back(con, born);
                return Ok(v);
            }
            Err(e) => e,
        };
        drop(con);
        if !(pooled && err.is_connection_dropped() && !err.is_timeout()) {
            return Err(unavailable(&err));
        }
        lock(self.idle()).clear();
        let mut con = self.connect()?;
        let v = f(&mut con).map_err(|e| unavailable(&e))?;
        self.give_back(con, born);
        Ok(v)
    }
}
