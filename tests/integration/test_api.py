"""The HTTP API on a real uvicorn server, with real workers and a private Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from standardwebhooks import Webhook

from orchestrator.api import idempotency
from orchestrator.api.app import create_api
from orchestrator.api.models import RunOut
from orchestrator.api.server import ServerThread
from orchestrator.callbacks.signing import verify, verify_legacy
from orchestrator.dev.localredis import free_loopback_port
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.store.callbacks import CallbackRegistry
from orchestrator.store.reader import CLIENT_NAME
from tests.integration.conftest import wait_run
from tests.support.api import (
    CALLBACK_SECRET,
    ORDER,
    RO_TOKEN,
    RW_TOKEN,
    TOKENS,
    WF_TOKEN,
    CallbackReceiver,
    api_server_fixture,
    api_settings,
    bearer,
)
from tests.support.wait import wait_until
from tests.support.workers import worker_env
from workflows.order import systems

pytestmark = pytest.mark.redis


# The API (its own coordinator) on a free loopback port.
api = api_server_fixture()


@pytest.fixture
def http(api: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, headers=bearer(RW_TOKEN), timeout=30) as c:
        yield c


@pytest.fixture
def anon(api: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, timeout=30) as c:
        yield c


def _error(resp: httpx.Response) -> dict[str, Any]:
    body = resp.json()
    assert set(body) == {"error"}, body
    err: dict[str, Any] = body["error"]
    assert {"code", "message", "fix"} <= set(err), err
    return err


def _order(order_id: str, **over: Any) -> dict[str, Any]:
    return {**ORDER, "order_id": order_id, **over}


# --- probes and auth -------------------------------------------------------------------


def test_probes_need_no_token(anon: httpx.Client) -> None:
    assert anon.get("/healthz").json() == {"status": "ok", "checks": {}}
    ready = anon.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"redis": "ok"}


def test_readyz_is_503_without_redis(coord: Coordinator) -> None:
    settings = api_settings(f"redis://127.0.0.1:{free_loopback_port()}/0")
    with ServerThread(create_api(settings, catalog=coord.catalog)) as server:
        resp = httpx.get(f"{server.url}/readyz", timeout=10)
        assert resp.status_code == 503
        assert _error(resp)["code"] == "store_unavailable"
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200


def test_missing_or_wrong_token_is_401(anon: httpx.Client) -> None:
    for headers in ({}, bearer("x" * 32), {"Authorization": f"Basic {RW_TOKEN}"},
                    {"Authorization": "Bearer"}):
        resp = anon.get("/v1/runs", headers=headers)
        assert resp.status_code == 401, headers
        assert _error(resp)["code"] == "unauthorized"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = anon.post("/v1/workflows/customer_order/runs", json=ORDER)
    assert resp.status_code == 401


def test_token_without_scope_is_403(anon: httpx.Client) -> None:
    resp = anon.post("/v1/workflows/customer_order/runs", json=ORDER, headers=bearer(RO_TOKEN))
    assert resp.status_code == 403
    err = _error(resp)
    assert err["code"] == "insufficient_scope" and "runs:write" in err["message"]
    resp = anon.get("/v1/runs", headers=bearer(WF_TOKEN))
    assert resp.status_code == 403
    assert anon.get("/v1/workflows", headers=bearer(WF_TOKEN)).status_code == 200
    assert anon.get("/v1/runs", headers=bearer(RO_TOKEN)).status_code == 200


# --- workflows -------------------------------------------------------------------------


def test_workflows_list_and_detail(http: httpx.Client, coord: Coordinator) -> None:
    listed = {w["name"]: w for w in http.get("/v1/workflows").json()["workflows"]}
    assert listed["customer_order"]["version"] == coord.catalog.get("customer_order").version
    assert listed["customer_order"]["step_count"] == 11
    detail = http.get("/v1/workflows/customer_order").json()
    assert detail["input_schema"]["required"] == ["order_id", "sku", "qty", "customer_email"]
    steps = {s["id"]: s for s in detail["steps"]}
    assert steps["check_inventory"]["max_attempts"] == 3
    assert steps["reserve_item"]["parents"] == ["receive_order", "check_inventory"]
    assert detail["mermaid"].startswith("flowchart TD")
    assert "check_inventory --> reserve_item" in detail["mermaid"]


def test_unknown_workflow_is_404(http: httpx.Client) -> None:
    for resp in (http.get("/v1/workflows/nope"),
                 http.post("/v1/workflows/nope/runs", json={})):
        assert resp.status_code == 404
        err = _error(resp)
        assert err["code"] == "workflow_not_found"
        assert "customer_order" in err["message"]  # lists the known ones


# --- submit and read -------------------------------------------------------------------


def test_submit_then_read(http: httpx.Client, coord: Coordinator, r: redis.Redis) -> None:
    systems.set_stock(r, "SKU-API", 100)
    resp = http.post("/v1/workflows/customer_order/runs", json=_order("o-read"))
    assert resp.status_code == 201, resp.text
    run = RunOut.model_validate(resp.json())
    assert resp.headers["Location"] == f"/v1/runs/{run.run_id}"
    assert run.workflow == "customer_order" and run.input == _order("o-read")
    wait_run(coord, run.run_id)
    got = http.get(resp.headers["Location"]).json()
    assert got["status"] == "succeeded"
    steps = {s["step_id"]: s for s in got["steps"]}
    assert steps["check_inventory"]["attempt"] == 1
    assert steps["check_inventory"]["duration_s"] >= 0
    assert steps["notify_backorder"]["status"] == "skipped"
    assert steps["notify_backorder"]["reason"]
    assert got["outputs"]["send_shipping_request"] == {"tracking_number": "TRK-o-read"}
    assert got["duration_s"] > 0
    assert got["origin"] == {"kind": "api", "by": "rw", "schedule": None, "fire_time": None,
                             "trigger": None, "event_id": None, "tenant": None}


def test_failed_step_error_is_reported(http: httpx.Client) -> None:
    resp = http.post("/v1/workflows/fail_flow/runs", params={"wait": 20})
    assert resp.status_code == 200, resp.text
    run = resp.json()
    assert run["status"] == "failed"
    bad = next(s for s in run["steps"] if s["step_id"] == "bad")
    assert bad["error"]["type"].endswith("RuntimeError")
    assert bad["error"]["message"] == "bad step"


def test_unknown_run_is_404(http: httpx.Client) -> None:
    for resp in (http.get("/v1/runs/no-such-run"), http.post("/v1/runs/no-such-run/cancel"),
                 http.get("/v1/runs/no-such-run/events")):
        assert resp.status_code == 404
        assert _error(resp)["code"] == "run_not_found"


def test_wait_returns_the_ended_run(http: httpx.Client, r: redis.Redis) -> None:
    systems.set_stock(r, "SKU-API", 100)
    resp = http.post("/v1/workflows/customer_order/runs", params={"wait": 30},
                     json=_order("o-wait"))
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "succeeded"
    assert resp.headers["Location"] == f"/v1/runs/{resp.json()['run_id']}"


def test_wait_on_a_slow_run_is_202_then_cancel(http: httpx.Client) -> None:
    resp = http.post("/v1/workflows/cancel_flow/runs", params={"wait": 0.5})
    assert resp.status_code == 202, resp.text
    loc = resp.headers["Location"]
    assert resp.json()["status"] == "running"
    cancelled = http.post(f"{loc}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    again = http.post(f"{loc}/cancel")
    assert again.status_code == 409
    assert _error(again)["code"] == "run_ended"


def test_wait_beyond_the_cap_is_422(http: httpx.Client) -> None:
    resp = http.post("/v1/workflows/customer_order/runs", params={"wait": 61}, json=ORDER)
    assert resp.status_code == 422
    assert _error(resp)["code"] == "invalid_request"


def test_priority_sends_the_run_to_its_band(http: httpx.Client, coord: Coordinator) -> None:
    resp = http.post("/v1/workflows/fail_flow/runs", params={"wait": 20, "priority": "high"})
    assert resp.status_code == 200, resp.text  # the workers consume default.high too
    assert resp.json()["priority"] == "high" and resp.json()["status"] == "failed"
    assert coord.store.run(resp.json()["run_id"]).priority.value == "high"
    bad = http.post("/v1/workflows/fail_flow/runs", params={"priority": "urgent"})
    assert bad.status_code == 422
    assert _error(bad)["code"] == "invalid_request"


def test_list_runs_filters_and_pages(http: httpx.Client, coord: Coordinator) -> None:
    ids = [http.post("/v1/workflows/retry_flow/runs").json()["run_id"] for _ in range(3)]
    for rid in ids:
        wait_run(coord, rid)
    page = http.get("/v1/runs", params={"workflow": "retry_flow", "limit": 2}).json()
    assert [x["run_id"] for x in page["runs"]] == ids[::-1][:2]
    assert page["next_offset"] == 2
    rest = http.get("/v1/runs", params={"workflow": "retry_flow", "limit": 2,
                                        "offset": page["next_offset"]}).json()
    assert [x["run_id"] for x in rest["runs"]] == [ids[0]]
    assert rest["next_offset"] is None
    done = http.get("/v1/runs", params={"workflow": "retry_flow", "status": "succeeded"})
    assert {x["run_id"] for x in done.json()["runs"]} == set(ids)
    running = http.get("/v1/runs", params={"workflow": "retry_flow", "status": "running"})
    assert running.json()["runs"] == []
    bad = http.get("/v1/runs", params={"status": "sleeping", "limit": 0})
    assert bad.status_code == 422
    err = _error(bad)
    assert err["code"] == "invalid_request"
    assert {tuple(d["loc"]) for d in err["details"]} == {("query", "status"),
                                                        ("query", "limit")}


# --- idempotency -----------------------------------------------------------------------


def test_idempotency_key_gives_one_run(http: httpx.Client, coord: Coordinator,
                                       r: redis.Redis) -> None:
    key = {"Idempotency-Key": "order-o-idem"}
    before = r.zcard(coord.store.keys.runs_by_workflow("customer_order"))
    first = http.post("/v1/workflows/customer_order/runs", json=_order("o-idem"), headers=key)
    # same request, keys in another order and other whitespace: same fingerprint
    body = json.dumps(dict(reversed(list(_order("o-idem").items()))), indent=2)
    second = http.post("/v1/workflows/customer_order/runs", content=body,
                       headers={**key, "Content-Type": "application/json"})
    assert first.status_code == 201 and second.status_code == 200
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert first.json()["run_id"] == second.json()["run_id"]
    assert second.headers["Location"] == first.headers["Location"]
    assert r.zcard(coord.store.keys.runs_by_workflow("customer_order")) == before + 1
    wait_run(coord, first.json()["run_id"])
    # the key is kept for the configured window (default 24 h)
    assert 23 * 3600 < r.ttl(idempotency.redis_key(coord.store.keys, "order-o-idem")) <= 86400


def test_idempotency_key_with_another_body_is_409(http: httpx.Client) -> None:
    key = {"Idempotency-Key": "order-o-conflict"}
    first = http.post("/v1/workflows/customer_order/runs", json=_order("o-c1"), headers=key)
    assert first.status_code == 201
    other = http.post("/v1/workflows/customer_order/runs", json=_order("o-c2"), headers=key)
    assert other.status_code == 409
    err = _error(other)
    assert err["code"] == "idempotency_conflict"
    assert first.json()["run_id"] in err["message"]
    other_wf = http.post("/v1/workflows/retry_flow/runs", headers=key)
    assert other_wf.status_code == 409


def test_idempotency_key_in_flight_is_409(http: httpx.Client, coord: Coordinator,
                                          r: redis.Redis) -> None:
    # what a first request leaves between claiming its key and creating its run
    fp = idempotency.fingerprint("customer_order", _order("o-flight"), None)
    r.set(idempotency.redis_key(coord.store.keys, "order-o-flight"),
          json.dumps({"fingerprint": fp, "run_id": "not-created-yet"}), ex=30)
    resp = http.post("/v1/workflows/customer_order/runs", json=_order("o-flight"),
                     headers={"Idempotency-Key": "order-o-flight"})
    assert resp.status_code == 409
    assert _error(resp)["code"] == "idempotency_in_progress"
    assert resp.headers["Retry-After"] == "1"


def test_refused_submission_frees_its_idempotency_key(http: httpx.Client) -> None:
    key = {"Idempotency-Key": "order-o-fixed"}
    bad = http.post("/v1/workflows/customer_order/runs", json={"order_id": 1}, headers=key)
    assert bad.status_code == 422
    good = http.post("/v1/workflows/customer_order/runs", json=_order("o-fixed"), headers=key)
    assert good.status_code == 201


# --- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(("content", "ctype", "status", "code"), [
    (b'{"order_id": ', "application/json", 400, "malformed_json"),
    (b'{"qty": NaN}', "application/json", 400, "malformed_json"),
    (b'{"qty": 1e999}', "application/json", 400, "malformed_json"),
    (b"\xff\xfe{}", "application/json", 400, "malformed_json"),
    (b"[" * 5000 + b"]" * 5000, "application/json", 400, "malformed_json"),
    (b"[" * 100 + b"]" * 100, "application/json", 422, "input_too_deep"),
    (b"order_id=1", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    (b'{"order_id": "o"}', "application/json", 422, "input_invalid"),
    (b'"just a string"', "application/json", 422, "input_invalid"),
])
def test_bad_input_is_a_clear_4xx(http: httpx.Client, content: bytes, ctype: str,
                                  status: int, code: str) -> None:
    resp = http.post("/v1/workflows/customer_order/runs", content=content,
                     headers={"Content-Type": ctype})
    assert resp.status_code == status, resp.text
    err = _error(resp)
    assert err["code"] == code
    assert err["fix"]


def test_invalid_input_names_the_fields(http: httpx.Client) -> None:
    resp = http.post("/v1/workflows/customer_order/runs", json={**ORDER, "qty": 0})
    assert resp.status_code == 422
    assert "qty" in _error(resp)["message"]


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "/relative",
                                 "http://", "http://user:pw@127.0.0.1/x", "javascript:x"])
def test_callback_url_must_be_http(http: httpx.Client, url: str) -> None:
    resp = http.post("/v1/workflows/customer_order/runs", params={"callback_url": url},
                     json=ORDER)
    assert resp.status_code == 422, resp.text
    assert _error(resp)["code"] == "callback_url_invalid"


def test_body_too_large_is_413(http: httpx.Client) -> None:
    big = b'{"pad": "' + b"x" * (1024 * 1024) + b'"}'
    resp = http.post("/v1/workflows/customer_order/runs", content=big,
                     headers={"Content-Type": "application/json"})
    assert resp.status_code == 413
    assert _error(resp)["code"] == "body_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"pad": "'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"}'

    resp = http.post("/v1/workflows/customer_order/runs", content=chunks(),
                     headers={"Content-Type": "application/json"})
    assert resp.status_code == 413
    assert _error(resp)["code"] == "body_too_large"


def test_unknown_query_parameter_is_422(http: httpx.Client) -> None:
    resp = http.post("/v1/workflows/customer_order/runs", params={"wiat": 10}, json=ORDER)
    assert resp.status_code == 422
    err = _error(resp)
    assert err["code"] == "unknown_parameter" and "wiat" in err["message"]
    assert "wait" in err["fix"] and "callback_url" in err["fix"]
    assert http.get("/v1/runs", params={"limit": 1, "page": 2}).status_code == 422


def test_wrong_method_and_path(http: httpx.Client) -> None:
    resp = http.delete("/v1/workflows")
    assert resp.status_code == 405
    assert _error(resp)["code"] == "method_not_allowed"
    assert "GET" in resp.headers["Allow"]
    resp = http.get("/v2/anything")
    assert resp.status_code == 404
    assert _error(resp)["code"] == "not_found"


# --- callbacks -------------------------------------------------------------------------


def test_callback_is_signed(http: httpx.Client, coord: Coordinator, r: redis.Redis) -> None:
    systems.set_stock(r, "SKU-API", 100)
    with CallbackReceiver(fail_first=1) as receiver:
        resp = http.post("/v1/workflows/customer_order/runs",
                         params={"callback_url": receiver.url}, json=_order("o-cb"))
        assert resp.status_code == 201
        run_id = resp.json()["run_id"]
        got = receiver.wait_for(2)  # the first POST got a 503 and was retried
    assert len(got) == 2
    hit = got[-1]
    assert hit.path == "/hook"
    assert hit.headers["Content-Type"] == "application/json"
    assert hit.headers["X-Orchestrator-Run-Id"] == run_id
    # Standard Webhooks: any of its libraries verifies it with the secret's bytes
    assert hit.headers["webhook-id"] == run_id
    received = {k: hit.headers[k] for k in ("webhook-id", "webhook-timestamp",
                                            "webhook-signature")}
    Webhook(CALLBACK_SECRET.encode()).verify(hit.body, received)
    assert verify(hit.body, received, CALLBACK_SECRET)
    assert not verify(hit.body + b" ", received, CALLBACK_SECRET)
    assert not verify(hit.body, received, "another secret")
    later = {**received, "webhook-timestamp": str(int(received["webhook-timestamp"]) + 1)}
    assert not verify(hit.body, later, CALLBACK_SECRET)  # the timestamp is signed
    # a replay: within the tolerance the message id gives it away, later its timestamp
    seen: set[str] = set()

    def replayed(message_id: str) -> bool:
        known = message_id in seen
        seen.add(message_id)
        return known

    assert verify(hit.body, received, CALLBACK_SECRET, seen=replayed)
    assert not verify(hit.body, received, CALLBACK_SECRET, seen=replayed)
    signature = hit.headers["X-Orchestrator-Signature"]  # the legacy headers, still sent
    ts = hit.headers["X-Orchestrator-Timestamp"]
    assert verify_legacy(hit.body, signature, CALLBACK_SECRET, ts)
    assert not verify_legacy(hit.body, signature, CALLBACK_SECRET, ts, now=int(ts) + 301)
    payload = json.loads(hit.body)
    assert payload["run_id"] == run_id and payload["status"] == "succeeded"
    read = http.get(f"/v1/runs/{run_id}").json()
    assert payload == {k: v for k, v in read.items() if k != "callback"}
    registry = CallbackRegistry(coord.store.client, coord.store.keys, 60)
    wait_until(lambda: (registry.get(run_id) or {}).get("done"), 10)
    reg = registry.get(run_id)
    assert reg is not None
    assert reg["delivery"]["ok"] and [a["ok"] for a in reg["attempts"]] == [False, True]
    assert run_id not in registry.pending()
    shown = http.get(f"/v1/runs/{run_id}").json()["callback"]
    assert shown["delivered"] and shown["done"]
    assert [a["status_code"] for a in shown["attempts"]] == [503, 204]


def test_callback_on_cancel(http: httpx.Client) -> None:
    with CallbackReceiver() as receiver:
        resp = http.post("/v1/workflows/cancel_flow/runs",
                         params={"callback_url": receiver.url})
        run_id = resp.json()["run_id"]
        assert http.post(f"/v1/runs/{run_id}/cancel").status_code == 200
        hit = receiver.wait_for(1)[0]
    assert verify(hit.body, {k: hit.headers[k] for k in ("webhook-id", "webhook-timestamp",
                                                         "webhook-signature")},
                  CALLBACK_SECRET)
    assert json.loads(hit.body)["status"] == "cancelled"


def test_callbacks_refused_without_a_secret(stack: dict[str, Any],
                                            coord: Coordinator) -> None:
    settings = api_settings(stack["url"], callback_secret="")
    with ServerThread(create_api(settings, coordinator=coord)) as server:
        resp = httpx.post(f"{server.url}/v1/workflows/customer_order/runs",
                          params={"callback_url": "http://127.0.0.1:9/x"}, json=ORDER,
                          headers=bearer(RW_TOKEN), timeout=10)
    assert resp.status_code == 422
    assert _error(resp)["code"] == "callbacks_disabled"


# --- server-sent events ----------------------------------------------------------------


def _sse(resp: httpx.Response) -> list[tuple[str, str | None, str]]:
    out: list[tuple[str, str | None, str]] = []
    name: str = "message"
    eid: str | None = None
    data: list[str] = []
    for line in resp.iter_lines():
        if not line:
            if data:
                out.append((name, eid, "\n".join(data)))
            name, eid, data = "message", None, []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("id:"):
            eid = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
    return out


def test_events_follow_a_run_to_its_end(http: httpx.Client, r: redis.Redis) -> None:
    systems.set_stock(r, "SKU-API", 100)
    run_id = http.post("/v1/workflows/customer_order/runs",
                       json=_order("o-sse")).json()["run_id"]
    with http.stream("GET", f"/v1/runs/{run_id}/events") as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = _sse(resp)
    names = [n for n, _, _ in events]
    assert names[-1] == "end"
    final = json.loads(events[-1][2])
    assert final["run_id"] == run_id and final["status"] == "succeeded"
    steps = [json.loads(d) for n, _, d in events if n == "step"]
    assert ("receive_order", "succeeded") in {(s["step"], s["status"]) for s in steps}
    assert ("notify_customer", "succeeded") in {(s["step"], s["status"]) for s in steps}
    runs = [json.loads(d)["status"] for n, _, d in events if n == "run"]
    assert runs[0] == "running" and runs[-1] == "succeeded"
    # resume after the last event: nothing left but the end
    last_id = [i for n, i, _ in events if n in ("run", "step") and i][-1]
    with http.stream("GET", f"/v1/runs/{run_id}/events",
                     headers={"Last-Event-ID": str(last_id)}) as resp:
        again = _sse(resp)
    assert [n for n, _, _ in again] == ["end"]


def test_every_event_of_a_stream_matches_the_published_schema(http: httpx.Client,
                                                              r: redis.Redis) -> None:
    """The OpenAPI document describes one event of the stream (an object with data, event,
    id), as schema checkers that parse event streams (schemathesis) read it: every event
    of a real run's stream validates against it."""
    import jsonschema

    schema = http.get("/openapi.json").json()["paths"]["/v1/runs/{run_id}/events"]["get"][
        "responses"]["200"]["content"]["text/event-stream"]["schema"]
    systems.set_stock(r, "SKU-API", 100)
    run_id = http.post("/v1/workflows/customer_order/runs",
                       json=_order("o-sse-schema")).json()["run_id"]
    with http.stream("GET", f"/v1/runs/{run_id}/events") as resp:
        events = _sse(resp)
    assert events and events[-1][0] == "end"
    for name, eid, data in events:
        event = {"event": name, "data": data, **({"id": eid} if eid else {})}
        jsonschema.validate(event, schema)
        json.loads(data)


