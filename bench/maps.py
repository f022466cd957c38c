"""Workload 7: a map step of n no-op items against a raw Celery ``chord`` of n no-op
tasks (the same tasks by hand), steps per second; and the largest message either
publishes, at two sizes.

Throughput: ours submits a run whose one map step maps over the input's list of n
numbers (the map step's task expands it: items stored in one script call, their tasks
published through one producer; each item's end is one script call, the last one ends
the map and the run); raw applies ``chord([noop] * n, join)``.  Steps/s = n / (finish -
submit) for both, finish being the run's ``ended_at`` or the join's stamp.

Sizes: with no worker consuming, ours publishes what the coordinator publishes for the
run (the map step's task) and what the map step's task publishes (every item's task,
through the same function the worker uses, :func:`orchestrator.runtime.maps.
publish_items`); raw applies the chord.  The messages stay in their queues: their sizes
are the list elements' lengths.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from bench import flows, raw
from bench.harness import Bench
from bench.report import Row, median, ratios, spread, verdict
from bench.scale import IDLE_QUEUE, RAW_IDLE_QUEUE, _kib, _published
from orchestrator.runtime import maps as map_steps
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.settings import Settings


def _input(n: int) -> dict[str, Any]:
    return {"items": list(range(n))}


def _map_ours(b: Bench, n: int) -> float:
    wf = b.workflow(("map",), lambda: flows.mapped(n))
    data = _input(n)
    t0 = time.time()
    rid = b.coord.submit(wf, data)
    run = b.wait_runs([rid], interval_s=0.1)[rid]
    assert run.ended_at is not None
    return n / (run.ended_at - t0)


def _map_raw(b: Bench, n: int) -> float:
    t0 = time.time()
    res = raw.fan_out_in(b.raw_app, n).apply_async()
    end = b.wait_results([res.id], interval_s=0.1)[res.id]
    return n / (float(end) - t0)


def run_map(b: Bench) -> None:
    """Workload 7, throughput (workers running)."""
    n = b.sizes.map_items
    ours, rawv = b.alternate("7. map", lambda w: _map_ours(b, b.size(n, w)),
                             lambda w: _map_raw(b, b.size(n, w)),
                             lambda x: f"{x:.0f} steps/s")
    rs = ratios(ours, rawv)
    b.report.add(Row(f"7. map: one map step of {n:,} no-op items vs raw `chord` of {n:,} "
                     "no-op tasks + join, steps/s", spread(ours, "{:.0f}"),
                     spread(rawv, "{:.0f}"), spread(rs), "≥ 0.9",
                     verdict(median(rs) >= 0.9)))
    b.report.notes.append(
        "7: steps/s = items / (finish - submit).  Ours runs n + 1 tasks (the map step's "
        "own, which evaluates `over` and publishes the items, then the items; the last "
        "item's script call ends the map and the run); raw runs n + 1 (the header tasks, "
        "the join).  The client publishes raw's n header messages; ours are published by "
        "the worker that runs the map step's task.")


def _sizes_ours(b: Bench, coord: Coordinator, rb: redis.Redis, n: int) -> tuple[int, int]:
    wf = b.workflow(("map",), lambda: flows.mapped(n))
    rid = coord.submit(wf, _input(n))  # publishes the map step's task
    d = coord.definitions.compile(wf)
    map_steps.publish_items(coord.progress, d, rid, wf.step_map["each"], range(n))
    msgs, big, _ = _published(rb, IDLE_QUEUE)
    coord.cancel(rid)  # its messages are gone: else the reaper replays it as stalled
    return msgs, big


def _sizes_raw(b: Bench, rb: redis.Redis, n: int) -> tuple[int, int]:
    sig = raw.fan_out_in(b.raw_app, n)
    for task in sig.tasks:
        task.set(queue=RAW_IDLE_QUEUE)
    sig.body.set(queue=RAW_IDLE_QUEUE)
    sig.apply_async()
    msgs, big, _ = _published(rb, RAW_IDLE_QUEUE)
    return msgs, big


def run_map_sizes(b: Bench) -> None:
    """Workload 7, the largest message at two sizes (no worker running)."""
    settings = Settings(redis_url=b.stack.url, workflow_packages=b.settings.workflow_packages,
                        default_queue=IDLE_QUEUE)
    coord = Coordinator(settings, b.catalog)
    rb = redis.Redis.from_url(b.stack.url)  # bytes: message sizes in bytes
    small, large = b.sizes.map_size_items
    got = {n: (_sizes_ours(b, coord, rb, n), _sizes_raw(b, rb, n)) for n in (small, large)}
    (om1, o1), (rm1, r1) = got[small]
    (om2, o2), (rm2, r2) = got[large]
    b.progress(f"7. map, largest message: ours {o1} B ({om1} msgs) at {small:,} items, "
               f"{o2} B ({om2} msgs) at {large:,} | raw {r1} B ({rm1} msgs) → {r2} B "
               f"({rm2} msgs)")
    b.report.add(Row(f"7. map, largest message: {small:,} → {large:,} items",
                     f"{_kib(o1)} → {_kib(o2)}", f"{_kib(r1)} → {_kib(r2)}",
                     f"{o2 / r2:.2f} at {large:,}", "constant (≤ +5 %)",
                     verdict(o2 <= o1 * 1.05)))
    rb.close()

