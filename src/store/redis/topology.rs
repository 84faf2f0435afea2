//! How the Redis backend finds the node a command goes to. The backend is the same whatever
//! the deployment; only this differs:
//!
//! * one server (`redis://`, `rediss://`, `unix://`…): a plain `redis::Client`;
//! * Sentinel (`redis[s]+sentinel://[user:pass@]h1:26379,h2:26379/<service>/<db>`): each new
//!   connection asks the Sentinels, in turn, for the current primary of `<service>`
//!   (`SENTINEL get-master-addr-by-name`), connects to it and checks its `ROLE` (a primary
//!   that Sentinel has not yet noticed is demoted is refused);
//! * Cluster (`redis[s]+cluster://[user:pass@]h1:7000,h2:7001`): the `redis` crate's own
//!   `ClusterClient`, which keeps the slot map and follows `MOVED` / `ASK`.
//!
//! Why not the crate's `sentinel` module: its blocking client keeps one cached socket per
//! Sentinel with no connect or read timeout, and it lives behind `&mut self`, so it would
//! need a lock of its own and a per-fork copy; the two commands it runs are done here with
//! the pool's timeouts, on connections that are never kept (a Sentinel is asked only when the
//! pool opens a connection, which is rare: connections are pooled). Why the crate's
//! `cluster` module: slot maps, redirections and topology refreshes are the hard part of a
//! Cluster client, and it does them; its connections are pooled like single-node ones
//! (`pool`), and its own retries are kept short so that the pool's retry loop, bounded by
//! the lock timeout, decides when to give up.
//!
//! A primary that Sentinel has replaced keeps accepting writes until Sentinel gets round to
//! demoting it (seconds, when it stayed reachable: `SENTINEL FAILOVER`, a partition), and
//! writes acknowledged there are lost when it resyncs from the new primary. So, besides
//! reacting to `READONLY`, the pool asks a Sentinel at most every 250 ms (inline, in the
//! request that finds the check due; nothing blocks on it) which node is the primary;
//! when it changed, every pooled connection to the old one is dropped (`epoch`).
//!
//! The password in the URL is the data nodes'; Sentinels that require their own
//! (`requirepass` in `sentinel.conf`) get `SESSION_REDIS_SENTINEL_PASSWORD`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::{Client, Connection, RedisError, RedisResult, TlsCertificates};

use super::{client_for, RedisTls};
use crate::error::{StoreError, StoreResult};
use crate::lock::{clear_if_free, ForkLocal};

/// How often the pool asks a Sentinel whether the primary moved.
const PRIMARY_CHECK_EVERY: Duration = Duration::from_millis(250);

/// The primary the pool's connections go to, and when a Sentinel was last asked.
#[derive(Default)]
struct Watch {
    primary: Option<(String, u16)>,
    asked: Option<Instant>,
}

/// Which kind of deployment a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// One server.
    Node,
    /// A primary found through Sentinels.
    Sentinel,
    /// A Redis Cluster.
    Cluster,
}

impl Topology {
    /// The kind of deployment `url` names (by its scheme alone).
    pub fn of(url: &str) -> Topology {
        if url.starts_with("redis+sentinel://") || url.starts_with("rediss+sentinel://") {
            Topology::Sentinel
        } else if url.starts_with("redis+cluster://") || url.starts_with("rediss+cluster://") {
            Topology::Cluster
        } else {
            Topology::Node
        }
    }
}

/// The parts of a `redis+sentinel://` or `redis+cluster://` URL.
#[derive(Debug, PartialEq, Eq)]
struct HaUrl {
    /// `rediss` (TLS) or `redis`.
    scheme: &'static str,
    /// `user:password@` as written (percent-encoded), or empty.
    userinfo: String,
    /// `host:port` of each seed node.
    hosts: Vec<String>,
    /// The path's segments (service and db for Sentinel).
    path: Vec<String>,
}

fn config_error(url_kind: &str, what: &str) -> StoreError {
    StoreError::Config(format!(
        "{what}; expected {}",
        match url_kind {
            "sentinel" => "redis+sentinel://[[user]:password@]host:port[,host:port…]/<service>[/<db>] (rediss+sentinel:// for TLS)",
            _ => "redis+cluster://[[user]:password@]host:port[,host:port…] (rediss+cluster:// for TLS)",
        }
    ))
}

