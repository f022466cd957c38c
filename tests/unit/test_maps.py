"""Map steps in the pure core: the model, validation (one test per problem), the compiler
(a map step is a unit of its own, counters around it) and the item ids."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.core import maps
from orchestrator.core.compiler import compile_workflow
from orchestrator.core.models import MapDef, StepDef, WorkflowDef
from orchestrator.core.plan import TaskNode
from orchestrator.core.registry import Registry
from orchestrator.core.validation import problems_of
from orchestrator.core.yamlio import from_data, parse_yaml
from orchestrator.errors import ConditionError, Problem


def make(*steps: dict[str, Any]) -> WorkflowDef:
    return from_data({"name": "w", "steps": list(steps)})


def step(id: str, function: str = "t.noop", **fields: Any) -> dict[str, Any]:
    return {"id": id, "function": function, **fields}


def mapped(**over: Any) -> dict[str, Any]:
    return step("each", "t.count", map={"over": "input.nums", "as": "n", **over})


def codes(problems: list[Problem]) -> list[tuple[str, str | None]]:
    return [(p.code, p.step) for p in problems]


# --- the model ------------------------------------------------------------------------------


def test_yaml_map_with_its_alias_and_defaults() -> None:
    wf = parse_yaml("""
name: w
steps:
  - id: each
    function: t.count
    map: {over: input.nums, as: n, max_parallel: 4}
