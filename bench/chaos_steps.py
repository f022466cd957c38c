"""The step function and the workflows of the chaos suite.

The step counts itself, in Redis, by the step run's idempotency key (the counting is the
step's own, not the store's).

Keys (all under ``chaos:``): ``exec`` (hash: executions per step run), ``overlap`` (hash:
executions that began while another live one of the same step run was in flight),
``effects`` (hash: side effects, done once per key with ``SET NX`` as an external service
keyed by the idempotency key would), ``starts`` and ``ends`` (lists of ``[key, time,
pid]``, to measure the time from a kill to the re-run).
"""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any

from orchestrator.core.dsl import Workflow
from orchestrator.core.models import WorkflowDef
from orchestrator.core.registry import step_function
from orchestrator.dev import shapes
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


_EFFECT = """if redis.call('SET', KEYS[1], 1, 'NX', 'EX', 3600) then
  redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
end"""
"""The side effect, done once per key (``SET NX``, as an external service would), and
its count, atomically."""


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
    # the effect and its count in one script: a kill between two commands would leave an
    # effect done and not counted (seen once in 24 kills), which is not what is measured
    r.eval(_EFFECT, 2, f"chaos:effect:{key}", "chaos:effects", key)
    r.rpush("chaos:ends", json.dumps([key, time.time(), pid]))
    if int(r.get(inflight) or 0) == pid:
        r.delete(inflight)
    return ms


def _workflow(name: str, deps: shapes.Deps, rng: random.Random, ms: tuple[int, int]
              ) -> WorkflowDef:
    wf = Workflow(name)
    handles: dict[str, Any] = {}
    for s, parents in deps.items():
        handles[s] = wf.step(s, CHAOS, after=[handles[p] for p in parents],
                             ms=rng.randint(*ms))
    return wf.build()


def long_workflow(ms: int) -> WorkflowDef:
    """A step of ``ms`` milliseconds, then one more."""
    return _workflow(f"chaos_long_{ms}", {"long": [], "tail": ["long"]}, random.Random(1),
                     (ms, ms))


_rng = random.Random(11)
_FAN = {"split": [], **{f"p{i}": ["split"] for i in range(8)},
        "merge": [f"p{i}" for i in range(8)]}
chaos_chain = _workflow("chaos_chain", shapes.chain(6), _rng, (50, 400))
chaos_fan = _workflow("chaos_fan", _FAN, _rng, (50, 400))
chaos_zigzag = _workflow("chaos_zigzag", shapes.zigzag(11), _rng, (50, 400))
chaos_random = _workflow("chaos_random", shapes.random_dag(random.Random(3), 20), _rng,
                         (50, 400))
_WIDE = {"split": [], **{f"w{i}": ["split"] for i in range(24)},
         "merge": [f"w{i}" for i in range(24)]}
chaos_wide = _workflow("chaos_wide", _WIDE, _rng, (50, 400))
"""Wider than the compiler's ``MAX_CHORD_WIDTH``: its branches are one-task units joined
by the merge's counter, each completed in its final transition's script."""
SHAPES = (chaos_chain, chaos_fan, chaos_zigzag, chaos_random, chaos_wide)
"""The five shapes of the chaos suite (module level: the catalog, so the API, has them)."""
chaos_zigzag_fast = _workflow("chaos_zigzag_fast", shapes.zigzag(11), _rng, (0, 0))
chaos_random_fast = _workflow("chaos_random_fast", shapes.random_dag(random.Random(9), 60),
                              _rng, (0, 0))
FAST = (chaos_zigzag_fast, chaos_random_fast)
"""No-wait zigzag and random non series-parallel DAGs: many parents end at once."""
