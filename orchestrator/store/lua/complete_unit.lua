-- Mark a unit finished and advance its successors' counters (complete_unit_on in
-- lib.lua): claim the successors that reach zero for dispatch.
-- KEYS: counters, done, claimed, run, claims index.  ARGV: unit, run id, successors...
-- Returns {units remaining after this one (-1 when the run is gone), successors claimed
-- by this call, the run's priority ('' when normal or none claimed)}.
local successors = {}
for i = 3, #ARGV do successors[#successors + 1] = ARGV[i] end
return complete_unit_on(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2],
                        successors)
