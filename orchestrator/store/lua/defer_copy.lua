-- A copy of a step's task arrived while another delivery holds the step run's live lease
-- (a broker redelivery after the visibility timeout, or a duplicate publish).  It must
-- not run the step, and it must not be lost either (the holder may be dead): it is held
-- in a timer due just after the lease would expire.  If the holder finishes, the copy is
-- dropped then; if it died, the copy takes the step over.  A copy deferred by the restart
-- grace (lib.lua) is due just after the grace ends.
-- KEYS: leases, timers index, timer, and the run (absent: no restart grace to wait out).
-- ARGV: step, timer id, message JSON, timer TTL s, and with the run the lease length ms.
-- Returns the due time (ms).
local lease = lease_of(KEYS[1], ARGV[1])
local now = now_ms()
local due = now + 1000
if lease ~= nil and lease['until'] + 500 > due then due = lease['until'] + 500 end
local grace = KEYS[4] and in_restart_grace(KEYS[4], now, tonumber(ARGV[5]))
if grace and grace + 500 > due then due = grace + 500 end
redis.call('SET', KEYS[3], ARGV[3], 'EX', tonumber(ARGV[4]))
redis.call('ZADD', KEYS[2], due, ARGV[2])
return due
