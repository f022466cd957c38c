"""Submitting a run from another service through the broker alone.

The sender is a separate Python process with a bare ``Celery(broker=..., backend=...)``
app that imports nothing of ours: it knows only the task's name, its keyword arguments
and the queue the workers consume.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from orchestrator.cli.main import cli
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.store.submissions import Submissions
from tests.integration.conftest import statuses, wait_run
from workflows.order import systems

pytestmark = pytest.mark.redis

# Runs in a clean interpreter (-I: no user site, no current directory on sys.path, no
# PYTHON* variables): only Celery is importable from the virtualenv, none of our code.
SENDER = """
import json, sys
from celery import Celery

url, kwargs = sys.argv[1], json.loads(sys.argv[2])
app = Celery("other-service", broker=url, backend=url)
app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")
ours = sorted(m for m in sys.modules if m.split(".")[0] in ("orchestrator", "workers",
                                                             "workflows", "tests"))
assert not ours, ours
result = app.send_task("orchestrator.submit", kwargs=kwargs, queue="default")
print(json.dumps(result.get(timeout=30)))
"""


def send(url: str, **kwargs: Any) -> dict[str, Any]:
    """Run the sender process; return the task's result."""
    with tempfile.TemporaryDirectory() as cwd:
        res = subprocess.run([sys.executable, "-I", "-c", SENDER, url, json.dumps(kwargs)],
                             capture_output=True, text=True, timeout=60, cwd=cwd,
                             check=False)
    assert res.returncode == 0, res.stderr
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def test_bare_celery_client_starts_a_run(stack: dict[str, Any], coord: Coordinator,
                                         r: redis.Redis) -> None:
    systems.set_stock(r, "SKU-B", 10)
    run_id = f"broker-{uuid.uuid4().hex}"
    order = {"order_id": "o-broker", "sku": "SKU-B", "qty": 2,
             "customer_email": "broker@example.com"}
    first = send(stack["url"], workflow="customer_order", input=order, run_id=run_id)
    assert first == {"run_id": run_id, "created": True}
    view = wait_run(coord, run_id)
    assert view.run.status.value == "succeeded"
    assert view.run.input == order
    assert view.run.origin.kind.value == "broker"
    assert statuses(view)["notify_customer"] == "succeeded"
    assert int(r.hget(systems.STOCK, "SKU-B") or 0) == 8

    # the same run id again: no second run (and the workflow does not run twice)
    again = send(stack["url"], workflow="customer_order", input=order, run_id=run_id)
    assert again == {"run_id": run_id, "created": False}
    index = coord.store.keys.runs_by_workflow("customer_order")
    assert r.zscore(index, run_id) is not None
    assert [rid for rid in r.zrange(index, 0, -1) if rid == run_id] == [run_id]
    assert int(r.hget(systems.STOCK, "SKU-B") or 0) == 8


def test_concurrent_duplicates_start_one_run(stack: dict[str, Any], coord: Coordinator,
                                             r: redis.Redis) -> None:
    run_id = f"broker-{uuid.uuid4().hex}"
    kwargs = json.dumps({"workflow": "retry_flow", "run_id": run_id})
    with tempfile.TemporaryDirectory() as cwd:
        procs = [subprocess.Popen([sys.executable, "-I", "-c", SENDER, stack["url"], kwargs],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  cwd=cwd) for _ in range(3)]
        outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    created = [json.loads(o.strip().splitlines()[-1])["created"] for o, _ in outs]
    assert sorted(created) == [False, False, True]
    view = wait_run(coord, run_id)
    assert view.run.status.value == "succeeded"
    assert view.steps[0].attempt == 3  # one run: its step ran its three attempts once
    assert r.llen(f"test:log:{run_id}") == 3