def test_events_stream_is_live(http: httpx.Client) -> None:
    run_id = http.post("/v1/workflows/cancel_flow/runs").json()["run_id"]
    seen: list[str] = []
    data: list[dict[str, Any]] = []
    with http.stream("GET", f"/v1/runs/{run_id}/events") as resp:
        for line in resp.iter_lines():
            if line.startswith("event:"):
                seen.append(line[6:].strip())
            if not line.startswith("data:"):
                continue
            data.append(json.loads(line[5:]))
            if (data[-1].get("step"), data[-1].get("status")) == ("first", "running") \
                    and "cancelled" not in {d.get("status") for d in data}:
                # the step is running: cancel while the stream is open
                resp_cancel = http.post(f"/v1/runs/{run_id}/cancel")
                assert resp_cancel.status_code == 200, (resp_cancel.text, data)
                data.append({"status": "cancelled", "by": "test"})
    assert seen[-1] == "end"
    assert "run" in seen and "step" in seen
    assert data[-1]["status"] == "cancelled"  # the final view


def test_closing_the_event_stream_frees_its_read(http: httpx.Client, r: redis.Redis) -> None:
    def clients() -> list[tuple[str, str, str]]:
        return [(c.get("name", ""), c.get("flags", ""), c.get("cmd", ""))
                for c in r.client_list()]

    def blocked() -> int:
        return sum(1 for name, flags, _ in clients() if name == CLIENT_NAME and "b" in flags)

    run_id = http.post("/v1/workflows/cancel_flow/runs").json()["run_id"]
    with http.stream("GET", f"/v1/runs/{run_id}/events") as resp:
        lines = resp.iter_lines()  # keep a reference: a dropped iterator closes the stream
        assert next(line for line in lines if line.startswith("event:"))
        wait_until(lambda: blocked() == 1, 10, message=lambda: f"not blocked: {clients()}")
    wait_until(lambda: blocked() == 0, 10, message="the XREAD outlived its client")
    assert http.post(f"/v1/runs/{run_id}/cancel").status_code == 200


