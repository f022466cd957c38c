-- Put back at the head of its queue a message a worker popped (BRPOP) whose record as
-- unacknowledged Redis never confirmed (it went away between kombu's two commands: the
-- pop, then the record), so that the message is not lost (see Leases.requeue_popped).  If
-- the record went through after all, that unacknowledged copy is the one put back: one
-- copy is left, not two.
-- KEYS: unacked hash, unacked index, queue list.  ARGV: delivery tag, message (JSON,
-- marked redelivered).
-- Returns 1 put back from the unacknowledged record, 2 from the worker's copy.
if put_back(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2]) then return 1 end
redis.call('RPUSH', KEYS[3], ARGV[2])
return 2
