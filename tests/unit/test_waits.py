"""Durable waits, the pure part: the model, validation, what a wait parks with and what a
delivery of a waiting step does (no broker here)."""

from __future__ import annotations

import json

import pytest

from orchestrator.core.dsl import Workflow
from orchestrator.core.models import StepDef
from orchestrator.core.states import STEP_TRANSITIONS, StepStatus, step_sources
from orchestrator.core.validation import problems_of
from orchestrator.core.waits import (
    WAIT_FUNCTION,
    ApprovalRejected,
    Parked,
    WaitDef,
    WaitError,
    WaitKind,
    WaitTimedOut,
    check_key,
    outcome,
    park,
    to_unix_s,
)
from orchestrator.core.yamlio import dump_yaml, parse_yaml
from orchestrator.errors import DefinitionError

NOW = 1_800_000_000.0


def test_waiting_transitions() -> None:
    w = StepStatus.WAITING
    assert w in STEP_TRANSITIONS[StepStatus.QUEUED] and w in STEP_TRANSITIONS[StepStatus.PENDING]
    # retrying: a sub-workflow step whose child run failed starts another (its retry)
    assert STEP_TRANSITIONS[w] == {w, StepStatus.SUCCEEDED, StepStatus.FAILED,
                                   StepStatus.CANCELLED, StepStatus.RETRYING}
    # a sub-workflow step runs (starts its child run), then waits
    assert w in STEP_TRANSITIONS[StepStatus.RUNNING]
    assert w in step_sources(StepStatus.CANCELLED) and not w.terminal


def test_a_wait_step_needs_no_function_in_yaml_and_equals_the_dsl() -> None:
    text = """
name: w
steps:
  - id: a
    wait: {kind: event, key: '"pay:" + input.id', timeout_s: 60}
  - id: b
    wait: {kind: approval, prompt: ok?}
    after: [a]
"""
    wf = parse_yaml(text)
    assert wf.steps[0].function == WAIT_FUNCTION
    d = Workflow("w")
    a = d.wait("a", event='"pay:" + input.id', timeout_s=60)
    d.wait("b", approval=True, prompt="ok?", after=[a])
    assert d.build() == wf and d.build().version == wf.version
    assert parse_yaml(dump_yaml(wf)) == wf
    assert problems_of(wf) == []


def test_the_dsl_takes_one_kind_of_wait() -> None:
    with pytest.raises(DefinitionError, match="exactly one of"):
        Workflow("w").wait("x", sleep_s=1, approval=True)


def _codes(steps: list[dict[str, object]]) -> list[tuple[str, str | None]]:
    wf = parse_yaml(json.dumps({"name": "w", "steps": steps}))
    return [(p.code, p.step) for p in problems_of(wf)]


def test_validation_names_each_wait_problem() -> None:
    got = _codes([
        {"id": "a", "wait": {"kind": "event"}},                         # no key
        {"id": "b", "wait": {"kind": "sleep", "duration_s": -1}},       # not above 0
        {"id": "c", "wait": {"kind": "sleep", "duration_s": 1, "key": "'x'"}},  # no key
        {"id": "d", "wait": {"kind": "event", "key": "steps.e.output.k"}},  # not ancestor
        {"id": "e", "wait": {"kind": "until", "until": "nope("}},       # syntax
        {"id": "f", "function": WAIT_FUNCTION},                         # no wait
        {"id": "g", "wait": {"kind": "approval"}, "inputs": {"x": 1}},  # no inputs
    ])
    assert ("bad_wait", "a") in got and ("bad_wait", "b") in got and ("bad_wait", "c") in got
    assert ("not_ancestor", "d") in got and ("bad_condition", "e") in got
    assert ("bad_wait", "f") in got and ("bad_wait", "g") in got


def test_park_computes_each_kind() -> None:
    assert park(WaitDef(kind=WaitKind.SLEEP, duration_s=3600), NOW, {}).due_at == NOW + 3600
    until = park(WaitDef(kind=WaitKind.UNTIL, until="x"), NOW,
                 {"until": "2027-01-15T00:00:00Z"})
    assert until.due_at == to_unix_s("2027-01-15T00:00:00+00:00", "x")
    ev = park(WaitDef(kind=WaitKind.EVENT, key="k", timeout_s=10), NOW, {"key": "pay:1"})
    assert ev.key == "pay:1" and ev.timeout_at == NOW + 10 and ev.timer_at == NOW + 10
    ap = park(WaitDef(kind=WaitKind.APPROVAL, prompt="ok?"), NOW, {})
    assert ap.timer_at is None and ap.prompt == "ok?"
    assert Parked.from_record(ev.to_record()) == ev


@pytest.mark.parametrize("value", [True, "tomorrow", "2027-01-15T00:00:00", {"a": 1}])
def test_until_refuses_what_is_no_time(value: object) -> None:
    with pytest.raises(WaitError):
        to_unix_s(value, "x")


@pytest.mark.parametrize("key", ["", "a b", "x" * 201, "tab\there"])
def test_event_keys_must_be_printable_words(key: str) -> None:
    with pytest.raises(WaitError):
        check_key(key)


def test_outcomes() -> None:
    ev = Parked(WaitKind.EVENT, key="k", timeout_at=NOW + 10)
    assert outcome(ev, None, NOW).action == "wait"
    got = outcome(ev, {"event_id": "1", "data": json.dumps({"a": []})}, NOW)
    assert got.action == "succeed" and got.output == {"a": []}
    late = outcome(ev, None, NOW + 10)
    assert late.action == "fail" and isinstance(late.error, WaitTimedOut)
    ap = Parked(WaitKind.APPROVAL)
    assert outcome(ap, None, NOW + 10**9).action == "wait"  # no timeout: waits on
    yes = outcome(ap, {"decision": "approved", "comment": "ok", "by": "ann", "at": NOW}, NOW)
    assert yes.action == "succeed" and yes.output["by"] == "ann"
    no = outcome(ap, {"decision": "rejected", "comment": "no", "by": "bob"}, NOW)
    assert isinstance(no.error, ApprovalRejected) and "bob: no" in str(no.error)
    nap = Parked(WaitKind.SLEEP, due_at=NOW + 5)
    assert outcome(nap, None, NOW + 4.9).action == "wait"
    assert outcome(nap, None, NOW + 5).output == {"waited_until": NOW + 5}


def test_a_wait_step_model_keeps_its_function_if_given() -> None:
    s = StepDef.model_validate({"id": "x", "function": "other", "wait": {"kind": "approval"}})
    assert s.function == "other"  # validation reports it (bad_wait)
