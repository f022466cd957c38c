"""Step functions and workflows the schedule tests fire (counted in the step itself)."""

from __future__ import annotations

import time

from orchestrator.core.dsl import Workflow
from orchestrator.core.registry import step_function
from orchestrator.runtime.context import current

EXEC_KEY = "test:sched:exec"
"""Hash: run id -> how many times its step function ran."""
ACTIVE_KEY = "test:sched:active"
"""String: step functions of sched_slow running now; OVERLAP_KEY counts > 1 seen."""
OVERLAP_KEY = "test:sched:overlap"


@step_function("test.sched_count")
def sched_count(fire: int = 0, pause_s: float = 0.0) -> int:
    """Count this execution under the run's id; sleep ``pause_s``; track overlap."""
    ctx = current()
    r = ctx.redis
    r.hincrby(EXEC_KEY, ctx.run_id, 1)
    if pause_s:
        if int(r.incr(ACTIVE_KEY)) > 1:
            r.incr(OVERLAP_KEY)
        try:
            time.sleep(pause_s)
        finally:
            r.decr(ACTIVE_KEY)
    return fire


_SCHEMA = {"type": "object", "properties": {"fire": {"type": "integer"},
                                            "v": {"type": "integer"},
                                            "pause_s": {"type": "number"}}}

_tick = Workflow("sched_tick", input_schema=_SCHEMA)
_tick.step("count", sched_count, fire=_tick.input.fire)
sched_tick = _tick.build()

_slow = Workflow("sched_slow", input_schema=_SCHEMA)
_slow.step("count", sched_count, fire=_slow.input.fire, pause_s=_slow.input.pause_s)
sched_slow = _slow.build()
