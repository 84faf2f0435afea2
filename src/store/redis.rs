//! The Redis backend (`SESSION_TYPE = 'redis'`): sessions shared by every server that talks
//! to one Redis. Same record format and tag as the file backend (one slot per key: Redis
//! replaces a value atomically, so the two-slot scheme is not needed), same per-session lock
//! semantics, expiry enforced twice: by the keys' TTL and by the shared check on read.
//!
//! * Keys (`keys`): `s:` the record, `l:` the lock, `a:` the last touch, each under the
//!   prefix and a digest of the id.
//! * Lock: `SET lock <token> NX PX <ttl>`, retried with back-off until the deadline; saves,
//!   touches, deletes and releases run as Lua scripts that check the token (`scripts`).
//!   Threads of one process queue on the in-process `ThreadLock` first, so only one of them
//!   polls Redis.
//! * Last access, on the injected clock like every backend: the later of the record's save
//!   time and the last touch time. A touch writes its `now` to the `a:` key (with the same
//!   TTL as the record, whose TTL it refreshes); a save deletes the `a:` key (its save time
//!   supersedes it), and so does a delete. The open pipeline reads it with the record; no
//!   `a:` key means the last access is the save time. A read-only request therefore never
//!   rewrites the record, and the remaining TTL (which elapses on the server's real clock)
//!   is never used as a clock.
//! * TTL: `Expiry::ttl_ms` (the idle timeout, capped by what remains of the absolute
//!   lifetime), set on save and, once per touch interval, on read.
//! * `walk` counts `s:` keys as records; `Clear` deletes the `s:` and `a:` keys (only keys
//!   that are ours: `keys`).
//! * Orphaned locks (`orphans`): a lock that a timed-out command may have left behind is
//!   released in the background once Redis answers again.
//! * TTLs are clamped to `MAX_TTL_MS` (Redis refuses larger expiry times).
//! * Sentinel and Cluster (`topology`) are this backend with another way to find the node:
//!   the pool asks Sentinel for the primary or goes through the crate's Cluster client,
//!   keys carry a hash tag on a Cluster (`keys`), the lock is taken in a way the pool may
//!   retry through a failover (a script on a Cluster, `LOCK_LUA`; the single node's
//!   pipeline plus a read of the lock behind Sentinel), and
//!   `SESSION_REDIS_WAIT_REPLICAS` makes every write wait for that many replicas (`WAIT`,
//!   right after the script, on the same connection / the key's node) before the response.

mod keys;
mod orphans;
mod pool;
mod scripts;
mod topology;
mod user_index;

use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Client, ClientTlsConfig, Script, TlsCertificates};

use crate::error::{StoreError, StoreResult};
use crate::expiry;
use crate::lock::{generation, ForkLocal, LockKey, LockScope, ThreadLock};
use crate::record::{self, Rekey};
use crate::report::{Report, WalkMode};
use crate::sid::SessionId;
use crate::store::{
    lock_thread, BackendKind, IndexEntry, Loaded, Opened, PayloadKind, SessionHandle, Store,
    StoreConfig,
};

pub use keys::glob_escape;
use keys::SessionKeys;
use orphans::Orphans;
use pool::Pool;
use scripts::{DELETE_LUA, LOCK_LUA, REKEY_LUA, RELEASE_LUA, SAVE_LUA, TOUCH_LUA};
pub use topology::Topology;
use topology::{Conn, Finder};

/// The longest TTL given to Redis (100 years in ms): `PX` refuses expiry times past
/// ~2^63 ms, and an idle timeout or lock TTL beyond this is "never" in practice.
pub const MAX_TTL_MS: u64 = 100 * 365 * 86_400 * 1000;

/// A TTL in ms for Redis: `ms` clamped to `MAX_TTL_MS` (0 stays 0: no TTL).
fn clamp_ttl(ms: u64) -> u64 {
    ms.min(MAX_TTL_MS)
}

/// `duration` in ms, at least 1, at most `MAX_TTL_MS` (never wraps).
pub fn ttl_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_TTL_MS)
}

