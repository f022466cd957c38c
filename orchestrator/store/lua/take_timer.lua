-- One store timer, taken if it is due (Redis' clock): it is re-armed `rearm_ms` later, as
-- the reaper's `due.lua` does (a taker that dies before it is done leaves it to the
-- reaper; the reaper and this caller never both take it), and its message returned.
-- KEYS: timers index, the timer's message key.  ARGV: timer id, rearm ms.
-- Returns the message, or false if the timer is not due (or not there).
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return false end
local now = now_ms()
if tonumber(score) > now then return false end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return redis.call('GET', KEYS[2])
