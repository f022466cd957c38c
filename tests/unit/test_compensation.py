"""Compensation, pure: the undo workflow's order, the inputs a compensation gets, how an
unwinding ends, and the checks on ``compensate``."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.core.compensation import (
    compensable,
    outcome,
    undo_input,
    undo_run_id,
    undo_workflow,
)
from orchestrator.core.models import WorkflowDef
from orchestrator.core.registry import Registry
from orchestrator.core.states import RunStatus, StepStatus
from orchestrator.core.validation import problems_of
from orchestrator.core.yamlio import from_data


def act(sku: str = "", qty: int = 0) -> dict[str, Any]:
    return {"sku": sku}


def undo(input: dict[str, Any], output: dict[str, Any]) -> None:
    return None


def undo_output_only(output: dict[str, Any]) -> None:
    return None


def undo_needs_more(input: dict[str, Any], output: Any, token: str) -> None:
    return None


@pytest.fixture
def reg() -> Registry:
    r = Registry()
    for name, fn in (("act", act), ("undo", undo), ("undo.output_only", undo_output_only),
                     ("undo.needs_more", undo_needs_more)):
        r.register(name, fn)
    return r


def saga(**over: Any) -> WorkflowDef:
    steps: list[dict[str, Any]] = [
        {"id": "a", "function": "act", "inputs": {"sku": {"from": "input.sku"}, "qty": 2},
         "compensate": "undo"},
        {"id": "b", "function": "act", "after": ["a"], "compensate": "undo"},
        {"id": "mid", "function": "act", "after": ["b"]},  # nothing to undo
        {"id": "c", "function": "act", "after": ["mid"],
         "inputs": {"sku": {"from": "steps.a.output.sku"}},
         "compensate": {"function": "undo", "retry": {"max_attempts": 5}, "queue": "undo"}},
        {"id": "d", "function": "act", "after": ["a"], "compensate": "undo"},
    ]
    for s in steps:
        s.update(over.get(s["id"], {}))
    return from_data({"name": "saga", "steps": steps})


def test_a_bare_function_name_is_a_compensation() -> None:
    wf = saga()
    assert wf.step_map["a"].compensate is not None
    assert wf.step_map["a"].compensate.function == "undo"
    assert wf.step_map["c"].compensate is not None
    assert wf.step_map["c"].compensate.retry.max_attempts == 5


def test_undo_runs_in_reverse_dependency_order_through_steps_without_one() -> None:
    wf = saga()
    statuses = {s: StepStatus.SUCCEEDED for s in ("a", "b", "mid", "c", "d")}
    ids = compensable(wf, statuses)
    assert ids == ["a", "b", "c", "d"]
    undo_wf = undo_workflow(wf, ids)
    after = {s.id: set(s.after) for s in undo_wf.steps}
    # c depends on b through mid (no compensation): b's undo waits for c's
    assert after == {"a": {"b", "c", "d"}, "b": {"c"}, "c": set(), "d": set()}
    assert undo_wf.name == "saga.undo"
    c = undo_wf.step_map["c"]
    assert c.retry.max_attempts == 5 and c.queue == "undo"
    assert c.trigger_rule.value == "all_done"  # a failed undo does not stop the others
    # the same succeeded set gives the same version: one stored definition for all
    assert undo_workflow(saga(), ids).version == undo_wf.version


def test_only_succeeded_steps_are_undone() -> None:
    wf = saga()
    statuses = {"a": StepStatus.SUCCEEDED, "b": StepStatus.SUCCEEDED,
                "mid": StepStatus.FAILED, "d": StepStatus.SKIPPED}
    assert compensable(wf, statuses) == ["a", "b"]
    statuses["b"] = StepStatus.COMPENSATING  # marked, its undo run about to start
    assert compensable(wf, statuses) == ["a", "b"]


def test_a_compensation_gets_the_steps_input_and_output() -> None:
    wf = saga()
    outputs = {"a": {"sku": "A-1"}, "c": {"sku": "A-1"}}
    data = undo_input(wf, ["a", "c"], {"sku": "A-1", "other": 1}, outputs)
    assert data == {"steps": {
        "a": {"input": {"sku": "A-1", "qty": 2}, "output": {"sku": "A-1"}},
        "c": {"input": {"sku": "A-1"}, "output": {"sku": "A-1"}}}}
    assert undo_run_id("r1") == "r1.undo"


def test_how_an_unwinding_ends() -> None:
    ok = outcome({"a": StepStatus.SUCCEEDED, "b": StepStatus.SUCCEEDED})
    assert ok == ({"a": StepStatus.COMPENSATED, "b": StepStatus.COMPENSATED},
                  RunStatus.COMPENSATED)
    steps, status = outcome({"a": StepStatus.SUCCEEDED, "b": StepStatus.FAILED})
    assert steps["b"] is StepStatus.COMPENSATION_FAILED
    assert status is RunStatus.COMPENSATION_FAILED


@pytest.mark.parametrize(("change", "code", "text"), [
    ({"compensate": "nope"}, "unknown_function", "'nope' is not registered"),
    ({"compensate": "undo.output_only"}, "bad_compensate", "lacks input"),
    ({"compensate": "undo.needs_more"}, "bad_compensate", "also requires token"),
    ({"compensate": {"function": "undo", "retry": {"max_attempts": 0}}}, "bad_retry",
     "compensate: retry.max_attempts is 0"),
    ({"compensate": {"function": "undo", "timeout_s": -1}}, "bad_timeout",
     "compensate: timeout_s is -1"),
])
def test_bad_compensations_are_refused_with_the_fix(reg: Registry, change: dict[str, Any],
                                                    code: str, text: str) -> None:
    problems = [p for p in problems_of(saga(b=change), reg) if p.step == "b"]
    assert [p.code for p in problems] == [code], problems
    assert text in problems[0].message and problems[0].fix


def test_a_valid_saga_has_no_problems(reg: Registry) -> None:
    assert problems_of(saga(), reg) == []
