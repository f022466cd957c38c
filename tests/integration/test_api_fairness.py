"""Fair sharing in the HTTP API (issue #15): one token's streams, waits and request rate
cannot starve another token, and ``/readyz`` answers throughout.

A real uvicorn server (in a thread) on a Redis of this module's own, and no workers: the
runs stay queued, so every stream and every ``?wait`` on them lasts until its client
leaves.  Behaviour only; the latency figures are ``bench/fairness.py``'s.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import AsyncGenerator, Iterator
from contextlib import AsyncExitStack
from typing import Any, cast

import httpx
import pytest
import redis
from fastapi import FastAPI

from orchestrator.api.app import create_api
from orchestrator.api.quotas import Quotas, token_key
from orchestrator.api.server import ServerThread
from orchestrator.store.keys import Keys
from tests.support.api import ORDER, api_settings, bearer
from tests.support.redis_server import RedisServer
from tests.support.wait import wait_until

pytestmark = pytest.mark.redis

A_TOKEN = secrets.token_urlsafe(24)
B_TOKEN = secrets.token_urlsafe(24)
SCOPES = ["runs:read", "runs:write", "workflows:read"]
TOKENS = [{"token": A_TOKEN, "scopes": SCOPES, "name": "a"},
          {"token": B_TOKEN, "scopes": SCOPES, "name": "b"}]
STREAMS = 300          # the figure: concurrent streams one token tries to hold
STREAM_LIMIT = 8       # ORCH_API_MAX_STREAMS_PER_TOKEN of the server under test
WAIT_LIMIT = 2         # ORCH_API_MAX_WAITS_PER_TOKEN
SUBMIT = "/v1/workflows/customer_order/runs"


class Api:
    """A served app and its quotas (read from the test thread: plain ints)."""

    def __init__(self, app: FastAPI, server: ServerThread, redis_url: str) -> None:
        self.app = app
        self.server = server
        self.url = server.url
        self.redis_url = redis_url

    @property
    def quotas(self) -> Quotas:
        quotas: Quotas = self.app.state.quotas
        return quotas


@pytest.fixture(scope="module")
def redis_url(redis_binary: str) -> Iterator[str]:
    with RedisServer(binary=redis_binary) as server:
        yield server.url


def _serve(redis_url: str, **over: Any) -> Iterator[Api]:
    app = create_api(api_settings(redis_url, api_tokens=TOKENS, **over))
    with ServerThread(app) as server:
        yield Api(app, server, redis_url)


@pytest.fixture(scope="module")
def api(redis_url: str) -> Iterator[Api]:
    """Per-token limits small enough to reach; the rate limit out of the way."""
    yield from _serve(redis_url, api_max_streams_per_token=STREAM_LIMIT,
                      api_max_waits_per_token=WAIT_LIMIT, api_stream_connections=50,
                      api_rate_per_token="100000/second")


@pytest.fixture(scope="module")
def rated(redis_url: str) -> Iterator[Api]:
    """The same tokens with a rate limit of 5 requests a minute (its own key prefix)."""
    yield from _serve(redis_url, api_rate_per_token="5/minute", key_prefix="rated")


def _error(resp: httpx.Response) -> dict[str, Any]:
    body = resp.json()
    assert set(body) == {"error"}, body
    err: dict[str, Any] = body["error"]
    assert {"code", "message", "fix"} <= set(err), err
    return err


def _retry_after(resp: httpx.Response) -> int:
    value = int(resp.headers["Retry-After"])
    assert value >= 1
    return value


def _submit(base: str, token: str, order_id: str, **params: Any) -> httpx.Response:
    return httpx.post(f"{base}{SUBMIT}", json={**ORDER, "order_id": order_id},
                      params=params, headers=bearer(token), timeout=30)


async def _open_streams(http: httpx.AsyncClient, stack: AsyncExitStack, run_id: str,
                        count: int) -> list[httpx.Response]:
    """Open ``count`` event streams of ``run_id`` at once; the ones answered 200 stay open
    (their first bytes read) until ``stack`` closes; the others are read whole."""

    async def one() -> httpx.Response:
        resp = await stack.enter_async_context(
            http.stream("GET", f"/v1/runs/{run_id}/events"))
        if resp.status_code == 200:
            chunks = cast(AsyncGenerator[bytes, None], resp.aiter_bytes())
            first = await chunks.__anext__()
            assert first.startswith(b"retry:"), first
            # keep the iterator: collected, it would close the stream
            stack.push_async_callback(chunks.aclose)
        else:
            await resp.aread()
        return resp

    return list(await asyncio.gather(*(one() for _ in range(count))))


def test_300_streams_of_one_token_leave_another_token_served(api: Api) -> None:
    a_key = token_key(A_TOKEN)
    run_id = _submit(api.url, A_TOKEN, "o-fair-a").json()["run_id"]
    b_seen: dict[str, Any] = {}

    async def scenario() -> None:
        limits = httpx.Limits(max_connections=STREAMS + 50, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=api.url, headers=bearer(A_TOKEN), timeout=60,
                                     limits=limits) as a_http, AsyncExitStack() as held:
            answers = await _open_streams(a_http, held, run_id, STREAMS)
            codes = [r.status_code for r in answers]
            assert codes.count(200) == STREAM_LIMIT, sorted(set(codes))
            assert codes.count(429) == STREAMS - STREAM_LIMIT, sorted(set(codes))
            refused = next(r for r in answers if r.status_code == 429)
            assert _error(refused)["code"] == "too_many_streams"
            _retry_after(refused)
            assert api.quotas.held("stream", a_key) == STREAM_LIMIT

            # while A holds its streams (and keeps asking for more), B is served
            def b_calls() -> None:
                with httpx.Client(base_url=api.url, headers=bearer(B_TOKEN),
                                  timeout=30) as b:
                    b_seen["submits"] = [
                        b.post(SUBMIT, json={**ORDER, "order_id": f"o-fair-b{i}"}).status_code
                        for i in range(20)]
                    with b.stream("GET", f"/v1/runs/{run_id}/events") as s:
                        b_seen["stream"] = s.status_code
                    b_seen["readyz"] = httpx.get(f"{api.url}/readyz", timeout=5)

            b_thread = threading.Thread(target=b_calls)
            b_thread.start()
            more = await _open_streams(a_http, held, run_id, 20)
            await asyncio.to_thread(b_thread.join, 60)
            assert not b_thread.is_alive()
            assert {r.status_code for r in more} == {429}
            assert api.quotas.held("stream", a_key) == STREAM_LIMIT
        # the client went away mid-stream: every slot is given back

    asyncio.run(scenario())
    assert b_seen["submits"] == [201] * 20
    assert b_seen["stream"] == 200
    assert b_seen["readyz"].status_code == 200
    assert b_seen["readyz"].json()["status"] == "ready"
    wait_until(lambda: api.quotas.total == 0, 10,
               message=f"stream slots leaked: {api.quotas.total} still held")
    assert api.quotas.held("stream", a_key) == 0

    async def again() -> None:
        async with httpx.AsyncClient(base_url=api.url, headers=bearer(A_TOKEN),
                                     timeout=60) as a_http, AsyncExitStack() as held:
            answers = await _open_streams(a_http, held, run_id, STREAM_LIMIT)
            assert [r.status_code for r in answers] == [200] * STREAM_LIMIT

    asyncio.run(again())
    wait_until(lambda: api.quotas.total == 0, 10, message="stream slots leaked")


def test_refused_streams_give_their_slot_back(api: Api) -> None:
    with httpx.Client(base_url=api.url, headers=bearer(A_TOKEN), timeout=30) as http:
        for _ in range(STREAM_LIMIT + 2):  # more than the limit: none may stay held
            resp = http.get("/v1/runs/no-such-run/events")
            assert resp.status_code == 404, resp.text
    assert api.quotas.held("stream", token_key(A_TOKEN)) == 0


def test_waits_are_limited_per_token_before_any_run_is_created(api: Api) -> None:
    a_key = token_key(A_TOKEN)
    r = redis.Redis.from_url(api.redis_url, decode_responses=True)
    results: list[httpx.Response] = []

    def waiting(i: int) -> None:
        results.append(_submit(api.url, A_TOKEN, f"o-wait-{i}", wait=4))

    start = r.zcard(Keys().runs_index())
    threads = [threading.Thread(target=waiting, args=(i,)) for i in range(WAIT_LIMIT)]
    for t in threads:
        t.start()
    wait_until(lambda: api.quotas.held("wait", a_key) == WAIT_LIMIT, 10,
               message="the waiting submits did not start waiting")
    # a submit takes its wait slot before it creates its run: count once all are created
    wait_until(lambda: r.zcard(Keys().runs_index()) == start + WAIT_LIMIT, 10,
               message="the waiting submits did not create their runs")
    runs_before = r.zcard(Keys().runs_index())
    refused = _submit(api.url, A_TOKEN, "o-wait-refused", wait=4)
    assert refused.status_code == 429
    assert _error(refused)["code"] == "too_many_waits"
    _retry_after(refused)
    assert r.zcard(Keys().runs_index()) == runs_before  # refused before a run was created
    # without ?wait, A still submits; B waits as it likes
    assert _submit(api.url, A_TOKEN, "o-wait-nowait").status_code == 201
    assert _submit(api.url, B_TOKEN, "o-wait-b", wait=0.5).status_code == 202
    for t in threads:
        t.join(30)
    assert [x.status_code for x in results] == [202] * WAIT_LIMIT
    wait_until(lambda: api.quotas.held("wait", a_key) == 0, 10,
               message="wait slots leaked")


def test_rate_limit_per_token_with_retry_after(rated: Api) -> None:
    r = redis.Redis.from_url(rated.redis_url, decode_responses=True)
    with httpx.Client(base_url=rated.url, timeout=30) as http:
        a = [http.get("/v1/workflows", headers=bearer(A_TOKEN)) for _ in range(6)]
        assert [x.status_code for x in a] == [200] * 5 + [429]
        err = _error(a[-1])
        assert err["code"] == "rate_limited"
        assert "ORCH_API_RATE_PER_TOKEN" in err["fix"]
        assert 1 <= _retry_after(a[-1]) <= 60
        # another token is not slowed; the probes are never limited
        assert http.get("/v1/workflows", headers=bearer(B_TOKEN)).status_code == 200
        for _ in range(10):
            assert http.get("/readyz").status_code == 200
            assert http.get("/healthz").status_code == 200
        # an unknown token is not counted: it gets its 401
        assert http.get("/v1/workflows", headers=bearer("x" * 24)).status_code == 401
    keys = r.keys("rated:ratelimit:*")
    assert keys, "the windows live under Keys.rate_limits()"
    assert not any(A_TOKEN in k or B_TOKEN in k for k in keys)  # a digest, not the secret


def test_openapi_documents_429_with_retry_after(api: Api) -> None:
    schema = httpx.get(f"{api.url}/openapi.json", headers=bearer(A_TOKEN), timeout=30).json()
    for path, method in ((SUBMIT.replace("customer_order", "{name}"), "post"),
                         ("/v1/runs/{run_id}/events", "get"), ("/v1/runs/{run_id}", "get"),
                         ("/v1/workflows", "get")):
        doc = schema["paths"][path][method]["responses"]["429"]
        assert "Retry-After" in doc["headers"], (path, doc)
    assert "429" not in schema["paths"]["/readyz"]["get"]["responses"]


def test_a_rate_that_cannot_be_counted_is_a_503_not_a_pass(redis_binary: str) -> None:
    with RedisServer(binary=redis_binary) as server:
        app = create_api(api_settings(server.url, api_tokens=TOKENS,
                                      api_rate_per_token="100/second"))
        with ServerThread(app) as api, httpx.Client(base_url=api.url, timeout=30) as http:
            assert http.get("/v1/workflows", headers=bearer(A_TOKEN)).status_code == 200
            server.stop()
            resp = http.get("/v1/workflows", headers=bearer(A_TOKEN))
            assert resp.status_code == 503, resp.text
            assert _error(resp)["code"] == "store_unavailable"
            _retry_after(resp)
            assert http.get("/healthz").status_code == 200  # never limited
            assert http.get("/readyz").status_code == 503  # its own connection, same news
