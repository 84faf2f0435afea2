//! The Lua scripts of the Redis backend, each one round trip. Saves, touches and deletes
//! first check the lock's token (a request whose lock expired cannot overwrite a newer
//! holder's data) and release the lock in the same round trip; a bare release is a
//! compare-and-delete, and the orphan releaser runs one over a batch of locks.
//!
//! The token check is also what makes a save safe across a failover: the lock and the
//! record are in one hash slot and every script's writes replicate as one unit, in order, so
//! a replica that has our lock has the record version we read under it. A promoted replica
//! that lost our lock (or holds another request's) refuses the save (`LockLost`: 503), it
//! never overwrites a newer version.

// KEYS: lock, record, last touch. ARGV: token, lock TTL in ms. A Cluster takes the lock
// with this script instead of the single node's `SET NX` pipeline: it is atomic (a slot
// in migration answers for all three keys at once) and idempotent (a lock already holding
// our token is ours), so the pool may run it again after a reply lost in a failover.
// Returns {1 if locked, record, last touch}.
pub(super) const LOCK_LUA: &str = r"
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then return {0, false, false} end
if not held then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
return {1, redis.call('GET', KEYS[2]), redis.call('GET', KEYS[3])}";

// KEYS: lock, record, last touch. ARGV: token, record, TTL in ms (0: none).
pub(super) const SAVE_LUA: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
else
  redis.call('SET', KEYS[2], ARGV[2])
end
redis.call('DEL', KEYS[3], KEYS[1])
return 1";

// KEYS: record. ARGV: its header as read, the re-sealed record (`rekey`). Writes only if
// the record still has that header (no request saved it meanwhile), keeping its TTL.
pub(super) const REKEY_LUA: &str = r"
if redis.call('GETRANGE', KEYS[1], 0, 63) ~= ARGV[1] then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return 1";

// KEYS: lock, record, last touch. ARGV: token, TTL in ms, now.
pub(super) const TOUCH_LUA: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('PEXPIRE', KEYS[2], ARGV[2]) == 1 then
  redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[2])
end
redis.call('DEL', KEYS[1])
return 1";

// KEYS: lock, record, last touch. ARGV: token.
pub(super) const DELETE_LUA: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[1])
return 1";

// KEYS: lock. ARGV: token.
pub(super) const RELEASE_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

// KEYS: locks. ARGV: their tokens. Deletes each lock still holding its token; returns, per
// lock, 1 if it was deleted, 0 if it was absent, -1 if another token holds it.
pub(super) const RELEASE_ORPHANS_LUA: &str = r"
local out = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  if v == ARGV[i] then redis.call('DEL', key); out[i] = 1
  elseif v then out[i] = -1 else out[i] = 0 end
end
return out";
