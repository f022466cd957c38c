-- Create a run, all at once or not at all: its hash (in running, with the `epoch` of the
-- server that created it: see in_restart_grace in lib.lua), its unit counters, its
-- indexes, the started metric and its first event.  One script, so that a process killed
-- while it creates a run leaves either no run (the id is free for the next delivery of
-- the same request) or the whole run, never a claimed id with nothing behind it.
-- A run of a workflow with a concurrency limit takes a slot of its key in the same
-- script (holders: a sorted set scored by when each took its slot); with every slot
-- held it is, by `when_full`: "queue" -> stored queued (not running) at the tail of the
-- key's FIFO, with what starts it later (`start`: its claimed set, its events, its
-- source units); "cancel_newest" -> stored cancelled with `reason`; "cancel_oldest" ->
-- the oldest holder loses its slot to this run (the caller cancels that holder).
-- KEYS: run, counters, runs index, runs of the workflow, runs in running, metrics, events,
--       and the runs of the run's tenant (absent for the default tenant).
-- ARGV: the run's fields (a JSON object of strings), the unit counters (a JSON object of
--       strings, maybe empty), now (s), the started metric's field; then, for a limit
--       (else absent): holders key, queue key, limit, when_full, start JSON, reason if
--       queued, reason if cancelled, index of queued runs, index of cancelled runs.
-- Returns {1 created (running) / 0 the id is taken / 2 queued / 3 cancelled /
--          4 created, displacing the holder named second, that holder or ''}.
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, ''} end
-- the run's fields and its epoch (the restart grace, lib.lua) in one HSET
local fields = {'epoch', server_boot().id}
for k, v in pairs(cjson.decode(ARGV[1])) do fields[#fields + 1] = k; fields[#fields + 1] = v end
redis.call('HSET', KEYS[1], unpack(fields))
for k, v in pairs(cjson.decode(ARGV[2])) do redis.call('HSET', KEYS[2], k, v) end
local id = redis.call('HGET', KEYS[1], 'run_id')
local code, victim, status, index = 1, '', RUN.RUNNING, KEYS[5]
if ARGV[5] then
  local holders, queue, limit, full = ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8]
  if redis.call('ZCARD', holders) < limit then
    redis.call('ZADD', holders, now_ms(), id)
  elseif full == 'cancel_oldest' then
    victim = redis.call('ZRANGE', holders, 0, 0)[1]
    redis.call('ZREM', holders, victim)
    redis.call('ZADD', holders, now_ms(), id)
    code = 4
  elseif full == 'cancel_newest' then
    code, status, index = 3, RUN.CANCELLED, ARGV[13]
    redis.call('HSET', KEYS[1], 'status', status, 'ended_at', ARGV[3], 'reason', ARGV[11])
    redis.call('HDEL', KEYS[1], 'started_at')
  else
    code, status, index = 2, RUN.QUEUED, ARGV[12]
    redis.call('HSET', KEYS[1], 'status', status, 'reason', ARGV[10], 'slot_start', ARGV[9])
    redis.call('HDEL', KEYS[1], 'started_at')
    redis.call('RPUSH', queue, KEYS[1])
  end
end
redis.call('ZADD', KEYS[3], ARGV[3], id)
redis.call('ZADD', KEYS[4], ARGV[3], id)
redis.call('ZADD', index, ARGV[3], id)
if KEYS[8] then redis.call('ZADD', KEYS[8], ARGV[3], id) end
redis.call('HINCRBY', KEYS[6], ARGV[4], 1)
redis.call('XADD', KEYS[7], 'MAXLEN', '~', EVENTS_MAXLEN, '*', F.KIND, F.RUN, F.STATUS,
  status, F.TS, ARGV[3])
if code == 3 then
  local wf = redis.call('HGET', KEYS[1], 'workflow')
  redis.call('HINCRBY', KEYS[6], F.M_RUNS .. F.SEP .. wf .. F.SEP .. status, 1)
end
return {code, victim}
