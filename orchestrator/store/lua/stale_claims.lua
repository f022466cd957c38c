-- Claims older than `grace_ms` whose units were never published (the claimer died
-- between the claim and the publish): re-armed for another grace period and returned, so
-- that one reaper publishes each.
-- KEYS: claims index.  ARGV: grace ms, limit.  Returns {member, ...}.
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], 0, now - tonumber(ARGV[1]), 'LIMIT', 0,
                       tonumber(ARGV[2]))
for _, m in ipairs(due) do redis.call('ZADD', KEYS[1], now, m) end
return due
