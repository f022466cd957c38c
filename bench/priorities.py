"""``python -m bench.priorities``: do a high-priority run's steps overtake a backlog?

Three arms, each on a fresh private Redis with one worker (prefork, ``--concurrency``):

* ``one queue``: no priorities, the high run queued behind the backlog (what Celery on
  Redis gives without priorities: one FIFO list);
* ``bands, round robin``: priority bands (``default.high``, ``default``, ``default.low``)
  read in kombu's default order, ``queue_order_strategy=round_robin``;
* ``bands, BandCycle``: the bands read in weighted turns (ours, the default).

1. **Overtake** (issue #13's figure): ``--backlog`` single-step low runs queue up, the
   worker starts on them, then a ``--chain``-step high run is submitted.  Printed: the
   low steps that started between its submit and its last step (the bar: under 10 % of
   the backlog).
2. **Shares**: ``--backlog`` single-step runs in each band, then the first ``13 * 20``
   step starts by band: the share each band gets while all of them are backlogged (ours:
   8 : 4 : 1; round robin: equal), and whether the low band starves.

Steps record their start in a Redis list (executions are counted in the steps, not in the
store).  Figures are printed, not asserted; ``tests/integration/test_priorities.py``
checks the behaviour.  Every process it starts is stopped (by process id).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from bench.priority_flows import EXECUTIONS, prio_tally
from orchestrator.core.dsl import Workflow
from orchestrator.core.models import WorkflowDef
from orchestrator.core.priorities import Priority
from orchestrator.dev import procs
from orchestrator.dev.localredis import RedisServer
from orchestrator.dev.waiting import wait_until
from orchestrator.runtime.catalog import discover
from orchestrator.runtime.celeryconf import PRIORITY_CYCLE
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.settings import Settings

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ["bench.priority_flows"]
ARMS = (("one queue", None), ("bands, round robin", "round_robin"),
        ("bands, BandCycle", PRIORITY_CYCLE))


def _one() -> WorkflowDef:
    w = Workflow("bench_prio_one", description="one tally step")
    w.step("only", prio_tally)
    return w.build()


def _chain(n: int) -> WorkflowDef:
    w = Workflow("bench_prio_chain", description=f"{n} tally steps in a chain")
    prev = None
    for i in range(n):
        prev = w.step(f"s{i}", prio_tally, after=[prev] if prev else [])
    return w.build()


class _Worker:
    """One worker on ``url`` with the queue order ``order`` (None: ours)."""

    def __init__(self, url: str, concurrency: int, order: str | None) -> None:
        env = dict(os.environ, ORCH_REDIS_URL=url, PYTHONPATH=str(REPO),
                   ORCH_WORKFLOW_PACKAGES=json.dumps(PACKAGES),
                   BENCH_QUEUE_ORDER=order or PRIORITY_CYCLE)
        self.name = "prio@bench"
        cmd = [sys.executable, "-m", "celery", "-A", "bench.priority_app", "worker",
               "-n", self.name, "-Q", "default", "-c", str(concurrency), "-P", "prefork",
               "-l", "WARNING", "--without-gossip", "--without-mingle",
               "--without-heartbeat"]
        self.log = procs.temp_log("bench-prio-")
        self.proc = procs.spawn(cmd, log=self.log, env=env, cwd=REPO,
                                death_signal=signal.SIGTERM)

    def ready(self, coord: Coordinator) -> None:
        procs.wait_ready(self.proc, lambda: coord.app.control.ping(
            destination=[self.name], timeout=0.5), 60, name=self.name, log=self.log)

    def stop(self) -> None:
        procs.stop(self.proc, 20)


def _arm(concurrency: int, order: str | None,
         prepare: Callable[[Coordinator], Any],
         measure: Callable[[Coordinator, redis.Redis, Any], Any]) -> Any:
    """``prepare`` (the backlog, before the worker starts), then ``measure``."""
    with RedisServer() as server:
        settings = Settings(redis_url=server.url, workflow_packages=tuple(PACKAGES))
        coord = Coordinator(settings, discover(settings.workflow_packages))
        r = redis.Redis.from_url(server.url, decode_responses=True)
        prepared = prepare(coord)
        worker = _Worker(server.url, concurrency, order)
        try:
            worker.ready(coord)
            return measure(coord, r, prepared)
        finally:
            worker.stop()


def overtake(concurrency: int, order: str | None, backlog: int,
             chain: int) -> tuple[int, int]:
    """Part 1 for one arm: (low steps started while the high run was queued or running,
    low steps started before it was submitted)."""
    banded = order is not None
    low, high = (Priority.LOW, Priority.HIGH) if banded else (Priority.NORMAL,) * 2
    one, wf = _one(), _chain(chain)

    def prepare(coord: Coordinator) -> None:
        coord.compile(wf)
        for _ in range(backlog):
            coord.submit(one, priority=low)

    def measure(coord: Coordinator, r: redis.Redis, _: Any) -> tuple[int, int]:
        wait_until(lambda: r.llen(EXECUTIONS) >= 5, 60)
        before = int(r.llen(EXECUTIONS))
        run_id = coord.submit(wf, priority=high)
        wait_until(lambda: coord.store.run(run_id).status.terminal, 600, interval_s=0.05)
        log = [str(e) for e in r.lrange(EXECUTIONS, 0, -1)]
        mine = [i for i, e in enumerate(log) if e.startswith(f"{run_id}/")]
        return mine[-1] - before - (len(mine) - 1), before

    result: tuple[int, int] = _arm(concurrency, order, prepare, measure)
    return result


def shares(concurrency: int, order: str, backlog: int,
           fetches: int) -> Counter[str]:
    """Part 2 for one arm: the first ``fetches`` starts by band, every band backlogged."""
    one = _one()

    def prepare(coord: Coordinator) -> dict[str, str]:
        band_of_run: dict[str, str] = {}
        for _ in range(backlog):  # interleaved: no band is queued first
            for p in Priority:
                band_of_run[coord.submit(one, priority=p)] = p.value
        return band_of_run

    def measure(coord: Coordinator, r: redis.Redis, band_of_run: Any) -> Counter[str]:
        wait_until(lambda: r.llen(EXECUTIONS) >= fetches, 600, interval_s=0.1)
        return Counter(band_of_run[str(e).split("/")[0]]
                       for e in r.lrange(EXECUTIONS, 0, fetches - 1))

    result: Counter[str] = _arm(concurrency, order, prepare, measure)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backlog", type=int, default=500)
    ap.add_argument("--chain", type=int, default=5)
    ap.add_argument("--concurrency", type=int, default=2)
    args = ap.parse_args(argv)
    step_s = os.environ.get("BENCH_PRIO_STEP_S", "0.02")
    print(f"1. overtake: {args.backlog} low single-step runs queued, one worker x "
          f"{args.concurrency}, steps of {step_s} s; then a {args.chain}-step high run")
    for name, order in ARMS:
        during, before = overtake(args.concurrency, order, args.backlog,
                                  args.chain)
        print(f"  {name:<20} low steps started during the high run: {during:>4} "
              f"({100 * during / args.backlog:5.1f} % of the backlog; {before} had run "
              "before it was submitted)")
    fetches = 13 * 20
    print(f"2. shares: {args.backlog // 3} runs queued in each band; the first {fetches} "
          "starts by band")
    for name, order in ARMS[1:]:
        assert order is not None
        got = shares(args.concurrency, order, args.backlog // 3, fetches)
        print(f"  {name:<20} " + "  ".join(f"{p.value} {got[p.value]:>3}" for p in Priority))
    return 0


if __name__ == "__main__":
    sys.exit(main())
