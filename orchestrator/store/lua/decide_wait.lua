-- A human's decision on a step that waits for one: recorded as the wait's resolution
-- (decision, comment, who, when), and the step's timer becomes due at once (the reaper
-- publishes its message; the delivery succeeds or, on a rejection, fails the step).
-- (The caller checked that the step is an approval step of its workflow.)
-- KEYS: run, steps, timers index.  ARGV: step, resolution JSON, timer id.
-- Returns {1 recorded / 0 the step does not wait for a decision / 2 already decided /
--          -1 no run, the step's status}.
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, ''} end
local raw = redis.call('HGET', KEYS[2], ARGV[1])
if not raw then return {0, STEP.PENDING} end
local rec = cjson.decode(raw)
if rec['status'] ~= STEP.WAITING or type(rec['wait']) ~= 'table' then
  return {0, rec['status']}
end
if type(rec['resolution']) == 'table' then return {2, rec['status']} end
rec['resolution'] = cjson.decode(ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], cjson.encode(rec))
redis.call('ZADD', KEYS[3], 'XX', now_ms(), ARGV[3])
return {1, rec['status']}
