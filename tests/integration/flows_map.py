"""Step functions and workflows of the map step tests (``test_map.py``).

``test.map_item`` counts, in the store of the run's own Redis, each execution
(``test:exec:<run>``, by item step run id), each execution that ran to its end
(``test:done:<run>``), the start and end times of each (``test:starts:<run>:<item>``,
``test:ends:<run>:<item>``, Redis' clock) and how many ran at once
(``test:inflight:<run>``, the set of items running now: an attempt whose removal met a
Redis crash is not counted twice when it runs again; ``test:peak:<run>`` the most):
counted by the step function itself, not by the store under test.  ``test_fan_out.py``
uses it for a wide fan-out's steps too.
"""

from __future__ import annotations

import time
from typing import Any

from orchestrator.core.dsl import Workflow
from orchestrator.core.models import RetryPolicy
from orchestrator.core.registry import step_function
from orchestrator.runtime.context import current

_ENTER = """
redis.call('SADD', KEYS[1], ARGV[1])
local n = redis.call('SCARD', KEYS[1])
if n > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], n) end
local t = redis.call('TIME')
redis.call('RPUSH', KEYS[3], t[1] .. '.' .. string.format('%06d', tonumber(t[2])))
return redis.call('HINCRBY', KEYS[4], ARGV[1], 1)
"""


_LEAVE = """
local t = redis.call('TIME')
redis.call('RPUSH', KEYS[1], t[1] .. '.' .. string.format('%06d', tonumber(t[2])))
return redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
"""


@step_function("test.map_item")
def map_item(n: int, pause_s: float = 0.0, fail: list[int] | None = None,
             fail_times: int = 0) -> int:
    """Count this execution of item ``n``, sleep ``pause_s``, then fail if ``n`` is in
    ``fail`` (only the first ``fail_times`` attempts when that is above 0), else return
    ``n * 2``."""
    ctx = current()
    r, run, me = ctx.redis, ctx.run_id, ctx.step_id
    r.eval(_ENTER, 4, f"test:inflight:{run}", f"test:peak:{run}", f"test:starts:{run}:{me}",
           f"test:exec:{run}", me)
    try:
        time.sleep(pause_s)
        if fail and n in fail and (fail_times == 0 or ctx.attempt <= fail_times):
            raise ValueError(f"item {n} fails on purpose")
    finally:
        r.srem(f"test:inflight:{run}", me)
    r.eval(_LEAVE, 2, f"test:ends:{run}:{me}", f"test:done:{run}", me)
    return n * 2


@step_function("test.map_numbers")
def numbers(count: int) -> dict[str, Any]:
    """The numbers 0 .. count-1, under ``numbers``."""
    return {"numbers": list(range(count))}


@step_function("test.map_total")
def total(values: list[int | None]) -> dict[str, Any]:
    """The sum of the non-null values and how many were null."""
    return {"sum": sum(v for v in values if v is not None),
            "nulls": sum(1 for v in values if v is None), "n": len(values)}


def _mapped(name: str, policy: str = "fail_fast", max_failures: int = 0,
            max_parallel: int | None = None, retry: RetryPolicy | None = None) -> Any:
    wf = Workflow(name)
    src = wf.step("numbers", numbers, count=wf.input.count)
    spec: dict[str, Any] = {"over": "steps.numbers.output.numbers", "as": "n",
                            "failure_policy": policy, "max_failures": max_failures}
    if max_parallel is not None:
        spec["max_parallel"] = max_parallel
    each = wf.step("each", map_item, after=[src], map=spec, pause_s=wf.input.pause_s,
                   fail=wf.input.fail, fail_times=wf.input.fail_times, retry=retry)
    wf.step("sum", total, values=each.output, trigger_rule="all_done")
    return wf.build()


# numbers -> each (a map over numbers' output) -> sum
map_window = _mapped("test_map_window", max_parallel=3)
map_all = _mapped("test_map_all")
map_continue = _mapped("test_map_continue", policy="continue", max_parallel=4)
map_allow = _mapped("test_map_allow", policy="allow", max_failures=2, max_parallel=2)
map_retry = _mapped("test_map_retry", max_parallel=5,
                    retry=RetryPolicy(max_attempts=2, initial_backoff_s=0.05,
                                      max_backoff_s=0.05, jitter=0.0))

# a map over the run's input directly, alone
_wf = Workflow("test_map_input")
_wf.step("each", map_item, map={"over": "input.items", "as": "n", "max_parallel": 8},
         pause_s=0.0)
map_input = _wf.build()
map_window6 = _mapped("test_map_window6", max_parallel=6)
# the Redis-restart test: an item whose own Redis calls meet the crash is retried
map_window6_retry = _mapped("test_map_window6_retry", max_parallel=6,
                            retry=RetryPolicy(max_attempts=5, initial_backoff_s=0.5))

# a fan-out wider than the compiler's MAX_CHORD_WIDTH: 40 one-task units joined by the
# fan-in's counter (no chord); every step counts its executions (test_fan_out.py)
FAN_WIDTH = 40
_fan = Workflow("test_fan_wide")
_branches = [_fan.step(f"b{i}", map_item, n=i, pause_s=_fan.input.pause_s,
                       retry=RetryPolicy(max_attempts=5, initial_backoff_s=0.5))
             for i in range(FAN_WIDTH)]
_fan.step("fan_in", map_item, n=-1, after=_branches,
          retry=RetryPolicy(max_attempts=5, initial_backoff_s=0.5))
fan_wide = _fan.build()
