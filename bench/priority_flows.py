"""The step function of ``python -m bench.priorities``, and the worker app it measures
kombu's own queue order with."""

from __future__ import annotations

import os
import time

from orchestrator.core.registry import step_function
from orchestrator.runtime.context import current

EXECUTIONS = "bench:prio:executions"
STEP_S = float(os.environ.get("BENCH_PRIO_STEP_S", "0.02"))


@step_function("bench.prio_tally")
def prio_tally() -> None:
    """Append ``<run id>/<step id>`` to :data:`EXECUTIONS` (in the order steps start),
    then work for ``BENCH_PRIO_STEP_S`` seconds."""
    ctx = current()
    ctx.redis.rpush(EXECUTIONS, f"{ctx.run_id}/{ctx.step_id}")
    time.sleep(STEP_S)
