"""Durable waits on real workers and a real Redis: a run that waits for an event, an
approval or a timer (an hour: virtual time moves the real store timer, which the real
reaper fires) resumes once; a timeout takes the failure path; a waiting step holds no
worker slot and no message; a SIGKILLed worker and a Redis restart lose nothing.  The
steps after a wait count their own executions (``test:exec:<run>``)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from orchestrator.api.server import ServerThread
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.store.waits import wait_timer_id
from tests.integration.conftest import private_stack, statuses, wait_run
from tests.support.api import api_server_fixture, bearer
from tests.support.wait import wait_until
from tests.support.waits import (
    assert_parked,
    executions,
    fast_forward,
    timer_due_s,
    wait_waiting,
)
from tests.support.workers import WorkerProcess, worker_env

pytestmark = pytest.mark.redis

HOUR_S = 3600.0
OPS_TOKEN = "ops-token-for-the-wait-tests-0123456789"
READ_TOKEN = "read-token-for-the-wait-tests-0123456789"
TOKENS = [{"token": OPS_TOKEN, "scopes": ["runs:read", "runs:write", "events:write"],
           "name": "ops"},
          {"token": READ_TOKEN, "scopes": ["runs:read"], "name": "reader"}]

api = api_server_fixture(api_tokens=TOKENS)


@pytest.fixture
def http(api: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, headers=bearer(OPS_TOKEN), timeout=30) as c:
        yield c


# --- events --------------------------------------------------------------------------


def test_a_run_waiting_an_hour_for_an_event_resumes_when_it_arrives(
        coord: Coordinator) -> None:
    run_id = coord.submit("wait_event_flow", {"id": "e1"})
    wait_waiting(coord, run_id, "paid")
    assert_parked(coord, run_id, "paid", HOUR_S - 60)
    rec = coord.store.step_runs(run_id, ["paid"])["paid"]
    assert rec.wait is not None and rec.wait["key"] == "pay:e1"
    eid, new, resumed = coord.send_event("pay:e1", {"amount_cents": 500}, by="test")
    assert new and resumed == 1
    view = wait_run(coord, run_id)
    assert view.run.status.value == "succeeded", statuses(view)
    assert view.outputs["paid"] == {"amount_cents": 500}
    assert statuses(view)["on_timeout"] == "skipped"
    assert executions(coord, run_id) == {"before": 1, "after": 1}
    paid = next(s for s in view.steps if s.step_id == "paid")
    assert paid.resolution is not None and paid.resolution["event_id"] == eid
    assert timer_due_s(coord, run_id, "paid") is None  # the timer is gone
    # the run's event stream shows the wait
    seen = [(f.get("step"), f.get("status")) for _, f in coord.store.events(run_id)]
    assert ("paid", "waiting") in seen and ("paid", "succeeded") in seen
    # the same event again changes nothing
    assert coord.send_event("pay:e1", {"amount_cents": 500}, event_id=eid)[1] is False


def test_an_event_sent_before_the_step_waits_is_not_lost(coord: Coordinator) -> None:
    coord.send_event("pay:e2", {"early": True}, by="test")
    run_id = coord.submit("wait_event_flow", {"id": "e2"})
    view = wait_run(coord, run_id)
    assert view.run.status.value == "succeeded", statuses(view)
    assert view.outputs["paid"] == {"early": True}
    assert executions(coord, run_id) == {"before": 1, "after": 1}


def test_a_timeout_takes_the_failure_path(coord: Coordinator) -> None:
    run_id = coord.submit("wait_event_flow", {"id": "e3"})
    wait_waiting(coord, run_id, "paid")
    assert_parked(coord, run_id, "paid", HOUR_S - 60)
    fast_forward(coord, run_id, "paid")
    view = wait_run(coord, run_id)
    st = statuses(view)
    assert view.run.status.value == "failed"
    assert st["paid"] == "failed" and st["after"] == "skipped"
    assert st["on_timeout"] == "succeeded"
    paid = next(s for s in view.steps if s.step_id == "paid")
    assert paid.error is not None and paid.error["type"].endswith(".WaitTimedOut")
    assert executions(coord, run_id) == {"before": 1, "on_timeout": 1}
    # a late event finds no waiter
    assert coord.send_event("pay:e3", {}, by="test")[2] == 0


def test_cancel_ends_the_waits(coord: Coordinator) -> None:
    run_id = coord.submit("wait_event_flow", {"id": "e4"})
    wait_waiting(coord, run_id, "paid")
    assert coord.cancel(run_id)
    assert statuses(coord.view(run_id))["paid"] == "cancelled"
    assert timer_due_s(coord, run_id, "paid") is None
    keys = coord.store.keys
    assert not coord.store.client.exists(keys.timer(wait_timer_id(run_id, "paid")))
    assert not coord.store.client.smembers(keys.wait_waiters("pay:e4"))
    assert coord.send_event("pay:e4", {}, by="test")[2] == 0
    assert executions(coord, run_id) == {"before": 1}


def test_events_over_the_api_need_their_scope(coord: Coordinator, http: httpx.Client,
                                              api: ServerThread) -> None:
    run_id = coord.submit("wait_event_flow", {"id": "e5"})
    wait_waiting(coord, run_id, "paid")
    got = http.get(f"/v1/runs/{run_id}").json()
    paid = next(s for s in got["steps"] if s["step_id"] == "paid")
    assert paid["status"] == "waiting" and paid["wait"]["key"] == "pay:e5"
    with httpx.Client(base_url=api.url, timeout=30) as anon:
        assert anon.post("/v1/events/pay:e5", json={}).status_code == 401
        assert anon.post("/v1/events/pay:e5", json={},
                         headers=bearer(READ_TOKEN)).status_code == 403
    assert http.post("/v1/events/bad key", json={}).status_code == 422
    resp = http.post("/v1/events/pay:e5", json={"paid": 1})
    assert resp.status_code == 200, resp.text
    assert resp.json()["resumed"] == 1
    view = wait_run(coord, run_id)
    assert view.run.status.value == "succeeded"
    paid_rec = next(s for s in view.steps if s.step_id == "paid")
    assert paid_rec.resolution is not None and paid_rec.resolution["by"] == "api:ops"
    assert executions(coord, run_id) == {"before": 1, "after": 1}


# --- approvals -----------------------------------------------------------------------


def _cli(coord: Coordinator, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command line, in a process of its own (stdout and stderr together)."""
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args],
                          env=worker_env(coord.settings.redis_url), capture_output=True,
                          text=True, timeout=60, check=False)


