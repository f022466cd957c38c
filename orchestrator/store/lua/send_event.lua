-- An event for a key: kept as the key's latest event (for the event retention), so that
-- a step that starts waiting for it later still gets it, and handed to every step that
-- waits for it now: each records it as its wait's resolution, and its timer becomes due
-- at once (the reaper publishes the step's message).  The same event id twice in a row
-- is one event.
-- KEYS: the key's latest event, the key's waiters, timers index.
-- ARGV: event id, at, data JSON, by, retention s, steps-key prefix, steps-key suffix,
--       timer-id prefix, key.
-- Returns {1 new / 0 a repeat, steps resumed}.
if redis.call('HGET', KEYS[1], 'id') == ARGV[1] then return {0, 0} end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'at', ARGV[2], 'data', ARGV[3], 'by', ARGV[4])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
local n = 0
local now = now_ms()
for _, member in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local run_id, step = string.match(member, '^(.*)|([^|]*)$')
  local k_steps = ARGV[6] .. run_id .. ARGV[7]
  local raw = redis.call('HGET', k_steps, step)
  if raw then
    local rec = cjson.decode(raw)
    local w = rec['wait']
    if rec['status'] == STEP.WAITING and type(rec['resolution']) ~= 'table'
        and type(w) == 'table' and w['key'] == ARGV[9] then
      rec['resolution'] = {event_id = ARGV[1], at = tonumber(ARGV[2]), data = ARGV[3],
                           by = ARGV[4]}
      redis.call('HSET', k_steps, step, cjson.encode(rec))
      redis.call('ZADD', KEYS[3], 'XX', now, ARGV[8] .. member)
      n = n + 1
    end
  end
end
redis.call('DEL', KEYS[2])
return {1, n}
