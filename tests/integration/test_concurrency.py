"""Concurrency limits by key, on real workers and a private Redis: the most runs (or step
runs) of one key in flight at once is measured in the step functions
(``flows_concurrency``), never read from the store; every run ends; each step function
runs once per run (a killed attempt's redelivery aside)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from orchestrator.core.states import RunStatus
from orchestrator.runtime.coordinator import Coordinator
from tests.integration.conftest import private_stack, statuses, wait_run
from tests.integration.flows_concurrency import (
    conc_newest,
    conc_oldest,
    conc_pair,
    conc_queue,
    conc_step_flow,
    conc_step_newest,
    max_key,
    order_key,
)
from tests.support.wait import wait_until
from tests.support.waits import executions
from tests.support.workers import WorkerProcess, supervise

pytestmark = pytest.mark.redis

@pytest.fixture(scope="module")
def pool(redis_binary: str) -> Iterator[tuple[Coordinator, list[WorkerProcess]]]:
    """Two workers with three pool processes each: six slots, more than any limit here."""
    with private_stack(redis_binary, ["c1", "c2"], concurrency=3) as (_, coord, workers):
        yield coord, workers


def _r(coord: Coordinator) -> Any:
    return coord.store.client


def _max(coord: Coordinator, tag: str) -> dict[str, int]:
    return {k: int(v) for k, v in _r(coord).hgetall(max_key(tag)).items()}


def _order(coord: Coordinator, tag: str, key: str) -> list[str]:
    return [str(x) for x in _r(coord).lrange(order_key(tag, key), 0, -1)]


def test_a_workflow_limit_holds_per_key_and_waiting_runs_start_in_arrival_order(
        pool: tuple[Coordinator, list[WorkerProcess]]) -> None:
    coord, _ = pool
    tag = "queue"
    keys = ["a", "a", "b", "a", "c", "b", "a", "c"]
    runs = [(k, coord.submit(conc_queue, {"customer": k, "tag": tag, "hold_s": 0.4}))
            for k in keys]
    a_runs = [rid for k, rid in runs if k == "a"]
    # the first run of each key holds its slot; the others wait, visible with their place
    second = coord.view(a_runs[1])
    assert second.run.status.value in ("queued", "running", "succeeded")
    if second.run.status.value == "queued":
        assert second.queue_position is not None and second.run.reason is not None
        assert "'a'" in second.run.reason
    for _, rid in runs:
        view = wait_run(coord, rid, 60)
        assert view.run.status.value == "succeeded", statuses(view)
        assert executions(coord, rid) == {"enter": 1, "leave": 1}
    measured = _max(coord, tag)
    assert measured == {"a": 1, "b": 1, "c": 1}, measured
    for key in ("a", "b", "c"):  # arrival order, per key
        assert _order(coord, tag, key) == [rid for k, rid in runs if k == key]
    # the waiting runs started only when a slot freed, each after the one before it ended
    ended = {rid: coord.store.run(rid) for _, rid in runs}
    for before, after in itertools.pairwise(a_runs):
        began, left = ended[after].started_at, ended[before].ended_at
        assert began is not None and left is not None and began >= left
    # other keys were not held back by a's queue: b's first run started before a's last
    assert ended[runs[2][1]].started_at < ended[a_runs[-1]].started_at  # type: ignore[operator]


def test_the_done_when_measurement_in_small(redis_binary: str) -> None:
    """``python -m bench.concurrency`` in small: 32 runs for 8 customers, at most 2 runs
    per customer, three workers.  The most runs of one customer in flight, measured in
    the steps, is 2; nothing starves: every run succeeded, each customer's runs took their
    slots in the order they were submitted, each step ran once."""
    tag = "pair"
    with private_stack(redis_binary, ["p1", "p2", "p3"], concurrency=2) as (_, coord, _w):
        runs = [(f"c{i % 8}", coord.submit(conc_pair, {"customer": f"c{i % 8}", "tag": tag,
                                                       "hold_s": 0.5}))
                for i in range(32)]
        for _, rid in runs:
            view = wait_run(coord, rid, 120)
            assert view.run.status.value == "succeeded", statuses(view)
            assert executions(coord, rid) == {"enter": 1, "leave": 1}
        assert _max(coord, tag) == {f"c{i}": 2 for i in range(8)}
        for i in range(8):  # slots passed in arrival order (two holders: their steps race)
            started = [coord.store.run(rid).started_at for k, rid in runs if k == f"c{i}"]
            assert started == sorted(started), started  # type: ignore[type-var]
            assert sorted(_order(coord, tag, f"c{i}")) == sorted(
                rid for k, rid in runs if k == f"c{i}")


def test_cancelling_a_queued_run_takes_it_out_of_the_queue(
        pool: tuple[Coordinator, list[WorkerProcess]]) -> None:
    coord, _ = pool
    tag = "cancelq"
    first, second, third = (coord.submit(conc_queue, {"customer": "q", "tag": tag,
                                                      "hold_s": 1.5}) for _ in range(3))
    assert coord.store.run(second).status.value == "queued"
    assert coord.view(third).queue_position == 2
    assert coord.cancel(second)
    assert coord.view(third).queue_position == 1
    for rid in (first, third):
        assert wait_run(coord, rid, 60).run.status.value == "succeeded"
    assert coord.store.run(second).status.value == "cancelled"
    assert executions(coord, second) == {}
    assert _order(coord, tag, "q") == [first, third]
    assert _max(coord, tag) == {"q": 1}


def test_cancel_newest_refuses_a_run_while_every_slot_is_held(
        pool: tuple[Coordinator, list[WorkerProcess]]) -> None:
    coord, _ = pool
    tag = "newest"
    holder = coord.submit(conc_newest, {"customer": "n", "tag": tag, "hold_s": 1.5})
    refused = coord.submit(conc_newest, {"customer": "n", "tag": tag, "hold_s": 0.0})
    other = coord.submit(conc_newest, {"customer": "m", "tag": tag, "hold_s": 0.0})
    view = coord.view(refused)
    assert view.run.status.value == "cancelled"
    assert view.run.reason is not None and "cancel_newest" in view.run.reason
    assert set(statuses(view).values()) == {"cancelled"}
    for rid in (holder, other):
        assert wait_run(coord, rid, 60).run.status.value == "succeeded"
    assert executions(coord, refused) == {}
    # the slot is free again once the holder ended
    again = coord.submit(conc_newest, {"customer": "n", "tag": tag, "hold_s": 0.0})
    assert wait_run(coord, again, 60).run.status.value == "succeeded"
    assert _max(coord, tag) == {"n": 1, "m": 1}


def test_cancel_oldest_cancels_the_holder_and_the_new_run_takes_its_slot(
        pool: tuple[Coordinator, list[WorkerProcess]]) -> None:
    coord, _ = pool
    tag = "oldest"
    oldest = coord.submit(conc_oldest, {"customer": "o", "tag": tag, "hold_s": 30.0})
    wait_until(lambda: executions(coord, oldest).get("enter") == 1, 30,
               message="the oldest run's first step never ran")
    newest = coord.submit(conc_oldest, {"customer": "o", "tag": tag, "hold_s": 0.0})
    view = coord.view(oldest)
    assert view.run.status.value == "cancelled"
    assert view.run.reason is not None and newest in view.run.reason
    assert wait_run(coord, newest, 60).run.status.value == "succeeded"
    assert executions(coord, newest) == {"enter": 1, "leave": 1}
    assert executions(coord, oldest) == {"enter": 1}  # revoked mid-step, never went on
    holders = _r(coord).zrange(coord.store.keys.concurrency_holders("wf:conc_oldest:o"), 0,
                               -1)
    assert holders == []  # both let go


def test_a_step_limit_holds_per_key_and_waiting_step_runs_hold_no_worker(
        redis_binary: str) -> None:
    """One worker with two pool processes: four runs of one customer whose limited step
    holds 1 s, and one of another customer.  The limited steps wait in the store, not in
    a worker slot: the other customer's run goes through while they wait."""
    tag = "steplim"
    with private_stack(redis_binary, ["s1"], concurrency=2) as (_, coord, _w):
        same = [coord.submit(conc_step_flow, {"customer": "x", "tag": tag, "hold_s": 1.0})
                for _ in range(4)]
        wait_until(lambda: any("slot" in (s.reason or "") for rid in same
                               for s in coord.view(rid).steps), 30,
                   message="no step run was seen waiting for a slot")
        other = coord.submit(conc_step_flow, {"customer": "y", "tag": tag, "hold_s": 0.0})
        assert wait_run(coord, other, 60).run.status.value == "succeeded"
        last = coord.store.run(same[-1])
        assert not last.status.terminal  # still waiting its turn when the other ended
        for rid in same:
            view = wait_run(coord, rid, 60)
            assert view.run.status.value == "succeeded", statuses(view)
            assert executions(coord, rid) == {"first": 1, "limited": 1}
        assert _max(coord, tag) == {"x": 1, "y": 1}
        assert sorted(_order(coord, tag, "x")) == sorted(same)
        slots = coord.store.keys.concurrency_holders("step:test.conc_step:x")
        assert _r(coord).zcard(slots) == 0


