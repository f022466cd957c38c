-- Record what a scheduler did with a claimed schedule, if nobody changed the schedule
-- meanwhile (its generation is the claimed one): the next fire, the waiting fires, the
-- latest run, the counters; and put it back in the due index at ARGV[4].
-- KEYS: the schedule's hash, the due index.
-- ARGV: id, claimed gen, next ("" never), due score ms ("" none), last fire, last run,
-- queued JSON, started, skipped, missed, failed, last error ("" keep).
-- Returns 1 recorded; 0 the schedule changed or went (an edit re-armed it itself).
local k, due = KEYS[1], KEYS[2]
if redis.call('HGET', k, 'gen') ~= ARGV[2] then return 0 end
redis.call('HSET', k, 'next', ARGV[3], 'waiting_fires', ARGV[7])
if ARGV[5] ~= '' then redis.call('HSET', k, 'last_fire', ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', k, 'last_run', ARGV[6]) end
if ARGV[12] ~= '' then redis.call('HSET', k, 'last_error', ARGV[12]) end
local names = {'fires_started', 'fires_skipped', 'fires_missed', 'fires_failed'}
for i, name in ipairs(names) do
  local n = tonumber(ARGV[7 + i])
  if n > 0 then redis.call('HINCRBY', k, name, n) end
end
if ARGV[4] == '' then
  redis.call('ZREM', due, ARGV[1])
else
  redis.call('ZADD', due, ARGV[4], ARGV[1])
end
return 1
