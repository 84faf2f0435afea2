//! The Lua scripts of the Redis backend, each one round trip. Saves, touches and deletes
//! first check the lock's token (a request whose lock expired cannot overwrite a newer
//! holder's data) and release the lock in the same round trip; a bare release is a
//! compare-and-delete, and the orphan releaser runs one over a batch of locks.

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