# --- the entry point -------------------------------------------------------------------


def test_python_m_orchestrator_api_serves(stack: dict[str, Any]) -> None:
    port = free_loopback_port()
    env = worker_env(stack["url"], api_port=str(port), api_tokens=TOKENS)
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.api", "--log-level",
                             "warning"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, cwd=os.getcwd())
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(proc.stdout.read().decode() if proc.stdout else "")
            try:
                return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, 30, interval_s=0.1, message="python -m orchestrator.api did not start")
        resp = httpx.get(f"{base}/v1/workflows", headers=bearer(RO_TOKEN), timeout=5)
        assert resp.status_code == 200
        assert "customer_order" in {w["name"] for w in resp.json()["workflows"]}
        assert httpx.get(f"{base}/v1/workflows", timeout=5).status_code == 401
        schema = httpx.get(f"{base}/openapi.json", headers=bearer(WF_TOKEN), timeout=5)
        assert schema.json()["info"]["version"] == "1"
        assert httpx.get(f"{base}/openapi.json", timeout=5).status_code == 401
        assert httpx.get(f"{base}/docs", timeout=5).status_code == 404
    finally:
        proc.terminate()
        proc.wait(15)
        if proc.stdout:
            proc.stdout.close()


# --- the OpenAPI schema, fuzzed: tests/integration/test_api_fuzz.py --------------------


