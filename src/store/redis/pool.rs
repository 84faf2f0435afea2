//! The Redis backend's connections: a small pool of blocking connections with bounded
//! connect and I/O timeouts, so a request never waits on Redis for longer than configured.
//! The idle connections are per fork generation (`crate::lock::ForkLocal`): a forked child
//! never uses (nor waits on the mutex of) what it inherited, whose sockets are shared with
//! the parent; a connection taken out before a fork is never given back after it.
//!
//! Where a connection goes is the `Finder`'s business (one node, Sentinel's primary, a
//! Cluster). With Sentinel or a Cluster the pool also rides out failovers: a command that
//! fails the way a failover makes commands fail (connection lost or refused, `READONLY` from
//! a demoted primary, `MASTERDOWN`, `LOADING`, `CLUSTERDOWN`, `TRYAGAIN`, a redirection the
//! Cluster client could not follow) empties the idle pool (its connections point at the old
//! primary), and runs again on a new connection, found afresh, with back-off, until the
//! retry budget (the lock timeout) is spent; then it is `Unavailable` (503).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::RedisError;

use super::topology::{Conn, Finder};

use crate::error::{StoreError, StoreResult};
use crate::lock::{clear_if_free, generation, lock, ForkLocal};

/// Idle connections kept per store.
const POOL_MAX: usize = 32;

/// The error of a failed command or connection.
pub fn unavailable(e: &RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

/// Whether `e` is what a failover (or a resharding) does to a command: worth retrying on a
/// new connection to the node that now serves the key.
pub fn transient(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_cluster_error()
        || matches!(
            e.code(),
            Some(
                "READONLY"
                    | "MASTERDOWN"
                    | "LOADING"
                    | "CLUSTERDOWN"
                    | "TRYAGAIN"
                    | "MOVED"
                    | "ASK"
                    | "NOREPLICAS"
            )
        )
}

/// Longest pause between two attempts while riding out a failover.
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(200);

/// Pooled connections to one server, to Sentinel's primary, or to a Cluster.
pub struct Pool {
    finder: Finder,
    idle: ForkLocal<Mutex<Vec<Conn>>>,
    connect_timeout: Duration,
    io_timeout: Duration,
    /// How long a command keeps retrying through a failover (zero for a single node: its
    /// failures are outages, reported at once).
    retry_for: Duration,
    /// The finder's epoch the idle connections belong to (Sentinel: the primary moved).
    epoch: AtomicU64,
}

/// Where a connection came from: the fork generation and the finder's epoch.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Born(u64, u64);

impl Pool {
    /// An empty pool (no connection is made until the first command).
    pub fn new(
        finder: Finder,
        connect_timeout: Duration,
        io_timeout: Duration,
        retry_for: Duration,
    ) -> Self {
        Pool {
            finder,
            idle: ForkLocal::here(),
            connect_timeout,
            io_timeout,
            retry_for,
            epoch: AtomicU64::new(0),
        }
    }

    /// Whether this pool talks to a Cluster.
    pub fn is_cluster(&self) -> bool {
        self.finder.is_cluster()
    }

    /// A new connection with the configured timeouts.
    fn connect(&self) -> StoreResult<Conn> {
        self.finder
            .connect(self.connect_timeout, self.io_timeout)
            .map_err(|e| unavailable(&e))
    }

    /// This generation's idle connections (those inherited across a fork are dropped if
    /// their mutex is free, else left alone: never waited for).
    fn idle(&self) -> &Mutex<Vec<Conn>> {
        self.idle.get_or_retire(clear_if_free)
    }

    /// A pooled connection if there is one (second value: true), else a new one; with the
    /// fork generation it belongs to.
    fn get(&self) -> StoreResult<(Conn, bool, Born)> {
        let born = self.born();
        let reused = lock(self.idle()).pop();
        match reused {
            Some(con) => Ok((con, true, born)),
            None => Ok((self.connect()?, false, born)),
        }
    }

    /// The current generation and epoch; the idle connections of an older epoch are
    /// dropped (they go to a primary that was replaced).
    fn born(&self) -> Born {
        let epoch = self.finder.epoch(self.connect_timeout, self.io_timeout);
        if self.epoch.load(Ordering::Acquire) != epoch
            && self.epoch.swap(epoch, Ordering::AcqRel) != epoch
        {
            lock(self.idle()).clear();
        }
        Born(generation(), epoch)
    }

    /// Returns a connection whose last command succeeded to the idle pool (unless a fork
    /// happened meanwhile, the primary moved, or the pool is full).
    fn give_back(&self, con: Conn, born: Born) {
        if born != Born(generation(), self.epoch.load(Ordering::Acquire)) {
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
    /// never retried, so a request stays bounded by the configured timeouts. With Sentinel
    /// or a Cluster, failures a failover causes are retried until `retry_for` is spent.
    pub fn run<T>(&self, f: impl Fn(&mut Conn) -> redis::RedisResult<T>) -> StoreResult<T> {
        let (mut con, pooled, born) = match self.get() {
            Ok(got) => got,
            Err(e) if self.retry_for.is_zero() => return Err(e),
            Err(e) => return self.ride_out(&f, e),
        };
        let err = match f(&mut con) {
            Ok(v) => {
                self.give_back(con, born);
                return Ok(v);
            }
            Err(e) => e,
        };
        drop(con);
        if !self.retry_for.is_zero() && transient(&err) {
            return self.ride_out(&f, unavailable(&err));
        }
        if !(pooled && err.is_connection_dropped() && !err.is_timeout()) {
            return Err(unavailable(&err));
        }
        lock(self.idle()).clear();
        let mut con = self.connect()?;
        let v = f(&mut con).map_err(|e| unavailable(&e))?;
        self.give_back(con, born);
        Ok(v)
    }

    /// Sentinel and Cluster: retries `f` on new connections (found afresh: the primary may
    /// have moved) with back-off until it succeeds, fails otherwise than a failover does, or
    /// `retry_for` is spent (the last error is returned).
    #[cold]
    fn ride_out<T>(
        &self,
        f: &impl Fn(&mut Conn) -> redis::RedisResult<T>,
        mut last: StoreError,
    ) -> StoreResult<T> {
        let deadline = Instant::now() + self.retry_for;
        let mut pause = Duration::from_millis(20);
        loop {
            lock(self.idle()).clear();
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(last);
            }
            std::thread::sleep(pause.min(left));
            pause = (pause * 2).min(RETRY_PAUSE_MAX);
            let born = self.born();
            let mut con = match self.finder.connect(self.connect_timeout, self.io_timeout) {
                Ok(con) => con,
                Err(e) => {
                    last = unavailable(&e);
                    continue;
                }
            };
            match f(&mut con) {
                Ok(v) => {
                    self.give_back(con, born);
                    return Ok(v);
                }
                Err(e) if transient(&e) => last = unavailable(&e),
                Err(e) => return Err(unavailable(&e)),
            }
        }
    }
}
