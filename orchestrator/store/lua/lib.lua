-- Shared by every script (prepended after the prelude that scripts.py builds from
-- states.py and fields.py: STEP.*, RUN.*, STEP_FINAL, RUN_FINAL, EVENTS_MAXLEN,
-- DURATION_BUCKETS, LEASE.* and the metric/event field names F.*).

-- The Redis commands kombu's Redis transport sends to publish, by the names
-- `orchestrator.runtime.broker.Captured` holds them under.
local BROKER_COMMANDS = {lpush = 'LPUSH', publish = 'PUBLISH', pexpire = 'PEXPIRE'}

-- Is `status` one of the ","-joined `sources`?
local function allowed(sources, status)
  for s in string.gmatch(sources, '[^,]+') do if s == status then return true end end
  return false
end

-- Redis' clock in milliseconds: every lease is judged by this one clock.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- This server's lifetime as the master of its data: `id` (its INFO `run_id`, new at every
-- start) and `start`, read once per Lua VM.  `start` is when the server started (ms of its
-- clock, from INFO's uptime: at most a second late) or, on a replica a failover promoted
-- (INFO replication's `master_replid2` names the history it took over), when this library
-- first ran here: a replica runs none of these functions (its writes come as effects), so
-- in a promoted server's busy library the first call is within moments of the promotion,
-- and a later first call (a new release's library, an idle store) only starts the grace
-- later than needed.  A Functions library lives until the server stops or it is replaced
-- (`LIVING_VM`, set by scripts.py); an EVALSHA script lives for one call, reads the uptime
-- at each call that needs it, and cannot tell when a promotion was: there, only a restart
-- starts the grace.
local BOOT = {}

local function server_boot()
  if BOOT.id == nil then
    local now = now_ms()
    local info = redis.call('INFO', 'server')
    local up = tonumber(string.match(info, 'uptime_in_seconds:(%d+)')) or 0
    BOOT.start = now - 1000 * up
    BOOT.id = string.match(info, 'run_id:(%w+)') or ''
    if LIVING_VM then
      local took = string.match(redis.call('INFO', 'replication'), 'master_replid2:(%x+)')
      if took and string.find(took, '[^0]') then BOOT.start = now end  -- promoted
    end
  end
  return BOOT
end

-- The restart grace.  A restart may lose the server's last writes (AOF `everysec`: up to
-- a second), and a failover the writes not yet replicated; among them the lease of an
-- attempt that still runs and the pop of its message, which is then back in its queue.
-- For `grace` ms (the caller's lease length) after the server started or was promoted, a
-- step run of a run created before that (its `epoch`, the `run_id` of the server that
-- created it, is another's) is therefore not taken by a delivery that did not hold its
-- lease: the attempt that held it takes its lease back at its keeper's next renewal
-- (renew_lease.lua), and the copy, deferred until the grace ends (defer_copy.lua), meets
-- it.  Outside the grace this is one comparison.
-- Returns when the grace ends (ms), or false: not within it, or not a run from before.
local function in_restart_grace(k_run, now, grace)
  local boot = server_boot()
  if now >= boot.start + grace then return false end
  local run = redis.call('HMGET', k_run, 'epoch', 'status')
  if run[1] == boot.id or not run[2] then return false end  -- a new run, or none
  return boot.start + grace
end

-- A run that ended has its retention TTL (ms, `ttl`) on every key; a key written later (a
-- straggler's write that creates it) gets the same TTL, so that nothing of the run
-- outlives it.  A running run (ttl -1) has none to give.
local function keep_ttl(ttl, ...)
  if ttl <= 0 then return end
  for _, k in ipairs({...}) do
    if redis.call('PTTL', k) == -1 then redis.call('PEXPIRE', k, ttl) end
  end
end

-- The lease on a step run (a table, or nil).  Stored as "token|until|tag|flag": until in
-- ms of Redis' clock (0: not live), the broker's delivery tag, the flag (LEASE.SETTLED,
-- LEASE.RESTORED or "").
local function lease_of(k_leases, step)
  local raw = redis.call('HGET', k_leases, step)
  if not raw then return nil end
  local token, u, tag, flag = string.match(raw, '^([^|]*)|([^|]*)|([^|]*)|(.*)$')
  return {token = token, ['until'] = tonumber(u), tag = tag, flag = flag}
end

-- Does a delivery other than `token`'s hold this lease (a table, or nil) live: not
-- expired by `now`, not given back?  (A given-up lease has no time left.)
local function held_by_other(lease, token, now)
  return lease ~= nil and lease['token'] ~= token and lease['until'] > now
    and lease['flag'] ~= LEASE.RESTORED
end

-- Whether the reaper may restore `lease` of delivery `token`: unchanged and expired; or,
-- `how` "hung", unchanged and still held (neither settled, given up nor restored).
local function restorable(lease, token, how)
  if lease == nil or lease['token'] ~= token then return false end
  if how == 'hung' then return lease['flag'] == '' end
  return lease['until'] <= now_ms()
end

-- Store a lease and index it by expiry (0: not indexed, nobody has to look at it).
local function put_lease(k_leases, k_index, step, member, lease)
  redis.call('HSET', k_leases, step, lease['token'] .. '|' .. lease['until'] .. '|'
             .. lease['tag'] .. '|' .. lease['flag'])
  if lease['until'] > 0 then
    redis.call('ZADD', k_index, lease['until'], member)
  else
    redis.call('ZREM', k_index, member)
  end
end

-- Append a step run's event (`attempt`: its attempt, nil for none yet) to the run's stream.
local function step_event(k_events, step, status, attempt, now)
  redis.call('XADD', k_events, 'MAXLEN', '~', EVENTS_MAXLEN, '*', F.KIND, F.STEP, F.STEP_ID,
    step, F.STATUS, status, F.ATTEMPT, tostring(attempt or 0), F.TS, now)
end

-- The one step transition: checks that the run exists and the transition table
-- (sources: ","-joined, STEP.PENDING meaning no record), merges the patch, stores the
-- output (if not ""), appends the event, and with a workflow name counts a final status
-- in the metrics (and its duration in the histogram's bucket).
-- `step_tx_on` is the same once the caller knows the run hash's PTTL (`run_ttl`, -2: no
-- run) and the step's record (`cur`: its JSON, or false for none), so that a script that
-- read them already does not read them again.
-- Returns {moved 1 / refused 0 / no run -1, old status, the run's PTTL when moved}.
local function step_tx_on(k_run, k_steps, k_events, k_outputs, k_metrics, step, new,
                          sources, patch, output, now, wf, run_ttl, cur)
  if run_ttl == -2 then return {-1, ''} end
  local rec = {}
  local status = STEP.PENDING
  if cur then rec = cjson.decode(cur); status = rec['status'] end
  if not allowed(sources, status) then return {0, status} end
  for k, v in pairs(cjson.decode(patch)) do rec[k] = v end
  rec['status'] = new
  redis.call('HSET', k_steps, step, cjson.encode(rec))
  if output ~= '' then redis.call('HSET', k_outputs, step, output) end
  step_event(k_events, step, new, rec['attempt'], now)
  if wf ~= '' and STEP_FINAL[new] then
    -- a run with a duration is counted by its bucket's field (which names its status),
    -- its duration summed in integer µs (no float formatting): two commands
    local base = wf .. F.SEP .. step
    local s, e = tonumber(rec['started_at']), tonumber(rec['ended_at'])
    if (new == STEP.SUCCEEDED or new == STEP.FAILED) and s and e then
      local d = e - s
      redis.call('HINCRBY', k_metrics, F.M_DUS .. F.SEP .. base, math.floor(d * 1e6 + 0.5))
      local bucket = '+Inf'
      for _, b in ipairs(DURATION_BUCKETS) do
        if d <= tonumber(b) then bucket = b; break end
      end
      redis.call('HINCRBY', k_metrics,
                 F.M_DBUCKET .. F.SEP .. base .. F.SEP .. new .. F.SEP .. bucket, 1)
    else
      redis.call('HINCRBY', k_metrics, F.M_STEPS .. F.SEP .. base .. F.SEP .. new, 1)
    end
  end
  keep_ttl(run_ttl, k_steps, k_events, k_outputs)
  return {1, status, run_ttl}
end

-- `step_tx_on` to queued (no output, no metrics), for a step that may have no record:
-- a step with none is pending, so where the sources allow pending one HSETNX writes its
-- record (no read first); a step that has one goes through the table as usual.
local function queue_step(k_run, k_steps, k_events, k_outputs, k_metrics, step, sources,
                          patch, now, run_ttl)
  if run_ttl ~= -2 and allowed(sources, STEP.PENDING) then
    local rec = cjson.decode(patch)
    rec['status'] = STEP.QUEUED
    if redis.call('HSETNX', k_steps, step, cjson.encode(rec)) == 1 then
      step_event(k_events, step, STEP.QUEUED, rec['attempt'], now)
      keep_ttl(run_ttl, k_steps, k_events, k_outputs)
      return {1, STEP.PENDING, run_ttl}
    end
  end
  return step_tx_on(k_run, k_steps, k_events, k_outputs, k_metrics, step, STEP.QUEUED,
                    sources, patch, '', now, '', run_ttl, redis.call('HGET', k_steps, step))
end

local function step_tx(k_run, k_steps, k_events, k_outputs, k_metrics, step, new, sources,
                       patch, output, now, wf)
  return step_tx_on(k_run, k_steps, k_events, k_outputs, k_metrics, step, new, sources,
                    patch, output, now, wf, redis.call('PTTL', k_run),
                    redis.call('HGET', k_steps, step))
end

-- Put kombu's unacknowledged message `tag` back at the head of its queue (`message`: its
-- JSON, marked redelivered), as kombu's own restore does; false if it is no longer
-- unacknowledged (acknowledged, or put back already).
local function put_back(k_unacked, k_unacked_index, k_queue, tag, message)
  if redis.call('HEXISTS', k_unacked, tag) == 0 then return false end
  redis.call('RPUSH', k_queue, message)
  redis.call('HDEL', k_unacked, tag)
  redis.call('ZREM', k_unacked_index, tag)
  return true
end

-- A step record's status, read from its JSON without decoding it (nil: no status).
local function status_of(raw)
  return string.match(raw, '"status":"([^"]*)"')
end

-- The delivery holding `step`'s lease gives it up, its step run not ended (a retry, a
-- throttled or slot-waiting start, a durable wait): the next copy may take it at once.
-- The lease stays as a "given" mark of that delivery (until 0, no tag, out of the expiry
-- index), so that the lease keeper's renewal, which may come before the task returns,
-- tells "this delivery gave it up" from "Redis lost it" (renew_lease.lua).
local function give_up(k_leases, k_index, step, member)
  local lease = lease_of(k_leases, step)
  if lease == nil then return end
  redis.call('HSET', k_leases, step, lease['token'] .. '|0||' .. LEASE.GIVEN)
  redis.call('ZREM', k_index, member)
end

-- Fencing: may the holder of `token` change this step run?  ("" = an operator's change,
-- such as a cancel, which needs no lease; a delivery that gave its lease up may not.)
-- `held_lease` gives the lease itself (nil: not held by `token`).
local function held_lease(k_leases, step, token)
  local lease = lease_of(k_leases, step)
  if lease ~= nil and lease['token'] == token and lease['flag'] ~= LEASE.GIVEN then
    return lease
  end
  return nil
end

local function holds(k_leases, step, token)
  return token == '' or held_lease(k_leases, step, token) ~= nil
end

-- Mark a unit finished and advance its successors' counters; claim the successors that
-- reach zero for dispatch (SADD claimed: exactly one caller claims each) and note each
-- claim in the claims index until it is published.  A run that is gone (retention) is
-- left alone: nothing is re-created.  `successors`: a table of unit ids.
-- Returns {units remaining after this one (-1 when the run is gone), successors claimed
-- by this call, the run's priority ('' when normal or none claimed: they are published in
-- its band)}.
local function complete_unit_on(k_counters, k_done, k_claimed, k_run, k_claims, unit,
                                run_id, successors)
  local ready = {}
  if redis.call('EXISTS', k_run) == 0 then return {-1, ready, ''} end
  if redis.call('SADD', k_done, unit) == 1 then
    local remaining = redis.call('HINCRBY', k_run, 'units_remaining', -1)
    local now = now_ms()
    for _, s in ipairs(successors) do
      if redis.call('HINCRBY', k_counters, s, -1) <= 0 then
        if redis.call('SADD', k_claimed, s) == 1 then
          table.insert(ready, s)
          redis.call('ZADD', k_claims, now, run_id .. '|' .. s)
        end
      end
    end
    keep_ttl(redis.call('PTTL', k_run), k_counters, k_done, k_claimed)
    local priority = ''
    if #ready > 0 then priority = redis.call('HGET', k_run, 'priority') or '' end
    return {remaining, ready, priority}
  end
  return {tonumber(redis.call('HGET', k_run, 'units_remaining')) or -1, ready, ''}
end
