"""The workflows of ``python -m bench.concurrency``: a run enters (its customer's in-flight
set gains it; the largest size is kept, measured in the step), holds for ``hold_ms``,
then leaves (the set loses it).  One workflow limited to ``limit`` runs per customer, the
same without a limit."""

from __future__ import annotations

import time
from typing import Any

from orchestrator.core.dsl import Workflow
from orchestrator.core.models import WorkflowDef
from orchestrator.core.registry import step_function
from orchestrator.runtime.context import current

_ENTER = """
redis.call('SADD', KEYS[1], ARGV[1])
local n = redis.call('SCARD', KEYS[1])
if n > tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0') then
  redis.call('HSET', KEYS[2], ARGV[2], n)
end
redis.call('RPUSH', KEYS[3], ARGV[1])
redis.call('HINCRBY', KEYS[4], ARGV[1], 1)
return n
"""


def inflight_key(arm: str, customer: str) -> str:
    return f"bench:conc:{arm}:inflight:{customer}"


def max_key(arm: str) -> str:
    """Hash: customer -> the most of its runs in flight at once (measured in the step)."""
    return f"bench:conc:{arm}:max"


def order_key(arm: str, customer: str) -> str:
    """List: the customer's run ids in the order their first steps started."""
    return f"bench:conc:{arm}:order:{customer}"


def executions_key(arm: str) -> str:
    """Hash: run id -> executions of its first step."""
    return f"bench:conc:{arm}:exec"


@step_function("bench.conc_enter")
def conc_enter(customer: str, arm: str, hold_ms: int) -> None:
    """The run is in flight for ``customer`` from here to ``bench.conc_leave``."""
    ctx = current()
    r: Any = ctx.redis
    r.eval(_ENTER, 4, inflight_key(arm, customer), max_key(arm), order_key(arm, customer),
           executions_key(arm), ctx.run_id, customer)
    time.sleep(hold_ms / 1000)


@step_function("bench.conc_leave")
def conc_leave(customer: str, arm: str) -> None:
    """The run is no longer in flight for ``customer``."""
    r: Any = current().redis
    r.srem(inflight_key(arm, customer), current().run_id)


def per_customer(limit: int | None) -> WorkflowDef:
    """enter -> leave; at most ``limit`` runs per customer (None: no limit)."""
    name = "bench_conc_free" if limit is None else f"bench_conc_limit_{limit}"
    wf = Workflow(name, input_schema={"type": "object",
                                      "required": ["customer", "arm", "hold_ms"]},
                  concurrency=None if limit is None else
                  {"key": "input.customer", "limit": limit})
    enter = wf.step("enter", conc_enter, customer=wf.input.customer, arm=wf.input.arm,
                    hold_ms=wf.input.hold_ms)
    wf.step("leave", conc_leave, after=[enter], customer=wf.input.customer,
            arm=wf.input.arm)
    return wf.build()
