"""Fixtures of the web UI's tests: a private Redis, two real worker processes, the API
(serving the UI) as its own process, and Debian's Chromium driven by Playwright.

Without a Chromium binary the browser tests skip, except where a skip would hide them:
with ``ORCH_TEST_REQUIRE_BROWSER=1`` (exported by scripts/test.sh once it installed
Chromium) or ``CI`` set, they fail.  Each skipped browser test's id is appended to the
file named by ``ORCH_TEST_SKIP_REPORT`` (scripts/test.sh prints them in its last lines).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from orchestrator.dev import procs
from orchestrator.dev.localredis import free_loopback_port
from orchestrator.runtime.catalog import discover
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.settings import Settings
from tests.support.api import TOKENS
from tests.support.redis_server import RedisServer
from tests.support.wait import wait_until
from tests.support.workers import TEST_PACKAGES, WorkerProcess, stop_workers, worker_env

PACKAGES = [*TEST_PACKAGES, "tests.browser.flows_ui"]
TRACE_URL = "http://127.0.0.1:16686/trace/{trace_id}"
"""The trace link template the API is given (no tracing backend runs here)."""
FLOWER_LOGIN = ("ui-flower", "ui-flower-test-password")
"""The login of the stack's real Flower (``python -m workers.flower``)."""
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
DOCS = Path(__file__).resolve().parents[2] / "docs"
"""Where ``ORCH_UPDATE_SCREENSHOTS=1`` makes the tests write the screenshots docs/ui.md shows."""
_FALSE_WORDS = {"", "0", "false", "no", "off"}


def browser_required() -> bool:
    """True when a missing Chromium must fail the browser tests rather than skip them."""
    require = os.environ.get("ORCH_TEST_REQUIRE_BROWSER", "").strip().lower()
    ci = os.environ.get("CI", "").strip().lower()
    return require not in _FALSE_WORDS or ci not in _FALSE_WORDS


def find_chromium() -> str | None:
    """Debian's Chromium (``/usr/bin/chromium``), or a ``chromium`` on PATH."""
    for path in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if path and os.access(path, os.X_OK):
            return path
    return None


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Name each skipped browser test in ``ORCH_TEST_SKIP_REPORT`` (for scripts/test.sh)."""
    target = os.environ.get("ORCH_TEST_SKIP_REPORT")
    if target and report.skipped and report.nodeid.startswith("tests/browser/"):
        with open(target, "a", encoding="utf-8") as f:
            f.write(report.nodeid + "\n")


@dataclass
class UiStack:
    """The API (serving the UI) on ``url``, its Redis, workers and a coordinator."""

    url: str
    redis_url: str
    coord: Coordinator
    r: redis.Redis
    workers: list[WorkerProcess]
    flower_url: str
    """A real Flower on the same Redis (login :data:`FLOWER_LOGIN`): the task links'
    target."""


@pytest.fixture(scope="module")
def ui_stack(redis_binary: str) -> Iterator[UiStack]:
    """A private Redis, two prefork workers (2 children each) and the API process."""
    with RedisServer(binary=redis_binary) as server:
        url = server.url
        settings = Settings(redis_url=url, workflow_packages=tuple(PACKAGES))
        coord = Coordinator(settings, discover(settings.workflow_packages))
        workers = [WorkerProcess(url, f"ui{i}", concurrency=2, workflow_packages=PACKAGES)
                   for i in (1, 2)]
        port, flower_port = free_loopback_port(), free_loopback_port()
        flower_url = f"http://127.0.0.1:{flower_port}"
        env = worker_env(url, workflow_packages=PACKAGES, api_tokens=TOKENS,
                         flower_url=flower_url, trace_url_template=TRACE_URL)
        log = procs.temp_log("ui-api-")
        api = procs.spawn([sys.executable, "-m", "orchestrator.api", "--host", "127.0.0.1",
                           "--port", str(port), "--log-level", "warning"], log=log, env=env)
        flower_log = procs.temp_log("ui-flower-")
        flower = procs.spawn(
            [sys.executable, "-m", "workers.flower", "--address=127.0.0.1",
             f"--port={flower_port}"], log=flower_log,
            env={**worker_env(url, workflow_packages=PACKAGES),
                 "FLOWER_BASIC_AUTH": ":".join(FLOWER_LOGIN)})
        base = f"http://127.0.0.1:{port}"
        try:
            for w in workers:
                w.wait_ready(coord.app)
            procs.wait_ready(api, lambda: _ok(f"{base}/readyz"), 60, name="api", log=log)
            # Flower learns of tasks from events: wait until it hears both workers
            procs.wait_ready(flower, lambda: all(
                f'flower_worker_online{{worker="{w.name}"}} 1.0' in _flower_metrics(flower_url)
                for w in workers), 60, name="flower", log=flower_log)
            yield UiStack(base, url, coord, redis.Redis.from_url(url, decode_responses=True),
                          workers, flower_url)
        finally:
            procs.stop(api, 20)
            procs.stop(flower, 20)
            stop_workers(workers)


def _flower_metrics(base: str) -> str:
    try:
        resp = httpx.get(f"{base}/metrics", auth=FLOWER_LOGIN, timeout=1)
    except httpx.HTTPError:
        return ""
    return resp.text if resp.status_code == 200 else ""


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Path of the Chromium binary; skips or fails (see module doc) without one."""
    path = find_chromium()
    if path is None:
        reason = ("no Chromium: install Debian's (apt-get install chromium), as "
                  "scripts/bootstrap.sh does when run as root")
        if browser_required():
            pytest.fail(f"{reason} (required: ORCH_TEST_REQUIRE_BROWSER or CI is set)",
                        pytrace=False)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Any]:
    """Headless Chromium under Playwright (its own browser download is never used)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def sign_in(browser: Any, base: str, token: str, **context: Any) -> Any:
    """A new browser context signed in with ``token``; returns its page (on the runs)."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, **context)
    page = ctx.new_page()
    page.goto(f"{base}/ui/login")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r".*/ui/runs$"))
    return page


@pytest.fixture
def signed_in(browser: Any, ui_stack: UiStack) -> Iterator[Callable[..., Any]]:
    """``signed_in(token)``: a page signed in with that token; contexts closed after."""
    pages: list[Any] = []

    def make(token: str, **context: Any) -> Any:
        page = sign_in(browser, ui_stack.url, token, **context)
        pages.append(page)
        return page

    yield make
    for page in pages:
        page.context.close()


def wait_status(coord: Coordinator, run_id: str, step: str, status: str,
                timeout_s: float = 30.0) -> None:
    """Wait until the step of the run has ``status`` in the store."""
    def reached() -> bool:
        return any(s.step_id == step and s.status.value == status
                   for s in coord.view(run_id).steps)
    wait_until(reached, timeout_s, message=lambda: f"{step} of {run_id} never {status}: "
               + json.dumps({s.step_id: s.status.value for s in coord.view(run_id).steps}))


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory the tests' screenshots go to: docs/ with ``ORCH_UPDATE_SCREENSHOTS=1``
    (to refresh the pictures of docs/ui.md), else a temporary one, so that a test run
    leaves the work tree as it found it."""
    if os.environ.get("ORCH_UPDATE_SCREENSHOTS", "").strip().lower() not in _FALSE_WORDS:
        DOCS.mkdir(exist_ok=True)
        return DOCS
    return tmp_path_factory.mktemp("screenshots")
