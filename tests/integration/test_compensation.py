"""Compensation (a saga) on real workers: a failing step unwinds exactly the succeeded
steps' compensations in reverse dependency order (parallel branches in parallel); a
failing compensation is retried, then reported; a cancel with compensation works
mid-fan-out; a killed worker and a Redis restart lose nothing.  Steps and compensations
count their own executions (``test:exec:<run>``); compensations log when they start and
end (``test:undo:<undo run>``)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from orchestrator.api.server import ServerThread
from orchestrator.core.compensation import undo_run_id
from orchestrator.runtime.coordinator import Coordinator
from tests.integration.conftest import private_stack, statuses, wait_run
from tests.support.api import api_server_fixture, bearer
from tests.support.wait import wait_until
from tests.support.waits import clear_inflight_marks, executions
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.redis


def timeline(coord: Coordinator, undo_id: str) -> dict[str, dict[str, float]]:
    """Each compensation's first start and last end."""
    out: dict[str, dict[str, float]] = {}
    for raw in coord.store.client.lrange(f"test:undo:{undo_id}", 0, -1):
        what, step, at = json.loads(raw)
        times = out.setdefault(step, {})
        if what == "start":
            times.setdefault("start", at)
        else:
            times["end"] = at
    return out


def assert_unwound_in_order(coord: Coordinator, undo_id: str) -> None:
    t = timeline(coord, undo_id)
    for branch in ("p1", "p2"):  # b's undo waits for its dependents' undos
        assert t[branch]["end"] <= t["b"]["start"], t
    assert t["b"]["end"] <= t["a"]["start"], t
    # the parallel branches unwound in parallel
    assert t["p1"]["start"] < t["p2"]["end"] and t["p2"]["start"] < t["p1"]["end"], t


def test_a_failing_step_unwinds_the_succeeded_steps_in_reverse_order(
        coord: Coordinator) -> None:
    run_id = coord.submit("saga_flow", {"fail_c": True})
    view = wait_run(coord, run_id, 60)
    undo_id = undo_run_id(run_id)
    assert view.run.status.value == "compensated", statuses(view)
    assert statuses(view) == {"a": "compensated", "b": "compensated", "p1": "compensated",
                              "p2": "compensated", "n": "succeeded", "c": "failed",
                              "h": "succeeded"}
    assert executions(coord, run_id) == {s: 1 for s in ("a", "b", "p1", "p2", "n", "c", "h")}
    # exactly the succeeded steps with a compensation, each undone once
    assert executions(coord, undo_id) == {"a": 1, "b": 1, "p1": 1, "p2": 1}
    assert coord.store.client.hgetall(f"test:overlap:{undo_id}") == {}
    assert_unwound_in_order(coord, undo_id)
    undo = coord.view(undo_id)
    assert undo.run.compensates == run_id and undo.run.workflow == "saga_flow.undo"
    assert undo.outputs == {s: f"undid {s}" for s in ("a", "b", "p1", "p2")}
    seen = [f.get("status") for _, f in coord.store.events(run_id) if f.get("kind") == "run"]
    assert seen == ["running", "compensating", "compensated"]


def test_a_run_that_succeeds_is_not_unwound(coord: Coordinator) -> None:
    run_id = coord.submit("saga_flow", {"fail_c": False})
    view = wait_run(coord, run_id, 60)
    assert view.run.status.value == "succeeded", statuses(view)
    assert not coord.store.exists(undo_run_id(run_id))


def test_a_failing_compensation_is_retried_then_reported(coord: Coordinator) -> None:
    flaky = coord.submit("saga_flaky_undo", {"fail_c": True})
    broken = coord.submit("saga_broken_undo", {"fail_c": True})
    view = wait_run(coord, flaky, 60)
    assert view.run.status.value == "compensated", statuses(view)
    assert executions(coord, undo_run_id(flaky))["a"] == 3  # failed twice, then undid a
    view = wait_run(coord, broken, 60)
    assert view.run.status.value == "compensation_failed", statuses(view)
    st = statuses(view)
    assert st["b"] == "compensation_failed" and st["a"] == "compensated", st
    b = next(s for s in view.steps if s.step_id == "b")
    assert b.reason is not None and "undo of b failed" in b.reason, b.reason
    assert executions(coord, undo_run_id(broken))["b"] == 3  # every attempt of its policy
    # a's undo still ran, after b's had ended for good
    t = timeline(coord, undo_run_id(broken))
    assert t["b"]["end"] <= t["a"]["start"], t


def test_cancel_with_compensation_mid_fan_out(coord: Coordinator) -> None:
    run_id = coord.submit("saga_fanout")

    def running() -> list[str]:
        return [s.step_id for s in coord.view(run_id).steps if s.status.value == "running"
                and s.step_id.startswith("f")]

    wait_until(running, 30, message="no branch ever ran")
    assert coord.cancel(run_id, compensate=True)
    assert coord.store.run(run_id).status.value == "compensating"
    assert not coord.cancel(run_id, compensate=True)  # already being unwound
    view = wait_run(coord, run_id, 90)
    assert view.run.status.value == "compensated", statuses(view)
    st = statuses(view)
    ran = sorted(s for s, n in executions(coord, run_id).items())
    undone = sorted(s for s, v in st.items() if v == "compensated")
    # every step that ran finished and was undone; the others never started
    assert ran == undone and "a" in undone and "z" not in ran, (ran, st)
    assert all(v == "cancelled" for s, v in st.items() if s not in ran), st
    assert 1 <= len([s for s in ran if s.startswith("f")]) < 12, ran
    assert executions(coord, undo_run_id(run_id)) == {s: 1 for s in undone}
    t = timeline(coord, undo_run_id(run_id))
    assert all(t[f]["end"] <= t["a"]["start"] for f in undone if f != "a"), t