def test_a_step_at_a_full_cancel_newest_limit_ends_cancelled_and_its_run_goes_on(
        pool: tuple[Coordinator, list[WorkerProcess]]) -> None:
    coord, _ = pool
    tag = "stepnewest"
    holder = coord.submit(conc_step_newest, {"customer": "s", "tag": tag, "hold_s": 2.0})
    wait_until(lambda: executions(coord, holder).get("limited") == 1, 30,
               message="the holder's step never ran")
    refused = coord.submit(conc_step_newest, {"customer": "s", "tag": tag, "hold_s": 0.0})
    view = wait_run(coord, refused, 60)
    step = next(s for s in view.steps if s.step_id == "limited")
    assert step.status.value == "cancelled"
    assert step.reason is not None and "cancel_newest" in step.reason
    assert executions(coord, refused) == {}
    assert wait_run(coord, holder, 60).run.status.value == "succeeded"
    assert _max(coord, tag) == {"s": 1}


@pytest.mark.parametrize("level", ["workflow", "step"])
def test_a_killed_slot_holder_is_redelivered_by_its_lease_and_every_run_ends(
        redis_binary: str, level: str) -> None:
    """SIGKILL the worker running the slot holder's step: its lease expires, the step runs
    again on the other worker (still holding the key's one slot: it is the same step
    run), then the waiting runs go in turn.  Never two runs of the key in flight."""
    tag = f"kill-{level}"
    flow = conc_queue if level == "workflow" else conc_step_flow
    step = "enter" if level == "workflow" else "limited"
    with private_stack(redis_binary, ["k1", "k2"], concurrency=2) as (server, coord, workers):
        runs = [coord.submit(flow, {"customer": "k", "tag": tag, "hold_s": 3.0})
                for _ in range(3)]
        wait_until(lambda: any(executions(coord, rid).get(step) == 1 for rid in runs), 30,
                   message="no run's limited step ever ran")
        first = next(rid for rid in runs if executions(coord, rid).get(step) == 1)
        rec = coord.store.step_runs(first, [step])[step]
        victim = next(w for w in workers if w.name == rec.worker)
        victim.kill()
        for rid in runs:
            view = wait_run(coord, rid, 120)
            assert view.run.status.value == "succeeded", statuses(view)
        assert executions(coord, first)[step] == 2  # the killed attempt, then once more
        for rid in runs:
            if rid != first:
                assert executions(coord, rid)[step] == 1
        r = redis.Redis.from_url(server.url, decode_responses=True)
        assert {k: int(v) for k, v in r.hgetall(max_key(tag)).items()} == {"k": 1}
        order = [str(x) for x in r.lrange(order_key(tag, "k"), 0, -1)]
        assert order[0] == order[1] == first  # killed, redelivered, before any other
        rest = [rid for rid in runs if rid != first]
        if level == "workflow":
            assert first == runs[0] and order[2:] == rest  # then in arrival order
        else:
            assert sorted(order[2:]) == sorted(rest)


