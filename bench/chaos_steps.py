"""The step function of the chaos suite: it counts itself, in Redis, by the step run's
idempotency key (the counting is the step's own, not the store's).

Keys (all under ``chaos:``): ``exec`` (hash: executions per step run), ``overlap`` (hash:
executions that began while another live one of the same step run was in flight),
``effects`` (hash: side effects, done once per key with ``SET NX`` as an external service
keyed by the idempotency key would), ``starts`` and ``ends`` (lists of ``[key, time,
pid]``, to measure the time from a kill to the re-run).
"""

from __future__ import annotations

import json
import os
import time

from orchestrator.core.registry import step_function
from orchestrator.runtime.context import current

CHAOS = "bench.chaos"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@step_function(CHAOS)
def chaos_step(ms: int = 0) -> int:
    """Count this execution, sleep ``ms`` milliseconds, do the side effect once."""
    ctx = current()
    r, key, pid = ctx.redis, ctx.idempotency_key, os.getpid()
    r.hincrby("chaos:exec", key, 1)
    r.rpush("chaos:starts", json.dumps([key, time.time(), pid]))
    inflight = f"chaos:inflight:{key}"
    if not r.set(inflight, pid, nx=True, ex=3600):
        holder = int(r.get(inflight) or 0)
        if holder and holder != pid and _alive(holder):
            r.hincrby("chaos:overlap", key, 1)
        r.set(inflight, pid, ex=3600)
    time.sleep(ms / 1000)
    if r.set(f"chaos:effect:{key}", 1, nx=True, ex=3600):
        r.hincrby("chaos:effects", key, 1)
    r.rpush("chaos:ends", json.dumps([key, time.time(), pid]))
    if int(r.get(inflight) or 0) == pid:
        r.delete(inflight)
    return ms
