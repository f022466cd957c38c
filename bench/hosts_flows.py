"""The I/O-bound workflow of ``python -m bench.hosts``: steps that wait on a remote call.

Every step is :func:`bench.chaos_steps.chaos_step`: it counts its own executions (and any
that began while another of the same step run was alive) in Redis, sleeps ``IO_MS`` (the
simulated remote call: a worker's pool slot is held, its CPU is not), and does its side
effect once per idempotency key.
"""

from __future__ import annotations

from bench.chaos_steps import CHAOS
from orchestrator.core.dsl import Workflow
from orchestrator.core.models import WorkflowDef

IO_MS = 500
"""How long each step waits on its simulated remote call, in milliseconds."""
FAN = 6
"""Parallel steps between the first and the last."""


def _io_fan() -> WorkflowDef:
    wf = Workflow("hosts_io")
    first = wf.step("fetch", CHAOS, ms=IO_MS)
    calls = [wf.step(f"call{i}", CHAOS, after=[first], ms=IO_MS) for i in range(FAN)]
    wf.step("store", CHAOS, after=calls, ms=IO_MS)
    return wf.build()


hosts_io = _io_fan()
"""``fetch``, then ``FAN`` calls at once, then ``store``: ``FAN + 2`` steps of ``IO_MS``."""
STEPS = FAN + 2
"""Step runs in one run of :data:`hosts_io`."""
