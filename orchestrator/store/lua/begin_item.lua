-- begin_step.lua for a map item (store/maps.py, MapStore.begin_item): the same lease
-- decisions and fast-path start, but it reads only the run's status, priority, faults and
-- (when the item's inputs read it) input, not the whole run hash: a map over a large run
-- input would otherwise send that input back for every item.
-- KEYS: run, steps, outputs, events, metrics, leases, lease index.
-- ARGV: as begin_step.lua, then ARGV[13 + ni + nr]: "1" to read the run's input.
-- Returns {{status, priority, faults, input}, records, outputs, mode}.
local np, ni, nr = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local step, token, ttl, tag, member = ARGV[1], ARGV[9], tonumber(ARGV[10]), ARGV[11],
  ARGV[12]
local want = ARGV[13 + ni + nr] == '1' and 'input' or 'status'
local run = redis.call('HMGET', KEYS[1], 'status', 'priority', 'faults', want)
local ids = {}
for i = 1, ni do ids[i] = ARGV[12 + i] end
local recs = redis.call('HMGET', KEYS[2], unpack(ids))
local outs = {}
if nr > 0 then
  local rids = {}
  for i = 1, nr do rids[i] = ARGV[12 + ni + i] end
  outs = redis.call('HMGET', KEYS[3], unpack(rids))
end
if not run[1] then return {run, recs, outs, LEASE.GONE} end
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
local status = run[1]
if RUN_FINAL[status] then keep_ttl(redis.call('PTTL', KEYS[1]), KEYS[6]) end
local mode = LEASE.OWNED
if ARGV[2] == '1' then
  local ok = status == RUN.RUNNING
  for i = 1, np do
    if not ok then break end
    ok = recs[i] and cjson.decode(recs[i])['status'] == STEP.SUCCEEDED
  end
  if ok then
    local res = step_tx(KEYS[1], KEYS[2], KEYS[4], KEYS[3], KEYS[5], step, STEP.RUNNING,
                        ARGV[3], ARGV[4], '', ARGV[5], '')
    if res[1] == 1 then mode = LEASE.BEGAN end
  end
end
return {run, recs, outs, mode}
