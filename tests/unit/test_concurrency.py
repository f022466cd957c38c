"""Concurrency limits, pure: the model, its checks, the key's value and scope, the queued
run status."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.api.models import RunOut
from orchestrator.cli.follow import step_table
from orchestrator.core import concurrency
from orchestrator.core.models import ConcurrencyDef
from orchestrator.core.states import RUN_TRANSITIONS, RunStatus, StepStatus, run_sources
from orchestrator.core.validation import problems_of
from orchestrator.core.yamlio import from_data
from orchestrator.errors import ConditionError
from orchestrator.runtime.coordinator import RunView
from orchestrator.store.records import RunRecord, StepRun


def wf(limit: Any = None, step_limit: Any = None, **step: Any) -> Any:
    data: dict[str, Any] = {"name": "cc", "steps": [
        {"id": "a", "function": "fn", **({"concurrency": step_limit} if step_limit else {}),
         **step}]}
    if limit is not None:
        data["concurrency"] = limit
    return from_data(data)


def test_the_model_defaults_to_queue_and_refuses_a_limit_below_one() -> None:
    c = ConcurrencyDef(key="input.order", limit=1)
    assert c.when_full == "queue"
    with pytest.raises(Exception, match="limit"):
        wf({"key": "input.order", "limit": 0})
    with pytest.raises(Exception, match="when_full"):
        wf({"key": "input.order", "limit": 1, "when_full": "drop"})


def test_a_limit_changes_the_version_and_no_limit_keeps_it() -> None:
    plain = wf()
    limited = wf({"key": "input.customer", "limit": 5})
    assert plain.version != limited.version
    assert limited.model_copy(update={"concurrency": None}).version == plain.version
    # spelling the default out changes nothing
    assert wf({"key": "input.customer", "limit": 5, "when_full": "queue"}).version == \
        limited.version


@pytest.mark.parametrize(("limit", "step_limit", "step", "text"), [
    ({"key": "input.customer +", "limit": 2}, None, {}, "key:"),
    ({"key": "steps.a.output", "limit": 2}, None, {}, "key:"),
    (None, {"key": "input.x", "limit": 1, "when_full": "cancel_oldest"}, {},
     "cannot be cancelled alone"),
    (None, {"key": "input.x", "limit": 1},
     {"function": None, "wait": {"kind": "sleep", "duration_s": 1.0}}, "wait step"),
])
def test_problems_name_the_fix(limit: Any, step_limit: Any, step: dict[str, Any],
                               text: str) -> None:
    if step.get("function", "") is None:
        step = {k: v for k, v in step.items() if k != "function"}
    found = [p for p in problems_of(wf(limit, step_limit, **step))
             if p.code == "bad_concurrency"]
    assert len(found) == 1 and text in found[0].message, found
    assert found[0].fix
    assert (found[0].step is None) == (limit is not None)


def test_a_valid_limit_has_no_problem() -> None:
    found = problems_of(wf({"key": "input.customer", "limit": 2, "when_full":
                            "cancel_oldest"}, {"key": "input.env", "limit": 1}))
    assert [p for p in found if p.code == "bad_concurrency"] == []


def test_the_key_value_and_its_scope() -> None:
    w = wf({"key": "input.customer", "limit": 2}, {"key": "input.n", "limit": 1})
    assert w.concurrency is not None
    assert concurrency.key_value(w.concurrency, {"customer": "c-7"}) == "c-7"
    assert concurrency.key_value(w.concurrency, {"customer": 7}) == "7"
    assert concurrency.key_value(w.concurrency, {"customer": {"b": 1, "a": [2]}}) == \
        '{"a":[2],"b":1}'
    slot = concurrency.run_slot(w, {"customer": "c-7"})
    assert slot is not None
    assert (slot.scope, slot.value, slot.limit, slot.when_full) == ("wf:cc:c-7", "c-7", 2,
                                                                    "queue")
    assert "'c-7'" in slot.waiting and "cancel_newest" in slot.refused
    step_slot = concurrency.step_slot(w.step_map["a"], {"n": "x"})
    assert step_slot.scope == "step:fn:x"
    assert concurrency.run_slot(wf(), {"customer": "c"}) is None


def test_a_key_that_fails_on_the_input_raises() -> None:
    w = wf({"key": "input.customer", "limit": 2})
    with pytest.raises(ConditionError):
        concurrency.run_slot(w, {"other": 1})


def test_a_queued_run_starts_or_is_cancelled_and_nothing_else() -> None:
    assert RUN_TRANSITIONS[RunStatus.QUEUED] == {RunStatus.RUNNING, RunStatus.CANCELLED}
    assert RunStatus.QUEUED in run_sources(RunStatus.RUNNING)
    assert RunStatus.QUEUED in run_sources(RunStatus.CANCELLED)
    assert RunStatus.QUEUED not in run_sources(RunStatus.SUCCEEDED)
    assert not RunStatus.QUEUED.terminal


def test_a_queued_run_shows_its_reason_and_place() -> None:
    reason = "waits for a slot of concurrency key 'c-7' (limit 2, in arrival order)"
    run = RunRecord("r1", "wf", "v", RunStatus.QUEUED, {}, 1.0, None, None, 1,
                    reason=reason, slot_key="c-7")
    view = RunView(run, [StepRun("a", StepStatus.PENDING)], {}, None, 3)
    out = RunOut.from_view(view)
    assert (out.status, out.reason, out.queue_position) == (RunStatus.QUEUED, reason, 3)
    assert out.shaped("status").reason is None  # a status-only token sees no reasons
    table = step_table(view)
    assert "run r1: queued (waiting)" in table and f"{reason} (position 3)" in table
