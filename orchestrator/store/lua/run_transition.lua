-- Move a run to a new status if the transition table allows it; keep the status indexes
-- and the run metrics in step, and append the event.
-- A run that ends with a callback registered puts the callback in the outbox, due now.
-- KEYS: run, events, metrics, callback registration, callback outbox, status-index of
--       each run status (in ARGV[5]'s order).
-- A child run (a sub-workflow step's) that ends wakes its parent step: if that step is
-- waiting for this run, the run's status is recorded as the wait's resolution and the
-- step's timer becomes due now (the reaper publishes its message).
-- ARGV: new status, allowed sources (","-joined), now, extra fields JSON, status names
--       (","-joined, the order of the index keys), steps-key prefix, steps-key suffix,
--       timers index, wait-timer id prefix.
-- A run that ends holding a slot of its workflow's concurrency limit (create_run.lua)
-- releases it and, in this script, passes it to the oldest run of the key still queued:
-- that run moves to running (started now) and its source units are claimed (noted in the
-- claims index, the key after the status indexes): the caller publishes them, or the
-- reaper does once the claim is stale.  A queued run that ends (cancelled) leaves the
-- key's FIFO.
-- Returns {1, old status, the run started in the slot it left or '', that run's version
-- and priority} if moved, {0, status} if refused, {-1, ''} if no such run.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {-1, ''} end
if not allowed(ARGV[2], status) then return {0, status} end
local created = redis.call('HGET', KEYS[1], 'created_at')
redis.call('HSET', KEYS[1], 'status', ARGV[1])
for k, v in pairs(cjson.decode(ARGV[4])) do redis.call('HSET', KEYS[1], k, v) end
local i = 0
local id = redis.call('HGET', KEYS[1], 'run_id')
local index = {}
for name in string.gmatch(ARGV[5], '[^,]+') do
  i = i + 1
  index[name] = KEYS[5 + i]
  if name == status then redis.call('ZREM', KEYS[5 + i], id) end
  if name == ARGV[1] then redis.call('ZADD', KEYS[5 + i], created, id) end
end
local passed, pversion, ppriority = '', '', ''
local holders = redis.call('HGET', KEYS[1], 'slot_holders')
if holders and RUN_FINAL[ARGV[1]] and KEYS[6 + i] then
  local queue = redis.call('HGET', KEYS[1], 'slot_queue')
  if status == RUN.QUEUED then
    redis.call('LREM', queue, 0, KEYS[1])
  elseif redis.call('ZREM', holders, id) == 1 then
    while passed == '' do
      local nk = redis.call('LPOP', queue)
      if not nk then break end
      if redis.call('HGET', nk, 'status') == RUN.QUEUED then
        local nid = redis.call('HGET', nk, 'run_id')
        local start = cjson.decode(redis.call('HGET', nk, 'slot_start'))
        local ncreated = redis.call('HGET', nk, 'created_at')
        redis.call('HSET', nk, 'status', RUN.RUNNING, 'started_at', ARGV[3])
        redis.call('HDEL', nk, 'reason', 'slot_start')
        redis.call('ZREM', index[RUN.QUEUED], nid)
        redis.call('ZADD', index[RUN.RUNNING], ncreated, nid)
        redis.call('XADD', start['events'], 'MAXLEN', '~', EVENTS_MAXLEN, '*', F.KIND, F.RUN,
          F.STATUS, RUN.RUNNING, F.TS, ARGV[3])
        local now = now_ms()
        redis.call('ZADD', holders, now, nid)
        for _, u in ipairs(start['sources']) do
          if redis.call('SADD', start['claimed'], u) == 1 then
            redis.call('ZADD', KEYS[6 + i], now, nid .. '|' .. u)
          end
        end
        passed = nid
        pversion = redis.call('HGET', nk, 'version')
        ppriority = redis.call('HGET', nk, 'priority') or ''
      end
    end
  end
end
local wf = redis.call('HGET', KEYS[1], 'workflow')
redis.call('HINCRBY', KEYS[3], F.M_RUNS .. F.SEP .. wf .. F.SEP .. ARGV[1], 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', EVENTS_MAXLEN, '*', F.KIND, F.RUN, F.STATUS,
  ARGV[1], F.TS, ARGV[3])
if RUN_FINAL[ARGV[1]] and redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('ZADD', KEYS[5], now_ms(), id)
end
local parent = redis.call('HGET', KEYS[1], 'parent_run')
if RUN_FINAL[ARGV[1]] and parent and ARGV[9] then
  local pstep = redis.call('HGET', KEYS[1], 'parent_step')
  local k_psteps = ARGV[6] .. parent .. ARGV[7]
  local raw = redis.call('HGET', k_psteps, pstep)
  if raw then
    local rec = cjson.decode(raw)
    local w = rec['wait']
    if rec['status'] == STEP.WAITING and type(w) == 'table' and w['run'] == id then
      rec['resolution'] = {run = id, status = ARGV[1], at = tonumber(ARGV[3])}
      redis.call('HSET', k_psteps, pstep, cjson.encode(rec))
      redis.call('ZADD', ARGV[8], 'XX', now_ms(), ARGV[9] .. parent .. '|' .. pstep)
    end
  end
end
return {1, status, passed, pversion, ppriority}
