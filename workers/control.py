"""Remote-control commands the workers answer (``celery inspect`` style), for
``orchestrator doctor``."""

from __future__ import annotations

import time
from typing import Any

from celery.worker.control import inspect_command

from orchestrator.runtime.doctor import CLOCK_COMMAND


@inspect_command(name=CLOCK_COMMAND)
def orch_clock(state: Any) -> dict[str, float]:
    """This worker's wall clock, to measure the skew between hosts."""
    return {"time": time.time()}
