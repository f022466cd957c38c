"""The compiler: every shape of DAG to its canvas normal form, counters and segments."""

from __future__ import annotations

import pytest

from orchestrator.core.compiler import (
    MAX_CHORD_WIDTH,
    MAX_UNIT_TASKS,
    Leaf,
    Parallel,
    Region,
    Series,
    compile_workflow,
    decompose,
)
from orchestrator.core.dag import Graph
from orchestrator.core.models import WorkflowDef
from orchestrator.core.plan import (
    ChainNode,
    ChordNode,
    Plan,
    TaskNode,
    chord_depth,
    largest_message,
    task_count,
    unsafe_shapes,
    walk,
)
from orchestrator.core.yamlio import load_yaml
from orchestrator.dev import shapes
from tests.support.paths import ORDER_YAML
from tests.unit.plan_checks import T, chain, check_plan, chord, plan_reach, workflow


def compiled(deps: dict[str, list[str]], **budget: int) -> tuple[Plan, WorkflowDef]:
    wf = workflow(deps)
    plan = compile_workflow(wf, **budget)
    check_plan(plan, wf, **budget)
    return plan, wf


def only_canvas(plan: Plan) -> TaskNode | ChainNode | ChordNode:
    assert len(plan.units) == 1
    assert plan.edges == ()
    return plan.units[0].canvas


# --- native canvases ------------------------------------------------------------------


def test_single_step() -> None:
    plan, _ = compiled({"a": []})
    assert only_canvas(plan) == T("a")
    assert plan.units[0].terminal == "a"
    assert plan.sources == ("u0",)


def test_linear_chain() -> None:
    plan, _ = compiled({"a": [], "b": ["a"], "c": ["b"]})
    assert only_canvas(plan) == chain(T("a"), T("b"), T("c"))
    assert plan.units[0].terminal == "c"


def test_diamond_is_a_chord_with_a_join() -> None:
    plan, _ = compiled({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]})
    assert only_canvas(plan) == chain(T("a"), chord(1, T("b"), T("c")), T("d"))


