-- Shared by every script (prepended after the prelude that scripts.py builds from
-- states.py and fields.py: STEP.*, RUN.*, STEP_FINAL, RUN_FINAL, EVENTS_MAXLEN,
-- DURATION_BUCKETS and the metric/event field names F.*).

-- Is `status` one of the ","-joined `sources`?
local function allowed(sources, status)
  for s in string.gmatch(sources, '[^,]+') do if s == status then return true end end
  return false
end

-- The one step transition: checks the transition table (sources: ","-joined, STEP.PENDING
-- meaning no record), merges the patch, stores the output (if not ""), appends the event,
-- and with a workflow name counts a final status in the metrics (and its duration in the
-- histogram's bucket).  Returns {moved 0/1, old status}.
local function step_tx(k_steps, k_events, k_outputs, k_metrics, step, new, sources, patch,
                       output, now, wf)
  local cur = redis.call('HGET', k_steps, step)
  local rec = {}
  local status = STEP.PENDING
  if cur then rec = cjson.decode(cur); status = rec['status'] end
  if not allowed(sources, status) then return {0, status} end
  for k, v in pairs(cjson.decode(patch)) do rec[k] = v end
  rec['status'] = new
  redis.call('HSET', k_steps, step, cjson.encode(rec))
  if output ~= '' then redis.call('HSET', k_outputs, step, output) end
  redis.call('XADD', k_events, 'MAXLEN', '~', EVENTS_MAXLEN, '*', F.KIND, F.STEP, F.STEP_ID,
    step, F.STATUS, new, F.ATTEMPT, tostring(rec['attempt'] or 0), F.TS, now)
  if wf ~= '' and STEP_FINAL[new] then
    local base = wf .. F.SEP .. step
    redis.call('HINCRBY', k_metrics, F.M_STEPS .. F.SEP .. base .. F.SEP .. new, 1)
    local s, e = tonumber(rec['started_at']), tonumber(rec['ended_at'])
    if (new == STEP.SUCCEEDED or new == STEP.FAILED) and s and e then
      local d = e - s
      redis.call('HINCRBYFLOAT', k_metrics, F.M_DSUM .. F.SEP .. base, d)
      local bucket = '+Inf'
      for _, b in ipairs(DURATION_BUCKETS) do
        if d <= tonumber(b) then bucket = b; break end
      end
      redis.call('HINCRBY', k_metrics, F.M_DBUCKET .. F.SEP .. base .. F.SEP .. bucket, 1)
    end
  end
  return {1, status}
end
