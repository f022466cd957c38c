-- Add or replace a schedule (orchestrator.store.schedules.ScheduleStore.put).  Its next
-- fire is kept when its timing did not change (an edit of the input or the policies
-- drops no fire); a changed timing starts from ARGV[5] (the first fire after now).
-- A schedule declared beside its workflow is not replaced by the API or the CLI.
-- KEYS: the schedule's hash, the set of ids, the due index.
-- ARGV: id, spec JSON, timing JSON, source, next fire (Unix s, "" never), replace "1"/"0",
--       tenant ("" or absent: the default one).
-- Returns {1, next} stored; {0, source} the id exists (no replace, or another tenant's);
-- {-1, "declared"}.
local k, ids, due = KEYS[1], KEYS[2], KEYS[3]
local now = tostring(now_ms() / 1000)
local exists = redis.call('EXISTS', k) == 1
local source = redis.call('HGET', k, 'source')
local tenant = ARGV[7] or ''
if exists and ARGV[6] ~= '1' then return {0, source or ''} end
if exists and (redis.call('HGET', k, 'tenant') or '') ~= tenant then return {0, source or ''} end
if exists and ARGV[4] ~= 'declared' and source == 'declared' then return {-1, 'declared'} end
local nxt = ARGV[5]
if exists and redis.call('HGET', k, 'timing') == ARGV[3] then
  nxt = redis.call('HGET', k, 'next') or ''
end
redis.call('HSET', k, 'id', ARGV[1], 'spec', ARGV[2], 'timing', ARGV[3], 'source', ARGV[4],
           'next', nxt, 'updated_at', now)
if tenant ~= '' then redis.call('HSET', k, 'tenant', tenant) end
redis.call('HINCRBY', k, 'gen', 1)
if not exists then redis.call('HSET', k, 'paused', '0', 'created_at', now, 'waiting_fires', '[]') end
redis.call('SADD', ids, ARGV[1])
if redis.call('HGET', k, 'paused') ~= '1' and nxt ~= '' then
  redis.call('ZADD', due, tonumber(nxt) * 1000, ARGV[1])
else
  redis.call('ZREM', due, ARGV[1])
end
return {1, nxt}