def test_redundant_edges_are_dropped_first() -> None:
    # d -> a is implied by d -> b -> a: the transitive reduction removes it
    plan, _ = compiled({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c", "a"]})
    assert only_canvas(plan) == chain(T("a"), chord(1, T("b"), T("c")), T("d"))


def test_parallel_at_the_end_is_closed_with_a_join() -> None:
    plan, _ = compiled({"a": [], "b": ["a"], "c": ["a"]})
    canvas = only_canvas(plan)
    assert canvas == chain(T("a"), chord(1, T("b"), T("c")))
    assert plan.units[0].terminal == "join:1"


def test_independent_components_run_in_parallel() -> None:
    plan, _ = compiled({"a": [], "b": ["a"], "c": [], "d": ["c"], "e": []})
    assert only_canvas(plan) == chord(1, chain(T("a"), T("b")), chain(T("c"), T("d")), T("e"))


def test_nested_parallel() -> None:
    deps = {"a": [], "b": ["a"], "c": ["b"], "d": ["b"], "e": ["c", "d"], "f": ["a"],
            "g": ["e", "f"]}
    plan, _ = compiled(deps)
    canvas = only_canvas(plan)
    inner = chain(T("b"), chord(2, T("c"), T("d")), T("e"))
    assert canvas == chain(T("a"), chord(1, inner, T("f")), T("g"))
    assert chord_depth(canvas) == 2


def test_stages_of_full_bipartite_layers() -> None:
    deps = {"a1": [], "a2": [], "b1": ["a1", "a2"], "b2": ["a1", "a2"], "c": ["b1", "b2"]}
    plan, _ = compiled(deps)
    assert only_canvas(plan) == chain(chord(1, T("a1"), T("a2")), chord(2, T("b1"), T("b2")),
                                      T("c"))


def test_failure_handler_runs_after_the_step_it_handles() -> None:
    wf = WorkflowDef.model_validate({"name": "w", "steps": [
        {"id": "a", "function": "f", "on_failure": ["alert"]},
        {"id": "b", "function": "f", "after": ["a"]},
        {"id": "alert", "function": "f"},
    ]})
    plan = compile_workflow(wf)
    check_plan(plan, wf)
    assert only_canvas(plan) == chain(T("a"), chord(1, T("b"), T("alert")))


# --- non-series-parallel: dependency counters -------------------------------------------


def test_n_shape_uses_counters_without_false_dependency() -> None:
    # c needs a and b; d needs only b
    plan, _ = compiled({"a": [], "b": [], "c": ["a", "b"], "d": ["b"]})
    unit = plan.unit_of_step
    assert {len(u.steps) for u in plan.units} == {1}
    assert set(plan.edges) == {(unit["a"], unit["c"]), (unit["b"], unit["c"]),
                               (unit["b"], unit["d"])}
    reach = plan_reach(plan, ["a", "b", "c", "d"])
    assert reach["a"] == 0b0100  # a precedes c only
    assert reach["b"] == 0b1100  # b precedes c and d
    assert plan.predecessor_counts[unit["c"]] == 2
    assert set(plan.sources) == {unit["a"], unit["b"]}


def test_n_shape_inside_a_series_keeps_the_rest_native() -> None:
    deps = {"s": [], "a": ["s"], "b": ["s"], "c": ["a", "b"], "d": ["b"], "t": ["c", "d"],
            "u": ["t"], "v": ["u"]}
    plan, _ = compiled(deps)
    unit = plan.unit_of_step
    assert plan.unit_map[unit["t"]].canvas == chain(T("t"), T("u"), T("v"))
    assert plan.unit_map[unit["s"]].canvas == T("s")
    assert len(plan.units) == 6


def test_linear_runs_inside_a_region_stay_chains() -> None:
    deps = {"a": [], "b": [], "a2": ["a"], "a3": ["a2"], "c": ["a3", "b"], "d": ["b"],
            "d2": ["d"]}
    plan, _ = compiled(deps)
    canvases = {u.canvas for u in plan.units if isinstance(u.canvas, ChainNode)}
    assert chain(T("a"), T("a2"), T("a3")) in canvases
    assert chain(T("d"), T("d2")) in canvases


def test_decompose_finds_the_region() -> None:
    wf = workflow({"a": [], "b": [], "c": ["a", "b"], "d": ["b"]})
    assert isinstance(decompose(Graph.from_deps(wf.dependencies())), Region)
    wf = workflow({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]})
    tree = decompose(Graph.from_deps(wf.dependencies()))
    assert tree == Series((Leaf(0), Parallel((Leaf(1), Leaf(2))), Leaf(3)))


# --- segments: bounded messages and nesting ---------------------------------------------


def test_long_chain_is_split_into_bounded_units() -> None:
    plan, _ = compiled(shapes.chain(1000), max_unit_tasks=100)
    assert len(plan.units) == 10
    assert [task_count(u.canvas) for u in plan.units] == [100] * 10
    assert all(largest_message(u.canvas) <= 100 for u in plan.units)
    assert list(plan.edges) == [(f"u{i}", f"u{i + 1}") for i in range(9)]


@pytest.mark.parametrize("budget", [2, 3, 7, 64])
def test_chain_units_respect_any_budget(budget: int) -> None:
    plan, _ = compiled(shapes.chain(150), max_unit_tasks=budget)
    assert max(largest_message(u.canvas) for u in plan.units) == budget
    assert len(plan.units) == -(-150 // budget)


def test_default_budget_bounds_a_long_chain() -> None:
    """A line's message carries the rest of its unit's chain: the default keeps every
    message to 32 signatures (docs/benchmarks.md: at 100, a 200-step line moved three
    times the bytes per hop, and Redis' time per step was 1.10x raw Celery's)."""
    wf = workflow(shapes.chain(2500))
    plan = compile_workflow(wf)
    check_plan(plan, wf)
    assert MAX_UNIT_TASKS == 32
    assert max(largest_message(u.canvas) for u in plan.units) == 32
    assert len(plan.units) == -(-2500 // 32)


def test_series_of_diamonds_is_split_at_series_boundaries() -> None:
    deps: dict[str, list[str]] = {"s0": []}
    for i in range(60):
        deps[f"l{i}"] = [f"s{i}"]
        deps[f"r{i}"] = [f"s{i}"]
        deps[f"s{i + 1}"] = [f"l{i}", f"r{i}"]
    plan, _ = compiled(deps, max_unit_tasks=20)
    assert len(plan.units) > 1
    # every cut falls between whole diamonds: no chord is broken up
    for u in plan.units:
        for node in walk(u.canvas):
            if isinstance(node, ChordNode):
                assert len(node.header) == 2


def test_long_series_of_stages_does_not_recurse_per_stage() -> None:
    # 1,500 full bipartite layers of width 2: a series of 1,500 parallels
    deps: dict[str, list[str]] = {}
    for i in range(1500):
        for j in range(2):
            deps[f"s{i}_{j}"] = [f"s{i - 1}_{k}" for k in range(2)] if i else []
    wf = workflow(deps)
    plan = compile_workflow(wf)
    assert sum(len(u.steps) for u in plan.units) == 3000
    assert all(largest_message(u.canvas) <= 100 for u in plan.units)


def nested(depth: int) -> dict[str, list[str]]:
    """Diamonds nested ``depth`` deep: o_i -> (o_{i+1} … c_{i+1}, side_i) -> c_i."""
    deps: dict[str, list[str]] = {"o0": []}
    for i in range(depth):
        deps[f"o{i + 1}"] = [f"o{i}"]
        deps[f"side{i}"] = [f"o{i}"]
    deps[f"c{depth}"] = [f"o{depth}"]
    for i in reversed(range(depth)):
        deps[f"c{i}"] = [f"c{i + 1}", f"side{i}"]
    return deps


def test_deep_nesting_is_split_by_max_chord_depth() -> None:
    one, _ = compiled(nested(6), max_chord_depth=10)
    assert chord_depth(only_canvas(one)) == 6
    plan, _ = compiled(nested(6), max_chord_depth=3)
    assert len(plan.units) > 1
    assert max(chord_depth(u.canvas) for u in plan.units) <= 3
    flat, _ = compiled(nested(6), max_chord_depth=1)
    assert max(chord_depth(u.canvas) for u in flat.units) <= 1


def _wide(n: int, sink: bool = True) -> dict[str, list[str]]:
    deps: dict[str, list[str]] = {"root": []}
    deps.update({f"w{i}": ["root"] for i in range(n)})
    if sink:
        deps["sink"] = [f"w{i}" for i in range(n)]
    return deps


def test_a_wide_fan_out_without_a_width_budget_stays_one_chord() -> None:
    plan, _ = compiled(_wide(2000), max_chord_width=10**9)
    chords = [n for u in plan.units for n in walk(u.canvas) if isinstance(n, ChordNode)]
    assert len(chords) == 1
    assert len(chords[0].header) == 2000
    # the root's message would carry all 2,000 signatures, so it is its own unit
    assert plan.unit_map[plan.unit_of_step["root"]].canvas == T("root")
    assert plan.unit_of_step["sink"] == plan.unit_of_step["w0"]
    plan, _ = compiled(_wide(2000, sink=False), max_chord_width=10**9)
    chords = [n for u in plan.units for n in walk(u.canvas) if isinstance(n, ChordNode)]
    assert [len(c.header) for c in chords] == [2000]


@pytest.mark.parametrize("sink", [True, False])
def test_a_fan_out_wider_than_the_budget_is_one_unit_per_branch(sink: bool) -> None:
    plan, _ = compiled(_wide(MAX_CHORD_WIDTH + 1, sink), max_chord_width=MAX_CHORD_WIDTH)
    assert not any(isinstance(n, ChordNode) for u in plan.units for n in walk(u.canvas))
    branches = {plan.unit_of_step[f"w{i}"] for i in range(MAX_CHORD_WIDTH + 1)}
    assert len(branches) == MAX_CHORD_WIDTH + 1  # each its own unit
    root = plan.unit_of_step["root"]
    assert {b for a, b in plan.edges if a == root} == branches
    if sink:  # joined by the sink's counter
        assert {a for a, b in plan.edges if b == plan.unit_of_step["sink"]} == branches
    narrow, _ = compiled(_wide(MAX_CHORD_WIDTH), max_chord_width=MAX_CHORD_WIDTH)
    assert [len(n.header) for u in narrow.units for n in walk(u.canvas)
            if isinstance(n, ChordNode)] == [MAX_CHORD_WIDTH]  # at the budget: a chord


def test_budget_below_two_is_raised_to_two() -> None:
    wf = workflow(shapes.chain(5))
    plan = compile_workflow(wf, max_unit_tasks=0, max_chord_depth=0)
    check_plan(plan, wf, max_unit_tasks=2, max_chord_depth=1)


# --- the example workflow and the plan as data ------------------------------------------


def test_order_workflow_compiles_to_one_unit() -> None:
    from workflows.order import steps as _  # noqa: F401  (registers its functions)

    wf = load_yaml(ORDER_YAML)
    plan = compile_workflow(wf)
    check_plan(plan, wf)
    canvas = only_canvas(plan)
    assert unsafe_shapes(canvas) == []
    assert isinstance(canvas, ChainNode)
    assert canvas.items[:2] == (T("receive_order"), T("check_inventory"))


def test_plan_is_plain_data() -> None:
    plan, _ = compiled({"a": [], "b": [], "c": ["a", "b"], "d": ["b"], "e": ["d"]})
    assert Plan.model_validate_json(plan.model_dump_json()) == plan


def test_compiling_twice_gives_the_same_plan() -> None:
    deps = nested(4) | {"x": [], "y": ["x", "o1"]}
    wf = workflow(deps)
    assert compile_workflow(wf) == compile_workflow(wf)
