-- A failed attempt will be retried: the step run moves to retrying (fenced by its lease,
-- which it gives up) and a timer holds the next attempt's message until it is due, in the
-- store (not as an ETA message held by a worker).
-- KEYS: run, steps, events, outputs, metrics, leases, lease index, timers index, timer.
-- ARGV: step, retrying sources, patch JSON, now, token, lease member, timer id, delay ms,
--       message JSON, timer TTL s.
-- Returns {1 moved / 0 refused / -1 no run / -2 fenced, old status}.
if not holds(KEYS[6], ARGV[1], ARGV[5]) then return {-2, ''} end
local res = step_tx(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], STEP.RETRYING,
                    ARGV[2], ARGV[3], '', ARGV[4], '')
if res[1] ~= 1 then return res end
give_up(KEYS[6], KEYS[7], ARGV[1], ARGV[6])
redis.call('SET', KEYS[9], ARGV[9], 'EX', tonumber(ARGV[10]))
redis.call('ZADD', KEYS[8], now_ms() + tonumber(ARGV[8]), ARGV[7])
return res
