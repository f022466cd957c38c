"""The tests' own instrument for "never twice at once": the in-flight marks of
``tests/integration/flows.py`` count a real overlap, and not a mark an execution that
ended left behind (a live process that has moved on)."""

from __future__ import annotations

import multiprocessing
import time

import pytest
import redis

from tests.integration.flows import done_executing, enter, leave

pytestmark = pytest.mark.redis


def _execute(url: str, run_id: str, step_id: str, hold_s: float, clean: bool) -> None:
    r = redis.Redis.from_url(url, decode_responses=True)
    key = enter(r, run_id, step_id)
    time.sleep(hold_s)
    if clean:
        leave(r, key)
    done_executing()  # a mark left behind when not clean: the execution ended all the same
    time.sleep(2.0 if not clean else 0.0)  # and the process lives on


def test_two_executions_at_once_count_one_overlap(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    ctx = multiprocessing.get_context("spawn")
    a = ctx.Process(target=_execute, args=(redis_url, "inst1", "s", 1.5, True))
    a.start()
    time.sleep(0.8)  # a is executing
    b = ctx.Process(target=_execute, args=(redis_url, "inst1", "s", 0.1, True))
    b.start()
    for p in (a, b):
        p.join(30)
    assert r.hgetall("test:overlap:inst1") == {"s": "1"}


def test_a_mark_left_by_an_execution_that_ended_is_no_overlap(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    ctx = multiprocessing.get_context("spawn")
    a = ctx.Process(target=_execute, args=(redis_url, "inst2", "s", 0.1, False))
    a.start()
    time.sleep(1.0)  # a ended its execution, left its mark, and still lives
    assert a.is_alive() and r.exists("test:inflight:inst2:s")
    b = ctx.Process(target=_execute, args=(redis_url, "inst2", "s", 0.1, True))
    b.start()
    for p in (a, b):
        p.join(30)
    assert r.hgetall("test:overlap:inst2") == {}
