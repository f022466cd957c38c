-- Move a run to a new status if the transition table allows it; keep the status indexes
-- and the run metrics in step, and append the event.
-- A run that ends with a callback registered puts the callback in the outbox, due now.
-- KEYS: run, events, metrics, callback registration, callback outbox, status-index of
--       each run status (in ARGV[5]'s order).
-- ARGV: new status, allowed sources (","-joined), now, extra fields JSON, status names
--       (","-joined, the order of the index keys).
-- Returns {1, old status} if moved, {0, status} if refused, {-1, ''} if no such run.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {-1, ''} end
if not allowed(ARGV[2], status) then return {0, status} end
local created = redis.call('HGET', KEYS[1], 'created_at')
redis.call('HSET', KEYS[1], 'status', ARGV[1])
for k, v in pairs(cjson.decode(ARGV[4])) do redis.call('HSET', KEYS[1], k, v) end
local i = 0
local id = redis.call('HGET', KEYS[1], 'run_id')
for name in string.gmatch(ARGV[5], '[^,]+') do
  i = i + 1
  if name == status then redis.call('ZREM', KEYS[5 + i], id) end
  if name == ARGV[1] then redis.call('ZADD', KEYS[5 + i], created, id) end
end
local wf = redis.call('HGET', KEYS[1], 'workflow')
redis.call('HINCRBY', KEYS[3], F.M_RUNS .. F.SEP .. wf .. F.SEP .. ARGV[1], 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', EVENTS_MAXLEN, '*', F.KIND, F.RUN, F.STATUS,
  ARGV[1], F.TS, ARGV[3])
if RUN_FINAL[ARGV[1]] and redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('ZADD', KEYS[5], now_ms(), id)
end
return {1, status}
