"""Workflows of the recovery tests (resume; compensation): every step counts its own
executions in ``test:exec:<run>`` (see :func:`tests.integration.flows.count`)."""

from __future__ import annotations

import json
import time
from typing import Any

from orchestrator.core.dsl import Workflow
from orchestrator.core.models import CompensateDef, RetryPolicy
from orchestrator.core.registry import step_function
from orchestrator.runtime.context import current
from tests.integration.flows import count, done_executing, enter, leave, through_restart


@step_function("test.count_or_fail")
def count_or_fail(fail: bool = False) -> int:
    """Count this execution, then fail if ``fail``."""
    ctx = current()
    n = int(ctx.redis.hincrby(f"test:exec:{ctx.run_id}", ctx.step_id, 1))
    if fail:
        raise RuntimeError(f"{ctx.step_id} failed as asked")
    return n


# a -> b -> (p1 | p2) -> c -> d; c fails when input.fail; on_c handles c
_r = Workflow("resume_flow", input_schema={
    "type": "object", "required": ["fail"], "properties": {"fail": {"type": "boolean"}}})
_ra = _r.step("a", count)
_rb = _r.step("b", count, after=[_ra])
_rp1 = _r.step("p1", count, after=[_rb])
_rp2 = _r.step("p2", count, after=[_rb])
_rc = _r.step("c", count_or_fail, after=[_rp1, _rp2], fail=_r.input.fail)
_r.step("d", count, after=[_rc], pause_s=0.5)
_r.step("on_c", count, handles=[_rc])
resume_flow = _r.build()


# --- compensation (tests/integration/test_compensation.py) -----------------------------
# `test.act` counts its executions; `test.undo` (its compensation) counts its own, logs
# when each starts and ends (Redis' clock) in `test:undo:<undo run>`, and any overlap of
# two executions of one compensation in `test:overlap:<undo run>`.


@step_function("test.act")
def act(fail: bool = False, pause_s: float = 0.0, undo_fails: int = 0,
        undo_pause_s: float = 0.0) -> dict[str, Any]:
    """Count this execution, sleep ``pause_s``, fail if ``fail``; the output names the
    step (its compensation checks it gets it)."""
    ctx = current()
    ctx.redis.hincrby(f"test:exec:{ctx.run_id}", ctx.step_id, 1)
    time.sleep(pause_s)
    if fail:
        raise RuntimeError(f"{ctx.step_id} failed as asked")
    return {"done": ctx.step_id}


def _now(r: Any) -> float:
    secs, micros = r.time()
    return float(secs) + micros / 1e6


@step_function("test.undo")
def undo(input: dict[str, Any], output: dict[str, Any]) -> str:
    """Undo a ``test.act`` step: fail while this is one of its first
    ``input["undo_fails"]`` executions; sleep ``input["undo_pause_s"]``."""
    ctx = current()
    r = ctx.redis
    assert output == {"done": ctx.step_id}, output
    n = int(r.hincrby(f"test:exec:{ctx.run_id}", ctx.step_id, 1))
    inflight = enter(r, ctx.run_id, ctx.step_id)
    try:
        r.rpush(f"test:undo:{ctx.run_id}", json.dumps(["start", ctx.step_id, _now(r)]))
        time.sleep(float(input.get("undo_pause_s") or 0.0))
        if n <= int(input.get("undo_fails") or 0):
            raise RuntimeError(f"undo of {ctx.step_id} failed (execution {n})")
    finally:
        # the mark goes first, and each write waits out a Redis restart: a mark left by
        # a write that failed would name this live pool process, and the next execution
        # would count a false overlap
        leave(r, inflight)
        done_executing()
        through_restart(lambda: r.rpush(f"test:undo:{ctx.run_id}",
                                        json.dumps(["end", ctx.step_id, _now(r)])))
    return f"undid {ctx.step_id}"


_UNDO = CompensateDef(function="test.undo",
                      retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.1, jitter=0.0))


def _saga(name: str, a_undo_fails: int = 0, b_undo_fails: int = 0) -> Any:
    """a -> b -> (p1 | p2 | n) -> c; every step but n has a compensation; c fails when
    ``input.fail_c``; h handles c."""
    wf = Workflow(name, input_schema={"type": "object", "required": ["fail_c"]})
    a = wf.step("a", act, compensate=_UNDO, undo_fails=a_undo_fails)
    b = wf.step("b", act, after=[a], compensate=_UNDO, undo_fails=b_undo_fails)
    p1 = wf.step("p1", act, after=[b], compensate=_UNDO, undo_pause_s=0.6)
    p2 = wf.step("p2", act, after=[b], compensate=_UNDO, undo_pause_s=0.6)
    n = wf.step("n", act, after=[b])
    c = wf.step("c", act, after=[p1, p2, n], compensate=_UNDO, fail=wf.input.fail_c)
    wf.step("h", count, handles=[c])
    return wf.build()


saga_flow = _saga("saga_flow")
saga_flaky_undo = _saga("saga_flaky_undo", a_undo_fails=2)  # retried, then compensated
saga_broken_undo = _saga("saga_broken_undo", b_undo_fails=99)  # b's undo fails for good

# a -> f1..f12 (each 1 s) -> z: cancelled with compensation mid-fan-out
_fan = Workflow("saga_fanout")
_fan_a = _fan.step("a", act, compensate=_UNDO)
_fan_f = [_fan.step(f"f{i}", act, after=[_fan_a], compensate=_UNDO, pause_s=1.0)
          for i in range(1, 13)]
_fan.step("z", act, after=_fan_f, compensate=_UNDO)
saga_fanout = _fan.build()


# --- rate limits (tests/integration/test_rate_limits.py) ---------------------------------


@step_function("test.stamp")
def stamp(tag: str = "") -> float:
    """Record when this execution started (Redis' clock) in ``test:stamps:<tag>``, and count
    it in ``test:exec:<run>``."""
    ctx = current()
    r = ctx.redis
    at = _now(r)
    r.rpush(f"test:stamps:{tag}", at)
    r.hincrby(f"test:exec:{ctx.run_id}", ctx.step_id, 1)
    return at


# 12 branches that share a budget of 4 starts a second (the function's), then a join
_rl = Workflow("rate_limited", input_schema={"type": "object", "required": ["tag"]})
_rl_src = _rl.step("src", stamp, tag="src")
_rl_b = [_rl.step(f"b{i}", stamp, after=[_rl_src], rate_limit="4/s", tag=_rl.input.tag)
         for i in range(12)]
_rl.step("join", count, after=_rl_b)
rate_limited = _rl.build()

_fr = Workflow("free_run")
_fr.step("free", stamp, tag="free")
free_run = _fr.build()