/// Settings of the Redis backend.
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
    /// Password of the Sentinels (`redis+sentinel://`), when they require one of their own.
    pub sentinel_password: Option<Secret>,
    /// Replicas every write waits for (`WAIT`) before it is acknowledged; 0: none.
    pub wait_replicas: u32,
    /// Bound on that wait.
    pub wait_timeout: Duration,
}

/// A password: shown as `***` by `Debug`.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
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

/// The Redis client for a URL and its TLS material (no connection is made). The TLS
/// material is consumed: the client keeps what it needs, and the store no second copy.
pub(crate) fn client_for(url: &str, tls: RedisTls) -> StoreResult<Client> {
    if tls.ca_certs.is_none() && tls.client.is_none() {
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

/// The replies of the lock pipeline: the `SET NX` (set if we got the lock), the record,
/// the last touch.
type LockReply = (Option<String>, Option<Vec<u8>>, Option<String>);

/// The reply of `LOCK_LUA`: 1 if locked, the record, the last touch.
type LockScriptReply = (i64, Option<Vec<u8>>, Option<String>);

struct Shared {
    cfg: StoreConfig,
    prefix: String,
    lock_ttl_ms: u64,
    scope: LockScope,
    pool: Pool,
    /// Sentinel or Cluster: the lock is taken in a way that is safe to retry.
    ha: bool,
    /// Keys carry a hash tag (Cluster).
    tagged: bool,
    /// `WAIT` after each write: replicas, timeout in ms.
    wait: Option<(u32, u64)>,
    lock: Script,
    save: Script,
    rekey_script: Script,
    touch: Script,
    delete: Script,
    release: Script,
    orphans: ForkLocal<Orphans>,
}

/// Sessions in Redis.
pub struct RedisStore {
    shared: Arc<Shared>,
}

/// A locked session of a `RedisStore`.
pub struct RedisHandle {
    store: Arc<Shared>,
    id: SessionId,
    keys: SessionKeys,
    token: String,
    payload: Vec<u8>,
    /// The large values as loaded (taken by the Python handle).
    segments: record::Segments,
    created: f64,
    last_access: f64,
    seq: u64,
    /// Opened under a fallback key or in the other format (`record::Verified::stale`).
    stale: bool,
    released: bool,
    generation: u64,
    _lock: ThreadLock,
}

impl Shared {
    /// A pipeline that starts by taking the session lock (`SET lock token NX PX ttl`): the
    /// single node's and Sentinel's lock-and-read differ only in what they read after it.
    fn lock_pipe(&self, lock: &str, token: &str) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(lock)
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(self.lock_ttl_ms);
        pipe
    }

    /// Takes the session lock and reads the record and its last touch, in one round trip
    /// when uncontended; retried with back-off until `deadline`.
    fn lock_and_read(
        self: &Arc<Self>,
        keys: &SessionKeys,
        token: &str,
        deadline: Instant,
    ) -> StoreResult<(Option<Vec<u8>>, Option<String>)> {
        self.adopt_orphan(&keys.lock)?;
        let mut backoff = Duration::from_micros(200);
        loop {
            let reply: StoreResult<LockReply> = if self.tagged {
                // Cluster: one atomic script, so a slot being migrated answers for all three
                // keys at once (ASK / TRYAGAIN), never for some of them.
                self.pool
                    .run(|c| {
                        self.lock
                            .key(&keys.lock)
                            .key(&keys.record)
                            .key(&keys.access)
                            .arg(token)
                            .arg(self.lock_ttl_ms)
                            .invoke::<LockScriptReply>(c)
                    })
                    .map(|(got, value, touched)| ((got == 1).then(String::new), value, touched))
            } else if self.ha {
                // Sentinel: the single node's pipeline, made safe to run again after a reply
                // lost in a failover by reading the lock back (a lock already holding our
                // token is ours; `SET NX` alone would say it is taken).
                self.pool
                    .run(|c| {
                        self.lock_pipe(&keys.lock, token)
                            .ignore()
                            .cmd("GET")
                            .arg(&keys.lock)
                            .cmd("GET")
                            .arg(&keys.record)
                            .cmd("GET")
                            .arg(&keys.access)
                            .query::<LockReply>(c)
                    })
                    .map(|(holder, value, touched)| {
                        let ours = holder.as_deref() == Some(token);
                        (ours.then(String::new), value, touched)
                    })
            } else {
                self.pool.run(|c| {
                    self.lock_pipe(&keys.lock, token)
                        .cmd("GET")
                        .arg(&keys.record)
                        .cmd("GET")
                        .arg(&keys.access)
                        .query(c)
                })
            };
            let (got, value, touched) = match reply {
                Ok(reply) => reply,
                Err(e) => {
                    // The SET NX may have reached Redis (a timeout, a dropped reply).
                    self.orphan(keys.lock.clone(), token.to_owned());
                    return Err(e);
                }
            };
            if got.is_some() {
                return Ok((value, touched));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.cfg.lock_timed_out());
            }
            std::thread::sleep(backoff.min(left));
            backoff = (backoff * 2).min(Duration::from_millis(5));
        }
    }
}

