"""``/v1/schedules``: scopes, add / replace / read / pause / resume / delete, and the
errors (each with the one error body), against a real Redis and a served API."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from orchestrator.api.app import create_api
from orchestrator.api.server import ServerThread
from orchestrator.core import fires
from orchestrator.core.schedules import from_data
from orchestrator.settings import Settings
from orchestrator.store import RunStore
from orchestrator.store.schedules import ScheduleStore
from tests.support.api import bearer
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.redis

PACKAGES = ["workflows", "tests.integration.flows_schedules"]
WRITE = secrets.token_urlsafe(24)
READ = secrets.token_urlsafe(24)
RUNS = secrets.token_urlsafe(24)
TOKENS: list[dict[str, Any]] = [
    {"token": WRITE, "scopes": ["schedules:read", "schedules:write"], "name": "ops"},
    {"token": READ, "scopes": ["schedules:read"], "name": "viewer"},
    {"token": RUNS, "scopes": ["runs:read", "runs:write"], "name": "runs"},
]
TICK = {"id": "api_tick", "workflow": "sched_tick", "every_s": 60,
        "input_expr": '{"fire": fire.time}', "overlap": "queue"}


@pytest.fixture(scope="module")
def api(redis_binary: str) -> Iterator[tuple[str, ScheduleStore]]:
    with RedisServer(binary=redis_binary) as server:
        settings = Settings(redis_url=server.url, workflow_packages=tuple(PACKAGES),
                            api_tokens=TOKENS)
        runs = RunStore.from_url(server.url, "orch", 3600)
        with ServerThread(create_api(settings)) as thread:
            yield thread.url, ScheduleStore(runs.client, runs.keys)


def client(url: str, token: str | None) -> httpx.Client:
    return httpx.Client(base_url=url, headers=bearer(token) if token else {}, timeout=10)


def test_scopes(api: tuple[str, ScheduleStore]) -> None:
    url, _ = api
    assert client(url, None).get("/v1/schedules").status_code == 401
    assert client(url, RUNS).get("/v1/schedules").status_code == 403
    assert client(url, READ).get("/v1/schedules").status_code == 200
    denied = client(url, READ).post("/v1/schedules", json=TICK)
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "insufficient_scope"
    assert client(url, READ).post("/v1/schedules/x/pause").status_code == 403
    assert client(url, READ).delete("/v1/schedules/x").status_code == 403


def test_add_read_replace_pause_resume_delete(api: tuple[str, ScheduleStore]) -> None:
    url, store = api
    http = client(url, WRITE)
    made = http.post("/v1/schedules", json=TICK)
    assert made.status_code == 201, made.text
    assert made.headers["Location"] == "/v1/schedules/api_tick"
    body = made.json()
    nxt = body["next_fire"]
    assert nxt % 60 == 0 and body["upcoming"][:2] == [nxt, nxt + 60]
    assert body["source"] == "api" and body["schedule"]["overlap"] == "queue"

    again = http.post("/v1/schedules", json=TICK)
    assert again.status_code == 409 and again.json()["error"]["code"] == "schedule_conflict"

    # replacing the input keeps the next fire; replacing the timing moves it
    same_timing = http.put("/v1/schedules/api_tick", json={**TICK, "overlap": "skip"})
    assert same_timing.status_code == 200, same_timing.text
    assert same_timing.json()["next_fire"] == nxt
    assert same_timing.json()["schedule"]["overlap"] == "skip"
    retimed = http.put("/v1/schedules/api_tick", json={**TICK, "every_s": 7})
    assert retimed.json()["next_fire"] % 7 == 0

    listed = client(url, READ).get("/v1/schedules").json()
    assert [s["schedule"]["id"] for s in listed["schedules"]] == ["api_tick"]

    paused = http.post("/v1/schedules/api_tick/pause")
    assert paused.status_code == 200 and paused.json()["paused"] is True
    assert store.get("api_tick").paused
    resumed = http.post("/v1/schedules/api_tick/resume").json()
    assert resumed["paused"] is False and resumed["next_fire"] > nxt - 60

    one = client(url, READ).get("/v1/schedules/api_tick", params={"count": 3}).json()
    assert len(one["upcoming"]) == 3

    assert http.delete("/v1/schedules/api_tick").status_code == 204
    gone = http.get("/v1/schedules/api_tick")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "schedule_not_found"
    assert http.delete("/v1/schedules/api_tick").status_code == 404


@pytest.mark.parametrize(("body", "status", "code"), [
    ({**TICK, "cron": "61 * * * *", "every_s": None}, 422, "schedule_invalid"),
    ({**TICK, "timezone": "Nowhere/Else"}, 422, "schedule_invalid"),
    ({**TICK, "workflow": "no_such_workflow"}, 404, "workflow_not_found"),
    ({**TICK, "input_expr": None, "input": {"fire": "not a number"}}, 422, "input_invalid"),
    ({**TICK, "input_expr": "{'x': nope}"}, 422, "schedule_invalid"),
    ({**TICK, "surprise": 1}, 422, None),
])
def test_invalid_schedules_are_refused(api: tuple[str, ScheduleStore], body: dict[str, Any],
                                       status: int, code: str | None) -> None:
    url, store = api
    got = client(url, WRITE).post("/v1/schedules", json=body)
    assert got.status_code == status, got.text
    err = got.json()["error"]
    assert err["message"] and err["fix"]
    if code:
        assert err["code"] == code
    assert "api_tick" not in store.ids()


def test_declared_schedules_are_paused_not_replaced(api: tuple[str, ScheduleStore]) -> None:
    url, store = api
    spec = from_data({"id": "declared_tick", "workflow": "sched_tick", "every_s": 30})
    store.put(spec, "declared", fires.next_fire(spec, store.now()), replace=True)
    http = client(url, WRITE)
    put = http.put("/v1/schedules/declared_tick", json={**TICK, "id": "declared_tick"})
    assert put.status_code == 409 and "declared" in put.json()["error"]["message"]
    assert http.delete("/v1/schedules/declared_tick").status_code == 409
    assert http.post("/v1/schedules/declared_tick/pause").json()["paused"] is True
    assert http.post("/v1/schedules/declared_tick/resume").json()["paused"] is False
    mismatch = http.put("/v1/schedules/other", json=TICK)
    assert mismatch.status_code == 422