""")
    m = wf.step_map["each"].map
    assert m == MapDef(over="input.nums", as_="n", max_parallel=4)
    assert (m.failure_policy, m.max_failures) == ("fail_fast", 0)
    assert wf.model_dump(by_alias=True, exclude_defaults=True)["steps"][0]["map"] == {
        "over": "input.nums", "as": "n", "max_parallel": 4}
    with pytest.raises(ValueError, match="frozen"):
        m.max_parallel = 2  # type: ignore[misc]


def test_a_step_without_map_keeps_its_version() -> None:
    a = make(step("s", "t.count", inputs={"n": 1}))
    b = WorkflowDef(name="w", steps=(StepDef(id="s", function="t.count",
                                             inputs={"n": 1}, map=None),))
    assert a.version == b.version
    assert make(mapped()).version != make(step("each", "t.count")).version


def test_item_ids_round_trip() -> None:
    assert maps.item_id("fetch", 17) == "fetch[17]"
    assert maps.parse_item("fetch[17]") == ("fetch", 17)
    for other in ("fetch", "join:3", "fetch[x]", "fetch[1]x", "[1]", "a[1][2]"):
        assert maps.parse_item(other) is None


@pytest.mark.parametrize(("policy", "max_failures", "failed", "fails", "tolerated"), [
    ("fail_fast", 0, 0, False, 0), ("fail_fast", 0, 1, True, 0),
    ("continue", 0, 99, False, -1),
    ("allow", 2, 2, False, 2), ("allow", 2, 3, True, 2)])
def test_failure_policies(policy: str, max_failures: int, failed: int, fails: bool,
                          tolerated: int) -> None:
    m = MapDef(over="input.x", failure_policy=policy, max_failures=max_failures)
    assert maps.fails(m, failed) is fails
    assert maps.tolerated(m) == tolerated


def test_items_evaluates_over_to_a_list() -> None:
    m = MapDef(over="steps.find.output.files.filter(f, f.endsWith('.csv'))")
    views = {"find": {"output": {"files": ["a.csv", "b.txt", "c.csv"]},
                      "status": "succeeded"}}
    assert maps.items(m, {}, views) == ["a.csv", "c.csv"]
    assert maps.items(MapDef(over="input.n"), {"n": []}, {}) == []
    with pytest.raises(ConditionError, match="not a list"):
        maps.items(MapDef(over="input.n"), {"n": 3}, {})


# --- validation -----------------------------------------------------------------------------


def test_a_valid_map_step(registry: Registry) -> None:
    wf = make(mapped(max_parallel=3, failure_policy="allow", max_failures=2),
              step("all", "t.anything", inputs={"values": {"from": "steps.each.output"}}))
    assert problems_of(wf, registry) == []


def test_over_must_parse(registry: Registry) -> None:
    wf = make(step("each", "t.count", map={"over": "input.nums +", "as": "n"}))
    [p] = problems_of(wf, registry)
    assert (p.code, p.step) == ("bad_map", "each") and "map.over" in p.message
    assert "yields a list" in p.fix


def test_over_reads_only_input_and_steps(registry: Registry) -> None:
    wf = make(step("each", "t.count", map={"over": "env.nums", "as": "n"}))
    assert codes(problems_of(wf, registry)) == [("bad_map", "each")]


def test_over_reads_ancestors_only(registry: Registry) -> None:
    wf = make(step("src", "t.keep", inputs={"data": {}}),
              step("each", "t.count", map={"over": "steps.src.output.nums", "as": "n"}))
    assert ("not_ancestor", "each") in codes(problems_of(wf, registry))
    fixed = make(step("src", "t.keep", inputs={"data": {}}),
                 step("each", "t.count", after=["src"],
                      map={"over": "steps.src.output.nums", "as": "n"}))
    assert problems_of(fixed, registry) == []
    unknown = make(step("each", "t.count", map={"over": "steps.nope.output", "as": "n"}))
    assert ("unknown_step", "each") in codes(problems_of(unknown, registry))


def test_the_item_parameter_must_exist(registry: Registry) -> None:
    wf = make(step("each", "t.count", map={"over": "input.nums", "as": "x"}))
    found = problems_of(wf, registry)
    assert ("bad_map", "each") in codes(found) and ("missing_input", "each") in codes(found)
    [p] = [p for p in found if p.code == "bad_map"]
    assert "no parameter 'x'" in p.message and "n" in p.fix
    assert problems_of(make(step("each", "t.anything", map={"over": "input.l"})),
                       registry) == []  # **kwargs takes any name


def test_the_item_parameter_is_not_also_an_input(registry: Registry) -> None:
    wf = make(step("each", "t.count", inputs={"n": 1},
                   map={"over": "input.nums", "as": "n"}))
    [p] = problems_of(wf, registry)
    assert p.code == "bad_map" and "remove 'n' from 'inputs'" in p.fix


@pytest.mark.parametrize(("spec", "words"), [
    ({"max_parallel": 0}, "max_parallel is 0"),
    ({"max_failures": -1, "failure_policy": "allow"}, "max_failures is -1"),
    ({"max_failures": 2}, "failure_policy is 'fail_fast'"),
])
def test_bad_limits(registry: Registry, spec: dict[str, Any], words: str) -> None:
    [p] = problems_of(make(mapped(**spec)), registry)
    assert p.code == "bad_map" and words in p.message


def test_a_step_cannot_wait_and_map(registry: Registry) -> None:
    wf = make({"id": "each", "wait": {"kind": "sleep", "duration_s": 1},
               "map": {"over": "input.nums"}})
    assert ("bad_map", "each") in codes(problems_of(wf, registry))


def test_a_map_step_draws_no_rate_limit(registry: Registry) -> None:
    [p] = problems_of(make({**mapped(), "rate_limit": "10/s"}), registry)
    assert p.code == "bad_map" and "rate limit" in p.message


def test_consumers_read_a_list_of_the_item_outputs(registry: Registry) -> None:
    wf = make(mapped(), step("one", "t.count", inputs={"n": {"from": "steps.each.output"}}))
    [p] = problems_of(wf, registry)
    assert p.code == "type_mismatch" and "list[int | None]" in p.message.replace(
        "Optional[int]", "int | None")


# --- the compiler ---------------------------------------------------------------------------


def test_a_map_step_is_a_unit_of_its_own(registry: Registry) -> None:
    wf = make(step("a"), step("b", after=["a"]),
              step("each", "t.count", after=["b"], map={"over": "input.nums", "as": "n"}),
              step("c", after=["each"]), step("d", after=["c"]),
              step("side", after=["a"]))
    plan = compile_workflow(wf)
    unit = plan.unit_map[plan.unit_of_step["each"]]
    assert unit.canvas == TaskNode(id="each") and unit.steps == ("each",)
    before, after = plan.unit_of_step["b"], plan.unit_of_step["c"]
    assert (before, unit.id) in plan.edges and (unit.id, after) in plan.edges
    assert plan.predecessor_counts[unit.id] == 1
    # without the map the same shape stays whole: a chord with a chain in it
    plain = compile_workflow(make(step("a"), step("b", after=["a"]),
                                  step("each", after=["b"]), step("c", after=["each"]),
                                  step("d", after=["c"]), step("side", after=["a"])))
    assert len(plain.units) == 1


def test_parallel_maps_are_units_side_by_side(registry: Registry) -> None:
    wf = make(step("a"),
              step("m1", "t.count", after=["a"], map={"over": "input.x", "as": "n"}),
              step("m2", "t.count", after=["a"], map={"over": "input.y", "as": "n"}),
              step("z", after=["m1", "m2"]))
    plan = compile_workflow(wf)
    u1, u2 = plan.unit_of_step["m1"], plan.unit_of_step["m2"]
    assert u1 != u2 and plan.unit_map[u1].steps == ("m1",)
    assert plan.predecessor_counts[plan.unit_of_step["z"]] == 2
    assert ("m1", "z") in plan.step_edges() and ("m2", "z") in plan.step_edges()


# --- the CLI's view of a map's items --------------------------------------------------------


def test_status_shows_counts_and_lists_items_on_request() -> None:
    from orchestrator.cli.follow import items_note, items_table
    from orchestrator.core.states import StepStatus
    from orchestrator.store import StepRun

    assert items_note({"pending": 6864, "running": 16, "succeeded": 3120}) == \
        "[3120 succeeded, 16 running, 6864 pending]"
    table = items_table(
        [StepRun("fetch[0]", StepStatus.SUCCEEDED, 1, started_at=1.0, ended_at=1.25),
         StepRun("fetch[1]", StepStatus.FAILED, 2, error={"message": "boom"}),
         StepRun("fetch[2]", StepStatus.PENDING)], {"fetch[0]": {"rows": 3}})
    lines = table.splitlines()
    assert lines[0].split() == ["ITEM", "STATUS", "ATTEMPT", "DURATION", "OUTPUT", "/", "NOTE"]
    assert lines[1].split() == ["fetch[0]", "succeeded", "1", "250", "ms", '{"rows":', "3}"]
    assert lines[2].split()[-1] == "boom" and lines[3].split()[:3] == ["fetch[2]", "pending", "-"]
