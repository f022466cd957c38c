"""A worker killed with SIGKILL mid-step: the step runs again elsewhere, the run ends."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from orchestrator.core.states import StepStatus
from orchestrator.runtime.coordinator import Coordinator
from tests.integration.conftest import private_stack, statuses, wait_run
from tests.integration.flows import backlog_step, die_once
from tests.support.wait import wait_until
from tests.support.workers import WorkerProcess

VT_S = 4


@pytest.fixture
def private(redis_binary: str) -> Iterator[tuple[Coordinator, list[WorkerProcess]]]:
    with private_stack(redis_binary, ["k1", "k2"], visibility_timeout_s=VT_S) as (
            _server, coord, workers):
        yield coord, workers


def test_sigkill_mid_step_redelivers(private: tuple[Coordinator, list[WorkerProcess]]
                                     ) -> None:
    coord, workers = private
    run_id = coord.submit("kill_flow")

    def running_on() -> str | None:
        rec = coord.store.step_runs(run_id, ["long"])["long"]
        return rec.worker if rec.status is StepStatus.RUNNING else None

    wait_until(lambda: running_on() is not None, 15, message="long step never started")
    victim_name = running_on()
    victim = next(w for w in workers if w.name == victim_name)
    victim.kill()
    killed_at = time.time()
    view = wait_run(coord, run_id, timeout_s=60)
    assert view.run.status.value == "succeeded", statuses(view)
    long_rec = view.steps[0]
    survivor = next(w for w in workers if w is not victim)
    assert long_rec.worker == survivor.name
    assert long_rec.started_at is not None
    redelivery_s = long_rec.started_at - killed_at
    print(f"redelivery after SIGKILL took {redelivery_s:.1f} s (visibility timeout {VT_S} s)")
    assert statuses(view) == {"long": "succeeded", "tail": "succeeded"}


@pytest.fixture
def short_leases(redis_binary: str) -> Iterator[tuple[Coordinator, list[WorkerProcess]]]:
    with private_stack(redis_binary, ["k1", "k2"], visibility_timeout_s=VT_S,
                       lease_s=2.0) as (_server, coord, workers):
        yield coord, workers


def test_a_worker_killed_after_a_success_neither_reruns_nor_resends(
        short_leases: tuple[Coordinator, list[WorkerProcess]]) -> None:
    """The first step's worker is SIGKILLed (its main process and the pool process)
    after the step returned and its success was recorded, before its message was
    acknowledged: the message comes back to the other worker, and the copy is dropped
    (its lease was settled with the success, in the script that sent the next step's
    message), so each step runs once and the next step's task is delivered once, not
    carried on a second time."""
    coord, workers = short_leases
    run_id = coord.submit("die_after_success")
    view = wait_run(coord, run_id, timeout_s=60)
    assert view.run.status.value == "succeeded", statuses(view)
    r = coord.store._r
    assert r.get(f"test:died:{run_id}") is not None  # the worker did die
    assert {k: int(v) for k, v in r.hgetall(f"test:exec:{run_id}").items()} == {
        "die_first": 1, "die_second": 1}
    wait_until(lambda: int(r.hget(f"test:deliveries:{run_id}", "die_first") or 0) >= 2, 60,
               message=lambda: "the first step's message never came back after its worker "
               "died:\n" + "\n".join(w.tail(40) for w in workers))
    assert int(r.hget(f"test:deliveries:{run_id}", "die_first")) == 2, \
        r.hgetall(f"test:deliveries:{run_id}")
    # the dead worker's lease (2 s) has expired by now: a copy that found the step run
    # ended but not settled would carry the chain on again at once
    time.sleep(1.0)
    assert int(r.hget(f"test:deliveries:{run_id}", "die_second")) == 1


def test_a_step_whose_pool_process_died_runs_again_before_the_backlog(
        redis_binary: str) -> None:
    """A step's pool process dies mid-step (SIGKILL, the worker lives on) while a dozen
    runs wait in the queue behind it: Celery requeues its message, and kombu's reject
    would put it at the tail, behind the backlog (celery/kombu#254).  Its first requeue
    goes to the head: the step runs again before most of the backlog, once more in all
    (never twice at once, counted by the step), and every run succeeds."""
    with private_stack(redis_binary, ["solo"]) as (server, coord, _workers):
        r = redis.Redis.from_url(server.url, decode_responses=True)
        first = coord.submit(die_once)
        wait_until(lambda: r.hget(f"test:exec:{first}", "dies") == "1", 30, interval_s=0.02,
                   message="the step never started")
        backlog = [coord.submit(backlog_step) for _ in range(12)]
        view = wait_run(coord, first, timeout_s=60)
        assert view.run.status.value == "succeeded", statuses(view)
        assert r.hget(f"test:exec:{first}", "dies") == "2"
        assert not r.hgetall(f"test:overlap:{first}")
        ended = view.run.ended_at
        assert ended is not None
        started = []
        for rid in backlog:
            v = wait_run(coord, rid, timeout_s=60)
            assert v.run.status.value == "succeeded", statuses(v)
            assert r.hget(f"test:exec:{rid}", "b") == "1"
            started.append(v.steps[0].started_at)
        after = [t for t in started if t is not None and t > ended]
        assert len(after) >= 9, (ended, sorted(started))
