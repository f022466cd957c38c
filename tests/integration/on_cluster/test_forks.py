"""A pool process forked while a thread of the worker's main process refreshes the
cluster's slots (after a failover) does not hang on the lock that refresh holds: the
store's cluster client is made again in the child (``orchestrator.forks``)."""

from __future__ import annotations

import os
import signal
from typing import Any

from orchestrator import forks
from orchestrator.store import connection
from orchestrator.store.connection import RedisTarget
from tests.unit.test_forks import _held_by_a_thread


def _child_uses(client: object) -> int:
    """Fork; the child refreshes the topology (as its first command after a failover
    does) and writes and reads a key, within 10 s; its exit code (0: it did)."""
    pid = os.fork()
    if pid == 0:  # never back into pytest from here
        code = 1
        try:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)  # not pytest-timeout's
            signal.alarm(10)  # a hung child ends here, killed by SIGALRM
            c: Any = client
            c.nodes_manager.initialize()
            c.set("{t}forked", "yes")
            code = 0 if c.get("{t}forked") == "yes" else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_child_forked_during_a_slot_refresh_makes_its_own_client(
        redis_url: RedisTarget) -> None:
    forks.install()
    c = connection.client(redis_url, decode_responses=True, home="{t}schema",
                          socket_timeout=2.0, socket_connect_timeout=2.0)
    assert c.ping()
    lock = c.nodes_manager._initialization_lock  # type: ignore[attr-defined]
    with _held_by_a_thread(lock.acquire, lock.release):
        assert _child_uses(c) == 0
    assert c.get("{t}forked") == "yes"


def test_without_it_the_child_hangs_on_the_parent_s_refresh(redis_url: RedisTarget) -> None:
    """The hazard itself: the parent's client, used in the child, waits on the lock its
    parent's thread held at the fork (the child is ended by its alarm)."""
    forks.install()
    c = connection.client(redis_url, decode_responses=True, socket_timeout=2.0)
    assert c.ping()
    inner = c._client()  # type: ignore[attr-defined]
    lock = inner.nodes_manager._initialization_lock
    with _held_by_a_thread(lock.acquire, lock.release):
        assert _child_uses(inner) == -signal.SIGALRM
