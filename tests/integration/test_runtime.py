"""Runs on real workers: exact DAG timing, retries, time limits, failures, cancel."""

from __future__ import annotations

import json

import redis
from celery.result import AsyncResult

from orchestrator.runtime.coordinator import Coordinator
from tests.integration.conftest import statuses, wait_run
from tests.support.wait import wait_until


def _log(r: redis.Redis, run_id: str) -> list[dict[str, object]]:
    return [json.loads(x) for x in r.lrange(f"test:log:{run_id}", 0, -1)]


def _time(log: list[dict[str, object]], step: str, event: str) -> float:
    return float(next(e["t"] for e in log if e["step"] == step and e["event"] == event))


def test_n_shape_runs_exactly(coord: Coordinator, r: redis.Redis) -> None:
    run_id = coord.submit("n_shape")
    view = wait_run(coord, run_id)
    assert view.run.status.value == "succeeded"
    log = _log(r, run_id)
    # no false dependency: d needs only b, so it starts while a is still running
    assert _time(log, "d", "start") < _time(log, "a", "end")
    assert _time(log, "c", "start") >= _time(log, "a", "end")
    assert _time(log, "c", "start") >= _time(log, "b", "end")


def test_retry_with_backoff(coord: Coordinator, r: redis.Redis) -> None:
    run_id = coord.submit("retry_flow")
    view = wait_run(coord, run_id)
    assert statuses(view) == {"flaky": "succeeded"}
    assert view.steps[0].attempt == 3
    assert view.outputs["flaky"] == 3
    starts = [float(e["t"]) for e in _log(r, run_id)]  # type: ignore[arg-type]
    assert len(starts) == 3
    assert starts[1] - starts[0] >= 0.3  # initial backoff
    assert starts[2] - starts[1] >= 0.6  # doubled


def test_hard_timeout_fails_the_step_and_the_run_goes_on(coord: Coordinator) -> None:
    run_id = coord.submit("timeout_flow")
    view = wait_run(coord, run_id)
    assert statuses(view) == {"slow": "failed", "after_slow": "succeeded"}
    err = view.steps[0].error or {}
    assert "TimeLimitExceeded" in str(err.get("type"))
    assert view.run.status.value == "failed"


def test_failure_shows_in_celery_and_trigger_rules_apply(coord: Coordinator) -> None:
    run_id = coord.submit("fail_flow")
    view = wait_run(coord, run_id)
    assert statuses(view) == {"bad": "failed", "good": "succeeded",
                              "needs_bad": "skipped", "cleanup": "succeeded"}
    bad = view.steps[0]
    assert bad.error and bad.error["message"] == "bad step"
    assert "Traceback" in bad.error["traceback"]
    result = AsyncResult(bad.task_id, app=coord.app)
    assert result.state == "FAILURE"  # what Flower shows
    assert "bad step" in str(result.result)


def test_cancel_stops_a_run(coord: Coordinator, r: redis.Redis) -> None:
    run_id = coord.submit("cancel_flow")
    wait_until(lambda: any(e["step"] == "first" for e in _log(r, run_id)), 15,
               message="first step never started")
    assert coord.cancel(run_id)
    view = coord.view(run_id)
    assert view.run.status.value == "cancelled"
    assert statuses(view) == {"first": "cancelled", "second": "cancelled"}
    assert not coord.cancel(run_id)  # already ended
    # the running task is revoked: its end is never logged, and second never starts
    wait_until(lambda: all(not w for w in [AsyncResult(view.steps[0].task_id or "",
                                                       app=coord.app).state == "STARTED"]),
               15, message="running task not revoked")
    assert not any(e["step"] == "second" for e in _log(r, run_id))
    assert not any(e["event"] == "end" for e in _log(r, run_id))


def test_invalid_input_is_refused(coord: Coordinator) -> None:
    import pytest

    from orchestrator.errors import InputInvalid
    with pytest.raises(InputInvalid, match="qty"):
        coord.submit("customer_order", {"order_id": "x", "sku": "s", "qty": "two",
                                        "customer_email": "e"})


def test_preflight_names_what_is_missing(coord: Coordinator) -> None:
    import pytest

    from orchestrator.core.models import WorkflowDef
    from orchestrator.core.registry import default_registry
    from orchestrator.core.validation import check
    from orchestrator.errors import DispatchError

    assert coord.preflight("customer_order") == []
    wf = check(WorkflowDef(name="needs_gpu", steps=[
        {"id": "train", "function": "test.sleep", "queue": "gpu"}]), default_registry)
    problems = coord.preflight(wf)
    assert len(problems) == 1
    assert "queue 'gpu'" in problems[0] and "step.test.sleep" in problems[0]
    assert "orchestrator worker --queues gpu" in problems[0]
    with pytest.raises(DispatchError, match="needs_gpu"):
        coord.submit(wf, {}, preflight=True)


def test_condition_reads_a_grandparent(coord: Coordinator) -> None:
    view = wait_run(coord, coord.submit("grandparent_condition"))
    assert statuses(view) == {"a": "succeeded", "b": "succeeded", "c": "succeeded",
                              "d": "skipped"}


def test_a_view_of_a_known_version_reads_the_same_in_one_round_trip(coord: Coordinator,
                                                                    r: redis.Redis) -> None:
    """``Coordinator.view(run_id, version)`` (the API's 201 body) reads the run, its step
    runs, their outputs and its callback in one pipeline: the same view as the four
    separate reads; a version that is not the run's falls back to them."""
    import pytest

    from orchestrator.errors import RunNotFound

    run_id = coord.submit("grandparent_condition")
    view = wait_run(coord, run_id)
    version = view.run.version
    assert coord.view(run_id, version) == view
    other = coord.compile("customer_order").wf.version  # stored, not this run's
    assert other != version and coord.view(run_id, other) == view
    r.config_resetstat()
    coord.view(run_id, version)
    pipelined = int(r.info("stats")["total_reads_processed"])
    r.config_resetstat()
    coord.view(run_id)
    separate = int(r.info("stats")["total_reads_processed"])
    assert pipelined < separate
    with pytest.raises(RunNotFound):
        coord.view("no-such-run", version)
