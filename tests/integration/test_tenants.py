"""Tenants over real HTTP, with real workers and a private Redis: a token of tenant A can
neither see, cancel, resume, nor learn the id of anything of tenant B through any route
of the app (the walk below covers every route: a route added later fails the test until
it is classified); a runs:write token without runs:read sees ids and statuses only; a
step's traceback needs runs:tracebacks."""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Mount

from orchestrator.api.app import create_api
from orchestrator.api.server import ServerThread
from orchestrator.api.signatures import sign_standard
from orchestrator.core.triggers import TriggerDef, WebhookSource
from orchestrator.runtime.catalog import discover
from orchestrator.web.session import CSRF_HEADER, SESSION_COOKIE
from tests.support.api import api_settings, bearer
from tests.support.wait import wait_until

pytestmark = pytest.mark.redis

EVERY = ["runs:read", "runs:write", "workflows:read", "metrics:read", "triggers:read",
         "schedules:read", "schedules:write", "events:write"]
A_TOKEN = secrets.token_urlsafe(24)   # tenant a, every scope but admin and tracebacks
B_TOKEN = secrets.token_urlsafe(24)   # tenant b, every scope and tracebacks
B_PLAIN = secrets.token_urlsafe(24)   # tenant b, runs:read only (no tracebacks)
A_WRITE = secrets.token_urlsafe(24)   # tenant a, runs:write only
ADMIN = secrets.token_urlsafe(24)     # tenant ops, admin (sees every tenant)
TOKENS: list[dict[str, Any]] = [
    {"token": A_TOKEN, "scopes": EVERY, "name": "alice", "tenant": "a"},
    {"token": B_TOKEN, "scopes": [*EVERY, "runs:tracebacks"], "name": "bob", "tenant": "b"},
    {"token": B_PLAIN, "scopes": ["runs:read"], "name": "bob-ro", "tenant": "b"},
    {"token": A_WRITE, "scopes": ["runs:write"], "name": "alice-wo", "tenant": "a"},
    {"token": ADMIN, "scopes": ["runs:read", "admin", "schedules:read", "triggers:read"],
     "name": "ops", "tenant": "ops"},
]
HOOK = "b_hook"
HOOK_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
SCHEDULE = "b-nightly"
EVENT_KEY = "pay:tenant-b"
IDEM_KEY = "shared-key-1"


class World:
    """The API under test and what tenant B owns in it."""

    def __init__(self, server: ServerThread, app: FastAPI) -> None:
        self.server = server
        self.app = app
        self.runs: dict[str, str] = {}
        """B's runs by what they are for."""

    @property
    def b_ids(self) -> set[str]:
        """Every id of B's that A must never learn."""
        return {*self.runs.values(), SCHEDULE, HOOK}

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, headers=bearer(token), timeout=30)


def _step(run: dict[str, Any], step_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in run["steps"] if s["step_id"] == step_id)
    return found


def _waiting(http: httpx.Client, run_id: str, step_id: str) -> bool:
    return _step(http.get(f"/v1/runs/{run_id}").json(), step_id)["status"] == "waiting"


