-- Claim the schedules that are due by Redis' clock: each one's score moves `lease` ms
-- ahead, so no other scheduler looks at it while this one fires it; if this one dies,
-- the schedule is due again when the claim ends (its `next` field is unchanged, so the
-- same fires are computed again and their deterministic run ids start none twice).
-- KEYS: the due index.  ARGV: lease ms, limit, schedule key prefix, key suffix.
-- Returns {now ms, earliest score left or "", then per schedule: id, spec, next, gen,
-- last_run, queued}.
local due = KEYS[1]
local now = now_ms()
local ids = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local out = {tostring(now), ''}
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', ARGV[3] .. id .. ARGV[4], 'spec', 'next', 'gen', 'last_run',
                       'waiting_fires', 'paused')
  if not f[1] or f[6] == '1' or not f[2] or f[2] == '' then
    redis.call('ZREM', due, id)  -- deleted, paused or never firing again: nothing to do
  else
    redis.call('ZADD', due, now + tonumber(ARGV[1]), id)
    for _, v in ipairs({id, f[1], f[2], f[3], f[4] or '', f[5] or '[]'}) do
      table.insert(out, v)
    end
  end
end
local first = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
if first[2] then out[2] = first[2] end
return out
