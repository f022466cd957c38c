"""Workflows for the queue-routing tests: a step pinned to queue ``b`` between two steps
on the default queue; and the step function of the priority tests."""

from __future__ import annotations

import time

from orchestrator.core.dsl import Workflow
from orchestrator.core.registry import step_function
from orchestrator.runtime.context import current
from tests.integration.flows import sleep_step

EXECUTIONS = "test:executions"
"""The list every ``test.tally`` execution appends ``<run id>/<step id>`` to."""


@step_function("test.tally")
def tally(seconds: float = 0.0) -> None:
    """Record this execution in :data:`EXECUTIONS` (in the order they ran), then sleep."""
    ctx = current()
    ctx.redis.rpush(EXECUTIONS, f"{ctx.run_id}/{ctx.step_id}")
    time.sleep(seconds)

QUEUE_B = "b"

_q = Workflow("queue_routing", description="prep and finish on the default queue; "
              "on_b only on a worker consuming queue b")
prep = _q.step("prep", sleep_step, seconds=0.0)
on_b = _q.step("on_b", sleep_step, after=[prep], queue=QUEUE_B, seconds=0.0)
_q.step("finish", sleep_step, after=[on_b], seconds=0.0)
queue_routing = _q.build()
