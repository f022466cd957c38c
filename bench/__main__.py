"""``python -m bench``: the orchestrator against hand-written Celery, on a private stack.

Starts its own ``redis-server`` and, per phase, one worker for each arm with the same pool
and concurrency; runs each workload through the orchestrator and as raw Celery, in
alternating rounds; prints the table and writes it (full runs) to ``docs/benchmarks.md``.

Workloads: 1 linear workflow (ms per hop; Redis commands per step; AOF everysec),
2 fan-out/fan-in (steps/s), 3 concurrent small runs (runs/s, latency), 4 random non
series-parallel DAGs (makespan / critical path), 5 validate + compile + dispatch of large
workflows (seconds, largest message), 6 memory (Redis bytes per run, worker RSS), 7 a
map step of 10,000 items vs a raw chord (steps/s; largest message at 1,000 and 10,000).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import dyrygent
from bench import report as rep
from bench.harness import Bench, BenchError
from bench.maps import run_map, run_map_sizes
from bench.scale import run_dispatch, run_memory
from bench.sizes import FULL, PRESETS, Sizes
from bench.stack import Stack
from bench.workloads import run_concurrent, run_dags, run_fan, run_linear

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
WORKLOADS = (1, 2, 3, 4, 5, 6, 7)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="much smaller sizes (~2 min)")
    size.add_argument("--smoke", action="store_true",
                      help="tiny sizes, one round: checks that every workload completes")
    p.add_argument("--only", action="append", default=[], metavar="N",
                   help="run only workload N (repeatable, or comma-separated: 1,3)")
    p.add_argument("--repeat", type=int, default=3, metavar="K",
                   help="alternating rounds after the discarded warm-up (default 3)")
    p.add_argument("--rss-steps", type=int, help="steps of the RSS workload (default: "
                   "100,000 in full runs)")
    p.add_argument("--rss-budget-s", type=float, help="stop the RSS workload after this many "
                   "seconds even if the steps are not all done (0: no limit)")
    p.add_argument("--time-limit-s", type=float, default=570.0, help="the RSS workload, "
                   "which runs last, stops in time for the whole run to end within this "
                   "(default 570 s)")
    p.add_argument("--output", type=Path, help="write the Markdown report here (default: "
                   f"{DOCS.relative_to(DOCS.parent.parent)} for a full run of every "
                   "workload, nowhere otherwise)")
    p.add_argument("--no-write", action="store_true", help="print only, write no file")
    p.add_argument("--peers", action="append", default=[], metavar="NAME",
                   help="also run workloads 1 and 2 against a Celery DAG peer, in rounds of "
                   "their own (repeatable or comma-separated): dyrygent (celery-dyrygent, "
                   "its default ticks), dyrygent-1s (its shortest ticks); needs the bench "
                   "extra")
    return p.parse_args(argv)


def _selected(only: list[str]) -> list[int]:
    if not only:
        return list(WORKLOADS)
    picked = {int(x) for item in only for x in item.split(",") if x.strip()}
    bad = picked - set(WORKLOADS)
    if bad:
        raise SystemExit(f"unknown workload(s) {sorted(bad)}; choose among {WORKLOADS}")
    return sorted(picked)


def _sizes(args: argparse.Namespace) -> Sizes:
    sizes = PRESETS["smoke"] if args.smoke else PRESETS["quick"] if args.quick else FULL
    if args.rss_steps is not None:
        sizes = dataclasses.replace(sizes, rss_steps=args.rss_steps)
    if args.rss_budget_s is not None:
        sizes = dataclasses.replace(sizes, rss_budget_s=args.rss_budget_s or float("inf"))
    return sizes


def _guarded(b: Bench, n: int, fn: Callable[[], None], failures: list[str]) -> None:
    """Run workload ``n``; a failure becomes a row and a non-zero exit, not an abort."""
    b.progress(f"workload {n}: start")
    try:
        fn()
        left = b.open_runs()
        if left:  # the reaper would replay them into the next workload's queues
            for rid in left:
                b.coord.cancel(rid)
            raise BenchError(f"workload {n} left {len(left)} run(s) open (cancelled now), "
                             f"e.g. {left[0]}")
    except Exception as exc:
        traceback.print_exc()
        failures.append(f"{n}")
        b.report.add(rep.Row(f"{n}. FAILED: {type(exc).__name__}: {exc}"[:300], "—", "—",
                             met="**no**"))


def _order(row: rep.Row) -> int:
    m = re.match(r"(\d+)", row.workload)
    return int(m.group(1)) if m else 99


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return 0 when every selected workload completed."""
    args = parse(argv)
    selected = _selected(args.only)
    sizes = _sizes(args)
    peers = dyrygent.parse_peers(args.peers)
    peer_workloads = [n for n in selected if n in (1, 2)] if peers else []
    if peer_workloads and (missing := dyrygent.available()):
        raise SystemExit(missing)
    report = rep.Report(sizes.name, args.repeat)
    progress = rep.Progress()
    failures: list[str] = []
    progress(f"sizes {sizes.name}, workloads {selected}, {args.repeat} rounds")
    deadline = time.monotonic() + args.time_limit_s
    stack = Stack().start()
    try:
        b = Bench(stack, sizes, args.repeat, report, progress)
        redis_version = str(b.r.info("server")["redis_version"])
        if 5 in selected:  # no worker running: nothing consumes the published messages
            _guarded(b, 5, lambda: run_dispatch(b), failures)
        if 7 in selected:  # no worker running: the messages stay in their queues
            _guarded(b, 7, lambda: run_map_sizes(b), failures)
        if 4 in selected:
            progress(f"starting threads -c {sizes.dag_threads} workers (both arms)")
            with stack.workers_for("threads", sizes.dag_threads, b.coord.app):
                _guarded(b, 4, lambda: run_dags(b), failures)
        if {1, 2, 3, 6, 7} & set(selected):
            progress(f"starting prefork -c {sizes.prefork_concurrency} workers (both arms)")
            with stack.workers_for("prefork", sizes.prefork_concurrency, b.coord.app) as (
                    orch_worker, _raw_worker):
                for n, fn in ((1, lambda: run_linear(b)), (2, lambda: run_fan(b)),
                              (3, lambda: run_concurrent(b)),
                              (6, lambda: run_memory(b, orch_worker, deadline)),
                              (7, lambda: run_map(b))):
                    if n in selected:
                        _guarded(b, n, fn, failures)
                    if n == 2 and peer_workloads:  # after 1 and 2, before 3 and 6
                        _guarded(b, peer_workloads[-1],
                                 lambda: dyrygent.run_peers(b, peers, peer_workloads),
                                 failures)
        report.rows.sort(key=_order)
        text = report.markdown(rep.machine(redis_version))
        print(report.table())
        full = sizes.name == FULL.name and selected == list(WORKLOADS)
        out = args.output or (DOCS if full else None)
        if out is not None and not args.no_write:
            rep.write(out, text)
            progress(f"wrote {out}")
    finally:
        stack.close()
    if failures:
        progress(f"FAILED workloads: {', '.join(failures)}")
        return 1
    progress("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
