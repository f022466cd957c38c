"""Helpers for the HTTP API tests: tokens, settings, the API server as a fixture, and a
loopback callback receiver."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

import pytest

from orchestrator.api.app import create_api
from orchestrator.api.server import ServerThread
from orchestrator.settings import Settings
from tests.support.wait import wait_until
from tests.support.workers import TEST_PACKAGES

# Fresh secrets for each test session: nothing here is a real credential.
RW_TOKEN = secrets.token_urlsafe(24)   # every scope
RO_TOKEN = secrets.token_urlsafe(24)   # runs:read and workflows:read
WF_TOKEN = secrets.token_urlsafe(24)   # workflows:read only
CALLBACK_SECRET = secrets.token_urlsafe(24)
CALLBACK_NETWORKS = ("127.0.0.1/32",)
"""The tests' callback receivers listen on loopback, which callbacks may not reach unless
allowed (tests/integration/test_callback_destinations.py checks the refusal)."""

TOKENS: list[dict[str, Any]] = [
    {"token": RW_TOKEN, "scopes": ["runs:read", "runs:write", "workflows:read", "metrics:read",
                                   "runs:tracebacks"],
     "name": "rw"},
    {"token": RO_TOKEN, "scopes": ["runs:read", "workflows:read"], "name": "ro"},
    {"token": WF_TOKEN, "scopes": ["workflows:read"], "name": "wf"},
]

ORDER = {"order_id": "o-api", "sku": "SKU-API", "qty": 1, "customer_email": "api@example.com"}


def api_settings(redis_url: str, **over: Any) -> Settings:
    """Settings of an API under test: the test workflows, the three tokens above."""
    values: dict[str, Any] = {"redis_url": redis_url, "workflow_packages": TEST_PACKAGES,
                              "api_tokens": TOKENS, "callback_secret": CALLBACK_SECRET,
                              "callback_allowed_networks": CALLBACK_NETWORKS,
                              # counted on every request, never reached: tests send as
                              # fast as they can (test_api_fairness.py reaches it)
                              "api_rate_per_token": "1000000/second"}
    values.update(over)
    return Settings(**values)


def api_server_fixture(**over: Any) -> Callable[..., Iterator[ServerThread]]:
    """Make a module-scoped fixture: the API of :func:`api_settings` (with ``over``), its
    own coordinator, on the ``stack`` fixture's Redis and a free loopback port.

    The fixture is named after the module attribute it is assigned to::

        server = api_server_fixture()  # the fixture `server`
    """

    @pytest.fixture(scope="module")
    def api_server(stack: dict[str, Any]) -> Iterator[ServerThread]:
        with ServerThread(create_api(api_settings(stack["url"], **over))) as server:
            yield server

    return api_server


def bearer(token: str) -> dict[str, str]:
    """The Authorization header of ``token``."""
    return {"Authorization": f"Bearer {token}"}


class Received:
    """One request the receiver got."""

    def __init__(self, path: str, headers: dict[str, str], body: bytes) -> None:
        self.path = path
        self.headers = headers
        self.body = body


class CallbackReceiver:
    """An HTTP server on a free loopback port that records every POST it gets.

    ``fail_first`` makes it answer 503 to that many POSTs first (to test retries).
    """

    def __init__(self, fail_first: int = 0) -> None:
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._fail_left = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.received.append(Received(self.path, dict(self.headers), body))
                    failing = receiver._fail_left > 0
                    receiver._fail_left -= 1
                self.send_response(503 if failing else 204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hook"

    def wait_for(self, count: int = 1, timeout_s: float = 30.0) -> list[Received]:
        """Wait until ``count`` requests arrived; return them."""
        def enough() -> bool:
            with self._lock:
                return len(self.received) >= count
        wait_until(enough, timeout_s, message=f"the receiver did not get {count} request(s)")
        with self._lock:
            return list(self.received)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