def test_an_approval_waiting_an_hour_resumes_when_approved_on_the_cli(
        coord: Coordinator) -> None:
    run_id = coord.submit("approval_flow")
    wait_waiting(coord, run_id, "approve")
    assert_parked(coord, run_id, "approve", HOUR_S - 60)
    out = _cli(coord, "status", run_id)
    assert "waits for approval: ship it?" in out.stdout
    early = _cli(coord, "approve", run_id, "before", "--comment", "no")
    assert early.returncode == 2 and "is no approval step" in early.stderr
    ok = _cli(coord, "approve", run_id, "approve", "--comment", "looks right")
    assert ok.returncode == 0, ok.stderr
    view = wait_run(coord, run_id)
    assert view.run.status.value == "succeeded", statuses(view)
    decision = view.outputs["approve"]
    assert decision["decision"] == "approved" and decision["comment"] == "looks right"
    assert str(decision["by"]).startswith("cli:")
    assert "approved by cli:" in _cli(coord, "status", run_id).stdout
    assert executions(coord, run_id) == {"before": 1, "after": 1}
    again = _cli(coord, "reject", run_id, "approve")
    assert again.returncode == 2


def test_a_rejection_over_the_api_takes_the_failure_path(coord: Coordinator,
                                                         http: httpx.Client) -> None:
    run_id = coord.submit("approval_flow")
    wait_waiting(coord, run_id, "approve")
    resp = http.post(f"/v1/runs/{run_id}/steps/approve/reject",
                     json={"comment": "too expensive"})
    assert resp.status_code == 200, resp.text
    step = next(s for s in resp.json()["steps"] if s["step_id"] == "approve")
    assert step["resolution"]["decision"] == "rejected"
    assert step["resolution"]["by"] == "api:ops"
    view = wait_run(coord, run_id)
    st = statuses(view)
    assert view.run.status.value == "failed"
    assert st["approve"] == "failed" and st["after"] == "skipped"
    assert st["on_reject"] == "succeeded"
    rec = next(s for s in view.steps if s.step_id == "approve")
    assert rec.error is not None and rec.error["type"].endswith(".ApprovalRejected")
    assert "too expensive" in rec.error["message"]
    assert executions(coord, run_id) == {"before": 1, "on_reject": 1}
    late = http.post(f"/v1/runs/{run_id}/steps/approve/approve", json={})
    assert late.status_code == 409 and late.json()["error"]["code"] == "step_not_waiting"


