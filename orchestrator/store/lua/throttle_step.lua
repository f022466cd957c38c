-- A step run over its rate limit's budget waits for its turn in the store: the delivery
-- gives its lease up (fenced: it must hold it), its task's message (with its chain and
-- chord) is held in a timer due then, and the step run records when (it stays queued).
-- The delivery's task then ends: no worker slot is held, no ETA message exists.
-- KEYS: steps, leases, lease index, timers index, timer.
-- ARGV: step, token, lease member, timer id, delay ms, message JSON, timer TTL s.
-- Returns 1 if held, -2 if fenced.
if not holds(KEYS[2], ARGV[1], ARGV[2]) then return -2 end
give_up(KEYS[2], KEYS[3], ARGV[1], ARGV[3])
local due = now_ms() + tonumber(ARGV[5])
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local rec = raw and cjson.decode(raw) or {status = STEP.QUEUED}
rec['throttled_until'] = due / 1000
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(rec))
redis.call('SET', KEYS[5], ARGV[6], 'EX', tonumber(ARGV[7]))
redis.call('ZADD', KEYS[4], due, ARGV[4])
return 1
