"""The chaos suite, small: real workers and a real Redis through SIGKILLs, a Redis
restart from its AOF and a cut link; the steps count their own executions.

``python -m bench.chaos`` runs the full sizes and writes docs/reliability.md.
"""

from __future__ import annotations

import pytest

from bench.chaos import Namespace, Result, run_scenario

pytestmark = pytest.mark.redis


def _check(res: Result) -> None:
    assert res.stuck == 0, res.row()
    assert res.succeeded == res.runs, res.row()
    assert res.overlaps == 0, res.row()  # never two executions of a step run at once
    assert res.effects_not_once == 0, res.row()  # side effects keyed by idempotency key


def test_worker_kills(redis_binary: str) -> None:
    # About one kill in a hundred lands between kombu's pop and its bookkeeping and loses
    # the message outside any lease: only the stalled-run replay (stall_s, 60 s by
    # default) brings that run back; a shorter stall_s keeps it within the bound below.
    res = run_scenario("kills", 16, kill_every_s=3.0, deadline_s=240,
                       settings={"stall_s": 15.0})
    _check(res)
    assert any(f.endswith("worker kills") for f in res.faults)
    assert all(s <= 30 for s in res.rerun_s), res.rerun_s


def test_redis_restart_from_aof(redis_binary: str) -> None:
    _check(run_scenario("redis", 16, kill_every_s=0, redis_restart_at_s=3.0,
                        deadline_s=240))


def test_a_cut_link(redis_binary: str) -> None:
    if not Namespace.available():
        pytest.fail("the cut-link scenario needs root and iproute2 (`ip`): CI has both")
    _check(run_scenario("cut", 16, kill_every_s=0, cut_at_s=3.0, cut_s=12.0,
                        deadline_s=240))


def test_api_restart_mid_wait(redis_binary: str) -> None:
    _check(run_scenario("api", 16, kill_every_s=0, api_restart_at_s=3.0, deadline_s=240))
