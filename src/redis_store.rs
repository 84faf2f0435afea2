//! The Redis backend (`SESSION_TYPE = 'redis'`): sessions shared by every server that talks
//! to one Redis. Same record format and tag as the file backend (one slot per key: Redis
//! replaces a value atomically, so the two-slot scheme is not needed), same per-session lock
//! semantics, expiry enforced twice: by the key's TTL and by the check on read.
//!
//! * Keys: `<prefix>s:<sha256(id)>` holds the record, `<prefix>l:<sha256(id)>` the lock.
//!   The id never appears in a key, so `KEYS`/`SCAN` output cannot be replayed as cookies.
//! * Lock: `SET lock <token> NX PX <ttl>`, retried with back-off until the deadline; saves
//!   and deletes run as Lua scripts that first check the token (a request whose lock expired
//!   cannot overwrite a newer holder's data); release is a compare-and-delete. Threads of one
//!   process queue on the in-process `ThreadLock` first, so only one of them polls Redis.
//! * TTL: the idle timeout (capped by what remains of the absolute lifetime), refreshed on
//!   save and, rate-limited, on read (`PEXPIRE`). The last access time is recovered on read
//!   from the remaining TTL, so a read-only request never rewrites the value.
//! * Connections: a small pool of blocking connections with bounded connect and I/O
//!   timeouts. After `fork` (see `reset_after_fork`) a child drops the inherited ones.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::{Client, ClientTlsConfig, Connection, RedisError, Script, TlsCertificates};

use crate::error::{StoreError, StoreResult};
use crate::lock::ThreadLock;
use crate::record::{self, Keys, HEADER_LEN};
use crate::shard;
use crate::sid::SessionId;
use crate::store::{expired, Opened, StoreConfig};
use crate::sweep::{Mode, Report};

/// Idle connections kept per store.
const POOL_MAX: usize = 32;

static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Makes every pool drop the connections it inherited (called in a child after `fork`).
pub fn reset_after_fork() {
    FORK_GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// Connection settings of the Redis backend.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `redis://`, `rediss://`, `redis+unix://` or `unix://` URL.
    pub url: String,
    /// Prefix of every key.
    pub prefix: String,
    /// Bound on establishing a connection.
    pub connect_timeout: Duration,
    /// Bound on each command's round trip.
    pub io_timeout: Duration,
    /// How long a session lock lives if its holder never releases it (a crashed worker).
    pub lock_ttl: Duration,
    /// TLS material for `rediss://` beyond the defaults (trust the public CAs, no client
    /// certificate).
    pub tls: RedisTls,
}

/// PEM bytes for a `rediss://` connection: a private CA, and a client certificate for
/// servers that verify their clients (`tls-auth-clients yes`, Redis's default).
#[derive(Clone, Default)]
pub struct RedisTls {
    /// CA certificates to trust instead of the public ones.
    pub ca_certs: Option<Vec<u8>>,
    /// Client certificate chain and private key, both or neither.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

/// Says which parts are set, never their bytes (the key is a secret).
impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTls")
            .field("ca_certs", &self.ca_certs.is_some())
            .field("client", &self.client.is_some())
            .finish()
    }
}

impl RedisTls {
    fn is_default(&self) -> bool {
        self.ca_certs.is_none() && self.client.is_none()
    }
}

/// The Redis client for a URL and its TLS material (no connection is made).
/// The TLS material is consumed: the client keeps what it needs, and the store does not
/// hold a second copy of the private key.
fn client_for(url: &str, tls: RedisTls) -> StoreResult<Client> {
    if tls.is_default() {
        return Client::open(url)
            .map_err(|e| StoreError::Config(format!("invalid Redis URL: {e}")));
    }
    let certificates = TlsCertificates {
        client_tls: tls.client.map(|(client_cert, client_key)| ClientTlsConfig {
            client_cert,
            client_key,
        }),
        root_cert: tls.ca_certs,
    };
    Client::build_with_tls(url, certificates)
        .map_err(|e| StoreError::Config(format!("invalid Redis TLS settings: {e}")))
}

