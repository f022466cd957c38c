-- What a step needs, in one round trip, and the step run's lease for this delivery.
-- Reads the run hash (all of it, or with "live" only the fields that change while the
-- run runs: the caller remembers the rest, see run_cache.py), step records (parents
-- first, the step's own last) and outputs;
-- then decides by the step's own status and lease:
--   settled (ended, its canvas went on)         -> DROP: this copy has nothing to do
--   another delivery holds a live lease         -> BUSY: this copy must not run it (it
--                                                  is deferred, see defer_copy.lua)
--   ended, not settled, no live lease           -> SETTLE: take the lease, carry on
--   a run from before a restart, within the
--   restart grace, the lease not this copy's     -> BUSY (in_restart_grace in lib.lua)
--   otherwise (pending, queued, retrying, or
--   running under an expired or given-up lease) -> take the lease: OWNED, or on the
--     fast path (the caller saw that only "all parents succeeded" matters), with the
--     run running and every parent succeeded, move to running here: BEGAN.
-- KEYS: run, steps, outputs, events, metrics, leases, lease index.
-- ARGV: step, fast "1"/"0", running sources, running patch JSON, now, parents n, ids n,
--       reads n, token, lease ms, delivery tag, lease member, "full"/"live", ids...,
--       reads...
-- Returns {run fields (field, value, ...; empty: no run), records, outputs, mode}.
local np, ni, nr = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local step, token, ttl, tag, member = ARGV[1], ARGV[9], tonumber(ARGV[10]), ARGV[11],
  ARGV[12]
local run
if ARGV[13] == 'full' then
  run = redis.call('HGETALL', KEYS[1])
else
  local live = redis.call('HMGET', KEYS[1], 'status', 'priority')
  run = {}
  if live[1] then run = {'status', live[1]} end
  if live[1] and live[2] then run[3] = 'priority'; run[4] = live[2] end
end
local ids = {}
for i = 1, ni do ids[i] = ARGV[13 + i] end
local recs = redis.call('HMGET', KEYS[2], unpack(ids))
local outs = {}
if nr > 0 then
  local rids = {}
  for i = 1, nr do rids[i] = ARGV[13 + ni + i] end
  outs = redis.call('HMGET', KEYS[3], unpack(rids))
end
if #run == 0 then return {run, recs, outs, LEASE.GONE} end
local own = STEP.PENDING
if recs[ni] then own = cjson.decode(recs[ni])['status'] end
local now = now_ms()
local lease = lease_of(KEYS[6], step)
local live = held_by_other(lease, token, now)
local mine = {token = token, ['until'] = now + ttl, tag = tag, flag = ''}
if lease ~= nil and lease['flag'] == LEASE.SETTLED then return {run, recs, outs, LEASE.DROP} end
if live then return {run, recs, outs, LEASE.BUSY} end
if STEP_FINAL[own] then
  put_lease(KEYS[6], KEYS[7], step, member, mine)
  keep_ttl(redis.call('PTTL', KEYS[1]), KEYS[6])
  return {run, recs, outs, LEASE.SETTLE}
end
if (lease == nil or lease['token'] ~= token) and in_restart_grace(KEYS[1], now, ttl) then
  return {run, recs, outs, LEASE.BUSY}  -- deferred until the restart grace ends
end
put_lease(KEYS[6], KEYS[7], step, member, mine)
local status = nil
for i = 1, #run, 2 do if run[i] == 'status' then status = run[i + 1] end end
if RUN_FINAL[status] then keep_ttl(redis.call('PTTL', KEYS[1]), KEYS[6]) end
local mode = LEASE.OWNED
if ARGV[2] == '1' then
  local ok = status == RUN.RUNNING
  for i = 1, np do
    if not ok then break end
    ok = recs[i] and cjson.decode(recs[i])['status'] == STEP.SUCCEEDED
  end
  if ok then
    -- the run and the step's record were read above; a running run has no TTL yet
    local res = step_tx_on(KEYS[1], KEYS[2], KEYS[4], KEYS[3], KEYS[5], step, STEP.RUNNING,
                           ARGV[3], ARGV[4], '', ARGV[5], '', -1, recs[ni])
    if res[1] == 1 then mode = LEASE.BEGAN end
  end
end
return {run, recs, outs, mode}
