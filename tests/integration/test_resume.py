"""Resume on real workers: a run that failed at step c is resumed from c with a patched
input; the steps before c are not executed again (each step counts its own executions in
``test:exec:<run>``), their outputs are reused, and the new run succeeds.  A resume on a
version that changed a reused step is refused with the changed steps."""

from __future__ import annotations

import httpx
import pytest

from orchestrator.api.server import ServerThread
from orchestrator.core.models import WorkflowDef
from orchestrator.errors import ResumeRefused
from orchestrator.runtime.coordinator import Coordinator
from tests.integration.conftest import private_stack, statuses, wait_run
from tests.integration.flows_recovery import resume_flow
from tests.support.api import api_server_fixture, bearer
from tests.support.wait import wait_until
from tests.support.waits import clear_inflight_marks, executions
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.redis


def failed_run(coord: Coordinator) -> str:
    run_id = coord.submit("resume_flow", {"fail": True})
    view = wait_run(coord, run_id)
    assert view.run.status.value == "failed", statuses(view)
    assert executions(coord, run_id) == {"a": 1, "b": 1, "p1": 1, "p2": 1, "c": 1, "on_c": 1}
    return run_id


def test_a_failed_run_resumed_from_the_failed_step_reuses_what_came_before(
        coord: Coordinator) -> None:
    old = failed_run(coord)
    new, plan = coord.resume(old, "c", {"fail": False})
    assert plan.reuse == ("a", "b", "p1", "p2") and plan.rerun == ("c", "d", "on_c")
    view = wait_run(coord, new)
    assert view.run.status.value == "succeeded", statuses(view)
    assert statuses(view) == {"a": "succeeded", "b": "succeeded", "p1": "succeeded",
                              "p2": "succeeded", "c": "succeeded", "d": "succeeded",
                              "on_c": "skipped"}
    # nothing before c ran again; c and d ran once
    assert executions(coord, new) == {"c": 1, "d": 1}
    old_outputs = coord.view(old).outputs
    assert {s: view.outputs[s] for s in plan.reuse} == {s: old_outputs[s] for s in plan.reuse}
    assert view.run.input == {"fail": False} and view.run.resumed_from == old
    assert coord.store.run(old).resumes == (new,)
    reused = {s.step_id: s.reason for s in view.steps if s.step_id in plan.reuse}
    assert reused == {s: f"reused from run {old}" for s in plan.reuse}
    # the new run's events show the reused steps succeeded
    seen = {(f.get("step"), f.get("status")) for _, f in coord.store.events(new)}
    assert ("a", "succeeded") in seen and ("d", "succeeded") in seen


def test_resume_without_from_reruns_only_what_did_not_succeed(coord: Coordinator) -> None:
    old = failed_run(coord)
    new, plan = coord.resume(old, input_patch={"fail": False})
    assert plan.reuse == ("a", "b", "p1", "p2")
    assert wait_run(coord, new).run.status.value == "succeeded"
    assert executions(coord, new) == {"c": 1, "d": 1}
    # resuming from an earlier step runs it and everything downstream again
    again, plan = coord.resume(new, "p1")
    assert plan.reuse == ("a", "b", "p2") and plan.rerun == ("p1", "c", "d", "on_c")
    assert wait_run(coord, again).run.status.value == "succeeded"
    assert executions(coord, again) == {"p1": 1, "c": 1, "d": 1}


def changed(step_id: str, **fields: object) -> WorkflowDef:
    data = resume_flow.model_dump(by_alias=True, exclude_defaults=True)
    for s in data["steps"]:
        if s["id"] == step_id:
            s.update(fields)
    return WorkflowDef.model_validate(data)


def test_resume_on_a_version_that_changed_a_reused_step_is_refused(
        coord: Coordinator) -> None:
    old = failed_run(coord)
    v_b = changed("b", retry={"max_attempts": 4})
    coord.compile(v_b)
    with pytest.raises(ResumeRefused, match=r"changed step\(s\) the resume would reuse: b"):
        coord.resume(old, "c", {"fail": False}, version=v_b.version)
    # a version that changed only steps the resume runs again is fine
    v_d = changed("d", retry={"max_attempts": 2})
    coord.compile(v_d)
    new, _ = coord.resume(old, "c", {"fail": False}, version=v_d.version[:10])
    view = wait_run(coord, new)
    assert view.run.status.value == "succeeded" and view.run.version == v_d.version
    assert executions(coord, new) == {"c": 1, "d": 1}


