"""The workflow of the rolling-upgrade tests, importable by this release and the previous.

Uses only what both releases have (the DSL, ``step_function``, the step context), and is
loaded from its own directory (not as part of the ``tests`` package), so that a worker of
the previous release imports it without importing this tree.

Every execution of a step appends ``start|<step>|<release>|<time>`` to the Redis list
``upgrade:<run id>`` when it starts and ``end|...`` when it ends: the test counts
executions per step (in the step, not in the store), checks that no two overlap and sees
which release ran each.

While the key ``upgrade:hold`` exists, every step but ``a`` and ``b`` waits for it to go
before it starts (at most a minute): the test holds the run after its second step until
the other release's worker is up, so that the swap lands mid-run however slow the machine
is at starting a worker.
"""

from __future__ import annotations

import os
import time
from typing import Any

from orchestrator.core.dsl import Workflow
from orchestrator.core.registry import step_function
from orchestrator.runtime.context import current


@step_function("upgrade.work")
def work(seconds: float = 0.5) -> dict[str, Any]:
    """Sleep ``seconds``, recording the execution."""
    ctx = current()
    release = os.environ.get("UPGRADE_RELEASE", "?")
    key = f"upgrade:{ctx.run_id}"
    held_until = time.time() + 60
    while (ctx.step_id not in ("a", "b") and ctx.redis.exists("upgrade:hold")
           and time.time() < held_until):
        time.sleep(0.02)
    ctx.redis.rpush(key, f"start|{ctx.step_id}|{release}|{time.time()}")
    time.sleep(seconds)
    ctx.redis.rpush(key, f"end|{ctx.step_id}|{release}|{time.time()}")
    return {"step": ctx.step_id, "release": release}


_w = Workflow("upgrade_flow", description="a chain around a fan-out, for upgrade tests")
a = _w.step("a", work, seconds=0.6)
b = _w.step("b", work, after=[a], seconds=0.6)
fan = [_w.step(f"f{i}", work, after=[b], seconds=0.6) for i in range(3)]
c = _w.step("c", work, after=fan, seconds=0.6)
d = _w.step("d", work, after=[c], seconds=0.6)
e = _w.step("e", work, after=[d], seconds=0.6)
_w.step("g", work, after=[e], seconds=0.6)
upgrade_flow = _w.build()
