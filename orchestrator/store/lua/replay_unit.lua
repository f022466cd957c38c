-- A unit whose message was lost (a worker killed between the broker's pop and its
-- unacked bookkeeping) is published again: its steps that ended get their lease flag set
-- to "restored", so that their copies carry the canvas on (SETTLE) instead of dropping it.
-- KEYS: leases.  ARGV: steps...  Returns how many leases were reopened.
local n = 0
for i = 1, #ARGV do
  local lease = lease_of(KEYS[1], ARGV[i])
  if lease ~= nil and lease['flag'] == LEASE.SETTLED then
    lease['flag'] = LEASE.RESTORED
    redis.call('HSET', KEYS[1], ARGV[i], lease['token'] .. '|0|' .. lease['tag'] .. '|'
               .. lease['flag'])
    n = n + 1
  end
end
return n
