"""Workflows of the sub-workflow tests (tests/integration/test_subworkflows.py): every
step function counts its executions in ``test:exec:<run>`` when it starts and, for
``test.sw_*``, its completions in ``test:done:<run>`` when it returns."""

from __future__ import annotations

import time
from typing import Any

from orchestrator.core.dsl import Workflow
from orchestrator.core.models import CompensateDef, RetryPolicy
from orchestrator.core.registry import step_function
from orchestrator.runtime.context import current
from tests.integration.flows_recovery import act


def _started() -> Any:
    ctx = current()
    ctx.redis.hincrby(f"test:exec:{ctx.run_id}", ctx.step_id, 1)
    return ctx


def _finished(ctx: Any) -> None:
    ctx.redis.hincrby(f"test:done:{ctx.run_id}", ctx.step_id, 1)


@step_function("test.sw_double")
def double(x: int, pause_s: float | None = None) -> int:
    """Count, sleep ``pause_s``, return ``2 * x``."""
    ctx = _started()
    time.sleep(pause_s or 0.0)
    _finished(ctx)
    return 2 * x


@step_function("test.sw_echo")
def echo(value: Any = None) -> Any:
    """Count, return ``value``."""
    ctx = _started()
    _finished(ctx)
    return value


@step_function("test.sw_flaky")
def flaky(tag: str, fails: int) -> str:
    """Count; fail while this is one of the first ``fails`` executions for ``tag`` (counted
    across runs in ``test:sw:tries``)."""
    ctx = _started()
    n = int(ctx.redis.hincrby("test:sw:tries", tag, 1))
    if n <= fails:
        raise RuntimeError(f"flaky {tag}: execution {n} fails as asked")
    _finished(ctx)
    return f"ok after {n}"


# child: x -> double(x)        (one sink: its output is the child's output)
_c = Workflow("sw_child", input_schema={"type": "object", "required": ["x"],
                                        "properties": {"x": {"type": "integer"}}})
_c.step("double", double, x=_c.input.x, pause_s=_c.input.pause_s)
sw_child = _c.build()

# parent: a -> kid (sw_child) -> after (echo of kid's output)
_p = Workflow("sw_parent", input_schema={"type": "object", "required": ["x"]})
_pa = _p.step("a", echo, value=_p.input.x)
_pk = _p.subworkflow("kid", "sw_child", x=_pa.output, pause_s=_p.input.pause_s)
_p.step("after", echo, value=_pk.output)
sw_parent = _p.build()

# two levels: outer -> mid (sw_parent) -> child (sw_child)
_o = Workflow("sw_outer", input_schema={"type": "object", "required": ["x"]})
_om = _o.subworkflow("mid", "sw_parent", x=_o.input.x, pause_s=_o.input.pause_s)
_o.step("last", echo, value=_om.output)
sw_outer = _o.build()

# a failing child, retried as a new child run; a handler for the final failure
_f = Workflow("sw_flaky_child", input_schema={"type": "object", "required": ["tag", "fails"]})
_f.step("try", flaky, tag=_f.input.tag, fails=_f.input.fails)
sw_flaky_child = _f.build()

_r = Workflow("sw_retry_parent", input_schema={"type": "object",
                                               "required": ["tag", "fails"]})
_rk = _r.subworkflow("kid", "sw_flaky_child", tag=_r.input.tag, fails=_r.input.fails,
                     retry=RetryPolicy(max_attempts=2, initial_backoff_s=0.1, jitter=0.0))
_r.step("on_kid", echo, value="handled", handles=[_rk])
sw_retry_parent = _r.build()

# a child that naps (a durable wait): cancelled with its parent
_n = Workflow("sw_napping_child")
_na = _n.step("first", echo, value=1)
_n.wait("nap", sleep_s=300, after=[_na])
sw_napping_child = _n.build()

_cp = Workflow("sw_cancel_parent")
_cpk = _cp.subworkflow("kid", "sw_napping_child")
_cp.step("never", echo, value=2, after=[_cpk])
sw_cancel_parent = _cp.build()

# compensation: the child's step declares one; the parent fails after the child succeeded
_UNDO = CompensateDef(function="test.undo",
                      retry=RetryPolicy(max_attempts=2, initial_backoff_s=0.1, jitter=0.0))
_sc = Workflow("sw_saga_child")
_sc.step("a", act, compensate=_UNDO)
sw_saga_child = _sc.build()

_sp = Workflow("sw_saga_parent", input_schema={"type": "object", "required": ["fail_c"]})
_spk = _sp.subworkflow("kid", "sw_saga_child")
_sp.step("c", act, after=[_spk], fail=_sp.input.fail_c)
sw_saga_parent = _sp.build()

# cancel --compensate mid-child: the child's succeeded step is undone
_ns = Workflow("sw_napping_saga_child")
_nsa = _ns.step("a", act, compensate=_UNDO)
_ns.wait("nap", sleep_s=300, after=[_nsa])
sw_napping_saga_child = _ns.build()

_cs = Workflow("sw_cancel_saga_parent")
_cs.subworkflow("kid", "sw_napping_saga_child")
sw_cancel_saga_parent = _cs.build()


# mapped sub-workflows, with a map inside each child (a nested map):
# sw_map_parent: kids (sw_map_child, once per n of input.ns) -> after (echo of kids' output)
# sw_map_child:  spread(n) = [1..n] -> sq (double of each, a map) -> total (their sum)
@step_function("test.sw_spread")
def spread(n: int) -> list[int]:
    """Count, return ``[1, …, n]``."""
    ctx = _started()
    _finished(ctx)
    return list(range(1, n + 1))


@step_function("test.sw_sum")
def total(values: list[int], fail_above: int | None = None) -> int:
    """Count; fail if the sum of ``values`` is above ``fail_above``, else return it."""
    ctx = _started()
    if fail_above is not None and sum(values) > fail_above:
        raise ValueError(f"sum {sum(values)} is above {fail_above}, as asked")
    _finished(ctx)
    return sum(values)


_mc = Workflow("sw_map_child", input_schema={"type": "object", "required": ["n"],
                                             "properties": {"n": {"type": "integer"}}})
_mcs = _mc.step("spread", spread, n=_mc.input.n)
_mcq = _mc.step("sq", double, after=[_mcs], pause_s=_mc.input.pause_s,
                map={"over": "steps.spread.output", "as": "x"})
_mc.step("total", total, values=_mcq.output, fail_above=_mc.input.fail_above)
sw_map_child = _mc.build()

_mp = Workflow("sw_map_parent", input_schema={"type": "object", "required": ["ns"]})
_mpk = _mp.subworkflow("kids", "sw_map_child", pause_s=_mp.input.pause_s,
                       fail_above=_mp.input.fail_above,
                       map={"over": "input.ns", "as": "n", "max_parallel": 2})
_mp.step("after", echo, value=_mpk.output)
sw_map_parent = _mp.build()

_mq = Workflow("sw_map_continue_parent", input_schema={"type": "object",
                                                       "required": ["ns"]})
_mqk = _mq.subworkflow("kids", "sw_map_child", fail_above=_mq.input.fail_above,
                       map={"over": "input.ns", "as": "n", "failure_policy": "continue"})
_mq.step("after", echo, value=_mqk.output)
sw_map_continue_parent = _mq.build()