def test_invalid_input_is_reported_to_the_sender(stack: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as cwd:
        res = subprocess.run([sys.executable, "-I", "-c", SENDER, stack["url"],
                              json.dumps({"workflow": "customer_order", "input": {"x": 1},
                                          "run_id": f"broker-{uuid.uuid4().hex}"})],
                             capture_output=True, text=True, timeout=60, cwd=cwd,
                             check=False)
    assert res.returncode != 0
    last = res.stderr.strip().splitlines()[-1]
    assert "InputInvalid" in last and "order_id" in last, res.stderr


# --- stock clients, their default queue, and rejected submissions -------------------------

NODE_DIR = Path(__file__).resolve().parents[1] / "interop" / "node"

STOCK_SENDER = SENDER.replace(', queue="default")', ")")  # Celery's default queue: celery


def _send_stock(url: str, kwargs: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as cwd:
        return subprocess.run([sys.executable, "-I", "-c", STOCK_SENDER, url,
                               json.dumps(kwargs)], capture_output=True, text=True,
                              timeout=60, cwd=cwd, check=False)


@pytest.fixture(scope="module")
def node_client() -> Path:
    """celery-node, from npm, installed from the lockfile (the test fails without npm)."""
    npm = shutil.which("npm")
    assert npm and shutil.which("node"), "node and npm are needed for the interop test"
    if not (NODE_DIR / "node_modules" / "celery-node").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True,
                       capture_output=True, timeout=300)
    return NODE_DIR / "submit.js"


def test_a_stock_python_client_reaches_the_workers_on_its_default_queue(
        stack: dict[str, Any], coord: Coordinator) -> None:
    run_id = f"stock-py-{uuid.uuid4().hex}"
    res = _send_stock(stack["url"], {"workflow": "retry_flow", "run_id": run_id})
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) == {"run_id": run_id,
                                                               "created": True}
    assert wait_run(coord, run_id).run.status.value == "succeeded"


def test_celery_node_submits_a_run(stack: dict[str, Any], coord: Coordinator,
                                   r: redis.Redis, node_client: Path) -> None:
    systems.set_stock(r, "SKU-N", 5)
    run_id = f"node-{uuid.uuid4().hex}"
    order = {"order_id": "o-node", "sku": "SKU-N", "qty": 1,
             "customer_email": "node@example.com"}
    kwargs = json.dumps({"workflow": "customer_order", "input": order, "run_id": run_id})
    res = subprocess.run(["node", str(node_client), stack["url"], kwargs],
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) == {"run_id": run_id,
                                                               "created": True}
    view = wait_run(coord, run_id)
    assert view.run.status.value == "succeeded" and view.run.origin.kind.value == "broker"
    assert int(r.hget(systems.STOCK, "SKU-N") or 0) == 4


@pytest.mark.parametrize(("kwargs", "code", "words"), [
    ({"workflow": "no_such_flow"}, "workflow_not_found", "no_such_flow"),
    ({"workflow": "retry_flow", "run_id": ""}, "run_id_invalid", "is not valid"),
    ({"workflow": "retry_flow", "run_id": "has space"}, "run_id_invalid", "is not valid"),
    ({"workflow": "customer_order", "input": {"x": 1}}, "input_invalid", "order_id"),
    ({"workflow": "retry_flow", "color": "red"}, "input_invalid", "unknown arguments"),
    ({"workflow": "retry_flow", "priority": "urgent"}, "input_invalid", "'urgent' is not one"),
])
def test_a_rejected_submission_is_recorded(stack: dict[str, Any], coord: Coordinator,
                                           kwargs: dict[str, Any], code: str,
                                           words: str) -> None:
    marker = f"rej-{uuid.uuid4().hex}"
    kwargs = {**kwargs, "input": {**kwargs.get("input", {}), "marker": marker}} \
        if kwargs.get("workflow") == "customer_order" else kwargs
    before = coord.store.client.zcard(coord.store.keys.runs_index())
    res = _send_stock(stack["url"], kwargs)
    assert res.returncode != 0  # the sender sees the failure
    assert coord.store.client.zcard(coord.store.keys.runs_index()) == before  # no run
    recs = Submissions(coord.store.client, coord.store.keys).rejected(5)
    rec = recs[0]
    assert rec.code == code and words in rec.reason, recs
    assert rec.workflow == kwargs.get("workflow")
    out = CliRunner().invoke(cli, ["rejected", "--limit", "1"],
                             env={"ORCH_REDIS_URL": stack["url"],
                                  "ORCH_WORKFLOW_PACKAGES": "workflows"})
    assert out.exit_code == 0 and code in out.output, out.output
