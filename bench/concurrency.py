"""``python -m bench.concurrency``: concurrency limits by key (issue #13, part 3).

A private Redis, ``--workers`` orchestrator workers and as many raw Celery workers
(prefork, ``--concurrency`` each).  ``--runs`` runs for ``--customers`` customers (round
robin), each run two steps: ``enter`` (holds ``--hold-ms``) then ``leave``.  Three arms,
in alternating rounds (``--rounds``), on the same workers:

* ``limit``: the workflow allows ``--limit`` runs per customer at once (the rest wait,
  ``queued``, in arrival order);
* ``no limit``: the same workflow without the limit;
* ``raw Celery``: the same batch as plain Celery chains (``raw.sleep`` then ``raw.noop``).

Printed per arm: runs/s (submit of the first to the end of the last), and for ours the
most runs of one customer in flight at once, **measured in the step functions** (a set
per customer: ``enter`` adds the run, ``leave`` removes it); the start order (each
customer's runs entered in the order they were submitted?); the longest wait of a run
for its slot (created to started, from the store); whether every run ended succeeded
and each ``enter`` ran once.  Then the limit's throughput over the no-limit arm's.

With ``customers * limit`` at least the workers' total concurrency the limit does not
bind throughput (the defaults: 20 * 2 = 40 slots for 3 * 4 = 12 worker processes), so
the ratio shows what taking and passing slots costs.  Figures are printed, not asserted;
``tests/integration/test_concurrency.py`` checks the behaviour.  Every process it starts
is stopped (by process id).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from celery import chain

from bench.concurrency_flows import (
    executions_key,
    max_key,
    order_key,
    per_customer,
)
from bench.raw import NOOP, RAW_QUEUE, SLEEP
from bench.raw import create_app as raw_app
from orchestrator.core.models import WorkflowDef
from orchestrator.dev import procs
from orchestrator.dev.localredis import RedisServer
from orchestrator.dev.waiting import wait_until
from orchestrator.runtime.catalog import discover
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.settings import Settings

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ["bench.concurrency_flows"]


def _spawn(url: str, name: str, module: str, queue: str, concurrency: int
           ) -> tuple[Any, Path]:
    env = dict(os.environ, ORCH_REDIS_URL=url, ORCH_WORKFLOW_PACKAGES=json.dumps(PACKAGES),
               PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "celery", "-A", module, "worker", "-n", name, "-Q", queue,
           "-c", str(concurrency), "-P", "prefork", "-l", "WARNING", "--without-gossip",
           "--without-mingle", "--without-heartbeat"]
    log = procs.temp_log("bench-concurrency-")
    return procs.spawn(cmd, log=log, env=env, cwd=REPO, death_signal=signal.SIGTERM), log


def ours(coord: Coordinator, r: redis.Redis, wf: WorkflowDef, arm: str, runs: int,
         customers: int, hold_ms: int) -> dict[str, Any]:
    """One batch of the orchestrator arm; what was measured."""
    t0 = time.monotonic()
    submitted: list[tuple[str, str]] = []
    for i in range(runs):
        customer = f"c{i % customers}"
        submitted.append((customer, coord.submit(wf, {"customer": customer, "arm": arm,
                                                      "hold_ms": hold_ms})))
    ids = [rid for _, rid in submitted]
    wait_until(lambda: all(coord.store.run(i).status.terminal for i in ids[-customers:])
               and all(coord.store.run(i).status.terminal for i in ids), 600,
               interval_s=0.05)  # the last of each customer first: fewer reads meanwhile
    elapsed = time.monotonic() - t0
    records = [coord.store.run(i) for i in ids]
    peak = {k: int(v) for k, v in r.hgetall(max_key(arm)).items()}
    in_order = sum(
        1 for c in {c for c, _ in submitted}
        if [str(x) for x in r.lrange(order_key(arm, c), 0, -1)]
        == [rid for cc, rid in submitted if cc == c])
    execs = {k: int(v) for k, v in r.hgetall(executions_key(arm)).items()}
    waits = [(x.started_at or x.created_at) - x.created_at for x in records]
    return {"elapsed": elapsed, "rate": runs / elapsed, "peak": max(peak.values()),
            "in_order": in_order, "customers": len({c for c, _ in submitted}),
            "succeeded": sum(1 for x in records if x.status.value == "succeeded"),
            "once": sum(1 for i in ids if execs.get(i) == 1),
            "max_wait": max(waits), "median_wait": statistics.median(waits)}


def raw(app: Any, r: redis.Redis, runs: int, hold_ms: int, tag: str) -> dict[str, Any]:
    """The same batch as plain Celery chains: ``raw.sleep`` then ``raw.noop``."""
    t0 = time.monotonic()
    results = [chain(app.signature(SLEEP, (hold_ms, tag, str(i)), immutable=True,
                                   queue=RAW_QUEUE),
                     app.signature(NOOP, immutable=True, queue=RAW_QUEUE)).apply_async()
               for i in range(runs)]
    keys = [f"celery-task-meta-{res.id}" for res in results]
    wait_until(lambda: int(r.exists(*keys)) == len(keys), 600, interval_s=0.05)
    elapsed = time.monotonic() - t0
    return {"elapsed": elapsed, "rate": runs / elapsed}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--customers", type=int, default=20)
    ap.add_argument("--limit", type=int, default=2)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--hold-ms", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    with RedisServer() as server:
        url = server.url
        r = redis.Redis.from_url(url, decode_responses=True)
        settings = Settings(redis_url=url, workflow_packages=tuple(PACKAGES))
        coord = Coordinator(settings, discover(settings.workflow_packages))
        rapp = raw_app(settings)
        started = [_spawn(url, f"conc{i}@bench", "workers.main", "default", args.concurrency)
                   for i in range(args.workers)]
        started += [_spawn(url, f"raw{i}@bench", "bench.raw_main", RAW_QUEUE,
                           args.concurrency) for i in range(args.workers)]
        names = [f"conc{i}@bench" for i in range(args.workers)] + \
            [f"raw{i}@bench" for i in range(args.workers)]
        try:
            for (proc, log), name in zip(started, names, strict=True):
                procs.wait_ready(proc, lambda n=name: coord.app.control.ping(  # type: ignore[misc]
                    destination=[n], timeout=0.5), 60, name=name, log=log)
            limited, free = per_customer(args.limit), per_customer(None)
            arms: dict[str, Callable[[int], dict[str, Any]]] = {
                "limit": lambda k: ours(coord, r, limited, f"limit{k}", args.runs,
                                        args.customers, args.hold_ms),
                "no limit": lambda k: ours(coord, r, free, f"free{k}", args.runs,
                                           args.customers, args.hold_ms),
                "raw Celery": lambda k: raw(rapp, r, args.runs, args.hold_ms, f"raw{k}"),
            }
            n = args.customers
            warm: list[Callable[[], dict[str, Any]]] = [
                lambda: ours(coord, r, limited, "warm-limit", n, n, 0),
                lambda: ours(coord, r, free, "warm-free", n, n, 0),
                lambda: raw(rapp, r, n, 0, "warm")]
            for arm_warm in warm:  # every worker process imports and caches first
                arm_warm()
            got: dict[str, list[dict[str, Any]]] = {a: [] for a in arms}
            for k in range(args.rounds):
                order = list(arms) if k % 2 == 0 else list(reversed(arms))
                for arm in order:
                    got[arm].append(arms[arm](k))
            report(args, got)
        finally:
            for proc, _ in started:
                procs.stop(proc, 20)
    return 0


def report(args: argparse.Namespace, got: dict[str, list[dict[str, Any]]]) -> None:
    """Print the figures: per arm the median of the rounds, and each limit round."""
    slots = args.customers * args.limit
    print(f"{args.runs} runs for {args.customers} customers (limit {args.limit} per "
          f"customer: {slots} slots), {args.workers} workers x {args.concurrency} "
          f"processes, enter holds {args.hold_ms} ms, {args.rounds} rounds (medians):")
    for arm, rows in got.items():
        times = ", ".join(f"{x['elapsed']:.2f}" for x in rows)
        print(f"  {arm:<11} {statistics.median(x['rate'] for x in rows):7.2f} runs/s  "
              f"(batches of {times} s)")
    for arm in ("limit", "no limit"):
        for i, x in enumerate(got[arm]):
            print(f"  {arm} round {i + 1}: most runs of one customer in flight (measured in "
                  f"the step) {x['peak']}; customers whose runs started in submit order "
                  f"{x['in_order']}/{x['customers']}; succeeded {x['succeeded']}/"
                  f"{args.runs}; enter ran once {x['once']}/{args.runs}; wait for a slot: "
                  f"median {x['median_wait']:.2f} s, max {x['max_wait']:.2f} s")
    lim = statistics.median(x["rate"] for x in got["limit"])
    free = statistics.median(x["rate"] for x in got["no limit"])
    rawr = statistics.median(x["rate"] for x in got["raw Celery"])
    print(f"  throughput, limit / no limit: {lim / free:.3f} (the bar: >= 0.9); "
          f"limit / raw Celery: {lim / rawr:.3f}; no limit / raw Celery: {free / rawr:.3f}")


if __name__ == "__main__":
    sys.exit(main())
