-- Leases that expired by Redis' clock, oldest first.
-- KEYS: lease index.  ARGV: limit.  Returns {member, expiry ms, ...}.
return redis.call('ZRANGEBYSCORE', KEYS[1], 0, now_ms(), 'WITHSCORES', 'LIMIT', 0,
                  tonumber(ARGV[1]))