fn parse(url: &str, kind: &str, default_port: u16) -> StoreResult<HaUrl> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix(&format!("rediss+{kind}://")) {
        ("rediss", rest)
    } else if let Some(rest) = url.strip_prefix(&format!("redis+{kind}://")) {
        ("redis", rest)
    } else {
        return Err(config_error(kind, "unknown scheme"));
    };
    if rest.contains('?') || rest.contains('#') {
        return Err(config_error(kind, "query strings are not supported"));
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hostlist) = match authority.rsplit_once('@') {
        Some((info, hosts)) => (format!("{info}@"), hosts),
        None => (String::new(), authority),
    };
    let mut hosts = Vec::new();
    for host in hostlist.split(',') {
        let host = host.trim();
        if host.is_empty() {
            return Err(config_error(kind, "empty host in the host list"));
        }
        // `[v6]:port`, `host:port` or `host` (default port).
        let has_port = match host.rfind(']') {
            Some(end) => host[end..].contains(':'),
            None => host.contains(':'),
        };
        if has_port {
            let port = host.rsplit_once(':').map_or("", |(_, p)| p);
            if port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(config_error(kind, &format!("invalid port in {host:?}")));
            }
            hosts.push(host.to_owned());
        } else {
            hosts.push(format!("{host}:{default_port}"));
        }
    }
    let path = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    Ok(HaUrl {
        scheme,
        userinfo,
        hosts,
        path,
    })
}

/// `s` percent-encoded for a URL's userinfo (everything but RFC 3986's unreserved set).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The Sentinels of one service, and how to reach the primary they name.
pub struct SentinelFinder {
    sentinels: Vec<Client>,
    service: String,
    scheme: &'static str,
    userinfo: String,
    db: i64,
    tls: RedisTls,
    /// Per fork generation (never waited for: `try_lock`).
    watch: ForkLocal<Mutex<Watch>>,
    /// Bumped whenever the primary is found to have moved.
    epoch: AtomicU64,
}

impl SentinelFinder {
    /// The primary's address as the first Sentinel that answers names it.
    fn ask(&self, connect_timeout: Duration, io_timeout: Duration) -> RedisResult<(String, u16)> {
        let mut last: Option<RedisError> = None;
        for sentinel in &self.sentinels {
            let named = open(sentinel, connect_timeout, io_timeout).and_then(|mut c| {
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(&self.service)
                    .query::<Option<(String, u16)>>(&mut c)
            });
            match named {
                Ok(Some(addr)) => return Ok(addr),
                Ok(None) => last = Some(no_primary(&self.service)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| no_primary(&self.service)))
    }

    /// Notes that `addr` is the primary now; a change bumps the epoch.
    fn saw(&self, watch: &mut Watch, addr: (String, u16)) {
        if watch.primary.as_ref().is_some_and(|p| *p != addr) {
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
        watch.primary = Some(addr);
    }

    fn watch(&self) -> &Mutex<Watch> {
        self.watch.get_or_retire(clear_if_free)
    }

    /// Asks a Sentinel for the primary if the last check is a second old (and no other
    /// thread is asking).
    fn check(&self, connect_timeout: Duration, io_timeout: Duration) {
        let Ok(mut watch) = self.watch().try_lock() else {
            return;
        };
        if watch
            .asked
            .is_some_and(|t| t.elapsed() < PRIMARY_CHECK_EVERY)
        {
            return;
        }
        watch.asked = Some(Instant::now());
        if let Ok(addr) = self.ask(connect_timeout, io_timeout) {
            self.saw(&mut watch, addr);
        }
    }

    /// A connection to the service's current primary: a Sentinel names it, and the node
    /// must say it is a primary.
    fn connect(&self, connect_timeout: Duration, io_timeout: Duration) -> RedisResult<Connection> {
        let (host, port) = self.ask(connect_timeout, io_timeout)?;
        let shown = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        let url = format!(
            "{}://{}{shown}:{port}/{}",
            self.scheme, self.userinfo, self.db
        );
        let client = client_for(&url, self.tls.clone()).map_err(|e| {
            RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "bad primary address",
                e.to_string(),
            ))
        })?;
        let mut con = open(&client, connect_timeout, io_timeout)?;
        let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut con)?;
        if !matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master") {
            // Sentinel has not caught up with a failover yet: retried by the pool.
            return Err(RedisError::from((
                redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
                "the node Sentinel names is not a primary (yet)",
            )));
        }
        if let Ok(mut watch) = self.watch().try_lock() {
            self.saw(&mut watch, (host, port));
        }
        Ok(con)
    }
}