# --- metrics ---------------------------------------------------------------------------


def test_metrics_need_their_scope_and_count_runs(http: httpx.Client, anon: httpx.Client,
                                                 coord: Coordinator) -> None:
    assert anon.get("/metrics").status_code == 401
    assert anon.get("/metrics", headers=bearer(RO_TOKEN)).status_code == 403
    wait_run(coord, coord.submit("n_shape"))
    resp = http.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    assert 'orchestrator_runs_total{status="succeeded",workflow="n_shape"}' in text
    assert 'orchestrator_step_duration_seconds_count{step="a",workflow="n_shape"}' in text
    assert 'orchestrator_queue_depth{queue="default"}' in text


def test_silent_receivers_delay_no_other_callback(http: httpx.Client, coord: Coordinator
                                                  ) -> None:
    """Eight receivers accept the connection and never answer; a good one still gets its
    callback while their tries are still waiting for an answer."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    port = silent.getsockname()[1]
    registry = CallbackRegistry(coord.store.client, coord.store.keys, 60)
    try:
        slow = [http.post("/v1/workflows/grandparent_condition/runs",
                          params={"callback_url": f"http://127.0.0.1:{port}/x{i}"}
                          ).json()["run_id"] for i in range(8)]
        for rid in slow:  # ended, so their callbacks are being tried
            wait_run(coord, rid)
        with CallbackReceiver() as receiver:
            resp = http.post("/v1/workflows/grandparent_condition/runs",
                             params={"callback_url": receiver.url})
            good = resp.json()["run_id"]
            receiver.wait_for(1, timeout_s=30)
            # the silent receivers' first tries are still waiting (none recorded yet)
            assert all(not (registry.get(rid) or {}).get("attempts") for rid in slow)
        assert (registry.get(good) or {}).get("delivery", {}).get("ok")
    finally:
        silent.close()


# --- strings JSON allows and UTF-8 cannot carry ----------------------------------------

_SURROGATE_BODY = (b'{"order_id": "o-\\ud800x", "sku": "SKU-API", "qty": 1, '
                   b'"customer_email": "api@example.com"}')


@pytest.mark.parametrize("key", [None, "surrogate-key"])
def test_a_lone_surrogate_in_the_input_is_a_400(http: httpx.Client, coord: Coordinator,
                                                key: str | None) -> None:
    index = coord.store.keys.runs_index()
    before = coord.store.client.zcard(index)
    headers = {"Content-Type": "application/json", **({"Idempotency-Key": key} if key else {})}
    resp = http.post("/v1/workflows/customer_order/runs", content=_SURROGATE_BODY,
                     headers=headers)
    assert resp.status_code == 400, resp.text
    assert _error(resp)["code"] == "invalid_unicode"
    assert "order_id" in _error(resp)["message"]
    assert coord.store.client.zcard(index) == before  # no run


def test_a_lone_surrogate_in_an_output_is_served_faithfully(http: httpx.Client) -> None:
    resp = http.post("/v1/workflows/surrogate_flow/runs", params={"wait": 20})
    assert resp.status_code == 200, resp.text
    run = resp.json()
    assert run["status"] == "succeeded"
    assert run["outputs"]["odd"] == {"text": "\ud800x"}
    again = http.get(f"/v1/runs/{run['run_id']}")
    assert again.status_code == 200 and again.json()["outputs"]["odd"]["text"] == "\ud800x"


def test_rejected_broker_submissions_are_listed(http: httpx.Client, stack: dict[str, Any]
                                                ) -> None:
    from tests.integration.test_broker_submit import _send_stock

    assert _send_stock(stack["url"], {"workflow": "nope_flow"}).returncode != 0
    resp = http.get("/v1/submissions/rejected", params={"limit": 1})
    assert resp.status_code == 200, resp.text
    [rec] = resp.json()
    assert rec["workflow"] == "nope_flow" and rec["code"] == "workflow_not_found"
    anon = http.get("/v1/submissions/rejected", headers={"Authorization": ""})
    assert anon.status_code == 401
