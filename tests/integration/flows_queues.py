"""Workflows for the queue-routing tests: a step pinned to queue ``b`` between two steps
on the default queue."""

from __future__ import annotations

from orchestrator.core.dsl import Workflow
from tests.integration.flows import sleep_step

QUEUE_B = "b"

_q = Workflow("queue_routing", description="prep and finish on the default queue; "
              "on_b only on a worker consuming queue b")
prep = _q.step("prep", sleep_step, seconds=0.0)
on_b = _q.step("on_b", sleep_step, after=[prep], queue=QUEUE_B, seconds=0.0)
_q.step("finish", sleep_step, after=[on_b], seconds=0.0)
queue_routing = _q.build()
