-- The task that held a lease is done with its message (a lease settled already stays
-- settled).  `how`:
--   "done": it returned normally (its step run ended and its canvas went on): settled;
--   "back": its message went back to the queue (a dead pool process's task, requeued):
--           "restored", so the next copy may take the step over at once;
--   "check": it failed in a way that says nothing: settled only if the step run ended;
--           otherwise the lease stays, expires and brings the reaper.
-- KEYS: leases, lease index, steps.  ARGV: step, token, member, how.
-- Returns 1 if released, else 0.
local lease = lease_of(KEYS[1], ARGV[1])
-- given up (the step run goes on with another delivery): nothing to release
if lease == nil or lease['token'] ~= ARGV[2] or lease['flag'] == LEASE.GIVEN then return 0 end
-- settled already (step_transition.lua sent its canvas on): it stays settled, whatever
-- became of this copy of the message
if lease['flag'] == LEASE.SETTLED and lease['until'] == 0 then return 1 end
if ARGV[4] == 'back' then
  lease['flag'] = LEASE.RESTORED
elseif ARGV[4] == 'done' then
  lease['flag'] = LEASE.SETTLED
else
  local raw = redis.call('HGET', KEYS[3], ARGV[1])
  if not raw or not STEP_FINAL[cjson.decode(raw)['status']] then return 0 end
  lease['flag'] = LEASE.SETTLED
end
lease['until'] = 0
put_lease(KEYS[1], KEYS[2], ARGV[1], ARGV[3], lease)
return 1