def test_resume_refuses_bad_requests(coord: Coordinator) -> None:
    old = failed_run(coord)
    with pytest.raises(ResumeRefused, match="not a step"):
        coord.resume(old, "nope")
    ok, _ = coord.resume(old, input_patch={"fail": False})
    wait_run(coord, ok)
    with pytest.raises(ResumeRefused, match="succeeded: there is nothing to resume"):
        coord.resume(ok)


def test_resumed_runs_survive_a_killed_worker_and_a_redis_restart(redis_binary: str) -> None:
    """Four resumed runs in flight: a worker running a step is SIGKILLed, then Redis
    crashes and comes back from its AOF.  Every run succeeds, no reused step runs, and no
    step ever runs twice at once (each step counts itself)."""
    with private_stack(redis_binary, ["k1", "k2"], concurrency=2, lease_s=2.0,
                       appendonly=True, server_args=("--appendfsync", "always")
                       ) as (server, coord, workers):
        olds = [coord.submit("resume_flow", {"fail": True}) for _ in range(4)]
        for rid in olds:
            assert wait_run(coord, rid, 60).run.status.value == "failed"
        news = [coord.resume(rid, "c", {"fail": False})[0] for rid in olds]

        def running_d() -> tuple[str, str] | None:
            for rid in news:
                rec = coord.store.step_runs(rid, ["d"])["d"]
                if rec.status.value == "running" and rec.worker:
                    return rid, rec.worker
            return None

        _, worker = wait_until(running_d, 60, message="no d step ever ran")
        victim = next(w for w in workers if w.name == worker)
        victim.kill()
        clear_inflight_marks(coord, news, worker)  # up to 2 steps
        fresh = WorkerProcess(server.url, "fresh", concurrency=2, lease_s=2.0)
        try:
            fresh.wait_ready(coord.app)
            server.kill()  # a crash: only what the AOF holds comes back
            server.restart()
            wait_until(server.ping, 30, message="redis did not come back")
            views = [wait_run(coord, n, 240) for n in news]
        finally:
            fresh.stop()
        for view in views:
            assert view.run.status.value == "succeeded", statuses(view)
            counts = executions(coord, view.run.run_id)
            assert set(counts) == {"c", "d"} and counts["c"] >= 1 and counts["d"] >= 1, counts
            assert coord.store.client.hgetall(f"test:overlap:{view.run.run_id}") == {}


TOKEN = "resume-test-token-0123456789-abcdefghij"
api = api_server_fixture(api_tokens=[{"token": TOKEN, "scopes": ["runs:read", "runs:write"]}])


def test_the_api_resumes_a_run(coord: Coordinator, api: ServerThread) -> None:
    old = failed_run(coord)
    with httpx.Client(base_url=api.url, headers=bearer(TOKEN), timeout=30) as http:
        r = http.post(f"/v1/runs/{old}/resume",
                      json={"from_step": "c", "input_patch": {"fail": False}})
        assert r.status_code == 201, r.text
        new = r.json()["run_id"]
        assert r.headers["Location"] == f"/v1/runs/{new}"
        assert r.json()["resumed_from"] == old
        assert wait_run(coord, new).run.status.value == "succeeded"
        assert executions(coord, new) == {"c": 1, "d": 1}
        assert http.get(f"/v1/runs/{old}").json()["resumes"] == [new]
        again = http.post(f"/v1/runs/{new}/resume", json={})
        assert again.status_code == 409 and again.json()["error"]["code"] == "resume_refused"
        assert "--from" in again.json()["error"]["fix"]
        bad = http.post(f"/v1/runs/{old}/resume", json={"from_step": "c", "nope": 1})
        assert bad.status_code == 422
        gone = http.post("/v1/runs/no-such-run/resume", json={})
        assert gone.status_code == 404


def test_the_cli_resumes_a_run(coord: Coordinator, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.cli.main import main

    old = failed_run(coord)
    monkeypatch.setenv("ORCH_REDIS_URL", coord.settings.redis_url)
    monkeypatch.setenv("ORCH_WORKFLOW_PACKAGES", ",".join(coord.settings.workflow_packages))
    main(["resume", old, "--from", "c", "--input-patch", '{"fail": false}', "--timeout", "60"])
    out = capsys.readouterr().out
    assert "reuses a, b, p1, p2; runs c, d, on_c" in out, out
    new = out.split()[1]
    assert coord.store.run(new).status.value == "succeeded" and f"resumes run {old}" in out
    with pytest.raises(SystemExit) as exit_:
        main(["resume", new])
    assert exit_.value.code == 2
    assert "--from STEP" in capsys.readouterr().err