impl Shared {
    /// With `SESSION_REDIS_WAIT_REPLICAS`: waits, on the connection that just wrote, until
    /// that many replicas have the write (or the wait timeout). Fewer is an error: the write
    /// is on the primary but could be lost with it, so it must not be acknowledged.
    fn wait_replicas(&self, c: &mut Conn, key: &str) -> redis::RedisResult<()> {
        let Some((replicas, timeout_ms)) = self.wait else {
            return Ok(());
        };
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(replicas).arg(timeout_ms);
        let acked: i64 = match c {
            // The Cluster client would send WAIT to every primary: send it to the primary
            // of the key's slot, which the write went to.
            Conn::Cluster(cluster) => {
                let route = Route::with_key(key, SlotAddr::Master);
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                redis::from_redis_value(cluster.route_command(&cmd, route)?)?
            }
            Conn::Node(node) => cmd.query(node)?,
        };
        if acked < i64::from(replicas) {
            // Not an error the pool retries: the write itself succeeded.
            return Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "the write reached fewer replicas than SESSION_REDIS_WAIT_REPLICAS within \
                 SESSION_REDIS_WAIT_TIMEOUT",
                format!("{acked} of {replicas}"),
            )));
        }
        Ok(())
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
        let topology = Topology::of(&rcfg.url);
        let finder = Finder::new(
            &rcfg.url,
            std::mem::take(&mut rcfg.tls),
            rcfg.sentinel_password.as_ref().map(|s| s.0.as_str()),
            rcfg.connect_timeout,
            rcfg.io_timeout,
        )?;
        let tagged = finder.is_cluster();
        if tagged && (rcfg.prefix.contains('{') || rcfg.prefix.contains('}')) {
            return Err(StoreError::Config(
                "on a Redis Cluster the key prefix must not contain '{' or '}' (the session's \
                 digest is the keys' hash tag)"
                    .to_owned(),
            ));
        }
        let ha = topology != Topology::Node;
        // Sentinel and Cluster ride out a failover for as long as a request would wait for a
        // session lock; a single node's failure is reported at once.
        let retry_for = if ha { cfg.lock_timeout } else { Duration::ZERO };
        let scope = LockScope::Server(Arc::from(format!("{}\n{}", rcfg.url, rcfg.prefix)));
        Ok(RedisStore {
            shared: Arc::new(Shared {
                cfg,
                lock_ttl_ms: ttl_ms(rcfg.lock_ttl),
                scope,
                pool: Pool::new(finder, rcfg.connect_timeout, rcfg.io_timeout, retry_for),
                prefix: rcfg.prefix,
                ha,
                tagged,
                wait: (rcfg.wait_replicas > 0)
                    .then(|| (rcfg.wait_replicas, ttl_ms(rcfg.wait_timeout))),
                lock: Script::new(LOCK_LUA),
                save: Script::new(SAVE_LUA),
                rekey_script: Script::new(REKEY_LUA),
                touch: Script::new(TOUCH_LUA),
                delete: Script::new(DELETE_LUA),
                release: Script::new(RELEASE_LUA),
                orphans: ForkLocal::here(),
            }),
        })
    }
}

