//! The Redis backend's connections: a small pool of blocking connections with bounded
//! connect and I/O timeouts, so a request never waits on Redis for longer than configured.
//! After `fork` (see `reset_after_fork`) a child drops the connections it inherited: their
//! sockets are shared with the parent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use redis::{Client, Connection, RedisError};

use crate::error::{StoreError, StoreResult};

/// Idle connections kept per store.
const POOL_MAX: usize = 32;

static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Makes every pool drop the connections it inherited (called in a child after `fork`).
pub fn reset_after_fork() {
    FORK_GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// The error of a failed command or connection.
pub fn unavailable(e: &RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

/// Pooled connections to one server.
pub struct Pool {
    client: Client,
    idle: Mutex<(u64, Vec<Connection>)>,
    connect_timeout: Duration,
    io_timeout: Duration,
}

impl Pool {
    /// An empty pool (no connection is made until the first command).
    pub fn new(client: Client, connect_timeout: Duration, io_timeout: Duration) -> Self {
        Pool {
            client,
            idle: Mutex::new((FORK_GENERATION.load(Ordering::SeqCst), Vec::new())),
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

    /// A pooled connection if there is one (second value: true), else a new one.
    fn get(&self) -> StoreResult<(Connection, bool)> {
        let generation = FORK_GENERATION.load(Ordering::SeqCst);
        let reused = {
            let mut idle = self.idle.lock();
            if idle.0 != generation {
                // Inherited across fork: the socket is shared with the parent.
                idle.1.clear();
                idle.0 = generation;
            }
            idle.1.pop()
        };
        match reused {
            Some(con) => Ok((con, true)),
            None => Ok((self.connect()?, false)),
        }
    }

    /// Returns a connection whose last command succeeded to the idle pool (unless a fork
    /// happened meanwhile, or the pool is full).
    fn give_back(&self, con: Connection) {
        let mut idle = self.idle.lock();
        if idle.0 == FORK_GENERATION.load(Ordering::SeqCst) && idle.1.len() < POOL_MAX {
            idle.1.push(con);
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
        let (mut con, pooled) = self.get()?;
        let err = match f(&mut con) {
            Ok(v) => {
                self.give_back(con);
                return Ok(v);
            }
            Err(e) => e,
        };
        drop(con);
        if !(pooled && err.is_connection_dropped() && !err.is_timeout()) {
            return Err(unavailable(&err));
        }
        self.idle.lock().1.clear();
        let mut con = self.connect()?;
        let v = f(&mut con).map_err(|e| unavailable(&e))?;
        self.give_back(con);
        Ok(v)
    }
}