fn no_primary(service: &str) -> RedisError {
    RedisError::from((
        redis::ErrorKind::Server(redis::ServerErrorKind::MasterDown),
        "no Sentinel names a primary for the service",
        service.to_owned(),
    ))
}

/// A connection from `client` with the pool's timeouts.
pub fn open(
    client: &Client,
    connect_timeout: Duration,
    io_timeout: Duration,
) -> RedisResult<Connection> {
    let con = client.get_connection_with_timeout(connect_timeout)?;
    con.set_read_timeout(Some(io_timeout))?;
    con.set_write_timeout(Some(io_timeout))?;
    Ok(con)
}

/// How the pool opens a connection.
pub enum Finder {
    /// One server.
    Node(Client),
    /// The primary named by Sentinels.
    Sentinel(SentinelFinder),
    /// A Cluster (a connection reaches every primary).
    Cluster(ClusterClient),
}

/// A pooled connection: to one node, or to a whole Cluster.
pub enum Conn {
    /// One server (single node or Sentinel's primary).
    Node(Connection),
    /// A Cluster connection (one socket per node it has talked to).
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl redis::ConnectionLike for Conn {
    // Forwarded, not left to the trait's default (pack, then `req_packed_command`): the
    // Cluster connection routes a `Cmd` by its key directly, whereas from packed bytes it
    // parses the whole command back into a `Value` (copying every argument, the record
    // included) only to find the slot.
    fn req_command(&mut self, cmd: &redis::Cmd) -> RedisResult<redis::Value> {
        match self {
            Conn::Node(c) => c.req_command(cmd),
            Conn::Cluster(c) => c.req_command(cmd),
        }
    }

    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<redis::Value> {
        match self {
            Conn::Node(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<redis::Value>> {
        match self {
            Conn::Node(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Node(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }

    fn check_connection(&mut self) -> bool {
        match self {
            Conn::Node(c) => c.check_connection(),
            Conn::Cluster(c) => c.check_connection(),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            Conn::Node(c) => c.is_open(),
            Conn::Cluster(c) => c.is_open(),
        }
    }
}

impl Finder {
    /// The finder for `url` (no connection is made). `sentinel_password` is for Sentinels
    /// that require one.
    pub fn new(
        url: &str,
        tls: RedisTls,
        sentinel_password: Option<&str>,
        connect_timeout: Duration,
        io_timeout: Duration,
    ) -> StoreResult<Finder> {
        match Topology::of(url) {
            Topology::Node => Ok(Finder::Node(client_for(url, tls)?)),
            Topology::Sentinel => {
                let parts = parse(url, "sentinel", 26379)?;
                let (service, db) = match parts.path.as_slice() {
                    [service] => (service.clone(), 0),
                    [service, db] => match db.parse::<i64>() {
                        Ok(db) if db >= 0 => (service.clone(), db),
                        _ => return Err(config_error("sentinel", &format!("invalid db {db:?}"))),
                    },
                    _ => return Err(config_error("sentinel", "the service name is missing")),
                };
                let auth = sentinel_password
                    .map(|p| format!(":{}@", percent_encode(p)))
                    .unwrap_or_default();
                let sentinels = parts
                    .hosts
                    .iter()
                    .map(|h| client_for(&format!("{}://{auth}{h}", parts.scheme), tls.clone()))
                    .collect::<StoreResult<Vec<_>>>()?;
                Ok(Finder::Sentinel(SentinelFinder {
                    sentinels,
                    service,
                    scheme: parts.scheme,
                    userinfo: parts.userinfo,
                    db,
                    tls,
                    watch: ForkLocal::here(),
                    epoch: AtomicU64::new(0),
                }))
            }
            Topology::Cluster => {
                let parts = parse(url, "cluster", 6379)?;
                if !(parts.path.is_empty() || parts.path == ["0"]) {
                    return Err(config_error(
                        "cluster",
                        "a Cluster has only database 0 (no path after the hosts)",
                    ));
                }
                let nodes: Vec<String> = parts
                    .hosts
                    .iter()
                    .map(|h| format!("{}://{}{h}", parts.scheme, parts.userinfo))
                    .collect();
                let mut builder = ClusterClientBuilder::new(nodes)
                    .connection_timeout(connect_timeout)
                    .response_timeout(io_timeout)
                    // Short: the pool's own retry loop, bounded by the lock timeout, decides
                    // when a failover has lasted too long.
                    .retries(2)
                    .min_retry_wait(10)
                    .max_retry_wait(100);
                if tls.ca_certs.is_some() || tls.client.is_some() {
                    builder = builder.certs(TlsCertificates {
                        client_tls: tls.client.map(|(client_cert, client_key)| {
                            redis::ClientTlsConfig {
                                client_cert,
                                client_key,
                            }
                        }),
                        root_cert: tls.ca_certs,
                    });
                }
                builder
                    .build()
                    .map(Finder::Cluster)
                    .map_err(|e| StoreError::Config(format!("invalid Redis Cluster URL: {e}")))
            }
        }
    }

    /// Whether commands go through a Cluster (keys need hash tags).
    pub fn is_cluster(&self) -> bool {
        matches!(self, Finder::Cluster(_))
    }

    /// Which primary the connections opened now go to, as a number that changes when the
    /// primary moves (Sentinel, checked at most every 250 ms); constant otherwise.
    pub fn epoch(&self, connect_timeout: Duration, io_timeout: Duration) -> u64 {
        match self {
            Finder::Sentinel(s) => {
                s.check(connect_timeout, io_timeout);
                s.epoch.load(Ordering::Acquire)
            }
            _ => 0,
        }
    }

    /// A new connection with the given timeouts.
    pub fn connect(&self, connect_timeout: Duration, io_timeout: Duration) -> RedisResult<Conn> {
        match self {
            Finder::Node(client) => open(client, connect_timeout, io_timeout).map(Conn::Node),
            Finder::Sentinel(s) => s.connect(connect_timeout, io_timeout).map(Conn::Node),
            Finder::Cluster(client) => client.get_connection().map(|c| Conn::Cluster(Box::new(c))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_parse() {
        let p = parse(
            "redis+sentinel://:pw@h1:26379,h2/mymaster/2",
            "sentinel",
            26379,
        )
        .unwrap();
        assert_eq!(p.scheme, "redis");
        assert_eq!(p.userinfo, ":pw@");
        assert_eq!(p.hosts, ["h1:26379", "h2:26379"]);
        assert_eq!(p.path, ["mymaster", "2"]);
        let p = parse("rediss+sentinel://[::1]:5000/m", "sentinel", 26379).unwrap();
        assert_eq!(
            (p.scheme, p.hosts),
            ("rediss", vec!["[::1]:5000".to_owned()])
        );
    }

    #[test]
    fn bad_urls_are_config_errors() {
        let tls = RedisTls::default;
        let d = Duration::from_secs(1);
        for url in [
            "redis+sentinel://h1:26379",
            "redis+sentinel://h1:26379/m/x",
            "redis+sentinel://h1:0/m",
            "redis+sentinel://h1:26379,,h2/m",
            "redis+cluster://h1:7000/3",
            "redis+cluster://h1:7000?x=1",
            "redis+cluster://h1:port",
        ] {
            let err = Finder::new(url, tls(), None, d, d).err();
            assert!(matches!(err, Some(StoreError::Config(_))), "{url}");
        }
        for url in [
            "redis+sentinel://h1,h2:1/m",
            "redis+cluster://:pw@h1:7000,h2:7001",
            "rediss+cluster://h1:7000/",
            "redis://localhost/0",
        ] {
            assert!(
                Finder::new(url, tls(), Some("s p@ss"), d, d).is_ok(),
                "{url}"
            );
        }
    }

    #[test]
    fn passwords_are_percent_encoded() {
        assert_eq!(percent_encode("a b@c:d/é"), "a%20b%40c%3Ad%2F%C3%A9");
    }
}
