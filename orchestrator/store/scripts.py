"""The store's Lua scripts: ``lua/*.lua`` beside this module, loaded once per client.

Every script is the prelude (built here from :mod:`orchestrator.core.states` and
:mod:`orchestrator.store.fields`), then ``lua/lib.lua``, then its own file.  So a script
never spells a status, an event field or a metric field itself: it reads ``STEP.RUNNING``,
``STEP_FINAL[s]``, ``F.KIND``..., handed to it from the one transition table and the one
field list (``tests/integration/test_store_scripts.py`` checks the files for stray names).
The names are fixed when a script loads, not sent with every call: the hot path pays
nothing for them.

Scripts run with ``EVALSHA``.  After a Redis restart or ``SCRIPT FLUSH`` the first call
gets ``NOSCRIPT``, loads every script and runs again; a pipeline of script calls does the
same as a whole, so no pipeline is preceded by redis-py's ``SCRIPT EXISTS`` round trip.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from functools import cache
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError

from orchestrator.core.states import RUN_TERMINAL, STEP_TERMINAL, RunStatus, StepStatus
from orchestrator.store import fields as f
from orchestrator.store.records import LEASE_RESTORED, LEASE_SETTLED, LeaseMode


def _lua_str(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid Lua string literal here


def prelude() -> str:
    """The Lua constants every script starts with."""
    lines = ["local STEP = {" + ", ".join(f"{s.name}={_lua_str(s.value)}" for s in StepStatus)
             + "}",
             "local RUN = {" + ", ".join(f"{s.name}={_lua_str(s.value)}" for s in RunStatus)
             + "}",
             "local STEP_FINAL = {" + ", ".join(f"[{_lua_str(s.value)}]=true"
                                                for s in sorted(STEP_TERMINAL)) + "}",
             "local RUN_FINAL = {" + ", ".join(f"[{_lua_str(s.value)}]=true"
                                               for s in sorted(RUN_TERMINAL)) + "}",
             f"local EVENTS_MAXLEN = {_lua_str(str(f.EVENTS_MAXLEN))}",
             "local DURATION_BUCKETS = {" + ", ".join(_lua_str(repr(b))
                                                      for b in f.DURATION_BUCKETS_S) + "}"]
    names = {"KIND": f.EVENT_KIND, "RUN": f.EVENT_RUN, "STEP": f.EVENT_STEP,
             "STATUS": f.EVENT_STATUS, "STEP_ID": f.EVENT_STEP_ID, "ATTEMPT": f.EVENT_ATTEMPT,
             "TS": f.EVENT_TS, "SEP": f.METRIC_SEP, "M_RUNS": f.METRIC_RUNS,
             "M_STEPS": f.METRIC_STEPS, "M_DSUM": f.METRIC_DURATION_SUM,
             "M_DBUCKET": f.METRIC_DURATION_BUCKET}
    lines.append("local F = {" + ", ".join(f"{k}={_lua_str(v)}" for k, v in names.items())
                 + "}")
    lease = [f"{m.name}={m.value}" for m in LeaseMode]
    lease += [f"SETTLED={_lua_str(LEASE_SETTLED)}", f"RESTORED={_lua_str(LEASE_RESTORED)}"]
    lines.append("local LEASE = {" + ", ".join(lease) + "}")
    return "\n".join(lines) + "\n"


def read(name: str) -> str:
    """The text of ``lua/<name>.lua``."""
    return (resources.files(__package__) / "lua" / f"{name}.lua").read_text(encoding="utf-8")


@cache
def source(name: str) -> str:
    """The full source of script ``name``: prelude, library, script."""
    return prelude() + read("lib") + "\n" + read(name)


class Script:
    """One script: its full source and SHA-1; call it on a sync or an asyncio client."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = source(name)
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    def __call__(self, client: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run the script on a sync client (loading it first if Redis lost it)."""
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            client.script_load(self.source)
            return client.evalsha(self.sha, len(keys), *keys, *args)

    async def acall(self, client: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run the script on an asyncio client (loading it first if Redis lost it)."""
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)

    def queue(self, pipe: Any, keys: Sequence[Any], args: Sequence[Any]) -> None:
        """Add a call to a pipeline that :func:`execute` runs."""
        pipe.evalsha(self.sha, len(keys), *keys, *args)


STEP_TRANSITION = Script("step_transition")
BEGIN_STEP = Script("begin_step")
RUN_TRANSITION = Script("run_transition")
COMPLETE_UNIT = Script("complete_unit")
CLAIM_UNITS = Script("claim_units")
STALE_CLAIMS = Script("stale_claims")
RETRY_LATER = Script("retry_later")
DUE = Script("due")
RENEW_LEASE = Script("renew_lease")
RELEASE_LEASE = Script("release_lease")
EXPIRED_LEASES = Script("expired_leases")
RESTORE_MESSAGE = Script("restore_message")
REQUEUE_UNACKED = Script("requeue_unacked")
HOLD_TAGS = Script("hold_tags")
PARK_LEASE = Script("park_lease")
DEFER_COPY = Script("defer_copy")
REPLAY_UNIT = Script("replay_unit")
RELEASE_IDEMPOTENCY = Script("release_idempotency")
CREATE_RUN = Script("create_run")
PARK_WAIT = Script("park_wait")
SEND_EVENT = Script("send_event")
DECIDE_WAIT = Script("decide_wait")
SCHEDULE_PUT = Script("schedule_put")
SCHEDULE_PAUSE = Script("schedule_pause")
SCHEDULE_CLAIM = Script("schedule_claim")
SCHEDULE_ADVANCE = Script("schedule_advance")
REUSE_STEPS = Script("reuse_steps")
RATE_LIMIT = Script("rate_limit")
THROTTLE_STEP = Script("throttle_step")
TAKE_TIMER = Script("take_timer")
ACQUIRE_SLOT = Script("acquire_slot")
MAP_STEP = Script("map_step")
BEGIN_ITEM = Script("begin_item")
PUBLISH_UNITS = Script("publish_units")
ALL = (STEP_TRANSITION, BEGIN_STEP, RUN_TRANSITION, COMPLETE_UNIT, CLAIM_UNITS, STALE_CLAIMS,
       RETRY_LATER, DUE, TAKE_TIMER, RENEW_LEASE, RELEASE_LEASE, EXPIRED_LEASES, RESTORE_MESSAGE,
       PARK_LEASE, DEFER_COPY, REPLAY_UNIT, RELEASE_IDEMPOTENCY, PARK_WAIT, SEND_EVENT,
       DECIDE_WAIT, CREATE_RUN, SCHEDULE_PUT, SCHEDULE_PAUSE, SCHEDULE_CLAIM,
       SCHEDULE_ADVANCE, REUSE_STEPS, RATE_LIMIT, THROTTLE_STEP, ACQUIRE_SLOT, MAP_STEP,
       BEGIN_ITEM, PUBLISH_UNITS, REQUEUE_UNACKED, HOLD_TAGS)


def execute(client: Any, fill: Callable[[Any], None]) -> list[Any]:
    """Run a pipeline of script calls only, which ``fill(pipe)`` queues.

    If Redis lost the scripts (``NOSCRIPT``), none of the calls ran: every script is
    loaded and the pipeline is filled and run once more.
    """
    for attempt in (1, 2):
        pipe = client.pipeline(transaction=False)
        fill(pipe)
        try:
            return list(pipe.execute())
        except NoScriptError:
            if attempt == 2:
                raise
            for s in ALL:
                client.script_load(s.source)
    raise AssertionError("unreachable")  # pragma: no cover
