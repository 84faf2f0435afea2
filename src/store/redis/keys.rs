//! The Redis backend's key names, and finding them again. `<prefix>s:<sha256(id)>` holds
//! the record, `<prefix>l:<sha256(id)>` the lock, `<prefix>a:<sha256(id)>` the time of the
//! last touch, `<prefix>u:<user digest>` a user's index entries (`user_index`). The id never appears in a key, so `KEYS`/`SCAN` output cannot be replayed as
//! cookies. The prefix is literal: its glob characters are escaped in `SCAN MATCH`, and
//! every key returned is checked to be ours (prefix, kind, a 64-hex digest) before it is
//! counted or deleted.
//!
//! On a Cluster the digest is a hash tag, `<prefix>s:{<sha256(id)>}` (and `l:`, `a:`), so
//! the three keys of a session live in one slot: each script touches one node, and a
//! regenerated id (a new digest, maybe another slot) is a new session written by `create`,
//! never a command spanning two slots. A single node and Sentinel keep the untagged names of
//! 0.2 (nothing there needs slots), so sessions stored before the upgrade still load, and a
//! single node moved under Sentinel keeps its sessions. `stats` and `clear` visit every
//! primary of a Cluster (`SCAN` is per node).
//!
//! A session's key names are built once per `open` (`SessionKeys`), from the digest's
//! bytes, in one allocation each.

use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};

use super::topology::Conn;
use super::Shared;
use crate::error::{StoreError, StoreResult};
use crate::shard;
use crate::sid::SessionId;

/// The key names of one session.
pub(super) struct SessionKeys {
    /// The lock.
    pub lock: String,
    /// The record.
    pub record: String,
    /// The last touch.
    pub access: String,
}

/// `pattern` with Redis's glob characters escaped, so that `SCAN MATCH` takes it literally.
pub fn glob_escape(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    for c in pattern.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Shared {
    /// The key names of session `id`.
    pub(super) fn session_keys(&self, id: &SessionId) -> SessionKeys {
        let mut hex = [0u8; 64];
        // 32 bytes always fit 64 hex characters: this cannot fail.
        let _ = hex::encode_to_slice(shard::digest_bytes(id), &mut hex);
        SessionKeys {
            lock: self.key('l', &hex),
            record: self.key('s', &hex),
            access: self.key('a', &hex),
        }
    }

    /// The key of `user`'s index entries (`SESSION_USER_KEY`): `<prefix>u:<digest>`, a
    /// hash from record digest to entry, in its own slot on a Cluster (a user's sessions
    /// are spread over every slot, so no command ever spans the index and a record).
    pub(super) fn user_key(&self, user: &str) -> String {
        let mut hex = [0u8; 64];
        hex.copy_from_slice(crate::store::index::user_digest(user).as_bytes());
        self.key('u', &hex)
    }

    fn key(&self, kind: char, hex: &[u8; 64]) -> String {
        let mut key = String::with_capacity(self.prefix.len() + 4 + hex.len());
        key.push_str(&self.prefix);
        key.push(kind);
        key.push(':');
        if self.tagged {
            key.push('{');
        }
        key.extend(hex.iter().copied().map(char::from));
        if self.tagged {
            key.push('}');
        }
        key
    }

    /// Whether `key` is one of ours of `kind`: the literal prefix, the kind, a digest (in
    /// braces on a Cluster).
    fn is_ours(&self, kind: &str, key: &[u8]) -> bool {
        let digest = key
            .strip_prefix(self.prefix.as_bytes())
            .and_then(|rest| rest.strip_prefix(kind.as_bytes()))
            .and_then(|rest| rest.strip_prefix(b":"));
        let digest = if self.tagged {
            digest.and_then(|d| d.strip_prefix(b"{")?.strip_suffix(b"}"))
        } else {
            digest
        };
        digest.is_some_and(|digest| {
            digest.len() == 64
                && digest
                    .iter()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
    }

    /// The `SCAN MATCH` pattern of our keys of `kind` (braces are not glob characters).
    fn pattern(&self, kind: &str) -> String {
        let digest = "?".repeat(64);
        if self.tagged {
            format!("{}{kind}:{{{digest}}}", glob_escape(&self.prefix))
        } else {
            format!("{}{kind}:{digest}", glob_escape(&self.prefix))
        }
    }

    /// The primaries of the Cluster, as `(host, port)` (from `CLUSTER NODES`).
    fn primaries(&self) -> StoreResult<Vec<(String, u16)>> {
        let nodes: String = self
            .pool
            .run(|c| redis::cmd("CLUSTER").arg("NODES").query(c))?;
        let primaries: Vec<(String, u16)> = nodes
            .lines()
            .filter_map(|line| {
                let mut fields = line.split(' ');
                let addr = fields.nth(1)?;
                let flags = fields.next()?;
                let primary = flags.split(',').any(|f| f == "master")
                    && !flags.split(',').any(|f| f == "fail" || f == "noaddr");
                let addr = addr.split(['@', ',']).next()?;
                let (host, port) = addr.rsplit_once(':')?;
                let host = host.trim_start_matches('[').trim_end_matches(']');
                primary.then(|| Some((host.to_owned(), port.parse().ok()?)))?
            })
            .collect();
        if primaries.is_empty() {
            return Err(StoreError::Unavailable(
                "redis: the Cluster lists no reachable primary".to_owned(),
            ));
        }
        Ok(primaries)
    }

    /// Every key of ours of `kind`, a `SCAN` batch at a time (never blocks the server); keys
    /// that merely match the pattern (another app's) are left out. On a Cluster, every
    /// primary is scanned in turn.
    pub(super) fn scan(
        &self,
        kind: &str,
        mut each: impl FnMut(Vec<Vec<u8>>) -> StoreResult<()>,
    ) -> StoreResult<()> {
        let pattern = self.pattern(kind);
        let nodes = if self.tagged {
            self.primaries()?.into_iter().map(Some).collect()
        } else {
            vec![None]
        };
        for node in nodes {
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<Vec<u8>>) = self.pool.run(|c| {
                    let mut cmd = redis::cmd("SCAN");
                    cmd.arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000);
                    match (c, &node) {
                        (Conn::Cluster(c), Some((host, port))) => {
                            let route = SingleNodeRoutingInfo::ByAddress {
                                host: host.clone(),
                                port: *port,
                            };
                            let value = c.route_command(&cmd, RoutingInfo::SingleNode(route))?;
                            Ok(redis::from_redis_value(value)?)
                        }
                        (c, _) => cmd.query(c),
                    }
                })?;
                each(keys.into_iter().filter(|k| self.is_ours(kind, k)).collect())?;
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Deletes `keys` (on a Cluster one `DEL` per key, each routed to its slot's node).
    pub(super) fn delete_keys(&self, keys: &[Vec<u8>]) -> StoreResult<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        self.pool.run(|c| match c {
            Conn::Cluster(c) => {
                let mut pipe = redis::cluster::cluster_pipe();
                for key in keys {
                    pipe.cmd("DEL").arg(key);
                }
                let deleted: Vec<u64> = pipe.query(c)?;
                Ok(deleted.iter().sum())
            }
            c => redis::cmd("DEL").arg(keys).query(c),
        })
    }
}
