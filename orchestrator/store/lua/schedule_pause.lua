-- Pause or resume a schedule.  Paused, it leaves the due index (no scheduler looks at it)
-- and its waiting (queued) fires are dropped; resumed, it fires from ARGV[3] (the first
-- fire after now): fires that fell while it was paused are not run.
-- KEYS: the schedule's hash, the due index.  ARGV: id, "1" pause / "0" resume, next fire.
-- Returns 0 no such schedule; 1 changed; 2 it already was so.
local k, due = KEYS[1], KEYS[2]
if redis.call('EXISTS', k) == 0 then return 0 end
local paused = redis.call('HGET', k, 'paused') == '1'
if paused == (ARGV[2] == '1') then return 2 end
redis.call('HINCRBY', k, 'gen', 1)
redis.call('HSET', k, 'updated_at', tostring(now_ms() / 1000), 'waiting_fires', '[]')
if ARGV[2] == '1' then
  redis.call('HSET', k, 'paused', '1')
  redis.call('ZREM', due, ARGV[1])
else
  redis.call('HSET', k, 'paused', '0', 'next', ARGV[3])
  if ARGV[3] ~= '' then redis.call('ZADD', due, tonumber(ARGV[3]) * 1000, ARGV[1]) end
end
return 1
