"""Flower against real workers: a run's tasks are findable by run id, readable, and a
failed step shows as FAILURE with its traceback; the REST API refuses anonymous calls."""

from __future__ import annotations

import ast
import base64
import json
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchestrator.dev import procs
from orchestrator.dev.localredis import free_loopback_port
from orchestrator.dev.waiting import wait_until
from orchestrator.runtime.catalog import discover
from orchestrator.runtime.coordinator import Coordinator
from tests.integration.conftest import make_settings, statuses, wait_run
from tests.support.workers import WorkerProcess, worker_env

pytestmark = pytest.mark.redis

USER, PASSWORD = "flower-test", "not-a-real-secret"


@dataclass
class Flower:
    """A Flower process on a loopback port, with basic auth."""

    base: str
    proc: subprocess.Popen[bytes]
    log: Path

    def get(self, path: str, *, auth: tuple[str, str] | None = (USER, PASSWORD)
            ) -> tuple[int, Any]:
        """GET ``path``; return the status and the decoded JSON body (None if not JSON)."""
        req = urllib.request.Request(self.base + path)
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                status, body = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        try:
            return status, json.loads(body)
        except ValueError:
            return status, None

    def up(self) -> bool:
        try:
            return self.get("/healthcheck", auth=None)[0] == 200
        except OSError:
            return False

    def tail(self, lines: int = 40) -> str:
        return procs.log_tail(self.log, lines)


@pytest.fixture
def flower(redis_url: str) -> Iterator[Flower]:
    port = free_loopback_port()
    log = procs.temp_log("flower-")
    # the launcher of the local stack and the compose file: credentials from the
    # environment (not the process list), /metrics behind the login
    proc = procs.spawn(
        [sys.executable, "-m", "workers.flower", "--address=127.0.0.1", f"--port={port}"],
        log=log, env={**worker_env(redis_url), "FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}"})
    f = Flower(f"http://127.0.0.1:{port}", proc, log)
    try:
        procs.wait_ready(proc, f.up, 60, name="flower", log=log,
                         message=lambda: f"flower not up:\n{f.tail()}")
        yield f
    finally:
        procs.stop(proc, 20)


def _kwargs(task: dict[str, Any]) -> dict[str, Any]:
    """A task's kwargs as Flower shows them (the worker's repr of the dict)."""
    try:
        value = ast.literal_eval(task.get("kwargs") or "{}")
    except (ValueError, SyntaxError):
        return {}
    return value if isinstance(value, dict) else {}


def test_flower_finds_a_runs_tasks_by_run_id_and_shows_the_failure(
        redis_url: str, flower: Flower) -> None:
    settings = make_settings(redis_url)
    coord = Coordinator(settings, discover(settings.workflow_packages))
    worker = WorkerProcess(redis_url, "flw", concurrency=2)
    try:
        worker.wait_ready(coord.app)
        # Flower learns of tasks only from events: wait until it hears this worker's
        # heartbeats, so its event receiver is connected before the run starts.
        online = f'flower_worker_online{{worker="{worker.name}"}} 1.0'
        wait_until(lambda: online in _metrics(flower), 30, interval_s=0.2,
                   message=lambda: f"flower never saw {worker.name} online:\n{flower.tail()}")
        run_id = coord.submit("fail_flow")
        view = wait_run(coord, run_id)
        assert statuses(view)["bad"] == "failed"
        step_ids = {s.step_id for s in view.steps}

        query = "/api/tasks?" + urllib.parse.urlencode({"search": run_id})

        def every_step_task_ended() -> dict[str, dict[str, Any]] | None:
            status, tasks = flower.get(query)
            assert status == 200, (status, tasks)
            by_step = {str(_kwargs(t).get("step_id")): t for t in tasks.values()
                       if _kwargs(t).get("run_id") == run_id}
            done = all(by_step.get(s, {}).get("state") in ("SUCCESS", "FAILURE")
                       for s in step_ids)
            return by_step if done else None

        ended = wait_until(every_step_task_ended, 30, interval_s=0.3,
                           message=lambda: f"flower tasks: {flower.get(query)[1]}")
    finally:
        worker.stop()

    assert ended is not None
    by_step = ended
    assert {s for s in by_step if s in step_ids} == step_ids
    for step_id in step_ids:
        assert by_step[step_id]["name"].startswith("step."), by_step[step_id]["name"]
    bad = by_step["bad"]
    assert bad["name"] == "step.test.fail"
    assert bad["state"] == "FAILURE"
    assert "RuntimeError" in (bad["traceback"] or "")
    assert "bad step" in (bad["exception"] or "")
    assert by_step["good"]["name"] == "step.test.sleep"
    assert by_step["good"]["state"] == "SUCCESS"

    # the same task through the single-task endpoint
    status, info = flower.get(f"/api/task/info/{bad['uuid']}")
    assert status == 200
    assert info["state"] == "FAILURE" and "RuntimeError" in info["traceback"]


def test_flower_api_refuses_anonymous_and_wrong_credentials(flower: Flower) -> None:
    assert flower.get("/api/tasks", auth=None)[0] == 401
    assert flower.get("/api/workers", auth=None)[0] == 401
    assert flower.get("/api/tasks", auth=(USER, "wrong"))[0] == 401
    assert flower.get("/api/tasks")[0] == 200


def _metrics(flower: Flower) -> str:
    """Flower's /metrics text (behind the login: workers.flower protects it)."""
    req = urllib.request.Request(flower.base + "/metrics")
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return str(resp.read().decode())


def test_flower_keeps_its_credentials_and_metrics_private(flower: Flower) -> None:
    with open(f"/proc/{flower.proc.pid}/cmdline", "rb") as fh:
        argv = fh.read().decode(errors="replace")
    assert PASSWORD not in argv
    assert flower.get("/metrics", auth=None)[0] == 401
    assert flower.get("/metrics", auth=(USER, "wrong"))[0] == 401
    assert flower.get("/metrics")[0] == 200
    assert flower.get("/api/workers", auth=None)[0] == 401
