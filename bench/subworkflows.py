"""``python -m bench.subworkflows``: what a sub-workflow step costs.

On a private Redis, one worker of ours and one raw Celery worker (prefork, ``--concurrency``
each, the same Celery settings: :mod:`bench.raw`), measured in the same run:

* **latency**: ``--runs`` runs one after another of three no-op steps in a row: flat
  (``a -> b -> c``), with ``b`` in a child run (one level), and two levels deep; beside
  them a raw Celery ``chain`` of three no-op tasks (``.get()`` on its last result).
  Printed: median and 95th percentile, submit to final status.
* **throughput**: ``--batch`` runs submitted at once, flat against one level of nesting
  (and the raw chain): runs per second until the last ends.  A parked sub-workflow step
  holds no worker slot while its child runs.
* **fan-out**: one run whose map step runs ``--fanout`` items, each a child run of one
  no-op step (a mapped sub-workflow), beside the same map with a no-op step run per item
  and a raw Celery ``chord`` of ``--fanout`` no-op tasks and a join (median of
  ``--fanout-rounds`` rounds, submit to end).

Figures are printed, not asserted; ``tests/integration/test_subworkflows.py`` checks the
behaviour.
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

from bench.raw import fan_out_in, linear
from orchestrator.dev import procs
from orchestrator.dev.localredis import RedisServer
from orchestrator.dev.waiting import wait_until
from orchestrator.runtime.catalog import discover
from orchestrator.runtime.celeryconf import celery_config
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.settings import Settings

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ["bench.subworkflow_flows", "bench.flows"]


def _spawn(url: str, app: str, name: str, concurrency: int, queues: str) -> tuple[Any, Path]:
    env = dict(os.environ, ORCH_REDIS_URL=url, ORCH_WORKFLOW_PACKAGES=json.dumps(PACKAGES),
               PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "celery", "-A", app, "worker", "-n", name, "-Q", queues,
           "-c", str(concurrency), "-P", "prefork", "-l", "WARNING", "--without-gossip",
           "--without-mingle", "--without-heartbeat"]
    log = procs.temp_log("bench-subworkflows-")
    return procs.spawn(cmd, log=log, env=env, cwd=REPO, death_signal=signal.SIGTERM), log


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--fanout", type=int, default=50)
    ap.add_argument("--fanout-rounds", type=int, default=5)
    args = ap.parse_args(argv)
    with RedisServer() as server:
        url = server.url
        settings = Settings(redis_url=url, workflow_packages=tuple(PACKAGES))
        coord = Coordinator(settings, discover(settings.workflow_packages))
        from celery import Celery
        raw = Celery("bench_raw_client", set_as_current=False)
        raw.conf.update(celery_config(settings))
        started = [_spawn(url, "workers.main", "sw@bench", args.concurrency, "default"),
                   _spawn(url, "bench.raw_main", "raw@bench", args.concurrency, "bench_raw")]
        try:
            for (proc, log), name in zip(started, ("sw@bench", "raw@bench"), strict=True):
                procs.wait_ready(proc, lambda n=name: coord.app.control.ping(
                    destination=[n], timeout=0.5), 60, name=name, log=log)

            def ours(name: str) -> Callable[[], None]:
                def one() -> None:
                    rid = coord.submit(name)
                    wait_until(lambda: coord.store.run(rid).status.terminal, 60,
                               interval_s=0.002)
                    assert coord.store.run(rid).status.value == "succeeded", rid
                return one

            def raw_chain() -> None:
                linear(raw, 3).apply_async().get(timeout=60)

            arms: list[tuple[str, Callable[[], None]]] = [
                ("ours, flat a -> b -> c", ours("bench_sw_flat")),
                ("ours, b in a child run", ours("bench_sw_nested")),
                ("ours, b two levels deep", ours("bench_sw_nested2")),
                ("raw Celery chain of 3", raw_chain)]
            for _, fn in arms:  # warm up: definitions compiled, connections open
                fn()
            print(f"latency, {args.runs} runs one after another (median / p95):")
            for label, fn in arms:
                times = []
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - t0)
                print(f"  {label:<26} {statistics.median(times) * 1000:7.1f} ms "
                      f"/ {_pct(times, 0.95) * 1000:7.1f} ms")

            print(f"throughput, {args.batch} runs submitted at once:")
            for label, name in (("ours, flat", "bench_sw_flat"),
                                ("ours, b in a child run", "bench_sw_nested")):
                t0 = time.perf_counter()
                ids = [coord.submit(name) for _ in range(args.batch)]
                wait_until(lambda ids=ids: all(coord.store.run(i).status.terminal
                                               for i in ids), 300, interval_s=0.05)
                dt = time.perf_counter() - t0
                print(f"  {label:<26} {args.batch / dt:7.1f} runs/s ({dt:.2f} s)")
            t0 = time.perf_counter()
            results = [linear(raw, 3).apply_async() for _ in range(args.batch)]
            for res in results:
                res.get(timeout=300)
            dt = time.perf_counter() - t0
            print(f"  {'raw Celery chain of 3':<26} {args.batch / dt:7.1f} runs/s ({dt:.2f} s)")

            items = {"items": list(range(args.fanout))}

            def ours_map(name: str) -> Callable[[], None]:
                def one() -> None:
                    rid = coord.submit(name, items)
                    wait_until(lambda: coord.store.run(rid).status.terminal, 300,
                               interval_s=0.005)
                    assert coord.store.run(rid).status.value == "succeeded", rid
                return one

            def raw_chord() -> None:
                fan_out_in(raw, args.fanout).apply_async().get(timeout=300)

            print(f"fan-out of {args.fanout}, one run at a time (median of "
                  f"{args.fanout_rounds} rounds, and the range):")
            for label, fn in ((f"ours, map of {args.fanout} child runs",
                               ours_map("bench_sw_mapped")),
                              (f"ours, map of {args.fanout} step runs",
                               ours_map("bench_sw_map_items")),
                              (f"raw Celery chord of {args.fanout}", raw_chord)):
                fn()  # warm up
                times = []
                for _ in range(args.fanout_rounds):
                    t0 = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - t0)
                med = statistics.median(times)
                print(f"  {label:<34} {med * 1000:8.1f} ms ({min(times) * 1000:.0f}-"
                      f"{max(times) * 1000:.0f}), {args.fanout / med:7.1f} items/s")
        finally:
            for proc, _ in started:
                procs.stop(proc, 20)


if __name__ == "__main__":
    main()