@pytest.fixture(scope="module")
def world(stack: dict[str, Any]) -> Iterator[World]:
    settings = api_settings(stack["url"], api_tokens=TOKENS,
                            trigger_secrets={HOOK: HOOK_SECRET})
    catalog = discover(settings.workflow_packages)
    catalog.triggers[HOOK] = TriggerDef(name=HOOK, workflow="approval_flow",
                                        source=WebhookSource(), tenant="b")
    app = create_api(settings, catalog=catalog)
    with ServerThread(app) as server:
        w = World(server, app)
        with w.client(B_TOKEN) as b:
            failed = b.post("/v1/workflows/fail_flow/runs", params={"wait": 20})
            assert failed.status_code == 200 and failed.json()["status"] == "failed"
            w.runs["failed"] = failed.json()["run_id"]
            approval = b.post("/v1/workflows/approval_flow/runs", json={},
                              headers={"Idempotency-Key": IDEM_KEY})
            assert approval.status_code == 201, approval.text
            w.runs["approval"] = approval.json()["run_id"]
            event = b.post("/v1/workflows/wait_event_flow/runs", json={"id": "tenant-b"})
            assert event.status_code == 201, event.text
            w.runs["event"] = event.json()["run_id"]
            sched = b.post("/v1/schedules", json={"id": SCHEDULE, "workflow": "approval_flow",
                                                  "every_s": 86400, "input": {}})
            assert sched.status_code == 201, sched.text
            body = json.dumps({"kind": "tenant-b"}).encode()
            hook = b.post(f"/v1/hooks/{HOOK}", content=body, headers={
                **sign_standard(HOOK_SECRET, "msg-b-1", int(time.time()), body),
                "Content-Type": "application/json"})
            assert hook.status_code == 202, hook.text
            w.runs["hook"] = hook.json()["run_id"]
            wait_until(lambda: _waiting(b, w.runs["approval"], "approve"), 30)
            wait_until(lambda: _waiting(b, w.runs["event"], "paid"), 30)
            wait_until(lambda: _waiting(b, w.runs["hook"], "approve"), 30)
        yield w


# --- the walk --------------------------------------------------------------------------

PUBLIC = "public"        # needs no token, shows nothing of any tenant
LIST = "list"            # a listing or a page without an id: nothing of B's in it
B_THING = "b_thing"      # names a thing of B's: answers as for a thing that does not exist
SPECIAL = "special"      # checked by its own rule below

ROUTES: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/openapi.json"): LIST,
    ("GET", "/metrics"): LIST,
    ("GET", "/v1/workflows"): LIST,
    ("GET", "/v1/workflows/{name}"): LIST,
    ("GET", "/v1/workflows/{name}/versions"): LIST,
    ("GET", "/v1/workflows/{name}/versions/{version}"): LIST,
    ("GET", "/v1/workflows/{name}/diff"): LIST,
    ("POST", "/v1/workflows/{name}/runs"): SPECIAL,
    ("GET", "/v1/runs"): LIST,
    ("GET", "/v1/runs/{run_id}"): B_THING,
    ("POST", "/v1/runs/{run_id}/cancel"): B_THING,
    ("POST", "/v1/runs/{run_id}/resume"): B_THING,
    ("GET", "/v1/runs/{run_id}/events"): B_THING,
    ("POST", "/v1/events/{key}"): SPECIAL,
    ("POST", "/v1/runs/{run_id}/steps/{step}/approve"): B_THING,
    ("POST", "/v1/runs/{run_id}/steps/{step}/reject"): B_THING,
    ("GET", "/v1/runs/{run_id}/steps/{step}/items"): B_THING,
    ("GET", "/v1/schedules"): LIST,
    ("POST", "/v1/schedules"): SPECIAL,
    ("PUT", "/v1/schedules/{schedule_id}"): SPECIAL,
    ("GET", "/v1/schedules/{schedule_id}"): B_THING,
    ("POST", "/v1/schedules/{schedule_id}/pause"): B_THING,
    ("POST", "/v1/schedules/{schedule_id}/resume"): B_THING,
    ("DELETE", "/v1/schedules/{schedule_id}"): B_THING,
    ("GET", "/v1/submissions/rejected"): LIST,
    ("POST", "/v1/hooks/{trigger}"): SPECIAL,
    ("GET", "/v1/triggers"): LIST,
    ("GET", "/v1/triggers/{name}/events"): B_THING,
    ("GET", "/ui"): PUBLIC,
    ("GET", "/ui/"): PUBLIC,
    ("GET", "/ui/login"): PUBLIC,
    ("POST", "/ui/login"): SPECIAL,
    ("POST", "/ui/logout"): SPECIAL,
    ("GET", "/ui/runs"): LIST,
    ("GET", "/ui/runs/{run_id}"): B_THING,
    ("GET", "/ui/workflows"): LIST,
    ("GET", "/ui/workflows/{name}"): LIST,
    ("GET", "/ui/workers"): LIST,
    ("GET", "/ui/data/runs"): LIST,
    ("GET", "/ui/data/runs/{run_id}"): B_THING,
    ("GET", "/ui/data/runs/{run_id}/input"): B_THING,
    ("GET", "/ui/data/runs/{run_id}/steps/{step_id}/{part}"): B_THING,
    ("GET", "/ui/data/runs/{run_id}/events"): B_THING,
    ("POST", "/ui/data/runs/{run_id}/cancel"): B_THING,
    ("GET", "/ui/data/workflows"): LIST,
    ("GET", "/ui/data/workflows/{name}"): LIST,
    ("GET", "/ui/data/workers"): LIST,
}
"""Every route of the app and how it is checked.  A route missing here fails the walk:
decide what it shows of whom, then add it."""

