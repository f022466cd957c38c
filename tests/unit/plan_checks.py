"""Helpers shared by the compiler tests: workflows from edge lists, canvases written
compactly (``chain(T("a"), chord(1, T("b"), T("c")))``), and the plan checker."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import networkx as nx

from orchestrator.core.compiler import MAX_UNIT_TASKS
from orchestrator.core.models import WorkflowDef
from orchestrator.core.plan import (
    CanvasNode,
    ChainNode,
    ChordNode,
    Plan,
    TaskNode,
    chord_depth,
    is_join,
    largest_message,
    unsafe_shapes,
    walk,
)
from orchestrator.dev import shapes

DUMMY_FUNCTION = "t.noop"


def workflow(deps: Mapping[str, Sequence[str]], name: str = "w") -> WorkflowDef:
    """A workflow whose step ``s`` runs after ``deps[s]`` (a dummy function everywhere)."""
    return shapes.workflow(deps, name=name, function=DUMMY_FUNCTION)


def T(step: str) -> TaskNode:
    """The task of step ``step``."""
    return TaskNode(id=step)


def chain(*items: CanvasNode) -> ChainNode:
    """``items`` one after the other."""
    return ChainNode(items=items)


def chord(join: int, *header: CanvasNode) -> ChordNode:
    """``header`` in parallel, then the compiler's ``join``-th join task, ``join:{join}``."""
    return ChordNode(header=header, join=f"join:{join}")


def closure(nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> dict[str, int]:
    """Everything each node reaches through one or more edges, as a bitset over ``nodes``.

    Raises:
        AssertionError: the edges contain a cycle.
    """
    g = nx.DiGraph()
    g.add_nodes_from(nodes)
    g.add_edges_from(edges)
    assert nx.is_directed_acyclic_graph(g), f"precedence has a cycle: {nx.find_cycle(g)}"
    bit = {n: 1 << i for i, n in enumerate(g.nodes)}
    reach: dict[str, int] = {}
    for n in reversed(list(nx.topological_sort(g))):
        acc = 0
        for c in g.successors(n):
            acc |= bit[c] | reach[c]
        reach[n] = acc
    return reach


def names(mask: int, nodes: Sequence[str]) -> list[str]:
    """The nodes in a bitset made by :func:`closure` over ``nodes``."""
    return [n for i, n in enumerate(nodes) if mask >> i & 1]


def dag_reach(wf: WorkflowDef) -> dict[str, int]:
    """The workflow's own order: what each step precedes (bitsets over its steps)."""
    deps = wf.dependencies()
    return closure(deps, ((p, s) for s, ps in deps.items() for p in ps))


def plan_reach(plan: Plan, steps: Sequence[str]) -> dict[str, int]:
    """The order the plan enforces: the transitive closure of ``plan.step_edges()``, as
    bitsets over ``steps``."""
    return closure(steps, plan.step_edges())


def check_plan(plan: Plan, wf: WorkflowDef, *, max_unit_tasks: int = MAX_UNIT_TASKS,
               max_chord_depth: int = 3, max_chord_width: int = 10**9) -> None:
    """Assert everything a plan promises.

    * every unit is a safe canvas (:func:`unsafe_shapes` finds nothing);
    * every step is in exactly one unit, exactly once, and ``Unit.steps`` says so;
    * every unit fits the budget: largest message, chord depth and chord width;
    * the unit graph has no self edge, no repeat and no cycle;
    * every counter edge is exact (all of ``u`` precedes all of ``v`` in the workflow);
    * the plan's precedence equals the workflow's reachability: no edge is lost and no
      false dependency is added.
    """
    step_ids = [s.id for s in wf.steps]
    assert plan.workflow == wf.name
    assert plan.version == wf.version

    seen: Counter[str] = Counter()
    joins: Counter[str] = Counter()
    for unit in plan.units:
        problems = unsafe_shapes(unit.canvas)
        assert not problems, f"unit {unit.id}: {problems}"
        in_canvas = [n.id for n in walk(unit.canvas)
                     if isinstance(n, TaskNode) and not is_join(n.id)]
        assert sorted(in_canvas) == sorted(unit.steps), unit.id
        seen.update(in_canvas)
        joins.update(n.join for n in walk(unit.canvas) if isinstance(n, ChordNode))
        assert all(not is_join(t.id) for t in walk(unit.canvas) if isinstance(t, TaskNode))
        assert largest_message(unit.canvas) <= max(max_unit_tasks, 2), \
            f"unit {unit.id} carries {largest_message(unit.canvas)} signatures"
        assert chord_depth(unit.canvas) <= max(max_chord_depth, 1), unit.id
        assert all(len(c.header) <= max(max_chord_width, 1) for c in walk(unit.canvas)
                   if isinstance(c, ChordNode)), f"unit {unit.id}: a chord is too wide"
    assert seen == Counter(step_ids), "a step is missing or appears twice"
    assert all(n == 1 for n in joins.values()), "a join id is used twice"
    assert len({u.id for u in plan.units}) == len(plan.units)

    unit_ids = {u.id for u in plan.units}
    assert len(set(plan.edges)) == len(plan.edges), "repeated counter edge"
    for a, b in plan.edges:
        assert a in unit_ids and b in unit_ids and a != b
    units = nx.DiGraph()
    units.add_nodes_from(unit_ids)
    units.add_edges_from(plan.edges)
    assert nx.is_directed_acyclic_graph(units)

    want = dag_reach(wf)
    bit = {s: 1 << i for i, s in enumerate(step_ids)}
    for a, b in plan.edges:
        for x in plan.unit_map[a].steps:
            for y in plan.unit_map[b].steps:
                assert want[x] & bit[y], f"counter edge {a}->{b} makes {y} wait for {x}"

    got = plan_reach(plan, step_ids)
    for s in step_ids:
        missing = want[s] & ~got[s]
        false = got[s] & ~want[s]
        assert not missing, f"plan lets {names(missing, step_ids)} start before {s!r} ends"
        assert not false, f"plan makes {names(false, step_ids)} wait for {s!r} (false dependency)"
