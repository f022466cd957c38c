"""The plain submit's route (``orchestrator/api/plain_submit.py``) answers exactly as
FastAPI's route for the same endpoint: every request below is sent twice, plain and with
``?wait=0`` (a parameter that changes nothing, which only FastAPI's route takes), and the
two answers must agree in status, error body and run shape."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from starlette.routing import Match

from orchestrator.api.plain_submit import PATH, PlainSubmitRoute
from orchestrator.api.server import ServerThread
from tests.support.api import ORDER, RO_TOKEN, RW_TOKEN, api_server_fixture, bearer

pytestmark = pytest.mark.redis

api = api_server_fixture()

RUN_PATH = "/v1/workflows/customer_order/runs"
VOLATILE = re.compile(r"[0-9a-f]{32}|\d{10}\.\d+|\d{4}-\d\d-\d\dT[\d:.]+(Z|[+-]\d\d:\d\d)?")


def _scope(path: str = RUN_PATH, method: str = "POST", query: bytes = b"",
           headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "root_path": "",
            "query_string": query, "headers": headers or []}


def test_the_route_takes_only_the_plain_submit() -> None:
    route = PlainSubmitRoute()
    assert route.path == PATH
    assert route.matches(_scope())[0] is Match.FULL
    assert route.matches(_scope())[1]["path_params"] == {"name": "customer_order"}
    refused = [
        _scope(query=b"wait=1"),
        _scope(query=b"priority=high"),
        _scope(headers=[(b"idempotency-key", b"k-1")]),
        _scope(method="GET"),
        _scope(path="/v1/workflows/customer order/runs"),  # the name's pattern refuses it
        _scope(path="/v1/workflows/customer_order\n/runs"),  # so does FastAPI's check
        _scope(path="/v1/workflows/" + "w" * 201 + "/runs"),
        _scope(path="/v1/workflows/customer_order/runs/x"),
        {"type": "websocket", "path": RUN_PATH, "root_path": "", "query_string": b"",
         "headers": []},
    ]
    for scope in refused:
        assert route.matches(scope)[0] is Match.NONE, scope


def _shape(resp: httpx.Response) -> tuple[int, Any, str | None]:
    """What must agree: the status, the body with ids and times made uniform, and the
    Location header's form."""
    body = resp.json()
    location = resp.headers.get("location")
    text = VOLATILE.sub("<v>", resp.text)
    return resp.status_code, (body if set(body) == {"error"} else text), \
        None if location is None else VOLATILE.sub("<v>", location)


@pytest.mark.parametrize("case", [
    "created", "input_invalid", "malformed_json", "no_body", "form", "unknown_workflow",
    "no_token", "wrong_token", "read_only_token", "too_large"])
def test_a_plain_submit_answers_as_fastapi_s_route(api: ServerThread, case: str) -> None:
    path, token, kwargs = RUN_PATH, RW_TOKEN, {"json": ORDER}
    if case == "input_invalid":
        kwargs = {"json": {**ORDER, "qty": 0}}
    elif case == "malformed_json":
        kwargs = {"content": b'{"order_id": ', "headers": {"Content-Type": "application/json"}}
    elif case == "no_body":
        kwargs = {}
    elif case == "form":
        kwargs = {"content": b"order_id=1",
                  "headers": {"Content-Type": "application/x-www-form-urlencoded"}}
    elif case == "unknown_workflow":
        path = "/v1/workflows/no_such_workflow/runs"
    elif case == "wrong_token":
        token = "not-a-token"
    elif case == "read_only_token":
        token = RO_TOKEN
    elif case == "too_large":
        kwargs = {"content": b'{"pad": "' + b"x" * (1024 * 1024) + b'"}',
                  "headers": {"Content-Type": "application/json"}}
    headers = {} if case == "no_token" else bearer(token)
    with httpx.Client(base_url=api.url, headers=headers, timeout=30) as http:
        plain = http.post(path, **kwargs)  # type: ignore[arg-type]
        routed = http.post(path, params={"wait": 0}, **kwargs)  # type: ignore[arg-type]
    assert _shape(plain) == _shape(routed), (plain.text, routed.text)
    if case == "created":
        assert plain.status_code == 201
        assert plain.json()["run_id"] != routed.json()["run_id"]
        assert plain.headers["location"] == f"/v1/runs/{plain.json()['run_id']}"
    else:
        assert plain.status_code >= 400
