-- A wait step parks (or parks again): the step run moves to waiting (fenced by its
-- lease, which it gives up), and its next message waits in a timer in the store (not in
-- a worker: a waiting step holds no worker slot and no unacknowledged message).  The
-- timer is due when the sleep ends or the timeout passes (`never` without one).  A step
-- that waits for an event takes the key's latest event if one arrived before it parked
-- (kept for the event retention), else it is listed among the key's waiters; a step whose
-- wait already has a resolution (an event or a decision that came while a delivery of it
-- was in flight) keeps it.  Either way a resolved wait's timer is due at once.
-- KEYS: run, steps, events, outputs, metrics, leases, lease index, timers index, timer,
--       the key's latest event, the key's waiters (any two keys when it waits for none).
-- ARGV: step, waiting sources, patch JSON, now, token, lease member, timer id,
--       due ms ("" = never), message JSON, timer TTL s (0: none), event key ("": none),
--       never ms.
-- Returns {1 moved / 0 refused / -1 no run / -2 fenced, old status, 1 resolved / 0}.
if not holds(KEYS[6], ARGV[1], ARGV[5]) then return {-2, '', 0} end
local cur = redis.call('HGET', KEYS[2], ARGV[1])
local resolved = false
if cur then
  local r = cjson.decode(cur)['resolution']
  resolved = type(r) == 'table'
end
local patch = cjson.decode(ARGV[3])
if not resolved and ARGV[11] ~= '' then
  local ev = redis.call('HGETALL', KEYS[10])
  if #ev > 0 then
    local e = {}
    for i = 1, #ev, 2 do e[ev[i]] = ev[i + 1] end
    patch['resolution'] = {event_id = e['id'], at = tonumber(e['at']), data = e['data'],
                           by = e['by']}
    resolved = true
  end
end
local res = step_tx(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], STEP.WAITING,
                    ARGV[2], cjson.encode(patch), '', ARGV[4], '')
if res[1] ~= 1 then return {res[1], res[2], 0} end
give_up(KEYS[6], KEYS[7], ARGV[1], ARGV[6])
if tonumber(ARGV[10]) > 0 then
  redis.call('SET', KEYS[9], ARGV[9], 'EX', tonumber(ARGV[10]))
else
  redis.call('SET', KEYS[9], ARGV[9])
end
local due = tonumber(ARGV[12])
if ARGV[8] ~= '' then due = tonumber(ARGV[8]) end
if resolved then due = now_ms() end
redis.call('ZADD', KEYS[8], due, ARGV[7])
if ARGV[11] ~= '' and not resolved then redis.call('SADD', KEYS[11], ARGV[6]) end
if resolved then return {1, res[2], 1} end
return {1, res[2], 0}
