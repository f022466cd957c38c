-- Renew the lease of a step run still being executed, if the caller still holds it; or
-- take it for the caller's delivery when nobody holds it.
-- KEYS: leases, lease index, run.  ARGV: step, token, member, lease ms, delivery tag,
--       "held" (the keeper saw this delivery hold it) or "new" (not yet).
-- A lease of another delivery that nobody holds (expired, given back or given up: what
-- begin_step.lua would take over) is taken for a "new" delivery, whose task may still be
-- in its begin (a slow one, right after a failover): its begin then finds its own token.
-- No lease at all (Redis lost it: a restart or failover that lost the last writes; or
-- the task has not begun yet) is taken for either, if the run exists: no other delivery
-- can hold the step run, or its lease would be there.  But within the restart grace
-- (lib.lua) a "new" delivery takes nothing of a run from before the restart: a lost lease
-- may be another delivery's, which is not confirmed anywhere but in its own keeper.
-- Returns 1 renewed; 3 taken; 2 this delivery is done with it (it gave it up, or
-- settled it: its task is returning); 0 another delivery holds it, or settled it, or
-- this delivery's lease expired and the reaper put its message back (restored: another
-- copy may take the step run over now); -1 no lease and no run (the run is gone).
local lease = lease_of(KEYS[1], ARGV[1])
local now = now_ms()
if lease ~= nil and lease['token'] == ARGV[2] then
  if lease['flag'] == LEASE.RESTORED then return 0 end
  if lease['flag'] ~= '' then return 2 end
  lease['until'] = now + tonumber(ARGV[4])
  put_lease(KEYS[1], KEYS[2], ARGV[1], ARGV[3], lease)
  return 1
end
if ARGV[6] == 'new' and in_restart_grace(KEYS[3], now, tonumber(ARGV[4])) then
  return 0  -- a run from before a restart: only the delivery that held it takes it back
end
if lease ~= nil and (ARGV[6] ~= 'new' or lease['flag'] == LEASE.SETTLED
                    or held_by_other(lease, ARGV[2], now)) then
  return 0
end
local ttl = redis.call('PTTL', KEYS[3])
if ttl == -2 then return -1 end
put_lease(KEYS[1], KEYS[2], ARGV[1], ARGV[3],
          {token = ARGV[2], ['until'] = now + tonumber(ARGV[4]), tag = ARGV[5], flag = ''})
keep_ttl(ttl, KEYS[1])
return 3
