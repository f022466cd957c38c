-- Publish units' canvases and record them, atomically: for each unit, take its claim
-- (claim "1": SADD claimed, and a unit another caller claimed first is skipped with its
-- messages; claim "0": the caller claimed it before, and its entry in the claims index
-- goes), run the Redis commands kombu's Redis transport would have sent for its canvas
-- (LPUSH of the task message onto its queue, PUBLISH of the task-sent event, PEXPIRE of a
-- queue with an expiry), record it published and move its entry steps to queued.  A run
-- that is gone publishes nothing.
-- KEYS: run, steps, events, outputs, metrics, claimed, published, claims index, then the
--       queue keys the commands write (declared; the commands name them again).
-- ARGV: run id, claim "1"/"0", now, queued patch JSON, queued sources, then per unit:
--       unit id, steps n, step ids..., commands n, (name, key or topic, value)...
-- Returns the units published.
local out = {}
local run_ttl = redis.call('PTTL', KEYS[1])
if run_ttl == -2 then return out end
local run_id, claim, now, patch, sources = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local units = {}
local i = 6
while i <= #ARGV do  -- read every unit first: a bad command writes nothing
  local ns = tonumber(ARGV[i + 1])
  local nc = tonumber(ARGV[i + 2 + ns])
  local u = {id = ARGV[i], steps = i + 2, ns = ns, cmds = i + 3 + ns, nc = nc}
  for c = u.cmds, u.cmds + 3 * (nc - 1), 3 do
    if not BROKER_COMMANDS[ARGV[c]] then
      return redis.error_reply('publish_units: unexpected command ' .. tostring(ARGV[c]))
    end
  end
  table.insert(units, u)
  i = u.cmds + 3 * nc
end
for _, u in ipairs(units) do
  local mine
  if claim == '1' then
    mine = redis.call('SADD', KEYS[6], u.id) == 1
  else
    mine = true
    redis.call('ZREM', KEYS[8], run_id .. '|' .. u.id)
  end
  if mine then
    for c = u.cmds, u.cmds + 3 * (u.nc - 1), 3 do
      redis.call(BROKER_COMMANDS[ARGV[c]], ARGV[c + 1], ARGV[c + 2])
    end
    redis.call('SADD', KEYS[7], u.id)
    for s = u.steps, u.steps + u.ns - 1 do
      queue_step(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[s], sources, patch, now,
                 run_ttl)
    end
    table.insert(out, u.id)
  end
end
return out
