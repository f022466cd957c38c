-- Drop an idempotency key if it still stands for the given run.
-- KEYS: the key.  ARGV: run id.  Returns 1 if dropped, else 0.
local v = redis.call('GET', KEYS[1])
if v and cjson.decode(v)['run_id'] == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