def test_an_approval_timeout_takes_the_failure_path(coord: Coordinator) -> None:
    run_id = coord.submit("approval_flow")
    wait_waiting(coord, run_id, "approve")
    fast_forward(coord, run_id, "approve")
    view = wait_run(coord, run_id)
    assert statuses(view)["approve"] == "failed"
    assert executions(coord, run_id) == {"before": 1, "on_reject": 1}


# --- timers --------------------------------------------------------------------------


def test_a_sleep_of_an_hour_ends_when_its_timer_fires(coord: Coordinator) -> None:
    run_id = coord.submit("sleep_flow")
    wait_waiting(coord, run_id, "nap")
    assert_parked(coord, run_id, "nap", HOUR_S - 60)
    fast_forward(coord, run_id, "nap")
    view = wait_run(coord, run_id)
    assert view.run.status.value == "succeeded", statuses(view)
    assert executions(coord, run_id) == {"after": 1}


def test_wait_until_a_time_from_the_input(coord: Coordinator) -> None:
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 2 * HOUR_S))
    run_id = coord.submit("until_flow", {"at": later})
    wait_waiting(coord, run_id, "until")
    assert_parked(coord, run_id, "until", HOUR_S)
    fast_forward(coord, run_id, "until")
    assert wait_run(coord, run_id).run.status.value == "succeeded"
    past = coord.submit("until_flow", {"at": "2020-01-01T00:00:00Z"})
    assert wait_run(coord, past).run.status.value == "succeeded"
    assert executions(coord, past) == {"after": 1}


# --- faults and worker slots ----------------------------------------------------------


def test_a_waiting_step_holds_no_worker_slot_and_survives_a_killed_worker(
        redis_binary: str) -> None:
    with private_stack(redis_binary, ["solo"], concurrency=1) as (server, coord, workers):
        waiting = coord.submit("wait_event_flow", {"id": "k1"})
        wait_waiting(coord, waiting, "paid")
        # concurrency 1: other runs' steps execute while this run waits
        others = [coord.submit("zigzag_11") for _ in range(3)]
        for rid in others:
            assert wait_run(coord, rid, 120).run.status.value == "succeeded"
        assert statuses(coord.view(waiting))["paid"] == "waiting"
        assert_parked(coord, waiting, "paid", HOUR_S - 120)
        workers[0].kill()  # SIGKILL, while the run waits
        coord.send_event("pay:k1", {"ok": True}, by="test")  # no worker is alive
        fresh = WorkerProcess(server.url, "fresh", concurrency=1)
        try:
            fresh.wait_ready(coord.app)
            view = wait_run(coord, waiting, 60)
        finally:
            fresh.stop()
        assert view.run.status.value == "succeeded", statuses(view)
        assert executions(coord, waiting) == {"before": 1, "after": 1}
        assert coord.store.client.hgetall(f"test:overlap:{waiting}") == {}


def test_a_redis_restart_while_waiting_loses_nothing(redis_binary: str) -> None:
    with private_stack(redis_binary, ["aof"], appendonly=True, concurrency=2,
                       server_args=("--appendfsync", "always")) as (server, coord, _):
        ev = coord.submit("wait_event_flow", {"id": "r1"})
        nap = coord.submit("sleep_flow")
        ok = coord.submit("approval_flow")
        for rid, step in ((ev, "paid"), (nap, "nap"), (ok, "approve")):
            wait_waiting(coord, rid, step)
        server.kill()  # a crash: only what the AOF holds comes back
        server.restart()
        wait_until(server.ping, 30, message="redis did not come back")
        for rid, step in ((ev, "paid"), (nap, "nap"), (ok, "approve")):
            assert statuses(coord.view(rid))[step] == "waiting"
            assert_parked(coord, rid, step, HOUR_S - 120)
        coord.send_event("pay:r1", {"after": "restart"}, by="test")
        fast_forward(coord, nap, "nap")
        coord.decide(ok, "approve", True, "fine", by="test")
        for rid in (ev, nap, ok):
            view = wait_run(coord, rid, 90)
            assert view.run.status.value == "succeeded", statuses(view)
            assert executions(coord, rid).get("after") == 1
        assert coord.view(ev).outputs["paid"] == {"after": "restart"}
