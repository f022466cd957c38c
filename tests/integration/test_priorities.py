"""Priorities on real workers: a high-priority run overtakes a backlog of low-priority
steps, and the backlog still drains (``orchestrator.core.priorities``)."""

from __future__ import annotations

import pytest

from orchestrator.core.dsl import Workflow
from orchestrator.core.models import RetryPolicy, WorkflowDef
from orchestrator.core.priorities import BandCycle, Priority
from orchestrator.dev.waiting import wait_until
from orchestrator.runtime.catalog import discover
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.runtime.queues import queue_depths
from tests.integration.conftest import make_settings, wait_run
from tests.integration.flows import flaky
from tests.integration.flows_queues import EXECUTIONS, tally
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.redis

LOW_RUNS = 500
HIGH_STEPS = 5


def _one_step() -> WorkflowDef:
    w = Workflow("prio_one", description="one tally step")
    w.step("only", tally, seconds=0.02)
    return w.build()


def _chain() -> WorkflowDef:
    w = Workflow("prio_chain", description=f"{HIGH_STEPS} tally steps in a chain")
    prev = None
    for i in range(HIGH_STEPS):
        prev = w.step(f"s{i}", tally, after=[prev] if prev else [], seconds=0.02)
    return w.build()


def test_a_high_run_overtakes_500_queued_low_steps_and_the_low_ones_still_finish(
        redis_url: str) -> None:
    settings = make_settings(redis_url)
    coord = Coordinator(settings, discover(settings.workflow_packages))
    r = coord.store.client
    low = [coord.submit(_one_step(), priority=Priority.LOW) for _ in range(LOW_RUNS)]
    (backlog,) = queue_depths(coord.app, ["default.low"], timeout_s=0.2)
    assert backlog.depth == LOW_RUNS  # the backlog waits in the low band
    chain = coord.compile(_chain()).wf  # compiled and stored before the worker starts
    worker = WorkerProcess(redis_url, "prio", queues=("default",), concurrency=2)
    try:
        # the high run arrives as the worker starts on the backlog (no ping first: the
        # worker would run dozens of low steps while a ping waits out its timeout)
        wait_until(lambda: r.llen(EXECUTIONS) >= 1, 60,
                   message=lambda: f"no low step ran; worker log:\n{worker.tail()}")
        ran_before = r.llen(EXECUTIONS)
        assert ran_before < LOW_RUNS // 2  # the high run meets a backlog
        high = coord.submit(chain, priority=Priority.HIGH)
        view = wait_run(coord, high, timeout_s=30)
        assert view.run.status.value == "succeeded"
        assert view.run.priority is Priority.HIGH
        log = r.lrange(EXECUTIONS, 0, -1)
        mine = [i for i, e in enumerate(log) if e.startswith(f"{high}/")]
        assert [log[i] for i in mine] == [f"{high}/s{i}" for i in range(HIGH_STEPS)]
        # low steps that began while the high run was queued or running
        low_during = mine[-1] - ran_before - (HIGH_STEPS - 1)
        print(f"\n{ran_before} low steps ran before the high run was submitted; "
              f"{low_during} more before its last step (first step after "
              f"{mine[0] - ran_before})")
        assert low_during < LOW_RUNS // 10
        assert mine[-1] - (HIGH_STEPS - 1) < LOW_RUNS // 10  # counted from the start, too
        # nothing starves: every low run still ends, each step ran once
        wait_until(lambda: r.llen(EXECUTIONS) >= LOW_RUNS + HIGH_STEPS, 45,
                   message=lambda: f"{r.llen(EXECUTIONS)} executions")
        for run_id in low:
            wait_run(coord, run_id, timeout_s=10)
        runs = [coord.store.run(run_id) for run_id in low]
        assert {run.status.value for run in runs} == {"succeeded"}
        assert {run.priority for run in runs} == {Priority.LOW}
        assert r.llen(EXECUTIONS) == LOW_RUNS + HIGH_STEPS
        active = coord.workers()[1][worker.name]  # -Q default: every band of it
        assert {"default", "default.high", "default.low"} <= {q["name"] for q in active}
    finally:
        worker.stop()


def test_a_run_without_priority_keeps_the_queue_names_of_old(redis_url: str) -> None:
    settings = make_settings(redis_url)
    coord = Coordinator(settings, discover(settings.workflow_packages))
    run_id = coord.submit(_one_step())
    depths = {d.name: d.depth for d in queue_depths(
        coord.app, ["default", "default.high", "default.low"], timeout_s=0.2)}
    assert depths == {"default": 1, "default.high": 0, "default.low": 0}
    assert coord.store.run(run_id).priority is Priority.NORMAL
    assert "priority" not in coord.store.client.hgetall(coord.store.keys.run(run_id))
    with coord.app.connection_for_read() as conn:  # what a worker's channel reads with
        assert isinstance(conn.default_channel._queue_cycle, BandCycle)


def test_retries_and_joins_of_a_high_run_stay_in_its_band(redis_url: str) -> None:
    """A worker started on ``default.high`` alone runs the whole high run: a step's retry
    (published by the reaper from a store timer) and the fan-out's join stay in the band.
    """
    w = Workflow("prio_retry", description="a flaky step, then a fan-out and its join")
    first = w.step("first", flaky, failures=1,
                   retry=RetryPolicy(max_attempts=2, initial_backoff_s=0.2, jitter=0.0))
    a = w.step("a", tally, after=[first])
    b = w.step("b", tally, after=[first])
    w.step("last", tally, after=[a, b])
    wf = w.build()
    settings = make_settings(redis_url)
    coord = Coordinator(settings, discover(settings.workflow_packages))
    worker = WorkerProcess(redis_url, "urgent", queues=("default.high",), concurrency=2)
    try:
        worker.wait_ready(coord.app)
        active = {q["name"] for q in coord.workers()[1][worker.name]}
        assert "default" not in active and "default.high" in active
        assert coord.preflight(wf, priority=Priority.HIGH) == []
        assert coord.preflight(wf)  # a normal run would find no worker for its queue
        view = wait_run(coord, coord.submit(wf, priority=Priority.HIGH), timeout_s=30)
    finally:
        worker.stop()
    assert view.run.status.value == "succeeded"
    assert {s.step_id: s.attempt for s in view.steps}["first"] == 2
