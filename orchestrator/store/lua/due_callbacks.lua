-- Callbacks due for delivery by Redis' clock: re-armed `rearm_ms` later (so that a
-- deliverer that dies mid-delivery is covered: delivery is at least once) and returned
-- with their registrations.
-- KEYS: outbox.  ARGV: rearm ms, limit, callback key prefix, callback key suffix.
-- Returns {run id, registration JSON or false, ...}.
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], 0, now, 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(due) do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), id)
  table.insert(out, id)
  table.insert(out, redis.call('GET', ARGV[3] .. id .. ARGV[4]))
end
return out
