-- Move one step run to a new status if the transition table allows it and the caller
-- holds the step run's lease (fencing: a result from an attempt that lost its lease is
-- refused).  Moving to retrying gives the lease up (a timer publishes the next attempt).
-- KEYS: run, steps, events, outputs, metrics, leases, lease index.
-- A final status also moves the steps that follow in the canvas (ARGV[10...], the tasks
-- the caller's task publishes as its chain goes on) from pending to queued.
-- ARGV: step, new status, allowed sources (","-joined), patch JSON, output JSON or "",
--       now, workflow ("" for no metrics), lease token ("" for none), lease member,
--       followers....
-- Returns {1 moved / 0 refused by the table / -1 no run / -2 fenced, old status}.
if not holds(KEYS[6], ARGV[1], ARGV[8]) then return {-2, ''} end
local res = step_tx(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2], ARGV[3],
                    ARGV[4], ARGV[5], ARGV[6], ARGV[7])
if res[1] == 1 and ARGV[2] == STEP.RETRYING and ARGV[8] ~= '' then
  redis.call('HDEL', KEYS[6], ARGV[1])
  redis.call('ZREM', KEYS[7], ARGV[9])
end
if res[1] == 1 and STEP_FINAL[ARGV[2]] and #ARGV > 9 then
  local patch = cjson.encode({queued_at = tonumber(ARGV[6])})
  for i = 10, #ARGV do
    step_tx(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[i], STEP.QUEUED, STEP.PENDING,
            patch, '', ARGV[6], '')
  end
end
return res
