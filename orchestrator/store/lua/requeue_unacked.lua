-- Put an unacknowledged message back at the head of its queue, if it is still
-- unacknowledged: a requeue the broker could not take when its worker sent it (see
-- Leases.requeue_unacked).  No lease is checked: the worker that held the delivery is done
-- with it, and a copy's lease decides what runs.
-- KEYS: unacked hash, unacked index, queue list.  ARGV: delivery tag, message (JSON,
-- marked redelivered).
-- Returns 1 put back, 0 not there (acknowledged, or restored already).
if put_back(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2]) then return 1 end
return 0
