"""Concurrency slots in the store, without a broker: the scripts that take, wait for,
pass and release a step's or a workflow's slots, against a real redis-server."""

from __future__ import annotations

import json
import uuid

import pytest

from orchestrator.core.compiler import compile_workflow
from orchestrator.core.concurrency import Admission, run_slot, step_slot
from orchestrator.core.models import WorkflowDef
from orchestrator.core.states import RunStatus, StepStatus
from orchestrator.store import RunStore
from orchestrator.store.records import LeaseMode
from orchestrator.store.slots import Slots, Taken, slot_timer_id

pytestmark = pytest.mark.redis


def _wf(when_full: str = "queue", level: str = "step") -> WorkflowDef:
    limit = {"key": "input.k", "limit": 1, "when_full": when_full}
    step: dict[str, object] = {"id": "a", "function": "fn"}
    data: dict[str, object] = {"name": f"cs_{level}_{when_full}", "steps": [step]}
    if level == "step":
        step["concurrency"] = limit
    else:
        data["concurrency"] = limit
    return WorkflowDef.model_validate(data)


@pytest.fixture
def store(redis_url: str) -> RunStore:
    return RunStore.from_url(redis_url, f"cs{uuid.uuid4().hex[:8]}", retention_s=60)


def _begin(store: RunStore, run_id: str, token: str) -> None:
    mode = store.begin_step(run_id, "a", [], [], [], False, {}, token=token)[3]
    assert mode is LeaseMode.OWNED


def test_step_slots_are_taken_waited_for_and_passed_in_arrival_order(
        store: RunStore) -> None:
    wf = _wf()
    plan = compile_workflow(wf)
    slots = Slots(store.client, store.keys)
    slot = step_slot(wf.step_map["a"], {"k": "x"})
    runs = [f"r{i}" for i in range(3)]
    for rid in runs:
        store.create_run(rid, wf, plan, {"k": "x"})
        _begin(store, rid, f"t-{rid}")
    got = [slots.acquire(rid, "a", slot, f"t-{rid}", {"task": rid}, 60) for rid in runs]
    assert got == [Taken.HELD, Taken.WAITING, Taken.WAITING]
    assert slots.holders(slot.scope) == ["r0|a"] and slots.waiting(slot.scope) == 2
    r = store.client
    timers = store.keys.timers()
    for rid in runs[1:]:  # held, not due; its lease given up; its record says why
        timer = slot_timer_id(rid, "a", f"t-{rid}")
        assert float(r.zscore(timers, timer) or 0) > 1e15
        assert json.loads(str(r.get(store.keys.timer(timer)))) == {"task": rid}
        assert r.hget(store.keys.leases(rid), "a") == f"t-{rid}|0||given"  # given up
        assert "slot" in (store.step_runs(rid, ["a"])["a"].reason or "")
    # the holder ends: r1 holds the slot, its message is due now; r2 still waits
    assert store.transition_step("r0", "a", StepStatus.RUNNING)
    assert slots.holders(slot.scope) == ["r0|a"]  # running: still holding
    assert store.transition_step("r0", "a", StepStatus.SUCCEEDED)
    assert slots.holders(slot.scope) == ["r1|a"] and slots.waiting(slot.scope) == 1
    due = store.due_timers(30.0)
    assert [t for t, _ in due] == [slot_timer_id("r1", "a", "t-r1")]
    # its redelivery finds itself a holder (no second slot), and the wait is cleared
    _begin(store, "r1", "t-r1-again")
    assert slots.acquire("r1", "a", slot, "t-r1-again", {}, 60) is Taken.HELD
    assert slots.holders(slot.scope) == ["r1|a"]
    assert store.step_runs("r1", ["a"])["a"].reason is None
    # a waiting step run that is cancelled leaves the queue and its timer goes
    assert store.transition_step("r2", "a", StepStatus.CANCELLED, reason="run cancelled")
    assert slots.waiting(slot.scope) == 0
    assert r.zscore(timers, slot_timer_id("r2", "a", "t-r2")) is None
    assert store.transition_step("r1", "a", StepStatus.FAILED)
    assert slots.holders(slot.scope) == []


def test_a_step_at_a_full_cancel_newest_limit_is_refused(store: RunStore) -> None:
    wf = _wf("cancel_newest")
    plan = compile_workflow(wf)
    slots = Slots(store.client, store.keys)
    slot = step_slot(wf.step_map["a"], {"k": "y"})
    for rid in ("n0", "n1"):
        store.create_run(rid, wf, plan, {"k": "y"})
        _begin(store, rid, rid)
    assert slots.acquire("n0", "a", slot, "n0", {}, 60) is Taken.HELD
    assert slots.acquire("n1", "a", slot, "n1", {}, 60) is Taken.FULL
    assert slots.acquire("n1", "a", slot, "someone else", {}, 60) is Taken.FENCED


def test_workflow_slots_queue_pass_and_claim(store: RunStore) -> None:
    wf = _wf(level="workflow")
    plan = compile_workflow(wf)
    slot = run_slot(wf, {"k": "z"})
    got = [store.create_run(rid, wf, plan, {"k": "z"}, slot=slot) for rid in ("w0", "w1")]
    assert got == [(Admission.STARTED, ""), (Admission.QUEUED, "")]
    assert store.run("w1").status is RunStatus.QUEUED
    assert store.list_runs(status=RunStatus.QUEUED) == ["w1"]
    assert store.queue_position("w1") == 1
    moved, passed = store.end_run("w0", RunStatus.SUCCEEDED)
    assert moved and passed is not None and passed.run_id == "w1"
    assert passed.version == wf.version
    w1 = store.run("w1")
    assert w1.status is RunStatus.RUNNING and w1.started_at is not None
    assert w1.reason is None
    # its first units are claimed, and noted for the reaper until published
    assert store.client.smembers(store.keys.units_claimed("w1")) == set(plan.sources)
    assert store.stale_claims(0.0) == [("w1", u) for u in plan.sources]
    assert store.list_runs(status=RunStatus.QUEUED) == []
    # ending again passes nothing; the last holder's end leaves the key empty
    assert store.end_run("w0", RunStatus.SUCCEEDED) == (False, None)
    assert store.end_run("w1", RunStatus.SUCCEEDED) == (True, None)
    assert slot is not None
    assert store.client.zcard(store.keys.concurrency_holders(slot.scope)) == 0


def test_cancel_oldest_displaces_and_cancel_newest_refuses(store: RunStore) -> None:
    oldest = _wf("cancel_oldest", "workflow")
    plan = compile_workflow(oldest)
    slot = run_slot(oldest, {"k": "o"})
    assert store.create_run("o0", oldest, plan, {"k": "o"}, slot=slot)[0] is \
        Admission.STARTED
    assert store.create_run("o1", oldest, plan, {"k": "o"}, slot=slot) == \
        (Admission.DISPLACED, "o0")
    # the displaced holder's end (its cancel) passes nothing: it held no slot any more
    assert store.end_run("o0", RunStatus.CANCELLED) == (True, None)
    newest = _wf("cancel_newest", "workflow")
    nplan = compile_workflow(newest)
    nslot = run_slot(newest, {"k": "n"})
    store.create_run("n0", newest, nplan, {"k": "n"}, slot=nslot)
    assert store.create_run("n1", newest, nplan, {"k": "n"}, slot=nslot) == \
        (Admission.CANCELLED, "")
    n1 = store.run("n1")
    assert n1.status is RunStatus.CANCELLED and n1.ended_at is not None
    assert n1.reason is not None and "cancel_newest" in n1.reason
    assert store.client.ttl(store.keys.run("n1")) > 0  # retention, as any ended run
