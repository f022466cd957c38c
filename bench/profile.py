"""Where a step's time goes: ``python -m bench.profile --arm orch --shape order``.

Starts a private Redis and one prefork worker of the chosen arm, loops a workload through
it, and samples the worker's whole process tree with ``py-spy record --format raw``
(``pip install py-spy``; needs ptrace, so root or ``CAP_SYS_PTRACE``).  Prints the time
per step spent under a few frames that matter: the step wrapper and its Redis calls, and
Celery's own publishing, result storing, event sending and message reading.

py-spy's samples are of threads it sees running, which on this kind of VM includes short
waits on a socket, so a figure is roughly "busy or waiting on a Redis reply" per step.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import flows, raw
from bench.harness import Bench
from bench.report import Progress, Report
from bench.sizes import FULL
from bench.stack import Stack, Worker

RATE_HZ = 200
MAP_ITEMS = 2000
"""Items of the ``map`` shape (a map step; raw: a chord of as many tasks), and branches
of the ``fan`` shape (as many steps, then a fan-in step; raw: the same chord and join)."""
FRAMES = {
    "step wrapper (workers/step.py execute)": "execute (workers/step.py",
    "  store.begin_step (reads + running, 1 round trip)": "RunStore.begin_step (",
    "  store.step_context (slow path: 1 pipelined round trip)": "RunStore.step_context (",
    "  store.transition_step (1 EVALSHA each)": "RunStore.transition_step (",
    "  dispatcher.task_finished (unit terminals)": "Dispatcher.task_finished (",
    "join task (workers/app.py join)": "create_app.<locals>.join (",
    "Celery: publish next task (chain/chord)": "_dispatch_callbacks_and_chain (",
    "Celery: store result (GET + SETEX/PUBLISH)": "Backend.store_result (",
    "Celery: chord part return": "on_chord_part_return (",
    "Celery: send task events (worker main)": "Consumer._flush_events (",
    "Celery: read + deliver message (BRPOP)": "Channel._brpop_read (",
    "Celery: ack": "Message.ack (",
    "map item: begin (begin_item.lua)": "MapStore.begin_item (",
    "map item: end (map_step.lua end)": "MapStore.item_ended (",
    "redis-py: all commands": "Redis.execute_command (",
    "redis-py: all pipelines": "Pipeline.execute (",
}


def _loop(b: Bench, arm: str, shape: str) -> Callable[[], int]:
    """One batch of the workload; returns the steps it ran."""
    line, order = flows.linear(200), flows.order_shape()
    mapped = flows.mapped(MAP_ITEMS)
    fan = flows.fan_out_in(MAP_ITEMS)

    def orch() -> int:
        if shape == "linear":
            b.wait_runs([b.coord.submit(line)])
            return 200
        if shape == "map":
            b.wait_runs([b.coord.submit(mapped, {"items": list(range(MAP_ITEMS))})],
                        interval_s=0.1)
            return MAP_ITEMS
        if shape == "fan":
            b.wait_runs([b.coord.submit(fan)], interval_s=0.1)
            return MAP_ITEMS + 1
        b.wait_runs([b.coord.submit(order) for _ in range(50)], interval_s=0.1)
        return 450

    def rawarm() -> int:
        if shape == "linear":
            b.wait_results([raw.linear(b.raw_app, 200).apply_async().id])
            return 200
        if shape in ("map", "fan"):
            b.wait_results([raw.fan_out_in(b.raw_app, MAP_ITEMS).apply_async().id],
                           interval_s=0.1)
            return MAP_ITEMS + (shape == "fan")
        b.wait_results([raw.order_shape(b.raw_app).apply_async().id for _ in range(50)],
                       interval_s=0.1)
        return 450

    return orch if arm == "orch" else rawarm


def summarize(raw_path: Path, steps: int) -> dict[str, float]:
    """Milliseconds per step under each frame of :data:`FRAMES` (inclusive)."""
    totals: collections.Counter[str] = collections.Counter()
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():  # a blank or torn line
            continue
        frames = re.sub(r":\d+\)", ")", stack)
        totals["all samples"] += int(n)
        for label, needle in FRAMES.items():
            if needle in frames:
                totals[label] += int(n)
    return {k: totals[k] / RATE_HZ * 1000 / steps for k in ("all samples", *FRAMES)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    p.add_argument("--arm", choices=("orch", "raw"), default="orch")
    p.add_argument("--shape", choices=("linear", "order", "map", "fan"), default="order")
    p.add_argument("--seconds", type=int, default=30)
    p.add_argument("--out", type=Path, default=Path("/tmp"), help="directory for py-spy's file")
    args = p.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("py-spy not found: pip install py-spy", file=sys.stderr)
        return 2
    out = args.out / f"bench-profile-{args.arm}-{args.shape}.txt"
    stack = Stack().start()
    try:
        b = Bench(stack, FULL, 1, Report("profile", 1), Progress())
        worker = Worker(args.arm, "prefork", FULL.prefork_concurrency, stack.url).start()
        stack.workers.append(worker)
        worker.wait_ready(b.coord.app)
        batch = _loop(b, args.arm, args.shape)
        batch()  # warm-up: pool children import, caches fill
        rec = subprocess.Popen([spy, "record", "--pid", str(worker.proc.pid), "--subprocesses",
                                "--rate", str(RATE_HZ), "--duration", str(args.seconds),
                                "--format", "raw", "--nonblocking", "-o", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        steps, t0 = 0, time.monotonic()
        while rec.poll() is None:
            steps += batch()
        wall = time.monotonic() - t0
    finally:
        stack.close()
    if rec.returncode != 0 or not out.exists():
        print(f"py-spy failed (exit {rec.returncode}); it needs ptrace rights", file=sys.stderr)
        return 1
    print(f"{args.arm} {args.shape}: {steps} steps in {wall:.1f} s = "
          f"{wall * 1000 / steps:.2f} ms of wall time per step; samples in {out}")
    for label, ms in summarize(out, steps).items():
        print(f"  {ms:7.2f} ms/step  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
