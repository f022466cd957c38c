"""``python -m bench.apart``: the broker on a Redis of its own against one Redis for
everything, with raw Celery in the same run.

Two private ``redis-server`` s, S and B. Three arms, each with its own prefork worker
(``-c 2``) running all along, taking turns round by round:

* **shared**: ours, broker and store on S (the default deployment);
* **apart**: ours, store on S and broker on B (``ORCH_BROKER_URL``), another key prefix;
* **raw**: raw Celery ``chain`` s on S (broker and result backend);
* **cluster** (with ``--cluster``): ours, the store on a three-master Redis Cluster C
  (``ORCH_REDIS_CLUSTER``: every key under one hash tag, so on the one master that serves
  its slot) and the broker (with Celery's result backend) on B.

A round submits ``--lines`` lines of ``--steps`` no-op steps at once and waits for the
last to end. Per arm: step runs per second (all steps / (last end - submit)), each
Redis's main-thread CPU per step (``INFO cpu``, over the round), and the arm's worker's
CPU per step (its main process and pool processes, from ``/proc``). A Redis core is what
saturates first (``docs/scaling.md``, Capacity), so the busiest server's CPU per step
says how many steps per second one deployment's Redis can carry: 1e6 / that µs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench import flows, raw
from bench.stack import Worker, server_cpu_usec, stop_workers
from orchestrator.dev.localcluster import RedisCluster
from orchestrator.dev.localredis import RedisServer
from orchestrator.runtime.catalog import discover
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.settings import Settings

ARMS = ("shared", "apart", "raw")
CLUSTER_ARM = "cluster"
APART_PREFIX = "orchb"
CLUSTER_PREFIX = "orchc"


@dataclass
class Figures:
    rate: list[float] = field(default_factory=list)
    """Step runs per second, per round."""
    s_cpu: list[float] = field(default_factory=list)
    """S's CPU µs per step, per round."""
    b_cpu: list[float] = field(default_factory=list)
    """B's CPU µs per step, per round."""
    w_cpu: list[float] = field(default_factory=list)
    """The arm's worker's CPU µs per step (main process and pool), per round."""


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.apart",
                                description=__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--lines", type=int, default=4, help="lines submitted at once per round")
    p.add_argument("--steps", type=int, default=150, help="steps per line")
    p.add_argument("--cluster", action="store_true",
                   help="a fourth arm: the store on a three-master Redis Cluster")
    return p.parse_args(argv)


