"""Property: for any DAG, the compiled plan enforces exactly the DAG's order.

For random DAGs of up to 200 steps (series-parallel ones, ones with "N" shapes, layered
ones and arbitrary ones), and budgets small enough to force segmentation:

* the transitive closure of ``Plan.step_edges()`` EQUALS the DAG's reachability: no
  missing edge (a step starting too early) and no false edge (lost parallelism);
* every step appears in exactly one unit, exactly once;
* no unit contains an unsafe canvas shape;
* every unit respects the message-size and chord-depth budget;
* the unit graph is acyclic.

:func:`tests.unit.plan_checks.check_plan` asserts all of these.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.core.compiler import compile_workflow
from orchestrator.dev.shapes import Deps, layered
from tests.unit.plan_checks import check_plan, workflow

MAX_STEPS = 200


def _sp(rng: random.Random, names: list[str], deps: Deps) -> tuple[list[str], list[str]]:
    """Build a random series-parallel DAG over ``names``; return its (sources, sinks)."""
    if len(names) == 1:
        deps[names[0]] = []
        return names, names
    cut = rng.randint(1, len(names) - 1)
    a_src, a_snk = _sp(rng, names[:cut], deps)
    b_src, b_snk = _sp(rng, names[cut:], deps)
    if rng.random() < 0.5:  # parallel
        return a_src + b_src, a_snk + b_snk
    for s in b_src:  # series: every sink of the first part before every source of the next
        deps[s] = deps[s] + a_snk
    return a_src, b_snk


def series_parallel(rng: random.Random, n: int, noise: float) -> Deps:
    """A random SP DAG, plus ``noise``: extra forward edges that create "N" shapes."""
    names = [f"s{i}" for i in range(n)]
    deps: Deps = {}
    _sp(rng, names, deps)
    order = _topological(deps)
    extra = int(noise * n)
    for _ in range(extra):
        i, j = sorted(rng.sample(range(n), 2)) if n > 1 else (0, 0)
        if i != j and order[i] not in deps[order[j]]:
            deps[order[j]] = [*deps[order[j]], order[i]]
    return deps


def arbitrary(rng: random.Random, n: int, p: float) -> Deps:
    """Each step depends on each earlier step with probability ``p``."""
    names = [f"s{i}" for i in range(n)]
    return {s: [names[j] for j in range(i) if rng.random() < p] for i, s in enumerate(names)}


def _topological(deps: Deps) -> list[str]:
    done: set[str] = set()
    order: list[str] = []

    def visit(n: str) -> None:
        stack = [(n, iter(deps[n]))]
        while stack:
            node, it = stack[-1]
            nxt = next((p for p in it if p not in done), None)
            if nxt is None:
                stack.pop()
                if node not in done:
                    done.add(node)
                    order.append(node)
            else:
                stack.append((nxt, iter(deps[nxt])))

    for n in deps:
        visit(n)
    return order


@st.composite
def drawn(draw: st.DrawFn) -> Deps:
    """A small DAG drawn edge by edge (shrinks to minimal counterexamples)."""
    n = draw(st.integers(1, 40))
    deps: Deps = {}
    for i in range(n):
        parents = draw(st.lists(st.integers(0, i - 1), max_size=3, unique=True)) if i else []
        deps[f"s{i}"] = [f"s{p}" for p in parents]
    return deps


@st.composite
def dags(draw: st.DrawFn) -> Deps:
    kind = draw(st.sampled_from(["sp", "sp_noise", "layered", "arbitrary", "drawn"]))
    if kind == "drawn":
        deps = draw(drawn())
    else:
        rng = random.Random(draw(st.integers(0, 2**32 - 1)))
        n = draw(st.integers(1, MAX_STEPS))
        if kind == "sp":
            deps = series_parallel(rng, n, 0.0)
        elif kind == "sp_noise":
            deps = series_parallel(rng, n, draw(st.floats(0.01, 0.2)))
        elif kind == "layered":
            deps = layered(rng, n, draw(st.integers(1, 12)), draw(st.integers(1, 3)))
        else:
            deps = arbitrary(rng, n, draw(st.floats(0.0, 8 / max(n, 1))))
    if draw(st.booleans()):  # declaration order must not matter
        keys = list(deps)
        random.Random(draw(st.integers(0, 2**16))).shuffle(keys)
        deps = {k: deps[k] for k in keys}
    return deps


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    deps=dags(),
    max_unit_tasks=st.integers(3, 20) | st.just(100),
    max_chord_depth=st.integers(1, 4),
    max_chord_width=st.integers(1, 4) | st.just(16),
)
def test_plan_is_exact_safe_and_bounded(deps: Deps, max_unit_tasks: int,
                                        max_chord_depth: int, max_chord_width: int) -> None:
    wf = workflow(deps)  # no validation: the dummy function is not registered anywhere
    plan = compile_workflow(wf, max_unit_tasks=max_unit_tasks,
                            max_chord_depth=max_chord_depth, max_chord_width=max_chord_width)
    check_plan(plan, wf, max_unit_tasks=max_unit_tasks, max_chord_depth=max_chord_depth,
               max_chord_width=max_chord_width)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deps=dags())
def test_series_parallel_dags_need_no_counters_within_budget(deps: Deps) -> None:
    """Without segmentation pressure, an N-free DAG compiles to canvases alone."""
    from orchestrator.core.compiler import Region, decompose
    from orchestrator.core.dag import Graph

    wf = workflow(deps)
    graph = Graph.from_deps(wf.dependencies())
    tree = decompose(graph)

    def has_region(node: object) -> bool:
        if isinstance(node, Region):
            return True
        return any(has_region(p) for p in getattr(node, "parts", ()))

    plan = compile_workflow(wf, max_unit_tasks=10**9, max_chord_depth=10**9,
                            max_chord_width=10**9)
    check_plan(plan, wf, max_unit_tasks=10**9, max_chord_depth=10**9)
    if not has_region(tree):
        assert len(plan.units) == 1 and plan.edges == ()
