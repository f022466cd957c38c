-- Items of a schedule (a sorted set scored by when each is due, in ms) that are due by
-- Redis' clock: each is re-armed `rearm_ms` later (so that a taker that dies before it
-- is done is covered: whatever it stands for happens at least once) and returned with
-- the string kept for it at key `prefix .. id .. suffix` (retry and deferred-copy timers:
-- the message to publish; the callback outbox: the registration).
-- KEYS: the schedule.  ARGV: rearm ms, limit, key prefix, key suffix.
-- Returns {id, string or false, ...}.
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], 0, now, 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(due) do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), id)
  table.insert(out, id)
  table.insert(out, redis.call('GET', ARGV[3] .. id .. ARGV[4]))
end
return out
