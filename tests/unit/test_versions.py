"""Diffs between versions of a workflow (pure)."""

from __future__ import annotations

from typing import Any

from orchestrator.core.models import WorkflowDef
from orchestrator.core.versions import diff


def wf(**changes: Any) -> WorkflowDef:
    steps: list[dict[str, Any]] = [
        {"id": "check", "function": "inventory.check", "inputs": {"sku": {"from": "input.sku"}}},
        {"id": "reserve", "function": "inventory.reserve",
         "inputs": {"sku": {"from": "steps.check.output.sku"}},
         "retry": {"max_attempts": 3}},
        {"id": "ship", "function": "shipping.ship", "after": ["reserve"]},
    ]
    for step_id, fields in changes.items():
        if fields is None:
            steps = [s for s in steps if s["id"] != step_id]
            continue
        existing = next((s for s in steps if s["id"] == step_id), None)
        if existing is None:
            steps.append({"id": step_id, **fields})
        else:
            existing.update(fields)
    return WorkflowDef.model_validate({"name": "order", "steps": steps})


def test_equal_definitions_have_no_changes() -> None:
    d = diff(wf(), wf())
    assert d.same and d.changed_steps() == [] and d.lines()[-1] == "(no change)"
    assert d.old == d.new == wf().version


def test_added_removed_and_changed_steps_are_named_with_their_fields() -> None:
    new = wf(ship=None, notify={"function": "mail.send", "after": ["reserve"]},
             reserve={"retry": {"max_attempts": 5}})
    d = diff(wf(), new)
    assert d.added == ("notify",) and d.removed == ("ship",)
    assert [c.field for c in d.changed["reserve"]] == ["retry.max_attempts"]
    assert (d.changed["reserve"][0].old, d.changed["reserve"][0].new) == (3, 5)
    assert d.changed_steps() == ["reserve", "ship"]
    assert d.changed_steps({"check", "reserve"}) == ["reserve"]
    assert "~ reserve.retry.max_attempts: 3 -> 5" in d.lines()
    assert "+ notify" in d.lines() and "- ship" in d.lines()


def test_a_new_description_alone_does_not_change_what_a_step_does() -> None:
    d = diff(wf(), wf(check={"description": "look it up"}))
    assert not d.same and "check" in d.changed
    assert d.changed_steps() == []


def test_workflow_fields_are_compared() -> None:
    new = WorkflowDef.model_validate({**wf().model_dump(by_alias=True, exclude_defaults=True),
                                      "default_queue": "io"})
    d = diff(wf(), new)
    assert [(c.field, c.old, c.new) for c in d.workflow] == [("default_queue", None, "io")]
