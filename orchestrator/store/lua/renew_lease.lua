-- Renew the lease of a step run still being executed, if the caller still holds it.
-- KEYS: leases, lease index.  ARGV: step, token, member, lease ms.
-- Returns 1 renewed, 0 held by another delivery or given up, -1 no lease at all.
local lease = lease_of(KEYS[1], ARGV[1])
if lease == nil then return -1 end
if lease['token'] ~= ARGV[2] or lease['flag'] ~= '' then return 0 end
lease['until'] = now_ms() + tonumber(ARGV[4])
put_lease(KEYS[1], KEYS[2], ARGV[1], ARGV[3], lease)
return 1
