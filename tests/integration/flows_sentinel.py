"""The step function and workflows of the tests whose Redis loses writes: the Sentinel
failover test (``tests/integration/test_sentinel.py``) and the restart grace's
(``tests/integration/test_leases.py``).

The step counts its own executions in a file, not in Redis: a failover may lose the
last writes to Redis, and the count must not be lost with them.  The file is named by
the ``SENTINEL_TEST_COUNT_FILE`` environment variable of the worker (a test harness
variable, not a setting); each execution appends a ``start`` line and, if it lives to
the end, an ``end`` line (one ``write`` of a short line to an ``O_APPEND`` file each, so
lines from several processes never interleave).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from orchestrator.core.dsl import Workflow
from orchestrator.core.models import WorkflowDef
from orchestrator.core.registry import step_function
from orchestrator.dev import shapes
from orchestrator.runtime.context import current

COUNT_FILE_VARIABLE = "SENTINEL_TEST_COUNT_FILE"


def _append(event: str, key: str) -> None:
    path = os.environ.get(COUNT_FILE_VARIABLE)
    if not path:
        return
    line = json.dumps({"event": event, "key": key, "pid": os.getpid(), "t": time.time()})
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@step_function("test.sentinel_count")
def sentinel_count(ms: int = 0) -> int:
    """Count this execution in the count file, sleep ``ms`` milliseconds."""
    key = current().idempotency_key
    _append("start", key)
    time.sleep(ms / 1000)
    _append("end", key)
    return ms


def executions(path: Path) -> list[dict[str, Any]]:
    """The count file's lines: ``{"event": "start"|"end", "key", "pid", "t"}`` each."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def overlaps(lines: list[dict[str, Any]]) -> int:
    """Executions of one step run that began before another one of it had ended."""
    spans: dict[tuple[str, int], list[float]] = {}
    for e in lines:
        spans.setdefault((e["key"], e["pid"]), []).append(e["t"])
    by_key: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for e in lines:
        if e["event"] == "start":
            ends = [t for t in spans[(e["key"], e["pid"])] if t > e["t"]]
            by_key[e["key"]].append((e["t"], min(ends) if ends else float("inf")))
    n = 0
    for runs in by_key.values():
        runs.sort()
        n += sum(1 for a, b in itertools.pairwise(runs) if b[0] < a[1] != float("inf"))
    return n


def ran_alone(lines: list[dict[str, Any]], step: str) -> None:
    """Assert that ``step``'s first execution (frozen while Redis lost its lease and a
    copy came) was neither joined nor stopped: it ran to its end, alone."""
    runs = [e for e in lines if e["key"].endswith(f":{step}")]
    assert overlaps(runs) == 0, runs
    began = runs[0]
    ended = [e for e in runs if e["event"] == "end" and e["pid"] == began["pid"]]
    assert ended, runs
    assert not [e for e in runs[1:] if e["event"] == "start" and e["t"] < ended[0]["t"]], runs


def ran_once_each(lines: list[dict[str, Any]], steps: list[str]) -> None:
    """Assert that each of ``steps`` began exactly once (counted in the step)."""
    began = {s: sum(1 for e in lines if e["event"] == "start" and e["key"].endswith(f":{s}"))
             for s in steps}
    assert began == dict.fromkeys(steps, 1), (began, lines)


def _workflow(name: str, deps: shapes.Deps, rng: random.Random) -> WorkflowDef:
    wf = Workflow(name)
    handles: dict[str, Any] = {}
    for s, parents in deps.items():
        handles[s] = wf.step(s, sentinel_count, after=[handles[p] for p in parents],
                             ms=rng.randint(100, 300))
    return wf.build()


_rng = random.Random(16)
sentinel_chain = _workflow("sentinel_chain", shapes.chain(6), _rng)
sentinel_fan = _workflow("sentinel_fan", {"split": [], **{f"p{i}": ["split"] for i in range(6)},
                                          "merge": [f"p{i}" for i in range(6)]}, _rng)
sentinel_zigzag = _workflow("sentinel_zigzag", shapes.zigzag(9), _rng)
SHAPES = (sentinel_chain, sentinel_fan, sentinel_zigzag)

_long = Workflow("restart_long")
_long.step("after", sentinel_count, after=[_long.step("long", sentinel_count, ms=10000)])
restart_long = _long.build()
"""A 10 s step, then another: the restart grace's test kills Redis while ``long`` runs."""

_failover = Workflow("failover_long")
_failover.step("after", sentinel_count,
               after=[_failover.step("long", sentinel_count, ms=25000)])
failover_long = _failover.build()
"""A 25 s step, then another: the failover test freezes ``long``'s worker across a
failover that takes longer than a restart (a worker, the promotion, the copy)."""
