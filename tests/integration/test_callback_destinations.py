"""Callbacks never go inward: internal addresses are refused when a callback is registered
(422) and again at every try (a name that resolves elsewhere later), and never connected.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from orchestrator.callbacks.delivery import post
from orchestrator.callbacks.destinations import networks
from tests.support.api import (
    ORDER,
    RW_TOKEN,
    CallbackReceiver,
    api_server_fixture,
    bearer,
)

pytestmark = pytest.mark.redis

strict_api = api_server_fixture(callback_allowed_networks=())
"""An API that allows no internal network (the default)."""


@pytest.fixture
def listener() -> Iterator[tuple[int, socket.socket]]:
    """A listening loopback socket: its port, and the socket (see :func:`_connections`)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    try:
        yield sock.getsockname()[1], sock
    finally:
        sock.close()


def _connections(sock: socket.socket) -> int:
    """How many connections reached ``sock`` (accepting and closing them)."""
    n = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return n
        conn.close()
        n += 1


@pytest.mark.parametrize("host", ["127.0.0.1", "169.254.169.254", "10.0.0.1", "[::1]",
                                  "localhost", "[::ffff:127.0.0.1]", "100.64.0.1"])
def test_registration_refuses_internal_addresses(strict_api: Any, host: str,
                                                 listener: tuple[int, socket.socket]) -> None:
    port, sock = listener
    with httpx.Client(base_url=strict_api.url, headers=bearer(RW_TOKEN), timeout=10) as c:
        resp = c.post("/v1/workflows/customer_order/runs", json=ORDER,
                      params={"callback_url": f"http://{host}:{port}/hook"})
    assert resp.status_code == 422, resp.text
    err = resp.json()["error"]
    assert err["code"] == "callback_url_forbidden"
    assert "internal addresses" in err["message"]
    assert "ORCH_CALLBACK_ALLOWED_NETWORKS" in err["fix"]
    assert resp.headers.get("Location") is None  # no run was started
    assert _connections(sock) == 0


def _post(url: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async with httpx.AsyncClient(follow_redirects=False) as client:
            return await post(client, url, b"{}", "run-1", "secret", 1, 5.0,
                              networks(allowed))
    return asyncio.run(go())


def test_every_try_checks_again_and_never_connects(
        listener: tuple[int, socket.socket]) -> None:
    """A callback registered while its name resolved outward, tried once it resolves to
    loopback (here: ``localhost``), is refused without a connection, and not retried."""
    port, sock = listener
    for url in (f"http://localhost:{port}/hook", f"http://127.0.0.1:{port}/hook",
                f"http://[::ffff:127.0.0.1]:{port}/hook"):
        result = _post(url, ())
        assert result["refused"] and not result["ok"] and result["status_code"] is None
        assert "loopback" in result["error"], result
    assert _connections(sock) == 0


def test_an_allowed_network_is_reached_at_the_checked_address() -> None:
    with CallbackReceiver() as receiver:
        url = receiver.url.replace("127.0.0.1", "localhost")
        result = _post(url, ("127.0.0.0/8",))
        assert result["ok"], result
        hit = receiver.wait_for(1)[0]
    assert hit.headers["Host"] == url.split("/")[2]  # the URL's host, not the address
    assert hit.headers["webhook-id"] == "run-1"
