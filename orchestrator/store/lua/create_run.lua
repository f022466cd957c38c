-- Create a run, all at once or not at all: its hash (in running), its unit counters, its
-- indexes, the started metric and its first event.  One script, so that a process killed
-- while it creates a run leaves either no run (the id is free for the next delivery of
-- the same request) or the whole run, never a claimed id with nothing behind it.
-- KEYS: run, counters, runs index, runs of the workflow, runs in running, metrics, events,
--       and the runs of the run's tenant (absent for the default tenant).
-- ARGV: the run's fields (a JSON object of strings), the unit counters (a JSON object of
--       strings, maybe empty), now (s), the started metric's field.
-- Returns 1 if created, 0 if the id is taken.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for k, v in pairs(cjson.decode(ARGV[1])) do redis.call('HSET', KEYS[1], k, v) end
for k, v in pairs(cjson.decode(ARGV[2])) do redis.call('HSET', KEYS[2], k, v) end
local id = redis.call('HGET', KEYS[1], 'run_id')
redis.call('ZADD', KEYS[3], ARGV[3], id)
redis.call('ZADD', KEYS[4], ARGV[3], id)
redis.call('ZADD', KEYS[5], ARGV[3], id)
if KEYS[8] then redis.call('ZADD', KEYS[8], ARGV[3], id) end
redis.call('HINCRBY', KEYS[6], ARGV[4], 1)
redis.call('XADD', KEYS[7], 'MAXLEN', '~', EVENTS_MAXLEN, '*', F.KIND, F.RUN, F.STATUS,
  RUN.RUNNING, F.TS, ARGV[3])
return 1