def test_a_slot_passed_by_a_process_that_died_before_publishing_is_started_by_the_reaper(
        redis_binary: str) -> None:
    """The holder ends through the store alone (as if the process ending it died between
    the run transition, which passed the slot and claimed the queued run's first units,
    and the publish): the reaper publishes the claimed units after ``claim_grace_s``."""
    tag = "reaped"
    with private_stack(redis_binary, ["r1"], concurrency=2,
                       claim_grace_s=1.0) as (_, coord, workers):
        holder = coord.submit(conc_queue, {"customer": "r", "tag": tag, "hold_s": 3.0})
        waiting = coord.submit(conc_queue, {"customer": "r", "tag": tag, "hold_s": 0.0})
        assert coord.store.run(waiting).status.value == "queued"
        wait_until(lambda: executions(coord, holder).get("enter") == 1, 30,
                   message="the holder's first step never ran")
        moved, passed = coord.store.end_run(holder, RunStatus.CANCELLED)
        assert moved and passed is not None and passed.run_id == waiting
        assert coord.store.run(waiting).status.value == "running"  # claimed, unpublished
        view = wait_run(coord, waiting, 60)
        assert view.run.status.value == "succeeded", statuses(view)
        assert executions(coord, waiting) == {"enter": 1, "leave": 1}
        assert "claimed but never published" in workers[0].tail(400)


def test_a_redis_restart_keeps_every_limit_and_loses_no_run(redis_binary: str) -> None:
    """Six runs of two keys, one slot per key; Redis crashes (SIGKILL) while the first
    holders run and comes back from its AOF.  Every run ends succeeded, the queued ones
    in arrival order per key, and never were two runs of one key in flight at once
    (measured in the steps).  The workers run under a supervisor (``supervise``)."""
    tag = "restart"
    with private_stack(redis_binary, ["q1", "q2"], concurrency=3, lease_s=2.0,
                       appendonly=True, server_args=("--appendfsync", "always")
                       ) as (server, coord, workers):
        runs = {key: [coord.submit(conc_queue, {"customer": key, "tag": tag, "hold_s": 1.0})
                      for _ in range(3)] for key in ("a", "b")}
        wait_until(lambda: all(executions(coord, ids[0]).get("enter") for ids in
                               runs.values()), 30, message="no holder ever started")
        server.kill()
        server.restart()
        wait_until(server.ping, 30, message="redis did not come back")
        every = [rid for ids in runs.values() for rid in ids]
        wait_until(lambda: supervise(workers) >= 0 and all(
            coord.store.run(rid).status.terminal for rid in every), 180, interval_s=0.2,
            message=lambda: str({rid: statuses(coord.view(rid)) for rid in every}))
        for rid in every:
            view = coord.view(rid)
            assert view.run.status.value == "succeeded", statuses(view)
        assert _max(coord, tag) == {"a": 1, "b": 1}
        for key, ids in runs.items():
            order = list(dict.fromkeys(_order(coord, tag, key)))  # a redelivery repeats
            assert order == ids, (key, order, ids)
