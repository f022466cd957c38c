-- Mark a unit finished and advance its successors' counters; claim the successors that
-- reach zero for dispatch (SADD claimed: exactly one caller claims each) and note each
-- claim in the claims index until it is published.  A run that is gone (retention) is
-- left alone: nothing is re-created.
-- KEYS: counters, done, claimed, run, claims index.  ARGV: unit, run id, successors...
-- Returns {units remaining after this one (-1 when the run is gone), successors claimed
-- by this call, the run's priority ('' when normal or none claimed: they are published in
-- its band)}.
local ready = {}
if redis.call('EXISTS', KEYS[4]) == 0 then return {-1, ready} end
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  local remaining = redis.call('HINCRBY', KEYS[4], 'units_remaining', -1)
  local now = now_ms()
  for i = 3, #ARGV do
    if redis.call('HINCRBY', KEYS[1], ARGV[i], -1) <= 0 then
      if redis.call('SADD', KEYS[3], ARGV[i]) == 1 then
        table.insert(ready, ARGV[i])
        redis.call('ZADD', KEYS[5], now, ARGV[2] .. '|' .. ARGV[i])
      end
    end
  end
  keep_ttl(redis.call('PTTL', KEYS[4]), KEYS[1], KEYS[2], KEYS[3])
  local priority = ''
  if #ready > 0 then priority = redis.call('HGET', KEYS[4], 'priority') or '' end
  return {remaining, ready, priority}
end
return {tonumber(redis.call('HGET', KEYS[4], 'units_remaining')), ready}
