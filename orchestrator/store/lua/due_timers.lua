-- Retry timers that are due by Redis' clock: re-armed `rearm_ms` later (so a publisher
-- that dies before publishing is covered) and returned with their messages.
-- KEYS: timers index.  ARGV: rearm ms, limit, timer key prefix.
-- Returns {timer id, message or false, ...}.
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], 0, now, 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(due) do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), id)
  table.insert(out, id)
  table.insert(out, redis.call('GET', ARGV[3] .. id))
end
return out
