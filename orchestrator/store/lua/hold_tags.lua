-- A worker's lease keeper records the delivery tags of the step and join messages it holds
-- (begun or prefetched), valid for `ttl` ms of Redis' clock (see Keys.workers_holding).
-- KEYS: workers holding hash.  ARGV: worker name, ttl ms, tags (JSON list).
redis.call('HSET', KEYS[1], ARGV[1], (now_ms() + tonumber(ARGV[2])) .. '|' .. ARGV[3])
return 1
