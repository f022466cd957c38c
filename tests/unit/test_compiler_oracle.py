"""The compiler against its old self, and at depths the old one could not reach.

``tests/unit/compiler_oracle.py`` keeps the recursive compiler that issue 16 replaced.
For random DAGs (the property test's generators) the new decomposition tree and the new
plan must be *identical* to the oracle's: same units, same canvases, same join numbers,
same counter edges in the same order.  Deeply nested diamonds then compile with Python's
recursion limit held just above the test's own stack, so any recursion per level fails.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.core import compiler
from orchestrator.core.decomposition import Leaf, Parallel, Region, Series, SPNode
from orchestrator.core.plan import (
    chord_depth,
    largest_message,
    task_count,
    terminal,
    unsafe_shapes,
    walk,
)
from orchestrator.core.render import plan_tree
from orchestrator.dev import shapes
from tests.unit import compiler_oracle as oracle
from tests.unit.plan_checks import check_plan, workflow
from tests.unit.test_compiler_property import dags

Shape = int | tuple[object, ...]


def shape(tree: SPNode | oracle.SPNode) -> Shape:
    """A tree as nested tuples (the two modules have their own node classes)."""
    out: dict[int, Shape] = {}
    stack: list[tuple[SPNode | oracle.SPNode, bool]] = [(tree, False)]
    while stack:  # post-order, so that this helper does not recurse either
        node, ready = stack.pop()
        if isinstance(node, Leaf | oracle.Leaf):
            out[id(node)] = node.node
        elif isinstance(node, Region | oracle.Region):
            out[id(node)] = ("R", *node.nodes)
        elif not ready:
            stack.append((node, True))
            stack.extend((p, False) for p in node.parts)
        else:
            kind = "S" if isinstance(node, Series | oracle.Series) else "P"
            out[id(node)] = (kind, *(out[id(p)] for p in node.parts))
    return out[id(tree)]


@contextmanager
def shallow_stack(room: int = 60) -> Iterator[None]:
    """Allow only ``room`` more Python frames than the caller has."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack(0)) + room)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(deps=dags(), max_unit_tasks=st.integers(2, 20) | st.just(100) | st.just(10**9),
       max_chord_depth=st.integers(1, 4) | st.just(10**9))
def test_same_tree_and_same_plan_as_the_old_compiler(deps: dict[str, list[str]],
                                                     max_unit_tasks: int,
                                                     max_chord_depth: int) -> None:
    wf = workflow(deps)
    assert shape(compiler.decompose(wf.graph)) == shape(oracle.decompose(wf.graph))
    new = compiler.compile_workflow(wf, max_unit_tasks=max_unit_tasks,
                                    max_chord_depth=max_chord_depth,
                                    max_chord_width=10**9)  # the old one had no such cut
    old = oracle.compile_workflow(wf, max_unit_tasks=max_unit_tasks,
                                  max_chord_depth=max_chord_depth)
    # the rendered tree spells out every unit, canvas, join id and counter edge, and is
    # built without recursion (pydantic's == and JSON dump recurse per level of canvas)
    assert plan_tree(new, wf) == plan_tree(old, wf)
    assert [(u.id, u.steps) for u in new.units] == [(u.id, u.steps) for u in old.units]
    assert new.edges == old.edges
    if max(chord_depth(u.canvas) for u in new.units) <= 20:
        assert new == old
        assert new.model_dump_json() == old.model_dump_json()


def around_an_n(levels: int) -> dict[str, list[str]]:
    """Nested diamonds with an "N" (n3 after n0 and n1, n2 after n0 only) innermost: the
    bottom-up merges stop at the N, so the top-down split peels every level."""
    deps = shapes.nested_diamonds(levels)
    deps.update({"n0": [f"o{levels}"], "n1": [f"o{levels}"], "n2": ["n0"],
                 "n3": ["n0", "n1"]})
    deps[f"c{levels}"] = ["n2", "n3"]
    return deps


def test_same_plan_for_nested_diamonds_around_an_n() -> None:
    wf = workflow(around_an_n(300))
    tree = compiler.decompose(wf.graph)
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 20_000))  # the oracle recurses per level
    try:
        assert shape(tree) == shape(oracle.decompose(wf.graph))
        assert compiler.compile_workflow(wf, max_chord_width=10**9) == \
            oracle.compile_workflow(wf)
    finally:
        sys.setrecursionlimit(old)
    assert tree.has_region


def test_thousands_of_levels_around_an_n_split_without_recursion() -> None:
    levels = 3_000
    wf = workflow(around_an_n(levels))
    with shallow_stack():
        tree = compiler.decompose(wf.graph)
        plan = compiler.compile_workflow(wf)
    assert tree.has_region and tree.depth == levels
    assert sum(len(u.steps) for u in plan.units) == 3 * levels + 6


def test_thousands_of_nested_levels_compile_without_recursion() -> None:
    levels = 3_000
    wf = workflow(shapes.nested_diamonds(levels))
    _ = wf.graph.reduced_children  # (networkx-free) warm-up outside the shallow stack
    with shallow_stack():
        tree = compiler.decompose(wf.graph)
        plan = compiler.compile_workflow(wf)
        unbounded = compiler.compile_workflow(wf, max_unit_tasks=10**9,
                                              max_chord_depth=10**9)
        (whole,) = unbounded.units
        depth = chord_depth(whole.canvas)
        message = largest_message(whole.canvas)
        problems = unsafe_shapes(whole.canvas)
        tasks = task_count(whole.canvas)
        last = terminal(whole.canvas)
        walked = sum(1 for _ in walk(whole.canvas))
    # o0, then the parallel of (level 1 …) and side0, then c0: 2 tree levels per level
    assert isinstance(tree, Series) and tree.parts[0] == Leaf(0)
    assert isinstance(tree.parts[1], Parallel) and tree.depth == levels
    assert len(plan.units) > 1 and max(chord_depth(u.canvas) for u in plan.units) <= 3
    assert depth == levels and problems == []
    assert message == tasks == 3 * levels + 2 + levels  # all steps and joins ride the first
    assert last == "c0" and walked > tasks


def test_a_thousand_nested_levels_render_without_recursion() -> None:
    # (the indented tree grows as depth squared, so not ten thousand)
    wf = workflow(shapes.nested_diamonds(1_000))
    with shallow_stack():
        plan = compiler.compile_workflow(wf, max_unit_tasks=10**9, max_chord_depth=10**9)
        text = plan_tree(plan, wf)
    assert text.count("chord ->") == 1_000


def test_nested_levels_give_a_correct_plan() -> None:
    deps = shapes.nested_diamonds(300)
    deps.update({"x": [], "y": ["x", "o150"]})  # an N deep inside
    wf = workflow(deps)
    with shallow_stack():
        plan = compiler.compile_workflow(wf)
    check_plan(plan, wf)
