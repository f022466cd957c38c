-- A resumed run takes the records and outputs of the steps it reuses, and both runs record
-- their lineage.  Runs in the same transaction as create_run.lua, right after it, and does
-- nothing if the new run was not created (its hash must say it resumes the old run).
-- KEYS: new run, its steps, its outputs, its events, the old run.
-- ARGV: the old run's id, step -> record (JSON object of JSON strings), step -> output
--       (JSON object of JSON strings), now (s).
-- Returns the number of steps reused.
if redis.call('HGET', KEYS[1], 'resumed_from') ~= ARGV[1] then return 0 end
local n = 0
for step, rec in pairs(cjson.decode(ARGV[2])) do
  redis.call('HSET', KEYS[2], step, rec)
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', EVENTS_MAXLEN, '*', F.KIND, F.STEP,
    F.STEP_ID, step, F.STATUS, STEP.SUCCEEDED, F.TS, ARGV[4])
  n = n + 1
end
for step, out in pairs(cjson.decode(ARGV[3])) do redis.call('HSET', KEYS[3], step, out) end
if redis.call('EXISTS', KEYS[5]) == 1 then
  local raw = redis.call('HGET', KEYS[5], 'resumes')
  local list = raw and cjson.decode(raw) or {}
  list[#list + 1] = redis.call('HGET', KEYS[1], 'run_id')
  redis.call('HSET', KEYS[5], 'resumes', cjson.encode(list))
end
return n
