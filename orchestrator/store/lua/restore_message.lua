-- Put the message of a step run whose lease expired back at the head of its queue, if
-- the lease is unchanged and the message is still unacknowledged (what kombu's own
-- restore does after the visibility timeout, for one message, now).  The lease becomes
-- "restored": the next copy delivered takes the step over.
-- With "hung", the lease is live: its step run ended, yet its task has not returned
-- (the reaper's stalled-run pass, `Recovery._hung`); it is taken from its holder all the
-- same, unless it was settled or given up meanwhile, and the holder's keeper stops the
-- attempt at its next renewal (renew_lease.lua answers 0 for a restored lease).
-- KEYS: leases, lease index, unacked hash, unacked index, queue list.
-- ARGV: step, member, token, delivery tag, message (JSON, marked redelivered),
--       "hung" or "" (expired).
-- Returns 1 restored, 0 not (the lease changed, or the message is gone).
local lease = lease_of(KEYS[1], ARGV[1])
if not restorable(lease, ARGV[3], ARGV[6]) then return 0 end
if not put_back(KEYS[3], KEYS[4], KEYS[5], ARGV[4], ARGV[5]) then return 0 end
lease['flag'] = LEASE.RESTORED
lease['until'] = 0
put_lease(KEYS[1], KEYS[2], ARGV[1], ARGV[2], lease)
return 1
