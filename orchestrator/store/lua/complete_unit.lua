-- Mark a unit finished and advance its successors' counters; claim the successors that
-- reach zero for dispatch (SADD claimed: exactly one caller claims each).
-- KEYS: counters, done, claimed, run.  ARGV: unit, successors...
-- Returns {units remaining after this one, successors claimed by this call}.
local ready = {}
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  local remaining = redis.call('HINCRBY', KEYS[4], 'units_remaining', -1)
  for i = 2, #ARGV do
    if redis.call('HINCRBY', KEYS[1], ARGV[i], -1) <= 0 then
      if redis.call('SADD', KEYS[3], ARGV[i]) == 1 then table.insert(ready, ARGV[i]) end
    end
  end
  return {remaining, ready}
end
return {tonumber(redis.call('HGET', KEYS[4], 'units_remaining')), ready}
