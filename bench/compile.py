"""Validate-and-compile benchmark: ``python -m bench.compile``.

Workloads (deterministic): random layered DAGs (layers of 50 steps, three parents each in
the two layers above: a non-series-parallel region), a linear chain (``line``), one
fan-out ``wide`` (root, N parallel steps, sink) at 10,000 and 50,000 steps, and diamonds
nested 1,000 and 10,000 levels deep (3,002 and 30,002 steps; a decomposition tree 2,000
and 20,000 levels deep).

Each run builds a fresh model (as loading a workflow does), then validates it
(:func:`orchestrator.core.validation.problems_of`, with a registry holding the dummy
step function) and compiles it (:func:`orchestrator.core.compiler.compile_workflow`);
the three are timed separately, each the median of ``--repeat`` runs.  What validation
caches on the model (its graph) is reused by the compiler, so validate + compile is the
cost of a load once the definition is parsed; building the pydantic model is reported
beside it and not counted in the targets.

Targets (validate + compile): under 0.25 s for 10,000 steps, under 2 s for 50,000;
under 0.2 s for 1,000 nested levels, under 2 s for 10,000.  Each row prints PASS or
FAIL on wall-clock time; the exit status is 1 if any row fails.  The machine's load
average is printed, and validate + compile in CPU time beside the wall-clock figure:
on a shared machine the wall clock also counts other processes' turns.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.core.compiler import compile_workflow
from orchestrator.core.models import WorkflowDef
from orchestrator.core.plan import Plan, largest_message
from orchestrator.core.registry import Registry
from orchestrator.core.validation import problems_of
from orchestrator.dev.shapes import Deps, chain, fan_out, layered, nested_diamonds, workflow

SEED = 20240601
FUNCTION = "bench.noop"


def noop() -> None:
    """The dummy step function every benchmark step calls."""


def layered_50x3(n: int) -> Deps:
    """Layers of 50 steps; each step has 3 parents in the two layers above (seed ``SEED``)."""
    return layered(random.Random(SEED), n, width=50, fan_in=3)


def build(deps: Deps, name: str) -> WorkflowDef:
    """The workflow model of ``deps`` (every step calls the dummy function)."""
    return workflow(deps, name=name, function=FUNCTION)


@dataclass(frozen=True)
class Workload:
    make: Callable[[], Deps]
    target_s: float
    """Validate + compile must take less than this."""


WORKLOADS: dict[str, Workload] = {
    "layered 10k": Workload(lambda: layered_50x3(10_000), 0.25),
    "layered 50k": Workload(lambda: layered_50x3(50_000), 2.0),
    "line 10k": Workload(lambda: chain(10_000), 0.25),
    "line 50k": Workload(lambda: chain(50_000), 2.0),
    "wide 10k": Workload(lambda: fan_out(10_000 - 2), 0.25),
    "wide 50k": Workload(lambda: fan_out(50_000 - 2), 2.0),
    "nested 1k levels": Workload(lambda: nested_diamonds(1_000), 0.2),
    "nested 10k levels": Workload(lambda: nested_diamonds(10_000), 2.0),
}


@dataclass
class Row:
    workload: str
    steps: int
    edges: int
    model_s: float
    validate_s: float
    compile_s: float
    cpu_s: float
    """Validate + compile in CPU time (``time.process_time``): what a busy machine's
    other processes do not inflate."""
    target_s: float
    plan: Plan

    @property
    def total_s(self) -> float:
        """Validate + compile: what the target bounds."""
        return self.validate_s + self.compile_s

    @property
    def ok(self) -> bool:
        return self.total_s < self.target_s


def measure(name: str, work: Workload, registry: Registry, repeat: int = 3) -> Row:
    """Time building the model, validating it and compiling it (medians of ``repeat``).

    Raises:
        AssertionError: the workload is not a valid workflow (a benchmark bug).
    """
    deps = work.make()
    wf_name = name.replace(" ", "_")
    model_times: list[float] = []
    validate_times: list[float] = []
    compile_times: list[float] = []
    cpu_times: list[float] = []
    plan: Plan | None = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        wf = build(deps, wf_name)
        t1 = time.perf_counter()
        c1 = time.process_time()
        problems = problems_of(wf, registry)
        t2 = time.perf_counter()
        plan = compile_workflow(wf)
        t3 = time.perf_counter()
        c3 = time.process_time()
        assert problems == [], problems[:3]
        model_times.append(t1 - t0)
        validate_times.append(t2 - t1)
        compile_times.append(t3 - t2)
        cpu_times.append(c3 - c1)
    assert plan is not None
    edges = sum(len(ps) for ps in deps.values())
    return Row(name, len(deps), edges, statistics.median(model_times),
               statistics.median(validate_times), statistics.median(compile_times),
               statistics.median(cpu_times), work.target_s, plan)


def table(rows: list[Row]) -> str:
    """The results as a Markdown table."""
    head = ("| workload | steps | edges | model s | validate s | compile s "
            "| validate + compile s | target s | result | CPU s | units | counter edges "
            "| largest message (signatures) |")
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        message = max(largest_message(u.canvas) for u in r.plan.units)
        lines.append(
            f"| {r.workload} | {r.steps:,} | {r.edges:,} | {r.model_s:.3f} "
            f"| {r.validate_s:.3f} | {r.compile_s:.3f} | {r.total_s:.3f} "
            f"| < {r.target_s:g} | {'PASS' if r.ok else 'FAIL'} | {r.cpu_s:.3f} "
            f"| {len(r.plan.units):,} "
            f"| {len(r.plan.edges):,} | {message:,} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the workloads and print the table; exit 1 if any target is missed."""
    parser = argparse.ArgumentParser(prog="python -m bench.compile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement")
    parser.add_argument("--only", action="append", choices=sorted(WORKLOADS),
                        help="run only this workload (repeatable)")
    args = parser.parse_args(argv)

    registry = Registry()
    registry.register(FUNCTION, noop)
    load = os.getloadavg()[0]
    rows = [measure(name, work, registry, args.repeat)
            for name, work in WORKLOADS.items() if not args.only or name in args.only]
    print(table(rows))
    failed = [r.workload for r in rows if not r.ok]
    print(f"\nload average (1 min) before / after: {load:.2f} / {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} CPUs")
    print(f"targets: {len(rows) - len(failed)} of {len(rows)} met"
          + (f"; missed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
