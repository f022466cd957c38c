"""The Redis run store: atomic, table-checked transitions; idempotent unit counters."""

from __future__ import annotations

import pytest

from orchestrator.core.compiler import compile_workflow
from orchestrator.core.models import WorkflowDef
from orchestrator.core.states import RunStatus, StepStatus
from orchestrator.errors import RunNotFound
from orchestrator.store.runs import RunStore

pytestmark = pytest.mark.redis


def _wf() -> WorkflowDef:
    # the "N": c needs a and b, d needs b -> four units joined by counters
    return WorkflowDef(name="n", steps=[
        {"id": "a", "function": "f"}, {"id": "b", "function": "f"},
        {"id": "c", "function": "f", "after": ["a", "b"]},
        {"id": "d", "function": "f", "after": ["b"]}])


@pytest.fixture
def store(redis_url: str) -> RunStore:
    return RunStore.from_url(redis_url, "t", retention_s=60)


def test_step_transitions_follow_the_table(store: RunStore) -> None:
    wf = _wf()
    plan = compile_workflow(wf)
    store.create_run("r1", wf, plan, {"x": 1})
    assert store.transition_step("r1", "a", StepStatus.RUNNING, attempt=1)
    assert store.transition_step("r1", "a", StepStatus.SUCCEEDED, output={"v": 2},
                                 has_output=True)
    # terminal states are final: an illegal transition is refused, nothing changes
    assert not store.transition_step("r1", "a", StepStatus.RUNNING)
    assert not store.transition_step("r1", "a", StepStatus.FAILED)
    rec = store.step_runs("r1", ["a"])["a"]
    assert rec.status is StepStatus.SUCCEEDED and rec.attempt == 1
    assert store.outputs("r1", ["a", "b"]) == {"a": {"v": 2}}
    assert store.step_runs("r1", ["b"])["b"].status is StepStatus.PENDING
    kinds = [f["status"] for _, f in store.events("r1")]
    assert kinds == ["running", "running", "succeeded"]  # run started, a ran, a succeeded


def test_run_transitions_and_indexes(store: RunStore) -> None:
    wf = _wf()
    store.create_run("r2", wf, compile_workflow(wf), {})
    assert store.list_runs(status=RunStatus.RUNNING) == ["r2"]
    assert store.transition_run("r2", RunStatus.SUCCEEDED)
    assert not store.transition_run("r2", RunStatus.CANCELLED)
    assert store.run("r2").status is RunStatus.SUCCEEDED
    assert store.list_runs(status=RunStatus.RUNNING) == []
    assert store.list_runs(workflow="n", status=RunStatus.SUCCEEDED) == ["r2"]
    assert 0 < store.client.ttl(store.keys.run("r2")) <= 60  # retention applied at the end
    with pytest.raises(RunNotFound):
        store.run("nope")


def test_unit_completion_is_atomic_and_idempotent(store: RunStore) -> None:
    wf = _wf()
    plan = compile_workflow(wf)
    store.create_run("r3", wf, plan, {})
    unit = plan.unit_of_step
    ua, ub, uc = unit["a"], unit["b"], unit["c"]
    remaining, ready = store.complete_unit("r3", ub, plan.successors[ub])
    assert remaining == 3
    assert uc not in ready and unit["d"] in ready  # d only needed b
    # a redelivered terminal changes nothing and claims nothing again
    assert store.complete_unit("r3", ub, plan.successors[ub]) == (3, [])
    remaining, ready = store.complete_unit("r3", ua, plan.successors[ua])
    assert ready == [uc] and remaining == 2
    # claimed but never published: the reaper finds the claim once it is stale
    assert ("r3", uc) in store.stale_claims(grace_s=0.0)
    assert store.stale_claims(grace_s=60.0) == []  # re-armed: one reaper gets it
    store.published("r3", [uc], ["c"])
    assert ("r3", uc) not in store.stale_claims(grace_s=0.0)
    assert store.step_runs("r3", ["c"])["c"].status.value == "queued"


def test_metrics_count_runs_steps_and_durations(store: RunStore) -> None:
    from orchestrator.api.prometheus import render

    wf = _wf()
    store.create_run("r4", wf, compile_workflow(wf), {})
    store.transition_step("r4", "a", StepStatus.RUNNING, started_at=100.0)
    store.transition_step("r4", "a", StepStatus.SUCCEEDED, ended_at=100.2, workflow="n")
    store.transition_step("r4", "b", StepStatus.SKIPPED, workflow="n")
    store.transition_run("r4", RunStatus.FAILED)
    store.client.rpush("default", "x", "y")
    text = render(store, ["default"]).decode()
    assert 'orchestrator_runs_total{status="started",workflow="n"} 1.0' in text
    assert 'orchestrator_runs_total{status="failed",workflow="n"} 1.0' in text
    assert 'orchestrator_steps_total{status="succeeded",step="a",workflow="n"} 1.0' in text
    assert 'orchestrator_steps_total{status="skipped",step="b",workflow="n"} 1.0' in text
    assert 'orchestrator_step_duration_seconds_bucket{le="0.1",step="a",workflow="n"} 0.0' \
        in text
    assert 'orchestrator_step_duration_seconds_bucket{le="0.25",step="a",workflow="n"} 1.0' \
        in text
    assert 'orchestrator_queue_depth{queue="default"} 2.0' in text


def test_listing_drops_runs_expired_by_retention(store: RunStore) -> None:
    wf = _wf()
    for rid in ("old", "new"):
        store.create_run(rid, wf, compile_workflow(wf), {})
    store.client.delete(*store.keys.run_keys("old"))  # what retention does, later
    assert store.list_runs() == ["new"]
    assert store.list_runs(workflow="n", status=RunStatus.RUNNING) == ["new"]
    assert store.client.zscore(store.keys.runs_index(), "old") is None
