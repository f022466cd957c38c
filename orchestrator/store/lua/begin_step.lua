-- What a step needs, in one round trip: the run hash, step records (parents first, the
-- step's own last), outputs; and on the fast path (the caller saw that only "all parents
-- succeeded" matters), the move to running when the run is running and every parent
-- succeeded.
-- KEYS: run, steps, outputs, events, metrics.
-- ARGV: step, fast "1"/"0", running sources, running patch JSON, now, parents n, ids n,
--       reads n, ids..., reads...
-- Returns {run HGETALL, records, outputs, began 0/1}.
local np, ni, nr = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local run = redis.call('HGETALL', KEYS[1])
local ids = {}
for i = 1, ni do ids[i] = ARGV[8 + i] end
local recs = redis.call('HMGET', KEYS[2], unpack(ids))
local outs = {}
if nr > 0 then
  local rids = {}
  for i = 1, nr do rids[i] = ARGV[8 + ni + i] end
  outs = redis.call('HMGET', KEYS[3], unpack(rids))
end
local began = 0
if ARGV[2] == '1' then
  local status = nil
  for i = 1, #run, 2 do if run[i] == 'status' then status = run[i + 1] end end
  local ok = status == RUN.RUNNING
  for i = 1, np do
    if not ok then break end
    ok = recs[i] and cjson.decode(recs[i])['status'] == STEP.SUCCEEDED
  end
  if ok then
    local res = step_tx(KEYS[2], KEYS[4], KEYS[3], KEYS[5], ARGV[1], STEP.RUNNING, ARGV[3],
                        ARGV[4], '', ARGV[5], '')
    began = res[1]
  end
end
return {run, recs, outs, began}