def process_cpu_usec(pids: Sequence[int]) -> int:
    """User + system CPU of the processes ``pids`` so far, in µs (``/proc/<pid>/stat``)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    return round(total * 1e6 / tick)


def _wait(check: Callable[[], bool], timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit("a round did not end in time")
        time.sleep(0.01)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    n = args.steps
    arms = ARMS + ((CLUSTER_ARM,) if args.cluster else ())
    with RedisServer(extra_args=("--maxmemory-policy", "noeviction")) as s_srv, \
            RedisServer(extra_args=("--maxmemory-policy", "noeviction")) as b_srv, \
            (RedisCluster() if args.cluster else nullcontext()) as c_srv:
        s_r = redis.Redis.from_url(s_srv.url, decode_responses=True)
        b_r = redis.Redis.from_url(b_srv.url, decode_responses=True)
        c_rs = ([redis.Redis.from_url(u, decode_responses=True) for u in c_srv.urls]
                if c_srv is not None else [])
        packages = ("workflows", "bench.flows", "bench.chaos_steps")
        shared = Settings(redis_url=s_srv.url, workflow_packages=packages,
                          default_queue="default")
        apart = Settings(redis_url=s_srv.url, broker_url=b_srv.url, key_prefix=APART_PREFIX,
                         workflow_packages=packages, default_queue="default")
        coords = {"shared": Coordinator(shared, discover(packages)),
                  "apart": Coordinator(apart, discover(packages))}
        raw_app = raw.create_app(shared)
        workers = [Worker("orch", "prefork", 2, s_srv.url, tag="-shared"),
                   Worker("orch", "prefork", 2, s_srv.url, tag="-apart",
                          env={"ORCH_BROKER_URL": b_srv.url,
                               "ORCH_KEY_PREFIX": APART_PREFIX}),
                   Worker("raw", "prefork", 2, s_srv.url)]
        if c_srv is not None:  # the broker on B, a queue of its own
            on_cluster = Settings(redis_url=c_srv.urls[0], redis_cluster=True,
                                  broker_url=b_srv.url, key_prefix=CLUSTER_PREFIX,
                                  workflow_packages=packages, default_queue="clustered")
            coords[CLUSTER_ARM] = Coordinator(on_cluster, discover(packages))
            workers.append(Worker("orch", "prefork", 2, c_srv.urls[0], tag="-cluster",
                                  queue="clustered",
                                  env={"ORCH_BROKER_URL": b_srv.url,
                                       "ORCH_REDIS_CLUSTER": "true",
                                       "ORCH_DEFAULT_QUEUE": "clustered",
                                       "ORCH_KEY_PREFIX": CLUSTER_PREFIX}))
        try:
            for w in workers:
                w.start()
            workers[0].wait_ready(coords["shared"].app)
            workers[1].wait_ready(coords["apart"].app)
            workers[2].wait_ready(raw_app)
            if c_srv is not None:
                workers[3].wait_ready(coords[CLUSTER_ARM].app)
            wf = flows.linear(n, name="bench_apart")

            def ours(arm: str) -> float:
                c = coords[arm]
                t0 = time.time()
                ids = [c.submit(wf) for _ in range(args.lines)]
                _wait(lambda: all(c.store.run(r).status.terminal for r in ids))
                runs = [c.store.run(r) for r in ids]
                bad = [r.run_id for r in runs if r.status.value != "succeeded"]
                if bad:
                    raise SystemExit(f"{arm}: runs did not succeed: {bad}")
                return max(float(r.ended_at or 0) for r in runs) - t0

            def rawc() -> float:
                t0 = time.time()
                res = [raw.linear(raw_app, n).apply_async() for _ in range(args.lines)]
                keys = raw.result_keys(raw_app, [x.id for x in res])
                _wait(lambda: all(v is not None for v in s_r.mget(keys)))
                return max(float(x.get(timeout=10)) for x in res) - t0

            run = {"shared": lambda: ours("shared"), "apart": lambda: ours("apart"),
                   "raw": rawc, CLUSTER_ARM: lambda: ours(CLUSTER_ARM)}
            figs = {a: Figures() for a in arms}
            steps = n * args.lines
            for a in arms:  # warm-up, discarded
                run[a]()
            by_arm = dict(zip(arms, workers, strict=True))

            def store_cpu_usec(arm: str) -> list[int]:
                """S's CPU; for the cluster arm, each master's (the busiest is the
                store's)."""
                return [server_cpu_usec(c) for c in (c_rs if arm == CLUSTER_ARM else [s_r])]

            for i in range(args.rounds):
                order = arms if i % 2 == 0 else tuple(reversed(arms))
                for a in order:
                    pids = by_arm[a].pids()
                    s0, b0 = store_cpu_usec(a), server_cpu_usec(b_r)
                    w0 = process_cpu_usec(pids)
                    wall = run[a]()
                    s1, b1 = store_cpu_usec(a), server_cpu_usec(b_r)
                    w1 = process_cpu_usec(pids)
                    f = figs[a]
                    f.rate.append(steps / wall)
                    f.s_cpu.append(max(y - x for x, y in zip(s0, s1, strict=True)) / steps)
                    f.b_cpu.append((b1 - b0) / steps)
                    f.w_cpu.append((w1 - w0) / steps)
                print(f"round {i + 1}/{args.rounds}: " + " | ".join(
                    f"{a} {figs[a].rate[-1]:.0f} steps/s, S {figs[a].s_cpu[-1]:.0f} µs, "
                    f"B {figs[a].b_cpu[-1]:.0f} µs" for a in arms), flush=True)
        finally:
            stop_workers(workers)
    med = statistics.median
    print(f"\n{args.rounds} rounds of {args.lines} lines x {n} no-op steps, medians "
          "(range):\n")
    print("| arm | step runs/s | Redis S CPU µs/step (cluster: busiest master) | Redis B "
          "CPU µs/step | busiest Redis µs/step | steps/s one busiest core carries | worker "
          "CPU µs/step |")
    print("|---|---|---|---|---|---|---|")
    cap = {}
    for a in arms:
        f = figs[a]
        busiest = [max(x, y) for x, y in zip(f.s_cpu, f.b_cpu, strict=True)]
        cap[a] = 1e6 / med(busiest)
        print(f"| {a} | {med(f.rate):.0f} ({min(f.rate):.0f}-{max(f.rate):.0f}) | "
              f"{med(f.s_cpu):.0f} | {med(f.b_cpu):.0f} | {med(busiest):.0f} | "
              f"{cap[a]:,.0f} | {med(f.w_cpu):.0f} |")
    print(f"\ncapacity of one deployment's Redis: apart {cap['apart'] / cap['shared']:.2f}x "
          f"shared; shared {cap['shared'] / cap['raw']:.2f}x and apart "
          f"{cap['apart'] / cap['raw']:.2f}x raw Celery's on one Redis")
    if CLUSTER_ARM in cap:
        print(f"store on a cluster: {cap[CLUSTER_ARM] / cap['apart']:.2f}x apart's capacity "
              f"(one hash tag: the store on one master), step runs/s "
              f"{med(figs[CLUSTER_ARM].rate) / med(figs['apart'].rate):.2f}x apart's")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
