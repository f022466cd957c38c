-- Claim units for dispatch (a run's source units): SADD claimed, and note each claim in
-- the claims index until it is published.
-- KEYS: claimed, claims index, run.  ARGV: run id, units...
-- Returns the units claimed by this call.
local out = {}
if redis.call('EXISTS', KEYS[3]) == 0 then return out end
local now = now_ms()
for i = 2, #ARGV do
  if redis.call('SADD', KEYS[1], ARGV[i]) == 1 then
    table.insert(out, ARGV[i])
    redis.call('ZADD', KEYS[2], now, ARGV[1] .. '|' .. ARGV[i])
  end
end
return out
