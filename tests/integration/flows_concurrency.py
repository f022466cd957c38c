"""Workflows of ``tests/integration/test_concurrency.py``: steps that measure, in the step
function itself, how many runs of each concurrency key are in flight at once.

``test.conc_enter`` adds its run to the key's in-flight set (a set: a killed attempt's
redelivery adds the same member again, so a kill does not inflate the count), keeps the
largest size seen, records its run in the key's start order, counts its execution, then
holds for ``hold_s``; ``test.conc_leave`` removes its run from the set.  Between the two,
the run holds its slot (a workflow's limit holds from start to final status).
``test.conc_step`` does both in one step run (a step's limit).
"""

from __future__ import annotations

import time
from typing import Any

from orchestrator.core.dsl import Workflow
from orchestrator.core.registry import step_function
from orchestrator.runtime.context import current

_ENTER = """
redis.call('SADD', KEYS[1], ARGV[1])
local n = redis.call('SCARD', KEYS[1])
if n > tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0') then
  redis.call('HSET', KEYS[2], ARGV[2], n)
end
redis.call('RPUSH', KEYS[3], ARGV[1])
return n
"""


def inflight_key(tag: str, key: str) -> str:
    return f"test:conc:{tag}:inflight:{key}"


def max_key(tag: str) -> str:
    """Hash: concurrency key -> the most runs in flight at once (measured in the step)."""
    return f"test:conc:{tag}:max"


def order_key(tag: str, key: str) -> str:
    """List: run ids in the order their steps started, per concurrency key."""
    return f"test:conc:{tag}:order:{key}"


def _enter(tag: str, key: str) -> None:
    ctx = current()
    r: Any = ctx.redis
    r.hincrby(f"test:exec:{ctx.run_id}", ctx.step_id, 1)
    r.eval(_ENTER, 3, inflight_key(tag, key), max_key(tag), order_key(tag, key), ctx.run_id,
           key)


def _leave(tag: str, key: str) -> None:
    ctx = current()
    r: Any = ctx.redis
    r.hincrby(f"test:exec:{ctx.run_id}", ctx.step_id, 1)
    r.srem(inflight_key(tag, key), ctx.run_id)


@step_function("test.conc_enter")
def conc_enter(key: str, tag: str = "conc", hold_s: float = 0.0) -> None:
    """The run enters: in flight for ``key`` until ``test.conc_leave``."""
    _enter(tag, key)
    time.sleep(hold_s)


@step_function("test.conc_leave")
def conc_leave(key: str, tag: str = "conc") -> None:
    """The run leaves: no longer in flight for ``key``."""
    _leave(tag, key)


@step_function("test.conc_step")
def conc_step(key: str, tag: str = "conc", hold_s: float = 0.0) -> None:
    """A step run in flight for ``key`` while it holds for ``hold_s``."""
    _enter(tag, key)
    time.sleep(hold_s)
    r: Any = current().redis
    r.srem(inflight_key(tag, key), current().run_id)


SCHEMA = {"type": "object", "required": ["customer", "tag", "hold_s"],
          "properties": {"customer": {"type": "string"}, "tag": {"type": "string"},
                         "hold_s": {"type": "number"}}}


def per_customer(name: str, limit: int, when_full: str = "queue") -> Any:
    """A workflow limited to ``limit`` runs per customer: enter (holds), then leave."""
    wf = Workflow(name, input_schema=SCHEMA,
                  concurrency={"key": "input.customer", "limit": limit,
                               "when_full": when_full})
    enter = wf.step("enter", conc_enter, key=wf.input.customer, tag=wf.input.tag,
                    hold_s=wf.input.hold_s)
    wf.step("leave", conc_leave, after=[enter], key=wf.input.customer, tag=wf.input.tag)
    return wf.build()


conc_queue = per_customer("conc_queue", 1)
conc_newest = per_customer("conc_newest", 1, "cancel_newest")
conc_oldest = per_customer("conc_oldest", 1, "cancel_oldest")
conc_pair = per_customer("conc_pair", 2)

_st = Workflow("conc_step_flow", input_schema=SCHEMA)
_st_first = _st.step("first", conc_leave, key="none", tag=_st.input.tag)
_st.step("limited", conc_step, after=[_st_first], key=_st.input.customer, tag=_st.input.tag,
         hold_s=_st.input.hold_s, concurrency={"key": "input.customer", "limit": 1})
conc_step_flow = _st.build()

_sn = Workflow("conc_step_newest", input_schema=SCHEMA)
_sn.step("limited", conc_step, key=_sn.input.customer, tag=_sn.input.tag,
         hold_s=_sn.input.hold_s,
         concurrency={"key": "input.customer", "limit": 1, "when_full": "cancel_newest"})
conc_step_newest = _sn.build()