struct Pool {
    client: Client,
    idle: Mutex<(u64, Vec<Connection>)>,
    connect_timeout: Duration,
    io_timeout: Duration,
}

fn unavailable(e: &RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

impl Pool {
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
    fn run<T>(&self, f: impl Fn(&mut Connection) -> redis::RedisResult<T>) -> StoreResult<T> {
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

/// Sessions in Redis.
pub struct RedisStore {
    cfg: StoreConfig,
    rcfg: RedisConfig,
    pool: Pool,
    save_script: Script,
    touch_script: Script,
    delete_script: Script,
    release_script: Script,
}

/// A locked session of a `RedisStore`.
pub struct RedisHandle {
    id: SessionId,
    digest: String,
    token: String,
    /// The stored payload as loaded.
    pub payload: Vec<u8>,
    /// Creation time.
    pub created: f64,
    /// Previous access time.
    pub last_access: f64,
    seq: u64,
    released: bool,
    _lock: ThreadLock,
}

// ARGV[4] == '1': also release the lock, so a read-write request costs two round trips
// (lock+read, save+unlock) instead of three.
const SAVE_LUA: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
else
  redis.call('SET', KEYS[2], ARGV[2])
end
if ARGV[4] == '1' then redis.call('DEL', KEYS[1]) end
return 1";

const TOUCH_LUA: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
if ARGV[3] == '1' then redis.call('DEL', KEYS[1]) end
return 1";

const DELETE_LUA: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
redis.call('DEL', KEYS[1])
return 1";

const RELEASE_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

fn decode(keys: &Keys, id: &SessionId, value: &[u8]) -> Result<record::SlotHeader, bool> {
    match record::parse_header(value) {
        Ok(h) if value.len() == HEADER_LEN + h.payload_len => {
            if record::verify(keys, value, &h, id, &value[HEADER_LEN..]) {
                Ok(h)
            } else {
                Err(false)
            }
        }
        Ok(_) | Err(record::HeaderError::Garbage) => Err(false),
        Err(record::HeaderError::Newer(_)) => Err(true),
    }
}

impl RedisStore {
    /// Builds a store; connects lazily (nothing is opened before a pre-fork server forks).
    pub fn new(cfg: StoreConfig, mut rcfg: RedisConfig) -> StoreResult<Self> {
        static PROVIDER: Once = Once::new();
        PROVIDER.call_once(|| {
            // rustls needs a process-wide crypto provider for rediss:// URLs.
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        let client = client_for(&rcfg.url, std::mem::take(&mut rcfg.tls))?;
        Ok(RedisStore {
            pool: Pool {
                client,
                idle: Mutex::new((FORK_GENERATION.load(Ordering::SeqCst), Vec::new())),
                connect_timeout: rcfg.connect_timeout,
                io_timeout: rcfg.io_timeout,
            },
            cfg,
            rcfg,
            save_script: Script::new(SAVE_LUA),
            touch_script: Script::new(TOUCH_LUA),
            delete_script: Script::new(DELETE_LUA),
            release_script: Script::new(RELEASE_LUA),
        })
    }

    fn data_key(&self, digest: &str) -> String {
        format!("{}s:{digest}", self.rcfg.prefix)
    }

    fn lock_key(&self, digest: &str) -> String {
        format!("{}l:{digest}", self.rcfg.prefix)
    }

    /// TTL in ms for a session created at `created`, written at `now` (0: no expiry).
    fn ttl_ms(&self, created: f64, now: f64) -> u64 {
        let idle = self.cfg.idle_timeout;
        let rest = self.cfg.absolute_timeout.map(|a| a - (now - created));
        let secs = match (idle, rest) {
            (Some(i), Some(r)) => i.min(r),
            (Some(i), None) => i,
            (None, Some(r)) => r,
            (None, None) => return 0,
        };
        // At least 1 ms: a TTL of 0 would mean "no expiry" to the scripts.
        ((secs.max(0.001)) * 1000.0).ceil() as u64
    }

    /// Checks the connection (PING); used at start-up and by health checks.
    pub fn ping(&self) -> StoreResult<()> {
        self.pool
            .run(|c| redis::cmd("PING").query::<String>(c))
            .map(|_| ())
    }

    /// Locks and reads session `id`.
    pub fn open(&self, id: &SessionId, now: f64) -> StoreResult<Opened<RedisHandle>> {
        let digest = shard::digest(id);
        let deadline = Instant::now() + self.cfg.lock_timeout;
        let lock_path = PathBuf::from(format!("redis:{}/{digest}", self.rcfg.prefix));
        let Some(thread_lock) = ThreadLock::acquire(&lock_path, deadline) else {
            return Err(StoreError::LockTimeout {
                waited: self.cfg.lock_timeout,
            });
        };
        let token = SessionId::generate()?.to_hex();
        let lock_key = self.lock_key(&digest);
        let data_key = self.data_key(&digest);
        let ttl = self.rcfg.lock_ttl.as_millis() as u64;
        let mut backoff = Duration::from_micros(200);
        // Take the lock and read in one round trip when uncontended.
        let (value, pttl) = loop {
            let (got, value, pttl): (Option<String>, Option<Vec<u8>>, i64) =
                self.pool.run(|c| {
                    redis::pipe()
                        .cmd("SET")
                        .arg(&lock_key)
                        .arg(&token)
                        .arg("NX")
                        .arg("PX")
                        .arg(ttl)
                        .cmd("GET")
                        .arg(&data_key)
                        .cmd("PTTL")
                        .arg(&data_key)
                        .query(c)
                })?;
            if got.is_some() {
                break (value, pttl);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreError::LockTimeout {
                    waited: self.cfg.lock_timeout,
                });
            }
            std::thread::sleep(backoff.min(left));
            backoff = (backoff * 2).min(Duration::from_millis(5));
        };
        let mut handle = RedisHandle {
            id: *id,
            digest,
            token,
            payload: Vec::new(),
            created: now,
            last_access: now,
            seq: 0,
            released: false,
            _lock: thread_lock,
        };
        let Some(value) = value else {
            self.release(&mut handle);
            return Ok(Opened::Missing);
        };
        let header = match decode(&self.cfg.keys, id, &value) {
            Ok(h) => h,
            Err(newer) => {
                if newer {
                    self.release(&mut handle);
                    return Ok(Opened::Newer);
                }
                self.delete(handle)?;
                return Ok(Opened::Corrupt);
            }
        };
        // The TTL was last set to `ttl_ms(created, t)` at time t (a save or touch); what
        // remains tells t, the last access, without storing it in the value.
        let mut last_access = header.saved_at;
        if pttl > 0 {
            let full = self.ttl_ms(header.created, header.saved_at) as f64 / 1000.0;
            let refreshed = now - (full - pttl as f64 / 1000.0);
            if refreshed > last_access && refreshed <= now {
                last_access = refreshed;
            }
        }
        if expired(&self.cfg, now, Some(header.created), Some(last_access)) {
            self.delete(handle)?;
            return Ok(Opened::Expired);
        }
        handle.payload = value[HEADER_LEN..].to_vec();
        handle.created = header.created;
        handle.last_access = last_access;
        handle.seq = header.seq;
        Ok(Opened::Found(handle))
    }

    /// Stores a new session (`SET NX`: never overwrites).
    pub fn create(
        &self,
        id: &SessionId,
        payload: &[u8],
        created: f64,
        now: f64,
    ) -> StoreResult<()> {
        let digest = shard::digest(id);
        let value = record::encode_slot(&self.cfg.keys, id, 1, created, now, payload);
        let ttl = self.ttl_ms(created, now);
        let key = self.data_key(&digest);
        let stored: Option<String> = self.pool.run(|c| {
            let mut cmd = redis::cmd("SET");
            cmd.arg(&key).arg(value.as_slice()).arg("NX");
            if ttl > 0 {
                cmd.arg("PX").arg(ttl);
            }
            cmd.query(c)
        })?;
        match stored {
            Some(_) => Ok(()),
            None => Err(StoreError::Unavailable(
                "redis: a session with this id already exists".to_owned(),
            )),
        }
    }

    /// Saves a new version through a locked handle; with `release`, gives up the lock in
    /// the same round trip.
    pub fn save(
        &self,
        handle: &mut RedisHandle,
        payload: &[u8],
        now: f64,
        release: bool,
    ) -> StoreResult<()> {
        let value = record::encode_slot(
            &self.cfg.keys,
            &handle.id,
            handle.seq + 1,
            handle.created,
            now,
            payload,
        );
        let ttl = self.ttl_ms(handle.created, now);
        let ok: i64 = self.pool.run(|c| {
            self.save_script
                .key(self.lock_key(&handle.digest))
                .key(self.data_key(&handle.digest))
                .arg(&handle.token)
                .arg(value.as_slice())
                .arg(ttl)
                .arg(if release { "1" } else { "0" })
                .invoke(c)
        })?;
        if ok != 1 {
            return Err(StoreError::LockLost);
        }
        handle.released |= release;
        handle.seq += 1;
        handle.payload = Vec::new(); // "as loaded"; see store::Handle::save
        handle.last_access = now;
        Ok(())
    }

    /// Refreshes the TTL (the last access) if `interval` has passed; no value is rewritten.
    /// With `release`, the lock is given up in the same round trip either way.
    pub fn touch(
        &self,
        handle: &mut RedisHandle,
        now: f64,
        interval: f64,
        release: bool,
    ) -> StoreResult<bool> {
        let ttl = self.ttl_ms(handle.created, now);
        if now - handle.last_access < interval || ttl == 0 {
            if release {
                self.release(handle);
            }
            return Ok(false);
        }
        let ok: i64 = self.pool.run(|c| {
            self.touch_script
                .key(self.lock_key(&handle.digest))
                .key(self.data_key(&handle.digest))
                .arg(&handle.token)
                .arg(ttl)
                .arg(if release { "1" } else { "0" })
                .invoke(c)
        })?;
        if ok != 1 {
            return Err(StoreError::LockLost);
        }
        handle.released |= release;
        handle.last_access = now;
        Ok(true)
    }

    /// Removes the session and its lock.
    pub fn delete(&self, mut handle: RedisHandle) -> StoreResult<()> {
        let result: StoreResult<i64> = self.pool.run(|c| {
            self.delete_script
                .key(self.lock_key(&handle.digest))
                .key(self.data_key(&handle.digest))
                .arg(&handle.token)
                .invoke(c)
        });
        handle.released = true;
        match result? {
            1 => Ok(()),
            _ => Err(StoreError::LockLost),
        }
    }

    /// Releases the lock (compare-and-delete). Errors are ignored: the lock expires anyway.
    pub fn release(&self, handle: &mut RedisHandle) {
        if handle.released {
            return;
        }
        handle.released = true;
        let _ = self.pool.run(|c| {
            self.release_script
                .key(self.lock_key(&handle.digest))
                .arg(&handle.token)
                .invoke::<i64>(c)
        });
    }

    /// Counts sessions (`Stats`/`Sweep`: Redis expires keys itself) or removes them all
    /// (`Clear`), with `SCAN` so a large keyspace is never blocked.
    pub fn walk(&self, mode: Mode) -> StoreResult<Report> {
        let pattern = format!("{}s:*", self.rcfg.prefix);
        let mut report = Report::default();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = self.pool.run(|c| {
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(c)
            })?;
            report.records += keys.len() as u64;
            if mode == Mode::Clear && !keys.is_empty() {
                let removed: u64 = self.pool.run(|c| redis::cmd("DEL").arg(&keys).query(c))?;
                report.removed += removed;
            } else {
                report.live += keys.len() as u64;
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        Ok(report)
    }
}