impl Store for RedisStore {
    fn kind(&self) -> BackendKind {
        BackendKind::Redis
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
        let keys = shared.session_keys(id);
        let token = SessionId::generate()?.to_hex();
        let (value, touched) = shared.lock_and_read(&keys, &token, deadline)?;
        let mut handle = RedisHandle {
            store: Arc::clone(shared),
            id: *id,
            keys,
            token,
            payload: Vec::new(),
            segments: record::Segments::default(),
            created: now,
            last_access: now,
            seq: 0,
            stale: false,
            released: false,
            generation: generation(),
            _lock: thread_lock,
        };
        let Some(value) = value else {
            handle.release();
            return Ok(Opened::Missing);
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
        let touched = touched.and_then(|t| t.parse::<f64>().ok());
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

    /// `SET NX`: never overwrites.
    fn create_payload(
        &self,
        id: &SessionId,
        payload: &record::Payload<'_>,
        created: f64,
        now: f64,
    ) -> StoreResult<()> {
        let shared = &self.shared;
        let value = record::encode_slot(&shared.cfg.keys, id, 1, created, now, *payload)?;
        let ttl = clamp_ttl(shared.cfg.expiry.ttl_ms(created, now));
        let key = shared.session_keys(id).record;
        let stored: Option<String> = shared.pool.run(|c| {
            let mut cmd = redis::cmd("SET");
            cmd.arg(&key).arg(value.as_slice()).arg("NX");
            if ttl > 0 {
                cmd.arg("PX").arg(ttl);
            }
            let stored = cmd.query(c)?;
            shared.wait_replicas(c, &key)?;
            Ok(stored)
        })?;
        stored.map(|_| ()).ok_or(StoreError::IdCollision)
    }

    /// Counts sessions (`Stats`/`Sweep`: Redis expires keys itself) or removes them all
    /// (`Clear`, with their last-touch keys).
    fn walk(&self, _now: f64, mode: WalkMode, _threads: usize) -> StoreResult<Report> {
        let shared = &self.shared;
        let mut report = Report::default();
        if mode.rekeys() {
            shared.scan("s", |keys| {
                for key in keys {
                    report.records += 1;
                    crate::report::count_walked(1);
                    shared.rekey(&key, mode == WalkMode::Rekey, &mut report)?;
                }
                Ok(())
            })?;
            return Ok(report);
        }
        shared.scan("s", |keys| {
            report.records += keys.len() as u64;
            crate::report::count_walked(keys.len() as u64);
            if mode == WalkMode::Clear {
                report.removed += shared.delete_keys(&keys)?;
            } else {
                report.live += keys.len() as u64;
            }
            Ok(())
        })?;
        if mode == WalkMode::Clear {
            shared.scan("a", |keys| shared.delete_keys(&keys).map(drop))?;
        }
        Ok(report)
    }

    /// Redis expires keys itself: nothing to sweep.
    fn sweep_if_due(&self, _now: f64, _interval: f64, _: usize) -> StoreResult<Option<Report>> {
        Ok(None)
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

impl RedisHandle {
    /// Runs one of the token-checking scripts on this session's keys; the lock is gone
    /// afterwards whatever the outcome (released by the script, or no longer ours).
    fn run(&mut self, script: &Script, args: &[&[u8]]) -> StoreResult<()> {
        let keys = &self.keys;
        let store = &self.store;
        let ok: StoreResult<i64> = store.pool.run(|c| {
            let mut invocation = script.key(&keys.lock);
            invocation.key(&keys.record).key(&keys.access);
            invocation.arg(&self.token);
            for arg in args {
                invocation.arg(*arg);
            }
            let ok = invocation.invoke(c)?;
            if ok == 1 {
                store.wait_replicas(c, &keys.record)?;
            }
            Ok(ok)
        });
        self.released = true;
        let ok = match ok {
            Ok(ok) => ok,
            Err(e) => {
                // The script may not have run: the lock may still hold our token.
                self.store
                    .orphan(self.keys.lock.clone(), self.token.clone());
                return Err(e);
            }
        };
        match ok {
            1 => Ok(()),
            _ => Err(StoreError::LockLost),
        }
    }

    /// Removes the session and its lock.
    fn remove(&mut self) -> StoreResult<()> {
        let store = Arc::clone(&self.store);
        self.run(&store.delete, &[])
    }

    /// Releases the lock (compare-and-delete). On failure the lock becomes an orphan,
    /// released in the background once Redis answers. Nothing in a forked child: the lock
    /// is the parent's.
    fn release(&mut self) {
        if std::mem::replace(&mut self.released, true) || self.generation != generation() {
            return;
        }
        let lock = &self.keys.lock;
        let released = self.store.pool.run(|c| {
            self.store
                .release
                .key(lock)
                .arg(&self.token)
                .invoke::<i64>(c)
        });
        if released.is_err() {
            self.store.orphan(lock.clone(), self.token.clone());
        }
    }
}

impl Shared {
    /// `Rekey` of one record key: read, re-seal under the current key if a fallback opened
    /// it, and write back only if its header is still the one read (a request that saved
    /// meanwhile wrote under the current key already), keeping its TTL.
    fn rekey(&self, key: &[u8], write: bool, report: &mut Report) -> StoreResult<()> {
        let mut digest = [0u8; 32];
        let hex = key.len().checked_sub(if self.tagged { 65 } else { 64 });
        let hex = hex.and_then(|start| key.get(start..start + 64));
        if hex.is_none_or(|h| hex::decode_to_slice(h, &mut digest).is_err()) {
            report.foreign += 1;
            return Ok(());
        }
        let value: Option<Vec<u8>> = self.pool.run(|c| redis::cmd("GET").arg(key).query(c))?;
        let Some(value) = value else {
            return Ok(()); // expired or deleted meanwhile
        };
        report.bytes += value.len() as u64;
        report.add_size(value.len() as u64);
        match record::rekey_value(&self.cfg.keys, &digest, &value)? {
            Rekey::Reseal(new) if write => {
                let head = &value[..record::HEADER_LEN];
                let written: i64 = self.pool.run(|c| {
                    let n = self.rekey_script.key(key).arg(head).arg(&new).invoke(c)?;
                    // Our keys are the (UTF-8) prefix and ASCII.
                    if let (1, Ok(key)) = (n, std::str::from_utf8(key)) {
                        self.wait_replicas(c, key)?;
                    }
                    Ok(n)
                })?;
                if written == 1 {
                    report.rekeyed += 1;
                } else {
                    report.current += 1; // saved by a request meanwhile
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
}

impl SessionHandle for RedisHandle {
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

    /// Saves and releases in one round trip.
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
        let ttl = clamp_ttl(store.cfg.expiry.ttl_ms(self.created, now)).to_string();
        self.run(&store.save, &[&value, ttl.as_bytes()])
    }

    /// Touches and releases in one round trip; a bare release when no touch is due.
    fn touch(mut self: Box<Self>, now: f64) -> StoreResult<bool> {
        let store = Arc::clone(&self.store);
        let ttl = clamp_ttl(store.cfg.expiry.ttl_ms(self.created, now));
        if !store.cfg.expiry.touch_due(Some(self.last_access), now) || ttl == 0 {
            self.release();
            return Ok(false);
        }
        let (ttl, now) = (ttl.to_string(), now.to_string());
        self.run(&store.touch, &[ttl.as_bytes(), now.as_bytes()])?;
        Ok(true)
    }

    fn delete(mut self: Box<Self>) -> StoreResult<()> {
        self.remove()
    }
}

impl Drop for RedisHandle {
    fn drop(&mut self) {
        self.release();
    }
}
