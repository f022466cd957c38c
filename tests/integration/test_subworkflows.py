"""Sub-workflows on real workers: a step runs a cataloged workflow as a child run and
waits for it (no worker slot held); the child's output flows on; a failed child is retried
as a new child run, then the failure path runs; cancelling the parent cancels the child;
a parent that fails undoes a succeeded child's steps; two levels nest; a worker killed
while the child runs loses nothing; a mapped sub-workflow step runs one child per item,
each child mapping in turn (nested maps), under the map's failure policies, cancelled with
its parent, and a worker killed in a nested item loses nothing.  Step functions count
their executions (``test:exec:<run>``) and completions (``test:done:<run>``): see
``tests/integration/flows_subworkflows.py``."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from orchestrator.api.models import RunOut
from orchestrator.cli.follow import step_table
from orchestrator.core.compensation import undo_run_id
from orchestrator.core.states import RunStatus, StepStatus
from orchestrator.core.subworkflows import child_run_id
from orchestrator.runtime.coordinator import Coordinator
from tests.integration.conftest import private_stack, statuses, wait_run
from tests.integration.flows_subworkflows import sw_child, sw_parent
from tests.support.wait import wait_until
from tests.support.waits import executions
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.redis


def done(coord: Coordinator, run_id: str) -> dict[str, int]:
    """How many executions of each step of the run returned (ran to completion)."""
    return {k: int(v) for k, v in coord.store.client.hgetall(f"test:done:{run_id}").items()}


def test_the_child_output_flows_to_the_next_parent_step(coord: Coordinator) -> None:
    run_id = coord.submit("sw_parent", {"x": 21})
    view = wait_run(coord, run_id)
    assert view.run.status is RunStatus.SUCCEEDED, statuses(view)
    child = child_run_id(run_id, "kid", 1)
    # the one sink's output is the child's output, and the next step gets it
    assert view.outputs["kid"] == 42 and view.outputs["after"] == 42
    kid = next(s for s in view.steps if s.step_id == "kid")
    assert kid.child_runs == [child] and kid.wait == {"kind": "workflow", "run": child}
    cview = coord.view(child)
    assert cview.run.parent_run == run_id and cview.run.parent_step == "kid"
    assert cview.run.origin.kind.value == "workflow"
    assert cview.run.version == sw_child.version
    assert executions(coord, run_id) == {"a": 1, "after": 1}  # kid calls no function
    assert executions(coord, child) == {"double": 1} == done(coord, child)
    # `orchestrator status` and the API show the link both ways
    assert f"child runs of kid: {child}" in step_table(view)
    assert f"child run of run {run_id} (step kid)" in step_table(cview)
    wire = RunOut.from_view(cview)
    assert (wire.parent_run, wire.parent_step) == (run_id, "kid")
    assert RunOut.from_view(view).steps[1].child_runs == [child]


def test_a_failed_child_is_retried_as_a_new_child_run(coord: Coordinator) -> None:
    tag = uuid.uuid4().hex
    run_id = coord.submit("sw_retry_parent", {"tag": tag, "fails": 1})
    view = wait_run(coord, run_id)
    assert statuses(view) == {"kid": "succeeded", "on_kid": "skipped"}
    first, second = child_run_id(run_id, "kid", 1), child_run_id(run_id, "kid", 2)
    assert coord.store.run(first).status is RunStatus.FAILED
    assert coord.store.run(second).status is RunStatus.SUCCEEDED
    kid = next(s for s in view.steps if s.step_id == "kid")
    assert kid.attempt == 2 and kid.child_runs == [first, second]
    assert view.outputs["kid"] == "ok after 2"
    assert executions(coord, first) == {"try": 1} and executions(coord, second) == {"try": 1}
    assert not coord.store.exists(child_run_id(run_id, "kid", 3))


def test_a_child_that_fails_for_good_fails_the_step_and_its_handler_runs(
        coord: Coordinator) -> None:
    tag = uuid.uuid4().hex
    run_id = coord.submit("sw_retry_parent", {"tag": tag, "fails": 99})
    view = wait_run(coord, run_id)
    assert view.run.status is RunStatus.FAILED
    assert statuses(view) == {"kid": "failed", "on_kid": "succeeded"}
    kid = next(s for s in view.steps if s.step_id == "kid")
    second = child_run_id(run_id, "kid", 2)
    assert kid.attempt == 2 and kid.error is not None and second in kid.error["message"]
    assert kid.error["type"].endswith("SubWorkflowFailed")
    for child in (child_run_id(run_id, "kid", 1), second):  # the policy's 2 attempts
        assert coord.store.run(child).status is RunStatus.FAILED
        assert executions(coord, child) == {"try": 1}
    assert int(coord.store.client.hget("test:sw:tries", tag) or 0) == 2
    assert executions(coord, run_id) == {"on_kid": 1}


def test_cancelling_the_parent_cancels_its_running_child(coord: Coordinator) -> None:
    run_id = coord.submit("sw_cancel_parent", {})
    child = child_run_id(run_id, "kid", 1)
    wait_until(lambda: coord.store.exists(child) and coord.store.step_runs(
        child, ["nap"])["nap"].status is StepStatus.WAITING, 30,
        message="the child never reached its nap")
    assert f"waits for run {child}" in step_table(coord.view(run_id))
    assert coord.cancel(run_id)
    assert coord.store.run(run_id).status is RunStatus.CANCELLED
    assert coord.store.run(child).status is RunStatus.CANCELLED
    assert statuses(coord.view(child)) == {"first": "succeeded", "nap": "cancelled"}
    assert statuses(coord.view(run_id)) == {"kid": "cancelled", "never": "cancelled"}
    assert executions(coord, run_id) == {}


def test_cancelling_the_parent_with_compensation_unwinds_its_child(
        coord: Coordinator) -> None:
    run_id = coord.submit("sw_cancel_saga_parent", {})
    child = child_run_id(run_id, "kid", 1)
    wait_until(lambda: coord.store.exists(child) and coord.store.step_runs(
        child, ["nap"])["nap"].status is StepStatus.WAITING, 30,
        message="the child never reached its nap")
    assert coord.cancel(run_id, compensate=True)
    assert wait_run(coord, child, 60).run.status is RunStatus.COMPENSATED
    assert statuses(coord.view(child)) == {"a": "compensated", "nap": "cancelled"}
    assert executions(coord, undo_run_id(child)) == {"a": 1}
    assert executions(coord, child) == {"a": 1}
    # the parent had nothing of its own to undo: its step was cancelled
    view = wait_run(coord, run_id, 60)
    assert view.run.status is RunStatus.COMPENSATED
    assert statuses(view) == {"kid": "cancelled"}


def test_a_parent_that_fails_undoes_its_succeeded_child(coord: Coordinator) -> None:
    run_id = coord.submit("sw_saga_parent", {"fail_c": True})
    view = wait_run(coord, run_id, 60)
    assert view.run.status is RunStatus.COMPENSATED, statuses(view)
    assert statuses(view) == {"kid": "compensated", "c": "failed"}
    child = child_run_id(run_id, "kid", 1)
    child_undo = undo_run_id(child)
    # the parent's undo run has one step for the child: it ran the child's undo run
    undo = coord.view(undo_run_id(run_id))
    assert statuses(undo) == {"kid": "succeeded"}
    assert coord.store.run(child_undo).parent_run == undo_run_id(run_id)
    assert coord.store.run(child_undo).status is RunStatus.SUCCEEDED
    # the child's compensation ran once; the child keeps its own status, its step undone
    assert executions(coord, child_undo) == {"a": 1}
    assert executions(coord, child) == {"a": 1}
    assert coord.store.run(child).status is RunStatus.SUCCEEDED
    assert statuses(coord.view(child)) == {"a": "compensated"}


def test_a_parent_that_succeeds_undoes_nothing(coord: Coordinator) -> None:
    run_id = coord.submit("sw_saga_parent", {"fail_c": False})
    view = wait_run(coord, run_id)
    assert view.run.status is RunStatus.SUCCEEDED
    assert not coord.store.exists(undo_run_id(run_id))
    assert not coord.store.exists(undo_run_id(child_run_id(run_id, "kid", 1)))


def test_sub_workflows_nest_two_levels(coord: Coordinator) -> None:
    run_id = coord.submit("sw_outer", {"x": 5})
    view = wait_run(coord, run_id, 60)
    assert view.run.status is RunStatus.SUCCEEDED, statuses(view)
    mid = child_run_id(run_id, "mid", 1)
    leaf = child_run_id(mid, "kid", 1)
    assert view.outputs["mid"] == 10 and view.outputs["last"] == 10
    assert coord.store.run(leaf).parent_run == mid
    assert coord.store.run(mid).parent_run == run_id
    assert executions(coord, run_id) == {"last": 1}
    assert executions(coord, mid) == {"a": 1, "after": 1}
    assert executions(coord, leaf) == {"double": 1}


def test_a_run_in_flight_keeps_its_child_version_when_the_child_changes(
        coord: Coordinator) -> None:
    old = coord.submit("sw_parent", {"x": 1, "pause_s": 1.0})
    # the child is edited: a new child version, and the parent re-pinned to it (what the
    # catalog does when the workers load the edited package)
    edited = sw_child.model_copy(update={"description": "edited"})
    coord.definitions.compile(edited)
    steps = tuple(s.model_copy(update={"workflow": s.workflow.model_copy(
        update={"version": edited.version})}) if s.workflow is not None else s
        for s in sw_parent.steps)
    new_parent = sw_parent.model_copy(update={"steps": steps})
    assert new_parent.version != sw_parent.version
    new = coord.submit(new_parent, {"x": 2})
    for rid, x in ((old, 1), (new, 2)):
        assert wait_run(coord, rid).outputs["after"] == 2 * x
    assert coord.store.run(child_run_id(old, "kid", 1)).version == sw_child.version
    assert coord.store.run(child_run_id(new, "kid", 1)).version == edited.version


def test_a_worker_killed_while_the_child_runs_loses_nothing(redis_binary: str) -> None:
    with private_stack(redis_binary, ["w1", "w2"], lease_s=2.0) as (_, coord, workers):
        run_id = coord.submit("sw_outer", {"x": 3, "pause_s": 3.0})
        mid = child_run_id(run_id, "mid", 1)
        leaf = child_run_id(mid, "kid", 1)

        def running() -> Any:
            if not coord.store.exists(leaf):
                return None
            rec = coord.store.step_runs(leaf, ["double"])["double"]
            return rec if rec.status is StepStatus.RUNNING else None

        rec = wait_until(running, 30, message="the leaf child's step never ran")
        wait_until(lambda: executions(coord, leaf).get("double") == 1, 10)
        victim = next(w for w in workers if w.name == rec.worker)
        victim.kill()
        for rid in (run_id, mid, leaf):
            view = wait_run(coord, rid, 90)
            assert view.run.status is RunStatus.SUCCEEDED, (rid, statuses(view))
        assert coord.view(run_id).outputs["last"] == 6
        # every step function ran to completion exactly once; only the killed one started
        # twice
        assert done(coord, run_id) == {"last": 1}
        assert done(coord, mid) == {"a": 1, "after": 1}
        assert done(coord, leaf) == {"double": 1}
        assert executions(coord, leaf) == {"double": 2}
        assert executions(coord, mid) == {"a": 1, "after": 1}
        assert not coord.store.exists(child_run_id(mid, "kid", 2))


def test_a_redis_restart_while_the_parent_waits_loses_nothing(redis_binary: str) -> None:
    """Redis crashes while the parent's step is parked and the child's step runs, and comes
    back from its AOF: the parked message and the child both survive; the child's end
    wakes the parent.  (A worker whose connection dies mid-task may stop consuming: kombu
    fails to restore its unacked messages on that path; a second worker, started before
    the crash as in test_compensation.py, may take over.)"""
    with private_stack(redis_binary, ["r1"], concurrency=2, lease_s=2.0, appendonly=True,
                       server_args=("--appendfsync", "always")) as (server, coord, _):
        # the second worker is ready before the run starts, so that the crash comes while
        # the child's 2 s step runs (a crash while `after` runs could end it after its
        # function returned and before its end was recorded: it would run again, rightly)
        fresh = WorkerProcess(server.url, "fresh", concurrency=2, lease_s=2.0)
        try:
            fresh.wait_ready(coord.app)
            run_id = coord.submit("sw_parent", {"x": 4, "pause_s": 2.0})
            child = child_run_id(run_id, "kid", 1)
            wait_until(lambda: coord.store.exists(child) and executions(coord, child), 30,
                       message="the child's step never ran")
            assert coord.store.step_runs(run_id, ["kid"])["kid"].status \
                is StepStatus.WAITING
            assert not done(coord, child), "the child's step ended before the crash"
            server.kill()
            server.restart()
            wait_until(server.ping, 30, message="redis did not come back")
            view = wait_run(coord, run_id, 90)
        finally:
            fresh.stop()
        assert view.run.status is RunStatus.SUCCEEDED, statuses(view)
        assert view.outputs["after"] == 8
        assert coord.store.run(child).status is RunStatus.SUCCEEDED
        assert done(coord, run_id) == {"a": 1, "after": 1}
        assert done(coord, child) == {"double": 1}
        assert not coord.store.exists(child_run_id(run_id, "kid", 2))


# --- mapped sub-workflows (a map inside each child: nested maps) ---------------------------


def _children(run_id: str, ns: list[int]) -> list[str]:
    return [child_run_id(run_id, f"kids[{i}]", 1) for i in range(len(ns))]


def test_a_mapped_sub_workflow_runs_one_child_per_item_each_with_its_own_map(
        coord: Coordinator) -> None:
    ns = [1, 2, 3, 4]
    run_id = coord.submit("sw_map_parent", {"ns": ns})
    view = wait_run(coord, run_id, 60)
    assert view.run.status is RunStatus.SUCCEEDED, statuses(view)
    # each child: spread(n) = [1..n], doubled by its own map, summed: n * (n + 1)
    assert view.outputs["kids"] == [2, 6, 12, 20] and view.outputs["after"] == [2, 6, 12, 20]
    assert executions(coord, run_id) == {"after": 1} == done(coord, run_id)
    for i, (n, child) in enumerate(zip(ns, _children(run_id, ns), strict=True)):
        assert child == f"{run_id}.kids.{i}.1"  # no [ ] in a run id
        cview = coord.view(child)
        assert cview.run.status is RunStatus.SUCCEEDED, statuses(cview)
        assert (cview.run.parent_run, cview.run.parent_step) == (run_id, f"kids[{i}]")
        assert cview.run.input["n"] == n
        assert cview.outputs["sq"] == [2 * k for k in range(1, n + 1)]
        # every step function of the child (and each item of its map) ran exactly once
        want = {"spread": 1, "total": 1, **{f"sq[{k}]": 1 for k in range(n)}}
        assert executions(coord, child) == want == done(coord, child)
        assert not coord.store.exists(child_run_id(run_id, f"kids[{i}]", 2))
    items = coord.store.step_runs(run_id, [f"kids[{i}]" for i in range(len(ns))])
    assert [r.wait for r in items.values()] == [
        {"kind": "workflow", "run": c} for c in _children(run_id, ns)]


def test_a_failing_child_under_continue_gives_null_and_the_others_go_on(
        coord: Coordinator) -> None:
    ns = [1, 3, 2]  # n = 3 sums to 12, above 10: that child fails
    run_id = coord.submit("sw_map_continue_parent", {"ns": ns, "fail_above": 10})
    view = wait_run(coord, run_id, 60)
    assert view.run.status is RunStatus.SUCCEEDED, statuses(view)
    assert view.outputs["kids"] == [2, None, 6] == view.outputs["after"]
    first, failing, third = _children(run_id, ns)
    assert coord.store.run(failing).status is RunStatus.FAILED
    assert coord.store.run(first).status is RunStatus.SUCCEEDED
    assert coord.store.run(third).status is RunStatus.SUCCEEDED
    rec = coord.store.step_runs(run_id, ["kids[1]"])["kids[1]"]
    assert rec.status is StepStatus.FAILED and rec.error is not None
    assert rec.error["type"].endswith("SubWorkflowFailed")
    assert executions(coord, failing) == {"spread": 1, "sq[0]": 1, "sq[1]": 1, "sq[2]": 1,
                                          "total": 1}
    assert "total" not in done(coord, failing)


def test_cancelling_a_mapped_parent_cancels_its_children(coord: Coordinator) -> None:
    ns = [1, 1]
    run_id = coord.submit("sw_map_parent", {"ns": ns, "pause_s": 300.0})
    children = _children(run_id, ns)
    wait_until(lambda: all(coord.store.exists(c) and executions(coord, c).get("sq[0]")
                           for c in children), 30,
               message="the children's map items never ran")
    assert coord.cancel(run_id)
    for c in children:
        assert coord.store.run(c).status is RunStatus.CANCELLED
    items = coord.store.step_runs(run_id, ["kids[0]", "kids[1]"])
    assert {r.status for r in items.values()} == {StepStatus.CANCELLED}
    assert all(not done(coord, c).get("sq[0]") for c in children)


def test_a_worker_killed_in_a_nested_map_item_loses_nothing(redis_binary: str) -> None:
    with private_stack(redis_binary, ["w1", "w2"], lease_s=2.0) as (_, coord, workers):
        ns = [2, 1, 3]
        run_id = coord.submit("sw_map_parent", {"ns": ns, "pause_s": 2.0})
        children = _children(run_id, ns)

        def running() -> Any:
            if not coord.store.exists(children[0]):
                return None
            rec = coord.store.step_runs(children[0], ["sq[0]"])["sq[0]"]
            return rec if rec.status is StepStatus.RUNNING else None

        rec = wait_until(running, 30, message="the first child's map item never ran")
        wait_until(lambda: executions(coord, children[0]).get("sq[0]") == 1, 10)
        victim = next(w for w in workers if w.name == rec.worker)
        victim.kill()
        view = wait_run(coord, run_id, 120)
        assert view.run.status is RunStatus.SUCCEEDED, statuses(view)
        assert view.outputs["kids"] == [6, 2, 12]
        assert done(coord, run_id) == {"after": 1}
        for n, child in zip(ns, children, strict=True):
            want = {"spread": 1, "total": 1, **{f"sq[{k}]": 1 for k in range(n)}}
            assert done(coord, child) == want, child  # each ran to its end exactly once
            # only a step the killed worker was running may have started twice
            assert all(v in (1, 2) for v in executions(coord, child).values())
        assert executions(coord, children[0])["sq[0]"] == 2
        assert all(not coord.store.exists(child_run_id(run_id, f"kids[{i}]", 2))
                   for i in range(len(ns)))


def test_a_failing_child_under_fail_fast_fails_the_map_and_nothing_stalls(
        coord: Coordinator) -> None:
    ns = [1, 3, 1, 1, 1, 1]  # n = 3 sums to 12, above 10: that child fails
    run_id = coord.submit("sw_map_parent", {"ns": ns, "fail_above": 10})
    view = wait_run(coord, run_id, 60)
    assert view.run.status is RunStatus.FAILED, statuses(view)
    assert statuses(view)["kids"] == "failed"
    kids = next(s for s in view.steps if s.step_id == "kids")
    assert kids.map is not None and kids.map["stopped"] and kids.map["failed"] == 1
    assert kids.map["failures"][0]["index"] == 1
    items = coord.store.step_runs(run_id, [f"kids[{i}]" for i in range(len(ns))])
    assert items["kids[1]"].status is StepStatus.FAILED
    started = [i for i, c in enumerate(_children(run_id, ns)) if coord.store.exists(c)]
    failed_at = items["kids[1]"].ended_at
    assert 1 in started and failed_at is not None
    # no item that began after the failure started a child (the workers' clocks: one
    # machine); an item published before it ends cancelled when it begins
    for i in started:
        began = items[f"kids[{i}]"].started_at
        assert began is not None and began <= failed_at, (i, began, failed_at)
    for i in range(len(ns)):  # every item ended or never was published; none waits
        rec = items[f"kids[{i}]"]
        assert rec.status.terminal or rec.status is StepStatus.PENDING, (i, rec)
        assert rec.status is not StepStatus.PENDING or i not in started, (i, rec)
    for i in started:  # each started child ended, each of its steps ran once
        child = child_run_id(run_id, f"kids[{i}]", 1)
        assert coord.store.run(child).status.terminal
        assert all(v == 1 for v in executions(coord, child).values()), child
    assert executions(coord, run_id) == {}  # `after` never ran