_B_PARAMS = {"run_id", "schedule_id"}
"""Path parameters that carry one of B's ids (``name`` does on ``/v1/triggers``)."""


def _routes(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(method, path) of every route of the app, included routers and mounts too."""
    def walk(routes: list[Any]) -> Iterator[tuple[str, str]]:
        for r in routes:
            if hasattr(r, "original_router"):  # FastAPI's included router
                yield from walk(r.original_router.routes)
            elif isinstance(r, APIRoute):
                for m in sorted(r.methods):
                    yield m, r.path
            elif isinstance(r, Mount):
                yield "MOUNT", r.path
            elif hasattr(r, "path"):
                for m in sorted(getattr(r, "methods", None) or {"GET"}):
                    yield m, r.path
    yield from walk(list(app.routes))


def _fill(path: str, world: World, run_id: str, version: str) -> str:
    values = {"run_id": run_id, "schedule_id": SCHEDULE, "trigger": HOOK, "key": EVENT_KEY,
              "step": "approve", "step_id": "approve", "part": "input", "version": version,
              "name": HOOK if path.startswith("/v1/triggers/") else "approval_flow"}
    out = path
    for name in re.findall(r"{(\w+)}", path):
        assert name in values, f"route {path}: no value for its parameter {name!r}"
        out = out.replace("{" + name + "}", values[name])
    return out


class Session:
    """Tenant A: a bearer client for /v1 and a signed-in session for /ui."""

    def __init__(self, world: World) -> None:
        sessions = world.app.state.ui_sessions
        cookie = sessions.sign_in(A_TOKEN)
        viewer = sessions.read(cookie)
        assert viewer is not None and viewer.tenant == "a"
        self.http = world.client(A_TOKEN)
        self.ui = {"Cookie": f"{SESSION_COOKIE}={cookie}", CSRF_HEADER: viewer.csrf,
                   "Authorization": ""}

    def send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if path.startswith("/ui"):
            headers.update(self.ui)
        return self.http.request(method, path, headers=headers, **kw)


def _norm(resp: httpx.Response, ident: str) -> tuple[int, Any]:
    text = resp.text.replace(ident, "<ID>")
    try:
        body = json.loads(text)
    except ValueError:
        return resp.status_code, text
    if isinstance(body, dict):
        body.pop("now", None)
    return resp.status_code, body


def _leaks(text: str, world: World) -> set[str]:
    return {i for i in world.b_ids if i in text}


def test_a_sees_nothing_of_b_through_any_route(world: World) -> None:
    a = Session(world)
    version = world.app.state.ctx.catalog.get("approval_flow").version
    seen = list(_routes(world.app))
    unclassified = sorted({(m, p) for m, p in seen if m != "MOUNT"} - set(ROUTES))
    assert not unclassified, f"classify these routes in ROUTES: {unclassified}"
    assert any(m == "MOUNT" for m, _ in seen)  # the static files: no tenant data in them
    checked = 0  # requests made by the loop (not the special routes)
    for method, path in seen:
        if method == "MOUNT":
            continue
        kind = ROUTES[(method, path)]
        for run_key in (("approval", "failed", "hook") if "{run_id}" in path else ("-",)):
            run_id = world.runs.get(run_key, "")
            target = _fill(path, world, run_id, version)
            params: dict[str, Any] = {"limit": 200} if path in (
                "/v1/runs", "/ui/data/runs") else {}
            if path.endswith("/diff"):
                params = {"from": version}
            if kind in (PUBLIC, LIST):
                resp = a.send(method, target, params=params)
                assert resp.status_code < 400, (method, target, resp.text)
                assert not _leaks(resp.text, world), (method, target, resp.text)
            elif kind == B_THING:
                ident = run_id if "{run_id}" in path else (
                    HOOK if "{name}" in path else SCHEDULE)
                resp = a.send(method, target)
                other = "zz-" + uuid.uuid4().hex
                twin = a.send(method, target.replace(ident, other))
                assert _norm(resp, ident) == _norm(twin, other), (method, target)
                assert resp.status_code in (200, 404), (method, target, resp.status_code)
                if resp.status_code == 200:  # a page shell that names the path's id only
                    assert "text/html" in resp.headers["content-type"], (method, target)
                assert not (_leaks(resp.text.replace(ident, ""), world)), (method, target)
            checked += 1
    assert checked > len(ROUTES) // 2
    _special_routes(world, a)
    a.http.close()
    _b_untouched(world)


def _special_routes(world: World, a: Session) -> None:
    # starting a run: A's own (the same Idempotency-Key as B's is another key)
    resp = a.send("POST", "/v1/workflows/approval_flow/runs", json={"other": 1},
                  headers={"Idempotency-Key": IDEM_KEY})
    assert resp.status_code == 201, resp.text
    assert resp.json()["run_id"] != world.runs["approval"]
    assert not _leaks(resp.text, world)
    # an event for B's key from A: it reaches none of B's steps
    resp = a.send("POST", f"/v1/events/{EVENT_KEY}", json={"paid": True})
    assert resp.status_code == 200 and resp.json()["resumed"] == 0, resp.text
    # schedules: each tenant has its own ids: A adds its own, and B's id is free for A
    # (no 409 tells A that B uses it); A's schedule is A's, B's stays B's
    resp = a.send("POST", "/v1/schedules", json={"id": "a-hourly", "workflow": "approval_flow",
                                                 "every_s": 3600, "input": {}})
    assert resp.status_code == 201 and not _leaks(resp.text, world), resp.text
    resp = a.send("POST", "/v1/schedules",
                  json={"id": SCHEDULE, "workflow": "approval_flow", "every_s": 3600})
    assert resp.status_code == 201, resp.text
    assert resp.json()["schedule"]["id"] == SCHEDULE  # A's own, by the name A gave
    assert not _leaks(resp.text.replace(SCHEDULE, ""), world)
    assert a.send("GET", f"/v1/schedules/{SCHEDULE}").json()["schedule"]["every_s"] == 3600
    assert a.send("DELETE", f"/v1/schedules/{SCHEDULE}").status_code == 204
    resp = a.send("POST", "/v1/schedules", json={"id": "t__b__x", "workflow": "approval_flow",
                                                 "every_s": 60})
    assert resp.status_code == 201 and resp.json()["schedule"]["id"] == "t__b__x", resp.text
    assert a.send("DELETE", "/v1/schedules/t__b__x").status_code == 204
    # B's webhook: a bearer token is no signature; nothing starts
    resp = a.send("POST", f"/v1/hooks/{HOOK}", json={"kind": "from-a"})
    assert resp.status_code == 401 and not _leaks(resp.text.replace(HOOK, ""), world)
    # signing in and out of the UI shows no run
    resp = a.send("GET", "/ui/login")
    assert resp.status_code == 200 and not _leaks(resp.text, world)
    resp = a.send("POST", "/ui/logout", content=b"csrf=x",
                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code in (303, 403) and not _leaks(resp.text, world)
    resp = a.send("POST", "/ui/login", content=b"token=x&csrf=y",
                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code in (401, 403) and not _leaks(resp.text, world)


def _b_untouched(world: World) -> None:
    with world.client(B_TOKEN) as b:
        for key, step in (("approval", "approve"), ("event", "paid"), ("hook", "approve")):
            run = b.get(f"/v1/runs/{world.runs[key]}").json()
            assert run["status"] == "running", (key, run["status"])
            assert _step(run, step)["status"] == "waiting", (key, _step(run, step))
        sched = b.get(f"/v1/schedules/{SCHEDULE}").json()
        assert sched["paused"] is False and sched["schedule"]["every_s"] == 86400
        events = b.get(f"/v1/triggers/{HOOK}/events").json()["events"]
        assert [e["outcome"] for e in events].count("accepted") == 1


# --- what each tenant and scope sees ---------------------------------------------------


def test_listings_are_per_tenant_and_admin_sees_all(world: World) -> None:
    with world.client(B_TOKEN) as b, world.client(ADMIN) as admin:
        mine = {r["run_id"] for r in b.get("/v1/runs", params={"limit": 200}).json()["runs"]}
        assert set(world.runs.values()) <= mine
        everyone = {r["run_id"] for r in
                    admin.get("/v1/runs", params={"limit": 200}).json()["runs"]}
        assert set(world.runs.values()) <= everyone
        assert admin.get(f"/v1/runs/{world.runs['approval']}").json()["origin"]["tenant"] == "b"
        by_wf = b.get("/v1/runs", params={"workflow": "approval_flow", "status": "running"})
        assert world.runs["approval"] in {r["run_id"] for r in by_wf.json()["runs"]}
        stored = {s["schedule"]["id"] for s in admin.get("/v1/schedules").json()["schedules"]}
        assert f"t__b__{SCHEDULE}" in stored  # the admin sees stored ids
        assert SCHEDULE in {s["schedule"]["id"] for s in
                            b.get("/v1/schedules").json()["schedules"]}
        assert HOOK in {t["name"] for t in admin.get("/v1/triggers").json()["triggers"]}
        assert HOOK in {t["name"] for t in b.get("/v1/triggers").json()["triggers"]}


def test_tracebacks_need_their_scope(world: World) -> None:
    run_id = world.runs["failed"]
    with world.client(B_TOKEN) as b, world.client(B_PLAIN) as plain:
        full = _step(b.get(f"/v1/runs/{run_id}").json(), "bad")["error"]
        assert "Traceback" in full["traceback"] and full["message"] == "bad step"
        bare = _step(plain.get(f"/v1/runs/{run_id}").json(), "bad")["error"]
        assert bare["traceback"] is None and bare["message"] == "bad step"
    sessions = world.app.state.ui_sessions
    for token, shown in ((B_TOKEN, True), (B_PLAIN, False)):
        cookie = sessions.sign_in(token)
        resp = httpx.get(f"{world.server.url}/ui/data/runs/{run_id}",
                         headers={"Cookie": f"{SESSION_COOKIE}={cookie}"}, timeout=30)
        assert resp.status_code == 200, resp.text
        err = next(s for s in resp.json()["steps"] if s["id"] == "bad")["error"]
        assert ("traceback" in err) is shown and err["message"] == "bad step"


def test_runs_write_without_runs_read_sees_ids_and_statuses(world: World) -> None:
    with world.client(A_WRITE) as w:
        resp = w.post("/v1/workflows/fail_flow/runs", params={"wait": 20})
        assert resp.status_code == 200, resp.text
        run = resp.json()
        assert run["status"] == "failed" and run["run_id"]
        assert run["error"] is None and run["outputs"] == {} and run["input"] is None
        assert all(s["error"] is None and s["reason"] is None for s in run["steps"])
        assert {s["step_id"]: s["status"] for s in run["steps"]}["bad"] == "failed"
        slow = w.post("/v1/workflows/approval_flow/runs", json={"secret": "s3"})
        assert slow.status_code == 201 and "s3" not in slow.text
        cancelled = w.post(f"/v1/runs/{slow.json()['run_id']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert "s3" not in cancelled.text
        assert w.get(f"/v1/runs/{run['run_id']}").status_code == 403


def test_events_reach_their_own_tenant(world: World) -> None:
    with world.client(B_TOKEN) as b:
        resp = b.post(f"/v1/events/{EVENT_KEY}", json={"paid": True})
        assert resp.status_code == 200 and resp.json()["resumed"] == 1, resp.text
        wait_until(lambda: b.get(f"/v1/runs/{world.runs['event']}").json()["status"]
                   == "succeeded", 30)