def test_unwinding_survives_a_killed_worker_and_a_redis_restart(redis_binary: str) -> None:
    """Compensations in flight: the worker running one is SIGKILLed, then Redis crashes
    and comes back from its AOF.  Every run ends compensated; no compensation ran twice
    at once."""
    with private_stack(redis_binary, ["u1", "u2"], concurrency=2, lease_s=2.0,
                       appendonly=True, server_args=("--appendfsync", "always")
                       ) as (server, coord, workers):
        runs = [coord.submit("saga_flow", {"fail_c": True}) for _ in range(3)]

        def undoing() -> tuple[str, str, str] | None:
            for rid in runs:
                uid = undo_run_id(rid)
                if not coord.store.exists(uid):
                    continue
                for s, rec in coord.store.step_runs(uid).items():
                    if rec.status.value == "running" and rec.worker:
                        return uid, s, rec.worker
            return None

        _, _, worker = wait_until(undoing, 60, message="no compensation ever ran")
        next(w for w in workers if w.name == worker).kill()
        clear_inflight_marks(coord, [undo_run_id(rid) for rid in runs], worker)
        fresh = WorkerProcess(server.url, "fresh", concurrency=2, lease_s=2.0)
        try:
            fresh.wait_ready(coord.app)
            server.kill()
            server.restart()
            wait_until(server.ping, 30, message="redis did not come back")
            views = [wait_run(coord, rid, 120) for rid in runs]
        finally:
            fresh.stop()
        for view in views:
            assert view.run.status.value == "compensated", statuses(view)
            counts: dict[str, Any] = executions(coord, undo_run_id(view.run.run_id))
            assert set(counts) == {"a", "b", "p1", "p2"}, counts
            assert coord.store.client.hgetall(
                f"test:overlap:{undo_run_id(view.run.run_id)}") == {}


def _cancel_mid_fan_out(coord: Coordinator, cancel: Any) -> str:
    """Submit ``saga_fanout``, cancel it with ``cancel(run_id)`` once a branch runs, and
    check that it unwinds: every step that ran is undone once, the rest never start."""
    run_id = coord.submit("saga_fanout")
    wait_until(lambda: any(s.status.value == "running" and s.step_id.startswith("f")
                           for s in coord.view(run_id).steps), 30,
               message="no branch ever ran")
    cancel(run_id)
    view = wait_run(coord, run_id, 90)
    assert view.run.status.value == "compensated", statuses(view)
    undone = sorted(s.step_id for s in view.steps if s.status.value == "compensated")
    assert sorted(executions(coord, run_id)) == undone and "a" in undone, statuses(view)
    assert executions(coord, undo_run_id(run_id)) == {s: 1 for s in undone}
    return run_id


def test_the_cli_cancels_and_compensates(coord: Coordinator,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from orchestrator.cli.main import cli

    monkeypatch.setenv("ORCH_REDIS_URL", coord.settings.redis_url)
    monkeypatch.setenv("ORCH_WORKFLOW_PACKAGES", ",".join(coord.settings.workflow_packages))
    runner = CliRunner()
    said: list[str] = []

    def cancel(run_id: str) -> None:
        out = runner.invoke(cli, ["cancel", run_id, "--compensate"])
        assert out.exit_code == 0, out.output
        said.append(out.output)

    run_id = _cancel_mid_fan_out(coord, cancel)
    assert f"undo run {undo_run_id(run_id)}" in said[0], said
    again = runner.invoke(cli, ["cancel", run_id, "--compensate"])
    assert again.exit_code == 0 and "nothing to cancel" in again.output, again.output


TOKEN = "compensation-test-token-0123456789-abcdef"
api = api_server_fixture(api_tokens=[{"token": TOKEN, "scopes": ["runs:read", "runs:write"]}])


def test_the_api_cancels_and_compensates(coord: Coordinator, api: ServerThread) -> None:
    with httpx.Client(base_url=api.url, headers=bearer(TOKEN), timeout=30) as http:
        answers: list[httpx.Response] = []

        def cancel(run_id: str) -> None:
            answers.append(http.post(f"/v1/runs/{run_id}/cancel",
                                     params={"compensate": "true"}))

        run_id = _cancel_mid_fan_out(coord, cancel)
        assert answers[0].status_code == 200, answers[0].text
        assert answers[0].json()["status"] == "compensating", answers[0].text
        ended = http.get(f"/v1/runs/{run_id}").json()
        assert ended["status"] == "compensated", ended
        again = http.post(f"/v1/runs/{run_id}/cancel", params={"compensate": "true"})
        assert again.status_code == 409 and again.json()["error"]["code"] == "run_ended"
