-- Take the next start of a rate limit's budget (GCRA without burst: starts are spaced one
-- interval apart, by Redis' clock; every worker shares the budget).  A start that cannot
-- go now is reserved for later: its step run waits for that time, then starts without
-- drawing again, so waiting step runs start in the order they drew, at the budget's rate.
-- KEYS: the budget's key.  ARGV: interval ms.
-- Returns 0 if this start may go now, else the ms until its reserved time.
local now = now_ms()
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local nxt = tat + tonumber(ARGV[1])
redis.call('SET', KEYS[1], nxt, 'PX', math.ceil(nxt - now + 1000))
return tat - now
