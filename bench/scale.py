"""Workloads 5 and 6: large workflows (validate, compile, dispatch) and memory.

Workload 5 submits with no worker consuming: every message stays in its queue, so the
queue list's elements are the published messages, measured then purged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import cycle
from typing import Any

import redis

from bench import flows, raw
from bench.harness import Bench, BenchError
from bench.report import Row, median, ratios, spread, verdict
from bench.stack import ORCH_QUEUE, Worker, purge
from bench.workloads import Batch, batches
from orchestrator.core.compiler import compile_workflow
from orchestrator.core.models import WorkflowDef
from orchestrator.core.validation import check
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.settings import Settings

IDLE_QUEUE = "bench_idle"
RAW_IDLE_QUEUE = "bench_raw_idle"
SHAPES = {"layered DAG": flows.layered_data, "line": flows.linear_data}


@dataclass
class Dispatch:
    """One submission of a large workflow, and what it published."""

    seconds: float
    messages: int
    largest: int
    total_bytes: int
    parts: dict[str, float]


def _published(r: redis.Redis, queue: str) -> tuple[int, int, int]:
    """(messages, largest, total bytes) in ``queue``; then purge it."""
    sizes = [len(m) for m in r.lrange(queue, 0, -1)]
    purge(r, [queue])
    return len(sizes), max(sizes, default=0), sum(sizes)


def _dispatch_ours(b: Bench, coord: Coordinator, rb: redis.Redis, data: dict[str, Any]
                   ) -> Dispatch:
    t0 = time.perf_counter()
    wf = WorkflowDef.model_validate(data)
    check(wf, b.catalog.registry)
    t1 = time.perf_counter()
    compile_workflow(wf, max_unit_tasks=b.settings.max_unit_tasks)  # alone, for the note
    t2 = time.perf_counter()
    rid = coord.submit(wf)  # compiles again (a new version), stores, publishes
    t3 = time.perf_counter()
    n, big, total = _published(rb, IDLE_QUEUE)
    # its messages are gone: else the reaper replays it as stalled a minute later, into the
    # workers' queue (its steps name none), where it ran under workloads 1 to 3
    coord.cancel(rid)
    return Dispatch((t1 - t0) + (t3 - t2), n, big, total,
                    {"validate": t1 - t0, "compile": t2 - t1, "submit": t3 - t2})


def _dispatch_raw(b: Bench, rb: redis.Redis, shape: str, data: dict[str, Any]) -> Dispatch:
    t0 = time.perf_counter()
    if shape == "line":
        sig = raw.linear(b.raw_app, len(data["steps"]), RAW_IDLE_QUEUE)
    else:
        parents = {s["id"]: tuple(s["after"]) for s in data["steps"]}
        dag = flows.RandomDag(0, parents, dict.fromkeys(parents, 0))
        sig = raw.level_by_level(b.raw_app, dag.levels(), dag.sleep_ms, "idle", RAW_IDLE_QUEUE)
    sig.apply_async()
    t1 = time.perf_counter()
    n, big, total = _published(rb, RAW_IDLE_QUEUE)
    return Dispatch(t1 - t0, n, big, total, {})


def _kib(n: float) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.1f} MiB"


def run_dispatch(b: Bench) -> None:
    """Workload 5: validate + compile + dispatch of large workflows."""
    settings = Settings(redis_url=b.stack.url, workflow_packages=b.settings.workflow_packages,
                        default_queue=IDLE_QUEUE)
    coord = Coordinator(settings, b.catalog)
    rb = redis.Redis.from_url(b.stack.url)  # bytes: message sizes in bytes
    small, large = b.sizes.compile_steps
    seed = [0]
    res: dict[tuple[str, int], tuple[list[Dispatch], list[Dispatch]]] = {}
    for shape, make in SHAPES.items():
        for n in (small, large):
            def ours(warm: bool, make: Any = make, n: int = n) -> Dispatch:
                seed[0] += 1
                return _dispatch_ours(b, coord, rb, make(b.size(n, warm, 20), seed[0]))

            def rawarm(warm: bool, make: Any = make, n: int = n, shape: str = shape
                       ) -> Dispatch:
                return _dispatch_raw(b, rb, shape, make(b.size(n, warm, 20), seed[0]))

            res[(shape, n)] = b.alternate(
                f"5. dispatch {shape} {n}", ours, rawarm,
                lambda x: f"{x.seconds:.3f} s, {x.messages} msg, largest {_kib(x.largest)}")
    notes = []
    for (shape, n), (o, r) in res.items():
        so, sr = [x.seconds for x in o], [x.seconds for x in r]
        goal = "< 1 s" if n >= 10_000 else "—"
        met = verdict(median(so) < 1.0) if n >= 10_000 else "—"
        b.report.add(Row(f"5. validate + compile + dispatch, {shape} of {n:,} steps, s",
                         spread(so, "{:.3f}"), spread(sr, "{:.3f}") + " (publish only)",
                         spread(ratios(so, sr)), goal, met))
        parts = {k: median([x.parts[k] for x in o]) for k in o[0].parts}
        notes.append(f"{shape} {n:,}: validate {parts['validate']:.3f} s, compile alone "
                     f"{parts['compile']:.3f} s, submit (compile + store + publish) "
                     f"{parts['submit']:.3f} s; {o[-1].messages} messages, "
                     f"{_kib(o[-1].total_bytes)} in all (raw: {r[-1].messages}, "
                     f"{_kib(r[-1].total_bytes)})")
    for shape in SHAPES:
        o1, r1 = res[(shape, small)]
        o2, r2 = res[(shape, large)]
        a, z = max(x.largest for x in o1), max(x.largest for x in o2)
        ra, rz = max(x.largest for x in r1), max(x.largest for x in r2)
        b.report.add(Row(f"5. largest message, {shape}: {small:,} → {large:,} steps",
                         f"{_kib(a)} → {_kib(z)}", f"{_kib(ra)} → {_kib(rz)}",
                         f"{z / rz:.4f} at {large:,}", "no growth (≤ +5 %)",
                         verdict(z <= a * 1.05)))
    b.report.notes.append(
        "5: no worker consumes the queue: the messages stay in the Redis list and their "
        "sizes are the list elements' lengths (then the list is deleted).  Ours: "
        "`WorkflowDef.model_validate(json)` + `check()` + `Coordinator.submit` of a new "
        "version (compile, store definition and plan, create the run, publish the source "
        "units).  Raw: building the same workflow as a canvas (`chain` for the line, a "
        "level-by-level chain of chords for the DAG) and `apply_async`.  Layered DAG: "
        "layers of 10, 3 random parents each in the layer above (~3 edges per step).  "
        + "; ".join(notes) + ".")
    rb.close()


# --- 6. memory ------------------------------------------------------------------------------


def _rss_load(b: Bench, worker: Worker, budget: float
              ) -> tuple[list[tuple[int, int, int]], float]:
    """Run step after step through ours, sampling the worker tree's RSS every 2 s.

    The load mixes line workflows (100 steps, two counter-joined units) and order-shaped
    runs (nested chords), keeping up to 12 runs in flight.
    """
    kinds = cycle([("line", 100)] + [("order", 9)] * 10)
    wfs = {"line": b.workflow(("linear", 100), lambda: flows.linear(100)),
           "order": b.workflow(("order",), flows.order_shape)}
    target = b.sizes.rss_steps
    inflight: dict[str, int] = {}
    submitted = done = 0
    samples = [(0, *worker.rss_split())]
    start = time.monotonic()
    next_sample = start + 2.0
    last_note = start
    while True:
        in_time = time.monotonic() - start < budget
        while in_time and submitted < target and len(inflight) < 12:
            kind, steps = next(kinds)
            inflight[b.coord.submit(wfs[kind])] = steps
            submitted += steps
        if not inflight:
            break
        ids = list(inflight)
        p = b.r.pipeline(transaction=False)
        for rid in ids:
            p.hget(b.coord.store.keys.run(rid), "status")
        for rid, status in zip(ids, p.execute(), strict=True):
            if status in ("failed", "cancelled"):
                raise BenchError(f"run {rid} ended {status} during the RSS workload")
            if status == "succeeded":
                done += inflight.pop(rid)
        now = time.monotonic()
        if now >= next_sample:
            samples.append((done, *worker.rss_split()))
            next_sample = now + 2.0
        if now - last_note > 15:
            tree = samples[-1][1] + samples[-1][2]
            b.progress(f"6. RSS: {done} steps, worker tree {tree / 2**20:.1f} MiB")
            last_note = now
        time.sleep(0.05)
    samples.append((done, *worker.rss_split()))
    return samples, time.monotonic() - start


def run_memory(b: Bench, orch_worker: Worker, deadline: float = float("inf")) -> None:
    """Workload 6: Redis bytes per finished run; worker RSS over many steps.

    The RSS load runs until ``rss_steps`` steps are done, ``rss_budget_s`` has passed, or
    the ``deadline`` (``time.monotonic()``) nears: it is the workload that fills the time
    the whole benchmark may take.
    """
    got: Any = b.shared.get("batches")
    if got is None:
        got = batches(b, b.sizes.memory_runs, "6. memory batch", rounds=1)
    ours_b: list[Batch] = got[0]
    raw_b: list[Batch] = got[1]
    mo = [x.mem_per_run for x in ours_b]
    mr = [x.mem_per_run for x in raw_b]
    b.report.add(Row("6. Redis bytes per finished order-shaped run (before retention "
                     "expiry)", spread(mo, "{:.0f}"), spread(mr, "{:.0f}"),
                     spread(ratios(mo, mr))))
    breakdown = _run_footprint(b)
    # keep ~25 s for the runs in flight, the report and stopping the workers
    budget = max(10.0, min(b.sizes.rss_budget_s, deadline - time.monotonic() - 25.0))
    samples, took = _rss_load(b, orch_worker, budget)
    final = samples[-1][0]
    first = next((s for s in samples if s[0] >= max(1, final // 20)), samples[-1])
    last = samples[-1]
    tree0, tree1 = first[1] + first[2], last[1] + last[2]
    growth = tree1 / tree0 - 1 if tree0 else float("nan")
    per_k = (tree1 - tree0) / max(1, last[0] - first[0]) * 1000 / 2**10
    b.report.add(Row(f"6. worker RSS (prefork -c {b.sizes.prefork_concurrency}, whole tree), "
                     f"first → last sample over {final:,} steps",
                     f"{tree0 / 2**20:.1f} MiB @ {first[0]:,} → {tree1 / 2**20:.1f} "
                     f"MiB @ {last[0]:,} ({growth:+.1%}, {per_k:+.0f} KiB per 1,000 steps)",
                     "—", "—", "flat (≤ +10 %)", verdict(growth <= 0.10)))
    peak = max(s[1] + s[2] for s in samples)
    b.report.notes.append(
        "6: Redis bytes per run = `INFO memory` used_memory after - before a batch of "
        "workload 3 (queues drained, nothing unacked), / runs.  " + breakdown + "  RSS = "
        "sum of VmRSS of the worker's main process and pool children, sampled every 2 s "
        f"while {final:,} steps ran ({final / took:.0f} steps/s, {took:.0f} s; target "
        f"{b.sizes.rss_steps:,} steps or {budget:.0f} s); peak "
        f"{peak / 2**20:.1f} MiB; the first sample counted is the first after 5 % of the "
        f"steps.  Main process {first[1] / 2**20:.1f} → {last[1] / 2**20:.1f} MiB, pool "
        f"children {first[2] / 2**20:.1f} → {last[2] / 2**20:.1f} MiB.")


def _run_footprint(b: Bench) -> str:
    """Where one finished order-shaped run's bytes are: run-store keys, Celery results."""
    wf = b.workflow(("order",), flows.order_shape)
    rid = b.coord.submit(wf)
    b.wait_runs([rid])
    keys = b.coord.store.keys
    sizes = {k.removeprefix(keys.run(rid)).lstrip(":") or "run": int(b.r.memory_usage(k) or 0)
             for k in keys.run_keys(rid)}
    task_ids = [s.task_id for s in b.coord.store.step_runs(rid).values() if s.task_id]
    meta = raw.result_keys(b.raw_app, task_ids)
    meta_bytes = sum(int(b.r.memory_usage(k) or 0) for k in meta)
    parts = ", ".join(f"{k} {v:,}" for k, v in sorted(sizes.items(), key=lambda kv: -kv[1]))
    return (f"One finished ours run holds {sum(sizes.values()):,} B in its run-store keys "
            f"(`MEMORY USAGE`: {parts}) plus {meta_bytes:,} B of Celery result keys for its "
            f"{len(task_ids)} step tasks (joins' results not counted).")


__all__ = ["IDLE_QUEUE", "ORCH_QUEUE", "run_dispatch", "run_memory"]
