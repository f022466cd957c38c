-- A step run with a concurrency limit takes a slot of its key before it starts (fenced:
-- the delivery must hold the step run's lease).  It holds one already (a redelivery of
-- the same step run, after its worker died, or after it waited) -> go on.  A slot is
-- free -> it takes it (holders: scored by when).  Every slot held -> "cancel_newest":
-- the caller ends it cancelled; else it waits: the delivery gives its lease up, its
-- task's message (with its chain and chord) is held in a timer that is not due (it
-- becomes due when a holder's final transition passes it the slot: step_transition.lua),
-- it joins the key's FIFO, and its record says what it waits for (it stays queued).
-- KEYS: holders, queue, the run's slots hash, steps, leases, lease index, timers index,
--       timer.
-- ARGV: step, member (run|step), limit, when_full, token, timer id, message JSON,
--       timer TTL s, the reason it waits.
-- Returns 1 it holds a slot, 2 it waits, 3 full (cancel_newest), -2 fenced.
local step, member = ARGV[1], ARGV[2]
if not holds(KEYS[5], step, ARGV[5]) then return -2 end
local raw = redis.call('HGET', KEYS[4], step)
local rec = raw and cjson.decode(raw) or {status = STEP.QUEUED}
local function took()
  if rec['slot_wait'] then
    rec['slot_wait'] = nil
    rec['reason'] = nil
    redis.call('HSET', KEYS[4], step, cjson.encode(rec))
  end
  return 1
end
if redis.call('ZSCORE', KEYS[1], member) then return took() end
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], now_ms(), member)
  redis.call('HSET', KEYS[3], step, cjson.encode({holders = KEYS[1], queue = KEYS[2],
                                                  member = member}))
  return took()
end
if ARGV[4] == 'cancel_newest' then return 3 end
give_up(KEYS[5], KEYS[6], step, member)
redis.call('SET', KEYS[8], ARGV[7], 'EX', tonumber(ARGV[8]))
-- not due until a slot passes to it (about 285,000 years from now)
redis.call('ZADD', KEYS[7], 9e15, ARGV[6])
local entry = cjson.encode({slots = KEYS[3], step = step, member = member})
redis.call('RPUSH', KEYS[2], entry)
redis.call('HSET', KEYS[3], step, cjson.encode({holders = KEYS[1], queue = KEYS[2],
                                                member = member, entry = entry,
                                                timer = ARGV[6]}))
rec['slot_wait'] = now_ms() / 1000
rec['reason'] = ARGV[9]
redis.call('HSET', KEYS[4], step, cjson.encode(rec))
return 2
