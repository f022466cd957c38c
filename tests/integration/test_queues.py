"""Queue routing on real workers, and ``queue_depths`` against the real broker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orchestrator.core.priorities import Priority
from orchestrator.dev.waiting import wait_until
from orchestrator.runtime.catalog import discover
from orchestrator.runtime.celeryconf import client_app
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.runtime.queues import QueueDepth, format_queues, queue_depths
from tests.integration.conftest import make_settings, statuses, wait_run
from tests.integration.flows_queues import QUEUE_B
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.redis


@pytest.fixture
def coord(redis_url: str) -> Coordinator:
    settings = make_settings(redis_url)
    return Coordinator(settings, discover(settings.workflow_packages))


@pytest.fixture
def default_worker(redis_url: str, coord: Coordinator) -> Iterator[WorkerProcess]:
    """A worker consuming only the default queue."""
    w = WorkerProcess(redis_url, "qdefault", queues=("default",), concurrency=2)
    try:
        w.wait_ready(coord.app)
        yield w
    finally:
        w.stop()


def _depth(coord: Coordinator, queue: str) -> QueueDepth:
    return queue_depths(coord.app, [queue], timeout_s=1.5)[0]


def test_step_with_a_queue_runs_only_on_a_worker_consuming_it(
        redis_url: str, coord: Coordinator, default_worker: WorkerProcess) -> None:
    worker_b = WorkerProcess(redis_url, "qb", queues=(QUEUE_B,), concurrency=2)
    try:
        worker_b.wait_ready(coord.app)
        run_id = coord.submit("queue_routing")
        view = wait_run(coord, run_id)
    finally:
        worker_b.stop()
    assert statuses(view) == {"prep": "succeeded", "on_b": "succeeded",
                              "finish": "succeeded"}
    ran_on = {s.step_id: s.worker for s in view.steps}
    assert ran_on == {"prep": default_worker.name, "on_b": worker_b.name,
                      "finish": default_worker.name}


def test_queue_depths_reports_waiting_tasks_then_the_consumer(
        redis_url: str, coord: Coordinator, default_worker: WorkerProcess) -> None:
    run_id = coord.submit("queue_routing")

    def b_has_one_waiting() -> QueueDepth | None:
        d = _depth(coord, QUEUE_B)
        return d if d.depth == 1 else None

    # prep runs on the default worker, then on_b waits in queue b: nobody consumes it
    b = wait_until(b_has_one_waiting, 30, interval_s=0.1,
                   message=lambda: f"queue b: {_depth(coord, QUEUE_B)}")
    assert b is not None
    assert b.consumers == ()
    assert [q.key for q in b.lists if q.length] == [QUEUE_B]
    default = _depth(coord, "default")
    assert default.default and default.depth == 0
    assert default.consumers == (default_worker.name,)
    assert statuses(coord.view(run_id))["on_b"] == "queued"
    table = format_queues(queue_depths(coord.app, ["default", QUEUE_B], timeout_s=1.5))
    assert f"1 task(s) wait in '{QUEUE_B}' and no worker consumes it" in table

    worker_b = WorkerProcess(redis_url, "qb", queues=(QUEUE_B,), concurrency=1)
    try:
        worker_b.wait_ready(coord.app)
        view = wait_run(coord, run_id)
        b = _depth(coord, QUEUE_B)
        assert b.depth == 0
        assert b.consumers == (worker_b.name,)
        # with no queue named: the default queue first, then every consumed queue
        listed = queue_depths(coord.app, timeout_s=1.5)
        # (every worker also consumes the broker-submission queue, Celery's default)
        assert [(d.name, d.consumers) for d in listed] == [
            ("default", (default_worker.name,)), (QUEUE_B, (worker_b.name,)),
            ("celery", tuple(sorted((default_worker.name, worker_b.name))))]
    finally:
        worker_b.stop()
    assert view.run.status.value == "succeeded"


def test_queue_depths_counts_every_priority_list_and_the_key_prefix(
        redis_url: str) -> None:
    app = client_app(make_settings(redis_url))
    for priority in (None, 0, 5, 9):
        app.send_task("test.never_consumed", queue="prio", priority=priority)
    (prio,) = queue_depths(app, ["prio"], timeout_s=0.2)
    assert prio.depth == 4
    assert prio.consumers == ()
    by_key = {q.key: q.length for q in prio.lists if q.band is Priority.NORMAL}
    # kombu's Redis lists: the bare name for priority 0, "name\x06\x16<step>" for others
    assert by_key == {"prio": 2, "prio\x06\x163": 1, "prio\x06\x166": 0, "prio\x06\x169": 1}
    # the run priority bands of the queue are in its entry, each with its kombu lists
    assert [q.key for q in prio.lists if q.band is Priority.HIGH] == [
        "prio.high", "prio.high\x06\x163", "prio.high\x06\x166", "prio.high\x06\x169"]
    app.send_task("test.never_consumed", queue="prio.high")
    (prio,) = queue_depths(app, ["prio"], timeout_s=0.2)
    assert prio.depth == 5
    assert "5 (p3=1, p9=1, high=1)" in format_queues([prio])
    (high,) = queue_depths(app, ["prio.high"], timeout_s=0.2)  # a band named alone
    assert (high.depth, [q.key for q in high.lists if q.length]) == (1, ["prio.high"])

    prefixed = client_app(make_settings(redis_url))
    prefixed.conf.broker_transport_options = {
        **prefixed.conf.broker_transport_options, "global_keyprefix": "wf:"}
    prefixed.send_task("test.never_consumed", queue="pq")
    (pq,) = queue_depths(prefixed, ["pq"], timeout_s=0.2)
    assert pq.depth == 1
    assert pq.lists[0].key == "wf:pq"
