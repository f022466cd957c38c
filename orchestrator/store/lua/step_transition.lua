-- Move one step run to a new status if the transition table allows it and the caller
-- holds the step run's lease (fencing: a result from an attempt that lost its lease is
-- refused).  Moving to retrying gives the lease up (a timer publishes the next attempt).
-- KEYS: run, steps, events, outputs, metrics, leases, lease index, slots, timers index,
--       counters, done, claimed, claims index (used with a unit to complete), then the
--       queue keys the broker commands write (declared; the commands name them again).
-- A final status also moves the steps that follow in the canvas (the followers, the tasks
-- the caller's task publishes as its chain goes on) from pending to queued.  With broker
-- commands (the next chain element's message and task-sent event, as kombu's Redis
-- transport would send them: LPUSH, PUBLISH, PEXPIRE), a move to a final status sends
-- them too, and the lease is settled (its canvas went on, in this very call); a call
-- that does not move sends nothing.
-- ARGV: step, new status, allowed sources (","-joined), patch JSON, output JSON or "",
--       now, workflow ("" for no metrics), lease token ("" for none), lease member,
--       slot ("1": the step run may hold a concurrency slot; "0": its step has no
--       concurrency limit, so there is none to look for), unit ("": none), run id,
--       successors n, successors..., followers n, followers..., then broker commands
--       (name, key or topic, value)....
-- A final status also gives up the step run's concurrency slot (KEYS[8], the run's
-- slots hash, and KEYS[9], the timers index; absent, or slot "0": none to look for): a
-- held slot passes to the oldest step run waiting for the key, whose held message's timer
-- is made due now; a waiting one leaves the key's FIFO and its timer goes
-- (acquire_slot.lua).
-- With a unit (the step is its unit's terminal task and the status final), unless the
-- call was fenced or the run is gone, the unit completes in the same call
-- (complete_unit_on in lib.lua): one round trip per unit boundary.
-- Returns {1 moved / 0 refused by the table / -1 no run / -2 fenced, old status, run
-- PTTL, and with a unit: units remaining, units claimed, the run's priority}.

local function release_slot(k_slots, step, k_timers)
  local raw = redis.call('HGET', k_slots, step)
  if not raw then return end
  local slot = cjson.decode(raw)
  redis.call('HDEL', k_slots, step)
  if slot['entry'] then  -- it was waiting
    redis.call('LREM', slot['queue'], 0, slot['entry'])
    redis.call('ZREM', k_timers, slot['timer'])
    return
  end
  if redis.call('ZREM', slot['holders'], slot['member']) == 0 then return end
  while true do
    local e = redis.call('LPOP', slot['queue'])
    if not e then return end
    local w = cjson.decode(e)
    local wraw = redis.call('HGET', w['slots'], w['step'])
    if wraw then
      local ws = cjson.decode(wraw)
      if ws['entry'] == e then
        ws['entry'] = nil
        redis.call('HSET', w['slots'], w['step'], cjson.encode(ws))
        local now = now_ms()
        redis.call('ZADD', slot['holders'], now, w['member'])
        redis.call('ZADD', k_timers, 'XX', now, ws['timer'])
        return
      end
    end
  end
end
local unit, nsucc = ARGV[11] or '', tonumber(ARGV[13] or '0')
local first = 15 + nsucc  -- the first follower
local cmds = first + tonumber(ARGV[14 + nsucc] or '0')  -- the first broker command
for c = cmds, #ARGV, 3 do  -- a bad command writes nothing
  if not BROKER_COMMANDS[ARGV[c]] then
    return redis.error_reply('step_transition: unexpected command ' .. tostring(ARGV[c]))
  end
end
local lease = nil
if ARGV[8] ~= '' then
  lease = held_lease(KEYS[6], ARGV[1], ARGV[8])
  if lease == nil then return {-2, ''} end
end
local res = step_tx(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2], ARGV[3],
                    ARGV[4], ARGV[5], ARGV[6], ARGV[7])
if res[1] == 1 and ARGV[2] == STEP.RETRYING and ARGV[8] ~= '' then
  give_up(KEYS[6], KEYS[7], ARGV[1], ARGV[9])
end
if res[1] == 1 and STEP_FINAL[ARGV[2]] and cmds > first then
  local patch = cjson.encode({queued_at = tonumber(ARGV[6])})
  for i = first, cmds - 1 do
    queue_step(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[i], STEP.PENDING, patch,
               ARGV[6], res[3])
  end
end
if res[1] == 1 and STEP_FINAL[ARGV[2]] and cmds <= #ARGV then
  for c = cmds, #ARGV, 3 do
    redis.call(BROKER_COMMANDS[ARGV[c]], ARGV[c + 1], ARGV[c + 2])
  end
  if lease ~= nil then  -- its canvas went on: a later copy of its message is dropped
    lease['flag'] = LEASE.SETTLED
    lease['until'] = 0
    put_lease(KEYS[6], KEYS[7], ARGV[1], ARGV[9], lease)
  end
end
if res[1] == 1 and STEP_FINAL[ARGV[2]] and ARGV[10] == '1' and KEYS[9] then
  release_slot(KEYS[8], ARGV[1], KEYS[9])
end
if unit ~= '' and res[1] >= 0 and STEP_FINAL[ARGV[2]] then
  local successors = {}
  for i = 14, 13 + nsucc do successors[#successors + 1] = ARGV[i] end
  local done = complete_unit_on(KEYS[10], KEYS[11], KEYS[12], KEYS[1], KEYS[13], unit,
                                ARGV[12], successors)
  return {res[1], res[2], res[3] or -2, done[1], done[2], done[3]}
end
return res
