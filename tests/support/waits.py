"""Helpers for the durable-wait tests: a step's wait, its store timer, virtual time."""

from __future__ import annotations

import json

from orchestrator.runtime.coordinator import Coordinator
from orchestrator.store.waits import wait_timer_id
from tests.support.wait import wait_until


def executions(coord: Coordinator, run_id: str) -> dict[str, int]:
    raw = coord.store.client.hgetall(f"test:exec:{run_id}")
    return {k: int(v) for k, v in raw.items()}


def clear_inflight_marks(coord: Coordinator, run_ids: list[str], worker: str) -> None:
    """Forget the in-flight marks (``test:inflight:<run>:<step>``, set by the recovery
    flows' steps while they run) of the steps a killed ``worker`` was running: a killed
    step never cleared its own, and its next attempt must not count as an overlap."""
    for rid in run_ids:
        for s, rec in coord.store.step_runs(rid).items():
            if rec.status.value == "running" and rec.worker == worker:
                coord.store.client.delete(f"test:inflight:{rid}:{s}")


def wait_waiting(coord: Coordinator, run_id: str, step_id: str,
                 timeout_s: float = 30.0) -> None:
    wait_until(lambda: coord.store.step_runs(run_id, [step_id])[step_id].status.value
               == "waiting", timeout_s, message=f"{step_id} of {run_id} never waited: "
               + json.dumps({s.step_id: s.status.value for s in coord.view(run_id).steps}))


def timer_due_s(coord: Coordinator, run_id: str, step_id: str) -> float | None:
    """Seconds from now (Redis' clock) until the step's store timer is due."""
    score = coord.store.client.zscore(coord.store.keys.timers(), wait_timer_id(run_id,
                                                                               step_id))
    return None if score is None else score / 1000 - coord.progress.waits.now()


def assert_parked(coord: Coordinator, run_id: str, step_id: str, min_due_s: float) -> None:
    """The step waits in the store: its timer (with its message) is due no sooner than
    ``min_due_s`` from now, and no message of the run is queued or unacknowledged."""
    due = timer_due_s(coord, run_id, step_id)
    assert due is not None and due > min_due_s, due
    keys = coord.store.keys
    assert coord.store.client.exists(keys.timer(wait_timer_id(run_id, step_id)))
    # the parking task's own message is acknowledged once the task returns
    wait_until(lambda: not coord.progress.leases.mentions(["default"], run_id), 10,
               message=f"a message of run {run_id} stays queued or unacknowledged")


def fast_forward(coord: Coordinator, run_id: str, step_id: str) -> None:
    """Virtual time: the wait's times (its record's due and timeout) become now, and so
    does its real store timer; the real reaper fires it."""
    r, keys = coord.store.client, coord.store.keys
    now = coord.progress.waits.now()
    rec = json.loads(r.hget(keys.steps(run_id), step_id))
    for name in ("due_at", "timeout_at"):
        if name in rec["wait"]:
            rec["wait"][name] = now
    r.hset(keys.steps(run_id), step_id, json.dumps(rec))
    assert r.zadd(keys.timers(), {wait_timer_id(run_id, step_id): int(now * 1000)},
                  xx=True, ch=True) == 1
