"""The workflow the schedules benchmark fires: one no-op step (``bench.noop``)."""

from __future__ import annotations

from bench.flows import noop
from orchestrator.core.dsl import Workflow

_wf = Workflow("bench_tick", description="One no-op step, fired by the schedules bench.")
_wf.step("tick", noop)
bench_tick = _wf.build()
