"""Size limits on run inputs and step outputs, on real workers, the real API and the
broker: larger data goes by reference (``orchestrator.core.payloads``)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
import redis

from orchestrator.api.server import ServerThread
from orchestrator.client import Client
from orchestrator.errors import ApiError, RunInputTooLarge
from orchestrator.runtime.celeryconf import SUBMIT_TASK
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.store.submissions import Submissions
from tests.integration.conftest import statuses, wait_run
from tests.support.api import RW_TOKEN, api_server_fixture, bearer
from tests.support.wait import wait_until

pytestmark = pytest.mark.redis

MIB = 1024 * 1024

# An API whose run inputs may be 2 KiB (its request bodies stay at 1 MiB).
small_api = api_server_fixture(run_input_max_bytes=2048)


def test_an_output_over_the_limit_fails_the_step_at_once(coord: Coordinator,
                                                          r: redis.Redis) -> None:
    """The default limit (1 MiB): the step may retry three times, but an output too large
    fails it on its first attempt; nothing of the output is stored; the failure path
    runs."""
    run_id = coord.submit("blob_flow", {"size": MIB + 1})
    view = wait_run(coord, run_id)
    assert view.run.status.value == "failed"
    assert statuses(view) == {"big": "failed", "after_big": "skipped",
                              "on_big": "succeeded"}
    big = view.steps[0]
    log = [json.loads(x) for x in r.lrange(f"test:log:{run_id}", 0, -1)]
    assert big.attempt == 1 and [e["step"] for e in log].count("big") == 1  # no retry
    assert big.error is not None
    assert big.error["type"] == "orchestrator.errors.StepOutputTooLarge"
    message = big.error["message"]
    assert "ORCH_STEP_OUTPUT_MAX_BYTES" in message and "reference" in message, message
    assert f"{MIB + 12:,} bytes" in message  # {"blob":"…"} around the MIB + 1 x's
    assert "big" not in view.outputs


def test_an_output_at_the_limit_is_stored(coord: Coordinator) -> None:
    size = MIB - len('{"blob":""}')  # exactly 1 MiB as compact JSON
    view = wait_run(coord, coord.submit("blob_flow", {"size": size}))
    assert statuses(view) == {"big": "succeeded", "after_big": "succeeded",
                              "on_big": "skipped"}
    assert len(view.outputs["big"]["blob"]) == size


def test_an_input_over_the_limit_is_refused_by_the_coordinator(coord: Coordinator) -> None:
    index = coord.store.keys.runs_index()
    before = coord.store.client.zcard(index)
    with pytest.raises(RunInputTooLarge) as info:
        coord.submit("blob_flow", {"size": 1, "pad": "x" * MIB})
    assert "ORCH_RUN_INPUT_MAX_BYTES" in str(info.value)
    assert "by reference" in str(info.value)
    assert coord.store.client.zcard(index) == before  # no run


def test_an_input_over_the_limit_sent_through_the_broker_is_rejected(
        stack: dict[str, Any], coord: Coordinator) -> None:
    run_id = f"big-{uuid.uuid4().hex}"
    coord.app.send_task(SUBMIT_TASK, kwargs={"workflow": "blob_flow", "run_id": run_id,
                                             "input": {"size": 1, "pad": "x" * MIB}},
                        queue="celery")
    submissions = Submissions(coord.store.client, coord.store.keys)

    def rejected() -> Any:
        return next((s for s in submissions.rejected(20) if s.run_id == run_id), None)

    wait_until(rejected, 30, message="the submission was not recorded as rejected")
    rec = rejected()
    assert rec.code == "run_input_too_large", rec
    assert "ORCH_RUN_INPUT_MAX_BYTES" in rec.reason
    assert not coord.store.client.exists(coord.store.keys.run(run_id))


def test_the_api_answers_413_naming_the_setting(small_api: ServerThread,
                                                coord: Coordinator) -> None:
    index = coord.store.keys.runs_index()
    before = coord.store.client.zcard(index)
    body = {"size": 1, "pad": "x" * 2100}
    resp = httpx.post(f"{small_api.url}/v1/workflows/blob_flow/runs", json=body,
                      headers={**bearer(RW_TOKEN), "Idempotency-Key": "too-big"}, timeout=30)
    assert resp.status_code == 413, resp.text
    err = resp.json()["error"]
    assert err["code"] == "input_too_large"
    assert "ORCH_RUN_INPUT_MAX_BYTES" in err["message"] + err["fix"]
    assert coord.store.client.zcard(index) == before  # no run
    # the Python client raises the API's error, with its code
    with Client(small_api.url, RW_TOKEN) as client, pytest.raises(ApiError) as info:
        client.submit("blob_flow", body)
    assert (info.value.status_code, info.value.code) == (413, "input_too_large")
    # the refused request freed its Idempotency-Key: a smaller input under it starts a run
    ok = httpx.post(f"{small_api.url}/v1/workflows/blob_flow/runs", json={"size": 1},
                    headers={**bearer(RW_TOKEN), "Idempotency-Key": "too-big"}, timeout=30)
    assert ok.status_code == 201, ok.text
    assert json.loads(ok.text)["run_id"]
