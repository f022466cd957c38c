"""Validate-and-compile benchmark: ``python -m bench.compile``.

Workloads (deterministic seed): random layered DAGs of 1,000 and 10,000 steps with about
three parents per step, a 10,000-step linear chain and a 10,000-wide fan-out.  Validation
(:func:`orchestrator.core.validation.problems_of`, with a registry holding the dummy step
function) and compilation (:func:`orchestrator.core.compiler.compile_workflow`) are timed
separately, each the median of three runs; every run validates and then compiles a
freshly built model, as loading a workflow does.

Goal: a 10,000-step workflow validates and compiles in under 1 s in total.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.core.compiler import compile_workflow
from orchestrator.core.models import WorkflowDef
from orchestrator.core.plan import Plan, largest_message, task_count
from orchestrator.core.registry import Registry
from orchestrator.core.validation import problems_of
from orchestrator.dev.shapes import Deps, chain, layered, workflow

SEED = 20240601
FUNCTION = "bench.noop"
GOAL_S = 1.0


def noop() -> None:
    """The dummy step function every benchmark step calls."""


def layered_50x3(n: int) -> Deps:
    """Layers of 50 steps; each step has 3 parents in the two layers above (seed ``SEED``)."""
    return layered(random.Random(SEED), n, width=50, fan_in=3)


def fan_out(width: int) -> Deps:
    """One root, ``width`` steps after it, one sink after all of them."""
    deps: Deps = {"root": []}
    deps.update({f"w{i}": ["root"] for i in range(width)})
    deps["sink"] = [f"w{i}" for i in range(width)]
    return deps


def build(deps: Deps, name: str) -> WorkflowDef:
    """The workflow model of ``deps`` (every step calls the dummy function)."""
    return workflow(deps, name=name, function=FUNCTION)


@dataclass
class Row:
    workload: str
    steps: int
    edges: int
    validate_s: float
    compile_s: float
    plan: Plan

    @property
    def total_s(self) -> float:
        return self.validate_s + self.compile_s


def measure(name: str, deps: Deps, registry: Registry, repeat: int = 3) -> Row:
    """Time validation, then compilation, of one workload (median of ``repeat`` runs).

    Each run builds a fresh model and validates and then compiles it, as loading a
    workflow does: what validation caches on the model (its graph) is reused by the
    compiler, so ``total`` is the cost of a load; nothing carries over between runs.

    Raises:
        AssertionError: the workload is not a valid workflow (a benchmark bug).
    """
    wf_name = name.replace(" ", "_")
    validate_times: list[float] = []
    compile_times: list[float] = []
    plan: Plan | None = None
    for _ in range(repeat):
        wf = build(deps, wf_name)
        t0 = time.perf_counter()
        problems = problems_of(wf, registry)
        t1 = time.perf_counter()
        plan = compile_workflow(wf)
        t2 = time.perf_counter()
        assert problems == [], problems[:3]
        validate_times.append(t1 - t0)
        compile_times.append(t2 - t1)
    assert plan is not None
    edges = sum(len(ps) for ps in deps.values())
    return Row(name, len(deps), edges, statistics.median(validate_times),
               statistics.median(compile_times), plan)


WORKLOADS: dict[str, Callable[[], Deps]] = {
    "layered 1k": lambda: layered_50x3(1_000),
    "layered 10k": lambda: layered_50x3(10_000),
    "chain 10k": lambda: chain(10_000),
    "fan-out 10k": lambda: fan_out(10_000),
}


def table(rows: list[Row]) -> str:
    """The results as a Markdown table."""
    head = ("| workload | steps | edges | validate s | compile s | total s | units "
            "| counter edges | largest unit (tasks) | largest message (signatures) |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        largest = max(task_count(u.canvas) for u in r.plan.units)
        message = max(largest_message(u.canvas) for u in r.plan.units)
        lines.append(
            f"| {r.workload} | {r.steps:,} | {r.edges:,} | {r.validate_s:.3f} "
            f"| {r.compile_s:.3f} | {r.total_s:.3f} | {len(r.plan.units):,} "
            f"| {len(r.plan.edges):,} | {largest:,} | {message:,} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the workloads, print the table and the goal line; exit 1 if the goal is missed."""
    parser = argparse.ArgumentParser(prog="python -m bench.compile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement")
    parser.add_argument("--only", action="append", choices=sorted(WORKLOADS),
                        help="run only this workload (repeatable)")
    args = parser.parse_args(argv)

    registry = Registry()
    registry.register(FUNCTION, noop)
    rows = [measure(name, make(), registry, args.repeat)
            for name, make in WORKLOADS.items() if not args.only or name in args.only]
    print(table(rows))
    big = [r for r in rows if r.steps >= 10_000]
    worst = max(big, key=lambda r: r.total_s, default=None)
    if worst is None:
        return 0
    ok = worst.total_s < GOAL_S
    print(f"\ngoal: 10,000 steps validated and compiled in under {GOAL_S:.0f} s: "
          f"{'met' if ok else 'MISSED'} (slowest: {worst.workload}, {worst.total_s:.3f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
