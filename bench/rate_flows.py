"""The workflows of ``python -m bench.rates``: a rate-limited step that stamps its start
(Redis' clock) and a no-op run as the side workload."""

from __future__ import annotations

import os

from bench.flows import noop
from orchestrator.core.dsl import Workflow
from orchestrator.core.registry import step_function
from orchestrator.runtime.context import current

RATE = os.environ.get("BENCH_RATE", "10/s")
STAMPS = "bench:rate:starts"


@step_function("bench.rate_stamp")
def rate_stamp() -> None:
    """Record this start's time (Redis' clock)."""
    r = current().redis
    secs, micros = r.time()
    r.rpush(STAMPS, f"{secs}.{int(micros):06d}")


_limited = Workflow("bench_rate_limited", description="One step limited to RATE across the "
                    "pool.")
_limited.step("call", rate_stamp, rate_limit=RATE)
bench_rate_limited = _limited.build()

_free = Workflow("bench_rate_free", description="One no-op step, not limited.")
_free.step("noop", noop)
bench_rate_free = _free.build()
