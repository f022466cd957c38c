-- Put an unacknowledged message back at the head of its queue, if it is still
-- unacknowledged: a requeue the broker could not take when its worker sent it (see
-- Leases.requeue_unacked).  No lease is checked: the worker that held the delivery is done
-- with it, and a copy's lease decides what runs.
-- KEYS: unacked hash, unacked index, queue list.  ARGV: delivery tag, message (JSON,
-- marked redelivered).
-- Returns 1 put back, 0 not there (acknowledged, or restored already).
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[3], ARGV[2])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
