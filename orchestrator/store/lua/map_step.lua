-- A map step's state (see store/maps.py): its expansion into items, each item's end, and
-- the end of the map step itself with its unit, all in one script so that the last
-- item's end completes the map's unit at once (the join is this call).
-- KEYS: run, steps, outputs, events, metrics, leases, maps, counters, done, claimed,
--       claims index.
-- ARGV[1] is the operation:
--   "expand": ARGV step, token, now, workflow, unit, run id, window (0: none), tolerated
--     failures (-1: any), succeeded sources, failed sources, successors n, successors...,
--     item JSON...   (the lease holder of the map step's task expands it once)
--     Returns {1 expanded now / 0 expanded before / -1 no run / -2 fenced, count,
--       indexes to publish (expanded before: those published that have not ended),
--       units remaining (-2: the map is not closed), ready units,
--       priority}.
--   "item": ARGV item id, map step id, token, new status, sources, patch JSON, output
--     JSON or "", now, workflow, unit, run id, kept failures max, failure JSON or "",
--     succeeded sources, failed sources, successors n, successors...
--     Returns {1 moved / 0 refused / -1 no run / -2 fenced, index to publish next (-1:
--       none), units remaining (-2: the map is not closed), ready units, priority}.
--   "counts": ARGV map step id.  Returns {count, status, n, status, n...} over its items
--     (items with no record are pending).
local k_run, k_steps, k_out, k_ev, k_met, k_leases, k_maps = KEYS[1], KEYS[2], KEYS[3],
  KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local CHUNK = 500

local function item_of(step, i) return step .. '[' .. i .. ']' end

local function mget(step, name)
  return redis.call('HGET', k_maps, step .. '|' .. name)
end

local function mset(step, name, value)
  redis.call('HSET', k_maps, step .. '|' .. name, value)
end

-- Merge `patch` (a table) into the step's record, whatever its status.
local function patch_record(step, patch)
  local raw = redis.call('HGET', k_steps, step)
  local rec = {}
  if raw then rec = cjson.decode(raw) end
  for k, v in pairs(patch) do rec[k] = v end
  redis.call('HSET', k_steps, step, cjson.encode(rec))
end

-- As complete_unit.lua: mark the unit done, decrement its successors' counters and claim
-- those that reach zero.  Returns units remaining, the claimed, the run's priority.
local function complete_unit(unit, run_id, succ)
  local ready = {}
  if redis.call('SADD', KEYS[9], unit) == 0 then
    return tonumber(redis.call('HGET', k_run, 'units_remaining')), ready, ''
  end
  local remaining = redis.call('HINCRBY', k_run, 'units_remaining', -1)
  local now = now_ms()
  for _, s in ipairs(succ) do
    if redis.call('HINCRBY', KEYS[8], s, -1) <= 0 then
      if redis.call('SADD', KEYS[10], s) == 1 then
        table.insert(ready, s)
        redis.call('ZADD', KEYS[11], now, run_id .. '|' .. s)
      end
    end
  end
  keep_ttl(redis.call('PTTL', k_run), KEYS[8], KEYS[9], KEYS[10])
  local priority = ''
  if #ready > 0 then priority = redis.call('HGET', k_run, 'priority') or '' end
  return remaining, ready, priority
end

-- Every item ended: the map step ends (its output the items' outputs in item order, null
-- for an item without one), then its unit completes.
local function finish(step, now, wf, unit, run_id, ok_sources, bad_sources, succ)
  local count = tonumber(mget(step, 'count'))
  local failed = tonumber(mget(step, 'fails') or '0')
  local tolerated = tonumber(mget(step, 'policy'))
  local ok = tolerated < 0 or failed <= tolerated
  local failures = cjson.decode(mget(step, 'failures') or '[]')
  local summary = {count = count, failed = failed, stopped = mget(step, 'stopped') == '1'}
  if #failures > 0 then summary['failures'] = failures end  -- cjson writes {} for none
  local patch = {ended_at = tonumber(now), map = summary}
  local output, status, sources = '', STEP.SUCCEEDED, ok_sources
  if ok then
    local parts = {}
    for first = 0, count - 1, CHUNK do
      local ids = {}
      for i = first, math.min(first + CHUNK, count) - 1 do ids[#ids + 1] = item_of(step, i) end
      local vals = redis.call('HMGET', k_out, unpack(ids))
      for j = 1, #ids do parts[#parts + 1] = vals[j] or 'null' end
    end
    output = '[' .. table.concat(parts, ',') .. ']'
  else
    status, sources = STEP.FAILED, bad_sources
    patch['error'] = {type = 'MapItemsFailed', message = failed .. ' of ' .. count ..
      ' items failed (tolerated: ' .. math.max(tolerated, 0) .. ')'}
  end
  step_tx(k_run, k_steps, k_ev, k_out, k_met, step, status, sources, cjson.encode(patch),
          output, now, wf)
  return complete_unit(unit, run_id, succ)
end

local op = ARGV[1]

if op == 'counts' then
  local step = ARGV[2]
  local count = tonumber(mget(step, 'count') or '0')
  local by = {}
  for first = 0, count - 1, CHUNK do
    local ids = {}
    for i = first, math.min(first + CHUNK, count) - 1 do ids[#ids + 1] = item_of(step, i) end
    local vals = redis.call('HMGET', k_steps, unpack(ids))
    for j = 1, #ids do
      local s = STEP.PENDING
      if vals[j] then s = status_of(vals[j]) or STEP.PENDING end
      by[s] = (by[s] or 0) + 1
    end
  end
  local out = {count}
  for s, n in pairs(by) do out[#out + 1] = s; out[#out + 1] = n end
  return out
end

if op == 'expand' then
  local step, token, now, wf, unit, run_id = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6],
    ARGV[7]
  local window, tolerated = tonumber(ARGV[8]), tonumber(ARGV[9])
  local ns = tonumber(ARGV[12])
  local succ = {}
  for i = 1, ns do succ[i] = ARGV[12 + i] end
  local base = 12 + ns
  local count = #ARGV - base
  if redis.call('EXISTS', k_run) == 0 then return {-1, 0, {}, -2, {}, ''} end
  if not holds(k_leases, step, token) then return {-2, 0, {}, -2, {}, ''} end
  local have = mget(step, 'count')
  if have then  -- expanded before (a redelivery): what was published and has not ended
    -- (never began, or began and lost its task: a copy of one that still runs meets its
    -- lease and waits)
    local again = {}
    local nxt = tonumber(mget(step, 'next'))
    for first = 0, nxt - 1, CHUNK do
      local ids = {}
      for i = first, math.min(first + CHUNK, nxt) - 1 do ids[#ids + 1] = item_of(step, i) end
      local vals = redis.call('HMGET', k_steps, unpack(ids))
      for j = 1, #ids do
        local v = vals[j]
        if not v or not STEP_FINAL[status_of(v) or ''] then
          again[#again + 1] = first + j - 1
        end
      end
    end
    return {0, tonumber(have), again, -2, {}, ''}
  end
  for first = 1, count, CHUNK do
    local args = {}
    for i = first, math.min(first + CHUNK - 1, count) do
      args[#args + 1] = 'in:' .. item_of(step, i - 1)
      args[#args + 1] = ARGV[base + i]
    end
    redis.call('HSET', k_out, unpack(args))
  end
  local nxt = count
  if window > 0 and window < count then nxt = window end
  redis.call('HSET', k_maps, step .. '|count', count, step .. '|next', nxt,
             step .. '|left', count, step .. '|fails', 0, step .. '|policy', tolerated,
             step .. '|window', window)
  keep_ttl(redis.call('PTTL', k_run), k_maps, k_out)
  patch_record(step, {map = {count = count}})
  local publish = {}
  for i = 0, nxt - 1 do publish[#publish + 1] = i end
  if count == 0 then
    local remaining, ready, priority = finish(step, now, wf, unit, run_id, ARGV[10],
                                              ARGV[11], succ)
    return {1, 0, publish, remaining, ready, priority}
  end
  return {1, count, publish, -2, {}, ''}
end

-- op == 'item'
local item, step, token, new = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local now, wf, unit, run_id = ARGV[9], ARGV[10], ARGV[11], ARGV[12]
local kept, failure = tonumber(ARGV[13]), ARGV[14]
local ns = tonumber(ARGV[17])
local succ = {}
for i = 1, ns do succ[i] = ARGV[17 + i] end
if not holds(k_leases, item, token) then return {-2, -1, -2, {}, ''} end
local res = step_tx(k_run, k_steps, k_ev, k_out, k_met, item, new, ARGV[6], ARGV[7], ARGV[8],
                    now, '')  -- no metrics per item: the map step counts once, at its end
if res[1] ~= 1 or not STEP_FINAL[new] then return {res[1], -1, -2, {}, ''} end
local left = redis.call('HINCRBY', k_maps, step .. '|left', -1)
local st = redis.call('HMGET', k_maps, step .. '|count', step .. '|stopped', step .. '|policy',
                      step .. '|window', step .. '|next')
local count, stopped = tonumber(st[1]), st[2] == '1'
local tolerated, window, nxt = tonumber(st[3]), tonumber(st[4]), tonumber(st[5])
if new == STEP.FAILED then
  local failed = redis.call('HINCRBY', k_maps, step .. '|fails', 1)
  if failed <= kept and failure ~= '' then
    local list = cjson.decode(mget(step, 'failures') or '[]')
    list[#list + 1] = cjson.decode(failure)
    mset(step, 'failures', cjson.encode(list))
  end
  if tolerated >= 0 and failed > tolerated and not stopped then
    -- too many failures: publish no more items; those never published are not awaited,
    -- those published and not begun end cancelled when they begin (they read `stopped`)
    stopped = true
    mset(step, 'stopped', 1)
    left = redis.call('HINCRBY', k_maps, step .. '|left', nxt - count)
    patch_record(step, {map = {count = count, stopped = true}})
  end
end
local handed = -1
local follow = {}
if window > 0 and not stopped and nxt < count
    and redis.call('HGET', k_run, 'status') == RUN.RUNNING then
  handed = nxt
  mset(step, 'next', nxt + 1)
  follow['handed'] = nxt
end
local remaining, ready, priority = -2, {}, ''
if left <= 0 then
  remaining, ready, priority = finish(step, now, wf, unit, run_id, ARGV[15], ARGV[16], succ)
  follow['closes'] = true
end
if next(follow) ~= nil then patch_record(item, {follow = follow}) end
if handed >= 0 and priority == '' then priority = redis.call('HGET', k_run, 'priority') or '' end
return {1, handed, remaining, ready, priority}
