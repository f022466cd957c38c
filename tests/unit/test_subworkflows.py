"""Sub-workflows, pure: the model (YAML and DSL), the step checks, pinning in the catalog
(missing child, cycles, input against the child's schema, versions), the child's output,
the outcome of a delivery, and how a sub-workflow step is undone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.core.compensation import compensable, ending, undo_input, undo_workflow
from orchestrator.core.dsl import Workflow
from orchestrator.core.models import WorkflowDef
from orchestrator.core.registry import Registry
from orchestrator.core.states import RunStatus, StepStatus
from orchestrator.core.subworkflows import (
    SUBWORKFLOW_FUNCTION,
    UNDO_FUNCTION,
    SubWorkflowDef,
    child_output,
    child_run_id,
    outcome,
    pin,
    undoable,
)
from orchestrator.core.validation import problems_of
from orchestrator.core.yamlio import from_data
from orchestrator.runtime.catalog import discover


def act(x: int = 0) -> dict[str, Any]:
    return {"x": x}


def undo(input: dict[str, Any], output: dict[str, Any]) -> None:
    return None


@pytest.fixture
def reg() -> Registry:
    r = Registry()
    r.register("act", act)
    r.register("undo", undo)
    return r


def flow(name: str, steps: list[dict[str, Any]], **extra: Any) -> WorkflowDef:
    return from_data({"name": name, "steps": steps, **extra})


def child(name: str = "child", **extra: Any) -> WorkflowDef:
    return flow(name, [{"id": "a", "function": "act", "inputs": {"x": {"from": "input.x"}}},
                       {"id": "b", "function": "act", "after": ["a"]}],
                input_schema={"type": "object", "required": ["x"],
                              "properties": {"x": {"type": "integer"}}}, **extra)


def parent(name: str = "parent", runs: str = "child", **step: Any) -> WorkflowDef:
    return flow(name, [{"id": "first", "function": "act"},
                       {"id": "kid", "workflow": runs,
                        "inputs": {"x": {"from": "steps.first.output.x"}}, **step},
                       {"id": "last", "function": "act", "inputs": {
                           "x": {"from": "steps.kid.output.x"}}}])


def test_a_bare_name_is_a_sub_workflow_and_the_function_is_filled_in() -> None:
    wf = parent()
    kid = wf.step_map["kid"]
    assert kid.workflow == SubWorkflowDef(name="child")
    assert kid.function == SUBWORKFLOW_FUNCTION
    pinned = parent(**{"workflow": {"name": "child", "version": "abc123"}}).step_map["kid"]
    assert pinned.workflow == SubWorkflowDef(name="child", version="abc123")


def test_the_dsl_builds_the_same_step(reg: Registry) -> None:
    wf = Workflow("parent")
    first = wf.step("first", "act")
    kid = wf.subworkflow("kid", "child", x=first.output.x)
    wf.step("last", "act", x=kid.output.x)
    assert wf.build(reg) == parent()


def test_a_sub_workflow_step_is_valid_and_reads_like_any_step(reg: Registry) -> None:
    assert problems_of(parent(), reg) == []


@pytest.mark.parametrize(("step", "needle"), [
    ({"function": "act"}, "calls no function"),
    ({"wait": {"kind": "sleep", "duration_s": 1}}, "both wait"),
    ({"compensate": "undo"}, "undone by its child"),
    ({"timeout_s": 5}, "time limits"),
])
def test_what_a_sub_workflow_step_cannot_have(reg: Registry, step: dict[str, Any],
                                              needle: str) -> None:
    found = [p for p in problems_of(parent(**step), reg) if p.code == "bad_subworkflow"]
    assert len(found) == 1 and needle in found[0].message and found[0].step == "kid"
    assert found[0].fix


def test_the_reserved_function_needs_a_workflow(reg: Registry) -> None:
    wf = flow("w", [{"id": "a", "function": SUBWORKFLOW_FUNCTION}])
    assert [p.code for p in problems_of(wf, reg)] == ["bad_subworkflow"]


def test_pinning_records_the_childs_version_in_the_parent() -> None:
    kid, par = child(), parent()
    pinned, problems = pin({"parent": par, "child": kid})
    assert problems == {}
    got = pinned["parent"].step_map["kid"].workflow
    assert got == SubWorkflowDef(name="child", version=kid.version)
    assert pinned["child"] == kid
    # the parent's version includes the pin: an edited child gives a new parent version,
    # and the old parent version still names the old child version
    edited = child(description="edited")
    again, _ = pin({"parent": par, "child": edited})
    assert again["parent"].version != pinned["parent"].version
    assert again["parent"].step_map["kid"].workflow == SubWorkflowDef(
        name="child", version=edited.version)
    assert got.version == kid.version != edited.version


def test_an_explicit_version_is_kept() -> None:
    par = parent(**{"workflow": {"name": "child", "version": "0123456789abcdef"}})
    pinned, problems = pin({"parent": par, "child": child()})
    assert problems == {} and pinned["parent"] == par


def test_nested_pins_are_made_children_first() -> None:
    leaf = child("leaf")
    mid = parent("mid", runs="leaf")
    top = parent("top", runs="mid")
    pinned, problems = pin({"top": top, "mid": mid, "leaf": leaf})
    assert problems == {}
    assert pinned["top"].step_map["kid"].workflow == SubWorkflowDef(
        name="mid", version=pinned["mid"].version)
    assert pinned["mid"].step_map["kid"].workflow == SubWorkflowDef(
        name="leaf", version=leaf.version)


def test_a_missing_child_is_a_problem_with_a_fix() -> None:
    pinned, problems = pin({"parent": parent(runs="nope")})
    assert pinned == {}
    (p,) = problems["parent"]
    assert p.code == "unknown_workflow" and p.step == "kid" and "'nope'" in p.message
    assert "orchestrator list" in p.fix


def test_cycles_of_sub_workflows_are_refused_directly_and_through_others() -> None:
    selfish = parent("selfish", runs="selfish")
    a, b, c = parent("a", runs="b"), parent("b", runs="c"), parent("c", runs="a")
    ok = child()
    pinned, problems = pin({"selfish": selfish, "a": a, "b": b, "c": c, "child": ok})
    assert set(pinned) == {"child"}
    assert [p.code for p in problems["selfish"]] == ["subworkflow_cycle"]
    assert "selfish -> selfish" in problems["selfish"][0].message
    cycle = [p for n in "abc" for p in problems[n] if p.code == "subworkflow_cycle"]
    assert len(cycle) == 1 and "a -> b -> c -> a" in cycle[0].message
    # the others are left out because what they run has problems
    assert {p.code for n in "abc" for p in problems[n]} == {"subworkflow_cycle",
                                                            "unknown_workflow"}


def test_literal_inputs_are_checked_against_the_childs_schema() -> None:
    bad = flow("parent", [{"id": "kid", "workflow": "child", "inputs": {"x": "seven"}}])
    _, problems = pin({"parent": bad, "child": child()})
    (p,) = problems["parent"]
    assert p.code == "bad_subworkflow_input" and "x" in p.message
    good = flow("parent", [{"id": "kid", "workflow": "child", "inputs": {"x": 7}}])
    assert pin({"parent": good, "child": child()})[1] == {}


def test_the_catalog_leaves_out_a_workflow_whose_child_is_missing(tmp_path: Path) -> None:
    pkg = tmp_path / "swpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "orphan.yaml").write_text(
        "name: orphan\nsteps:\n  - id: kid\n    workflow: nowhere\n")
    (pkg / "fine.yaml").write_text(
        "name: fine\nsteps:\n  - id: kid\n    workflow: leaf\n"
        "  - id: other\n    workflow: {name: leaf}\n")
    (pkg / "leaf.yaml").write_text(
        "name: leaf\nsteps:\n  - id: w\n    wait: {kind: sleep, duration_s: 1}\n")
    import sys
    sys.path.insert(0, str(tmp_path))
    try:
        cat = discover(["swpkg"])
    finally:
        sys.path.remove(str(tmp_path))
    assert set(cat.workflows) == {"fine", "leaf"}
    assert cat.workflows["fine"].step_map["kid"].workflow == SubWorkflowDef(
        name="leaf", version=cat.workflows["leaf"].version)
    assert any("unknown_workflow" in why for why in cat.broken.values())


def test_the_child_output_is_its_one_sink_or_its_sinks_by_id() -> None:
    one = child()  # a -> b
    assert child_output(one, {"a": 1, "b": {"x": 2}}) == {"x": 2}
    two = flow("two", [{"id": "a", "function": "act"}, {"id": "b", "function": "act"},
                       {"id": "h", "function": "act"}])
    assert child_output(two, {"a": 1, "b": 2}) == {"a": 1, "b": 2, "h": None}
    handled = flow("handled", [{"id": "a", "function": "act", "on_failure": ["h"]},
                               {"id": "h", "function": "act"}])
    assert child_output(handled, {"a": 5}) == 5  # a failure handler is no sink


def test_a_delivery_succeeds_fails_or_waits_by_the_awaited_runs_status() -> None:
    assert outcome("r", RunStatus.RUNNING).action == "wait"
    assert outcome("r", RunStatus.COMPENSATING).action == "wait"
    assert outcome("r", RunStatus.SUCCEEDED).action == "succeed"
    for status in (RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.COMPENSATED):
        out = outcome("r.kid.1", status)
        assert out.action == "fail" and out.error is not None
        assert "r.kid.1" in str(out.error) and status.value in str(out.error)
    gone = outcome("r.kid.1", None)
    assert gone.action == "fail" and "not in the store" in str(gone.error)
    assert child_run_id("r", "kid", 3) == "r.kid.3"


def test_a_succeeded_sub_workflow_step_is_undone_by_its_childs_undo_run() -> None:
    kid = flow("child", [{"id": "a", "function": "act", "compensate": "undo"}])
    plain = child("plain")
    par = flow("parent", [
        {"id": "x", "function": "act", "compensate": "undo"},
        {"id": "kid", "workflow": {"name": "child", "version": kid.version}, "after": ["x"]},
        {"id": "flat", "workflow": {"name": "plain", "version": plain.version},
         "after": ["x"]},
        {"id": "c", "function": "act", "after": ["kid", "flat"]}])
    stored = {kid.version: kid, plain.version: plain}
    can = undoable(par, stored.__getitem__)
    assert can == frozenset({"kid"})  # plain has nothing to undo
    statuses = {"x": StepStatus.SUCCEEDED, "kid": StepStatus.SUCCEEDED,
                "flat": StepStatus.SUCCEEDED, "c": StepStatus.FAILED}
    ids = compensable(par, statuses, can)
    assert ids == ["x", "kid"]
    assert ending(par, statuses, can) is RunStatus.COMPENSATING
    assert ending(par, statuses) is RunStatus.COMPENSATING  # x alone
    undo_wf = undo_workflow(par, ids)
    step = undo_wf.step_map["kid"]
    assert step.function == UNDO_FUNCTION and step.workflow is None
    assert undo_wf.step_map["x"].after == ("kid",)  # x is undone after its dependent
    data = undo_input(par, ids, {}, {"x": {"x": 1}, "kid": {"x": 2}}, {"kid": "r.kid.1"})
    assert data["steps"]["kid"] == {"run": "r.kid.1"}
    assert data["steps"]["x"]["output"] == {"x": 1}


def test_a_version_that_is_gone_counts_as_nothing_to_undo() -> None:
    par = flow("parent", [{"id": "kid", "workflow": {"name": "child", "version": "gone"}}])

    def load(version: str) -> WorkflowDef:
        raise KeyError(version)

    assert undoable(par, load) == frozenset()


# --- mapped sub-workflows ----------------------------------------------------------------


def mapped_parent(**map_fields: Any) -> WorkflowDef:
    return flow("parent", [{"id": "kids", "workflow": "child",
                            "map": {"over": "input.xs", "as": "x", **map_fields}}])


def test_a_mapped_sub_workflow_step_is_valid_and_its_item_is_the_childs_field(
        reg: Registry) -> None:
    wf = mapped_parent(max_parallel=2, failure_policy="continue")
    assert problems_of(wf, reg) == []
    # the literal inputs miss the item: the child's required "x" is not checked at load
    pinned, problems = pin({"parent": wf, "child": child()})
    assert problems == {}
    assert pinned["parent"].step_map["kids"].workflow == SubWorkflowDef(
        name="child", version=child().version)


def test_a_mapped_sub_workflow_step_still_names_its_map_problems(reg: Registry) -> None:
    found = problems_of(mapped_parent(max_parallel=0), reg)
    assert [(p.code, p.step) for p in found] == [("bad_map", "kids")]
    clash = flow("parent", [{"id": "kids", "workflow": "child", "inputs": {"x": 1},
                             "map": {"over": "input.xs", "as": "x"}}])
    (p,) = problems_of(clash, reg)
    assert p.code == "bad_map" and "remove 'x' from 'inputs'" in p.fix


def test_an_items_child_run_id_holds_no_brackets() -> None:
    assert child_run_id("r1", "kids[3]", 2) == "r1.kids.3.2"
    assert child_run_id("r1", "kids", 2) == "r1.kids.2"


def test_a_mapped_sub_workflow_step_is_not_undone(reg: Registry) -> None:
    saga = flow("child", [{"id": "a", "function": "act", "compensate": {"function": "undo"}}])
    wf = mapped_parent()
    pinned, _ = pin({"parent": wf, "child": saga})
    assert undoable(pinned["parent"], lambda v: saga) == frozenset()
    plain = flow("parent", [{"id": "kid", "workflow": "child"}])
    assert undoable(pin({"parent": plain, "child": saga})[0]["parent"],
                    lambda v: saga) == frozenset({"kid"})
