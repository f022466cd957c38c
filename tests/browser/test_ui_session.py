"""The web UI's sign-in, session cookie, CSRF and scope checks, over real HTTP against
the API process (no browser needed)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.browser.conftest import UiStack, wait_status
from tests.support.api import RO_TOKEN, RW_TOKEN, WF_TOKEN

pytestmark = pytest.mark.redis


@contextmanager
def _login(base: str, token: str, next_url: str = "/ui/runs") -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=30) as client:
        form = client.get("/ui/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf, form.text
        resp = client.post("/ui/login", data={"token": token, "csrf": csrf.group(1),
                                              "next": next_url})
        assert resp.status_code == 303, resp.text
        yield client


def _page_csrf(client: httpx.Client, path: str = "/ui/runs") -> str:
    page = client.get(path)
    m = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
    assert m, page.text
    return m.group(1)


@pytest.fixture
def rw(ui_stack: UiStack) -> Iterator[httpx.Client]:
    with _login(ui_stack.url, RW_TOKEN) as c:
        yield c


def test_pages_redirect_to_sign_in_and_data_need_a_session(ui_stack: UiStack) -> None:
    with httpx.Client(base_url=ui_stack.url, timeout=30) as anon:
        resp = anon.get("/ui/runs/abc")
        assert resp.status_code == 303
        assert resp.headers["location"] == "/ui/login?next=/ui/runs/abc"
        data = anon.get("/ui/data/runs")
        assert data.status_code == 401
        assert data.json()["error"]["code"] == "signed_out"
        assert "/ui/login" in data.json()["error"]["fix"]


def test_sign_in_sets_a_strict_http_only_cookie_without_the_token(ui_stack: UiStack) -> None:
    client = httpx.Client(base_url=ui_stack.url, timeout=30)
    form = client.get("/ui/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf
    resp = client.post("/ui/login", data={"token": RW_TOKEN, "csrf": csrf.group(1),
                                          "next": "https://evil.example/"})
    assert resp.status_code == 303
    assert resp.headers["location"] == "/ui/runs"  # no open redirect
    cookie = next(v for k, v in resp.headers.multi_items()
                  if k == "set-cookie" and v.startswith("orch_ui_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Path=/ui" in cookie
    assert RW_TOKEN not in cookie
    assert client.get("/ui/data/runs").status_code == 200
    page = client.get("/ui/runs")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert RW_TOKEN not in page.text
    client.close()


def test_wrong_token_and_forged_form_are_refused(ui_stack: UiStack) -> None:
    with httpx.Client(base_url=ui_stack.url, timeout=30) as client:
        form = client.get("/ui/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf
        bad = client.post("/ui/login", data={"token": "x" * 32, "csrf": csrf.group(1)})
        assert bad.status_code == 401 and "not valid" in bad.text
        assert "orch_ui_session" not in bad.headers.get("set-cookie", "")
    with httpx.Client(base_url=ui_stack.url, timeout=30) as fresh:  # no login cookie
        forged = fresh.post("/ui/login", data={"token": RW_TOKEN, "csrf": "made-up"})
        assert forged.status_code == 403
        assert fresh.get("/ui/data/runs").status_code == 401
    with httpx.Client(base_url=ui_stack.url, timeout=30,
                      cookies={"orch_ui_session": "eyJrIjoiYSJ9.c2ln"}) as tampered:
        assert tampered.get("/ui/data/runs").status_code == 401


def test_cancel_needs_the_csrf_token_and_the_write_scope(ui_stack: UiStack,
                                                         rw: httpx.Client) -> None:
    coord = ui_stack.coord
    run_id = coord.submit("cancel_flow")
    wait_status(coord, run_id, "first", "running")
    refused = rw.post(f"/ui/data/runs/{run_id}/cancel")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf_failed"
    wrong = rw.post(f"/ui/data/runs/{run_id}/cancel", headers={"X-CSRF-Token": "nope"})
    assert wrong.status_code == 403
    with _login(ui_stack.url, RO_TOKEN) as ro:
        token = _page_csrf(ro)
        assert 'data-can-write="false"' in ro.get("/ui/runs").text
        ro_cancel = ro.post(f"/ui/data/runs/{run_id}/cancel", headers={"X-CSRF-Token": token})
        assert ro_cancel.status_code == 403
        assert ro_cancel.json()["error"]["code"] == "insufficient_scope"
        assert ro.get(f"/ui/data/runs/{run_id}").json()["can_cancel"] is False
    assert coord.store.run(run_id).status.value == "running"
    ok = rw.post(f"/ui/data/runs/{run_id}/cancel", headers={"X-CSRF-Token": _page_csrf(rw)})
    assert ok.status_code == 200, ok.text
    assert coord.store.run(run_id).status.value == "cancelled"
    again = rw.post(f"/ui/data/runs/{run_id}/cancel", headers={"X-CSRF-Token": _page_csrf(rw)})
    assert again.status_code == 409


def test_scopes_decide_the_pages(ui_stack: UiStack) -> None:
    with _login(ui_stack.url, WF_TOKEN, "/ui/workflows") as wf:
        assert wf.get("/ui/workflows").status_code == 200
        assert wf.get("/ui/runs").status_code == 403
        assert wf.get("/ui/data/runs").status_code == 403
        assert wf.get("/ui/data/workflows/customer_order").status_code == 200


def test_sign_out_needs_the_csrf_token_and_ends_the_session(rw: httpx.Client) -> None:
    assert rw.post("/ui/logout", data={"csrf": "wrong"}).status_code == 403
    assert rw.get("/ui/data/runs").status_code == 200
    out = rw.post("/ui/logout", data={"csrf": _page_csrf(rw)})
    assert out.status_code == 303 and out.headers["location"] == "/ui/login"
    assert rw.get("/ui/data/runs").status_code == 401


def test_downloads_are_attachments(ui_stack: UiStack, rw: httpx.Client) -> None:
    from tests.integration.conftest import wait_run

    coord = ui_stack.coord
    run_id = coord.submit("grandparent_condition")
    wait_run(coord, run_id)
    resp = rw.get(f"/ui/data/runs/{run_id}/steps/a/output")
    assert resp.status_code == 200
    assert resp.headers["content-disposition"].startswith("attachment;")
    assert resp.json() == 0.01
    assert rw.get(f"/ui/data/runs/{run_id}/steps/nope/output").status_code == 404
    detail = rw.get(f"/ui/data/runs/{run_id}").json()
    d = next(s for s in detail["steps"] if s["id"] == "d")
    assert d["status"] == "skipped" and d["when"] == "steps.a.output > 1.0"
