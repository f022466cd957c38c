"""The tests' own instrument for "never twice at once": the in-flight marks of
``tests/integration/flows.py`` count a real overlap, and not a mark an execution that
ended left behind (a live process that has moved on).

Each execution is a spawned process; the test orders them with Redis keys it holds and
deletes (``inst:hold:*``: keep executing; ``inst:live:*``: live on after the execution),
never with sleeps, so that a slow machine's process start cannot reorder them."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess

import pytest
import redis

from tests.integration.flows import EXECUTING_DIR, done_executing, enter, leave
from tests.support.wait import wait_until

pytestmark = pytest.mark.redis

CAP_S = 60.0
"""The longest a process waits on a key the test holds (a test that died leaves none)."""


def _while(r: redis.Redis, key: str) -> None:
    """Wait while ``key`` exists (at most :data:`CAP_S`)."""
    end = time.monotonic() + CAP_S
    while r.exists(key) and time.monotonic() < end:
        time.sleep(0.01)


def _execute(url: str, run_id: str, step_id: str, name: str, clean: bool) -> None:
    """Execute step run ``run_id``/``step_id`` as process ``name``: enter, keep executing
    while ``inst:hold:<name>`` exists, end (clearing the mark only when ``clean``), then
    live on while ``inst:live:<name>`` exists."""
    r = redis.Redis.from_url(url, decode_responses=True)
    key = enter(r, run_id, step_id)
    _while(r, f"inst:hold:{name}")
    if clean:
        leave(r, key)
    done_executing()  # a mark left behind when not clean: the execution ended all the same
    _while(r, f"inst:live:{name}")


def _start(url: str, run_id: str, name: str, clean: bool) -> BaseProcess:
    p = multiprocessing.get_context("spawn").Process(
        target=_execute, args=(url, run_id, "s", name, clean))
    p.start()
    return p


def _executing_files(pid: int | None) -> list[str]:
    return [f.name for f in EXECUTING_DIR.glob(f"{pid}-*")]


def _b_beside_a(url: str, run_id: str, key: str, clean: bool,
                a_ready: Callable[[redis.Redis, BaseProcess], bool]) -> dict[str, str]:
    """Start execution a (``clean``: it clears its mark) held by ``key``; once
    ``a_ready``, run execution b to its end beside the living a; release a.  Returns the
    overlaps the marks counted."""
    r = redis.Redis.from_url(url, decode_responses=True)
    r.set(key, 1)
    a = _start(url, run_id, "a", clean)
    try:
        wait_until(lambda: a_ready(r, a), 60, message=f"execution a of {run_id} not ready")
        assert a.is_alive()
        b = _start(url, run_id, "b", True)
        b.join(60)
        assert b.exitcode == 0
    finally:
        r.delete(key)
        a.join(60)
    assert a.exitcode == 0
    return {str(k): str(v) for k, v in r.hgetall(f"test:overlap:{run_id}").items()}


def test_two_executions_at_once_count_one_overlap(redis_url: str) -> None:
    # a is executing (held) when b enters
    overlaps = _b_beside_a(redis_url, "inst1", "inst:hold:a", True,
                           lambda r, _a: r.get("test:inflight:inst1:s") is not None)
    assert overlaps == {"s": "1"}


def test_a_mark_left_by_an_execution_that_ended_is_no_overlap(redis_url: str) -> None:
    # a ended its execution, left its mark, and still lives (held) when b enters
    overlaps = _b_beside_a(redis_url, "inst2", "inst:live:a", False,
                           lambda r, a: r.get("test:inflight:inst2:s") is not None
                           and not _executing_files(a.pid))
    assert overlaps == {}
