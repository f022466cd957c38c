"""The Python client against a real API server, real workers and a private Redis."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from orchestrator.api.server import ServerThread
from orchestrator.client import Client
from orchestrator.core.states import RunStatus
from orchestrator.dev.localredis import free_loopback_port
from orchestrator.errors import ApiError
from tests.support.api import ORDER, RO_TOKEN, RW_TOKEN, api_server_fixture
from workflows.order import systems

pytestmark = pytest.mark.redis


server = api_server_fixture()


@pytest.fixture
def api(server: ServerThread, r: redis.Redis) -> Iterator[Client]:
    systems.set_stock(r, "SKU-API", 1000)
    with Client(server.url, RW_TOKEN) as c:
        yield c


def _order(order_id: str) -> dict[str, Any]:
    return {**ORDER, "order_id": order_id}


def test_submit_follow_and_read(api: Client) -> None:
    run = api.submit("customer_order", _order("c-1"))
    assert run.status is RunStatus.RUNNING and not run.ended
    events = list(api.events(run.run_id))
    assert events[0].kind == "run" and events[0].status == "running"
    assert events[-1].ends_run and events[-1].status == "succeeded"
    assert any(e.kind == "step" and e.step == "update_accounting" for e in events)
    done = api.run(run.run_id)
    assert done.ended and done.status is RunStatus.SUCCEEDED
    assert done.outputs["send_shipping_request"] == {"tracking_number": "TRK-c-1"}
    assert done.steps[0].step_id == "receive_order"
    # resuming after the last event yields nothing more
    assert list(api.events(run.run_id, last_event_id=events[-1].id)) == []


def test_submit_and_wait(api: Client) -> None:
    run = api.submit_and_wait("customer_order", _order("c-2"), timeout_s=30)
    assert run.status is RunStatus.SUCCEEDED
    assert all(s.status.terminal for s in run.steps)


def test_submit_and_wait_times_out_then_cancel(api: Client) -> None:
    with pytest.raises(TimeoutError, match="did not end"):
        api.submit_and_wait("cancel_flow", timeout_s=1.0)
    running = api.runs(workflow="cancel_flow", status="running").runs
    assert running
    cancelled = api.cancel(running[0].run_id)
    assert cancelled.status is RunStatus.CANCELLED
    with pytest.raises(ApiError) as err:
        api.cancel(running[0].run_id)
    assert err.value.status_code == 409 and err.value.code == "run_ended"


def test_wait_follows_a_longer_run(api: Client) -> None:
    run = api.submit("retry_flow")
    done = api.wait(run.run_id, timeout_s=30)
    assert done.status is RunStatus.SUCCEEDED
    assert done.steps[0].attempt == 3


def test_idempotent_submit(api: Client) -> None:
    a = api.submit("customer_order", _order("c-3"), idempotency_key="client-c-3")
    b = api.submit("customer_order", _order("c-3"), idempotency_key="client-c-3")
    assert a.run_id == b.run_id
    with pytest.raises(ApiError) as err:
        api.submit("customer_order", _order("c-4"), idempotency_key="client-c-3")
    assert err.value.code == "idempotency_conflict"
    api.wait(a.run_id, timeout_s=30)


def test_workflows(api: Client) -> None:
    names = {w.name for w in api.workflows().workflows}
    assert {"customer_order", "cancel_flow"} <= names
    wf = api.workflow("customer_order")
    assert wf.input_schema["type"] == "object"
    assert wf.mermaid.startswith("flowchart TD")


def test_errors_carry_code_and_fix(api: Client, server: ServerThread) -> None:
    with pytest.raises(ApiError) as err:
        api.submit("no_such_workflow", {})
    assert err.value.status_code == 404 and err.value.code == "workflow_not_found"
    assert err.value.fix
    with pytest.raises(ApiError) as err:
        api.submit("customer_order", {"order_id": "x"})
    assert err.value.status_code == 422 and err.value.code == "input_invalid"
    with pytest.raises(ApiError) as err:
        api.run("no-such-run")
    assert err.value.code == "run_not_found"
    with pytest.raises(ApiError) as err:
        list(api.events("no-such-run"))
    assert err.value.code == "run_not_found"
    with Client(server.url, RO_TOKEN) as ro, pytest.raises(ApiError) as err:
        ro.submit("customer_order", ORDER)
    assert err.value.status_code == 403 and err.value.code == "insufficient_scope"
    with Client(server.url, "not-a-token-at-all") as bad, pytest.raises(ApiError) as err:
        bad.workflows()
    assert err.value.status_code == 401


def test_unreachable_server() -> None:
    with Client(f"http://127.0.0.1:{free_loopback_port()}", RW_TOKEN) as c, \
            pytest.raises(ApiError) as err:
        c.workflows()
    assert err.value.status_code == 0 and err.value.code == "unreachable"


def test_client_imports_no_server_code() -> None:
    code = ("import sys, orchestrator.client; "
            "bad = sorted({m.split('.')[0] for m in sys.modules} & "
            "{'fastapi', 'starlette', 'uvicorn', 'celery', 'kombu'}); "
            "print(','.join(bad)); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False)
    assert res.returncode == 0, res.stdout + res.stderr
