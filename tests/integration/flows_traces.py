"""The workflow of the trace tests: a fan-out (a chord closed by a join) between two
single steps."""

from __future__ import annotations

from orchestrator.core.dsl import Workflow
from tests.integration.flows import sleep_step

FAN = 6

_w = Workflow("trace_fanout")
_src = _w.step("src", sleep_step, seconds=0.0)
_leaves = [_w.step(f"leaf{i}", sleep_step, after=[_src], seconds=0.3) for i in range(FAN)]
_w.step("sink", sleep_step, after=_leaves, seconds=0.0)
trace_fanout = _w.build()
