-- restore_message.lua in two steps, for a broker on another Redis than the store's
-- (`Leases.restore`): "check" before the message is put back, "mark" after.
-- "check": is the lease unchanged (the token still the one the reaper saw) and expired?
-- "mark": the same, and then the lease becomes "restored" (the next copy delivered takes
-- the step over at once; an expired lease it takes over too, so a reaper killed between
-- the put-back and the mark leaves nothing stuck).
-- KEYS: leases, lease index.  ARGV: step, member, token, "check" or "mark", "hung" or ""
-- (as restore_message.lua).
-- Returns 1 (unchanged and expired, or hung; with "mark": marked), 0 (it changed).
local lease = lease_of(KEYS[1], ARGV[1])
if not restorable(lease, ARGV[3], ARGV[5]) then return 0 end
if ARGV[4] == 'mark' then
  lease['flag'] = LEASE.RESTORED
  lease['until'] = 0
  put_lease(KEYS[1], KEYS[2], ARGV[1], ARGV[2], lease)
end
return 1
