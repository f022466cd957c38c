-- An expired lease whose message is gone: an ended step settles; a running one (no owner,
-- no message) is looked at again after `park_ms` and reported meanwhile.
-- A running one whose copy waits in a timer (see defer_copy.lua) is simply looked at
-- again later: the copy takes it over when it comes back.
-- `ended` "1": the caller knows the task ended (a join whose unit is complete): settled.
-- KEYS: leases, lease index, steps, the copy's timer.
-- ARGV: step, member, token, park ms, ended "1"/"0".
-- Returns 1 settled, 2 parked (orphan), 3 parked (a copy waits), 0 the lease changed.
local lease = lease_of(KEYS[1], ARGV[1])
if lease == nil then redis.call('ZREM', KEYS[2], ARGV[2]); return 1 end
if lease['token'] ~= ARGV[3] or lease['until'] > now_ms() then return 0 end
local raw = redis.call('HGET', KEYS[3], ARGV[1])
local status = STEP.PENDING
if raw then status = cjson.decode(raw)['status'] end
if STEP_FINAL[status] or ARGV[5] == '1' then
  lease['flag'] = LEASE.SETTLED
  lease['until'] = 0
  put_lease(KEYS[1], KEYS[2], ARGV[1], ARGV[2], lease)
  return 1
end
redis.call('ZADD', KEYS[2], now_ms() + tonumber(ARGV[4]), ARGV[2])
if redis.call('EXISTS', KEYS[4]) == 1 then return 3 end
return 2
