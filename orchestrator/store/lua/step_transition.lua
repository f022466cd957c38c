-- Move one step run to a new status if the transition table allows it.
-- KEYS: steps, events, outputs, metrics.
-- ARGV: step, new status, allowed sources (","-joined), patch JSON, output JSON or "",
--       now, workflow ("" for no metrics).
-- Returns {moved 0/1, old status}.
return step_tx(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[3], ARGV[4],
               ARGV[5], ARGV[6], ARGV[7])
