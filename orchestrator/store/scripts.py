"""The store's Lua scripts: ``lua/*.lua`` beside this module, loaded once per client.

Every script is the prelude (built here from :mod:`orchestrator.core.states` and
:mod:`orchestrator.store.fields`), then ``lua/lib.lua``, then its own file.  So a script
never spells a status, an event field or a metric field itself: it reads ``STEP.RUNNING``,
``STEP_FINAL[s]``, ``F.KIND``..., handed to it from the one transition table and the one
field list (``tests/integration/test_store_scripts.py`` checks the files for stray names).
The names are fixed when a script loads, not sent with every call: the hot path pays
nothing for them.

On Redis 7 and later (and Valkey) the scripts run as Redis Functions: one library
(:func:`library`) holds the prelude and library once and every script as a function, and
a call is ``FCALL``.  A script run with ``EVALSHA`` builds the prelude's tables and the
library's functions again at every call (about 5 µs of Redis' CPU each, three calls per
step); a function finds them built when the library loaded.  The library is named after
its text's SHA-1, so releases that share a Redis (a rolling upgrade) each call their own;
it is replicated and persisted like data, so a replica promoted by a failover has it.
After a Redis restart without persistence or a ``FUNCTION FLUSH``, the first call finds
no function, loads the library and runs again.

On an older server, where ``FCALL`` is an unknown command, the client's connection pool
is marked and its scripts run with ``EVALSHA``: after a Redis restart or ``SCRIPT FLUSH``
the first call gets ``NOSCRIPT``, loads every script and runs again.

A pipeline of script calls does the same as a whole, so no pipeline is preceded by a
round trip that checks for the scripts.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Callable, Sequence
from functools import cache
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError, ResponseError

from orchestrator.core.states import RUN_TERMINAL, STEP_TERMINAL, RunStatus, StepStatus
from orchestrator.store import fields as f
from orchestrator.store.records import LEASE_GIVEN, LEASE_RESTORED, LEASE_SETTLED, LeaseMode


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
             "M_STEPS": f.METRIC_STEPS, "M_DUS": f.METRIC_DURATION_US,
             "M_DBUCKET": f.METRIC_DURATION_BUCKET}
    lines.append("local F = {" + ", ".join(f"{k}={_lua_str(v)}" for k, v in names.items())
                 + "}")
    lease = [f"{m.name}={m.value}" for m in LeaseMode]
    lease += [f"SETTLED={_lua_str(LEASE_SETTLED)}", f"RESTORED={_lua_str(LEASE_RESTORED)}",
              f"GIVEN={_lua_str(LEASE_GIVEN)}"]
    lines.append("local LEASE = {" + ", ".join(lease) + "}")
    return "\n".join(lines) + "\n"


def read(name: str) -> str:
    """The text of ``lua/<name>.lua``."""
    return (resources.files(__package__) / "lua" / f"{name}.lua").read_text(encoding="utf-8")


@cache
def source(name: str) -> str:
    """The full source of script ``name`` run by ``EVALSHA``: prelude, library, script.
    Its Lua state lives for one call (``LIVING_VM`` false: see ``server_boot`` in
    ``lua/lib.lua``)."""
    return prelude() + "local LIVING_VM = false\n" + read("lib") + "\n" + read(name)


_NO_FUNCTIONS: weakref.WeakSet[Any] = weakref.WeakSet()
"""Connection pools whose server has no Redis Functions (before Redis 7): EVALSHA there."""


def _pool(client: Any) -> Any:
    """What marks a server without functions: a client's (or pipeline's) connection pool;
    a Redis Cluster client has none of its own and stands for itself (a store on a
    cluster needs Redis 7's functions: docs/scaling.md, Redis Cluster)."""
    pool = getattr(client, "connection_pool", None)
    return client if pool is None else pool


def _functions(client: Any) -> bool:
    return _pool(client) not in _NO_FUNCTIONS


def _lost(exc: ResponseError) -> bool | None:
    """What an error of ``FCALL`` or ``FUNCTION LOAD`` means: True the library is not
    loaded, False the server has no functions (an unknown command, before Redis 7), None
    another error (the script's own)."""
    text = str(exc).lower()
    if "function not found" in text:
        return True
    if "unknown command" in text and ("fcall" in text or "function" in text):
        return False
    return None


@cache
def tag() -> str:
    """The first 12 hex digits of the SHA-1 of every script's text: the library's name and
    its functions' carry it, so a release calls only the functions of its own library,
    whichever others a shared Redis holds."""
    lua = resources.files(__package__) / "lua"
    texts = sorted((p.name, p.read_text(encoding="utf-8")) for p in lua.iterdir()
                   if p.name.endswith(".lua"))
    return hashlib.sha1((prelude() + json.dumps(texts)).encode()).hexdigest()[:12]


class Script:
    """One script: its full source and SHA-1, and its function's name in :func:`library`;
    call it on a sync or an asyncio client, or queue it in a pipeline."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = source(name)
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()
        self.function = f"orch_{name}_{tag()}"

    def __call__(self, client: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run the script on a sync client (loading it first if Redis lost it)."""
        if _functions(client):
            try:
                return client.fcall(self.function, len(keys), *keys, *args)
            except ResponseError as exc:
                lost = _lost(exc)
                if lost is None:
                    raise
                if lost:
                    load(client)
                    return client.fcall(self.function, len(keys), *keys, *args)
                _NO_FUNCTIONS.add(_pool(client))
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            client.script_load(self.source)
            return client.evalsha(self.sha, len(keys), *keys, *args)

    async def acall(self, client: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run the script on an asyncio client (loading it first if Redis lost it)."""
        if _functions(client):
            try:
                return await client.fcall(self.function, len(keys), *keys, *args)
            except ResponseError as exc:
                lost = _lost(exc)
                if lost is None:
                    raise
                if lost:
                    await client.function_load(library(), replace=True)
                    return await client.fcall(self.function, len(keys), *keys, *args)
                _NO_FUNCTIONS.add(_pool(client))
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)

    def queue(self, pipe: Any, keys: Sequence[Any], args: Sequence[Any]) -> None:
        """Add a call to a pipeline that :func:`execute` runs (or to a transaction, after
        :func:`load`)."""
        if _functions(pipe):
            pipe.fcall(self.function, len(keys), *keys, *args)
        else:
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
RESTORE_LEASE = Script("restore_lease")
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
REQUEUE_POPPED = Script("requeue_popped")
ALL = (STEP_TRANSITION, BEGIN_STEP, RUN_TRANSITION, COMPLETE_UNIT, CLAIM_UNITS, STALE_CLAIMS,
       RETRY_LATER, DUE, TAKE_TIMER, RENEW_LEASE, RELEASE_LEASE, EXPIRED_LEASES, RESTORE_MESSAGE,
       RESTORE_LEASE,
       PARK_LEASE, DEFER_COPY, REPLAY_UNIT, RELEASE_IDEMPOTENCY, PARK_WAIT, SEND_EVENT,
       DECIDE_WAIT, CREATE_RUN, SCHEDULE_PUT, SCHEDULE_PAUSE, SCHEDULE_CLAIM,
       SCHEDULE_ADVANCE, REUSE_STEPS, RATE_LIMIT, THROTTLE_STEP, ACQUIRE_SLOT, MAP_STEP,
       BEGIN_ITEM, PUBLISH_UNITS, REQUEUE_UNACKED, REQUEUE_POPPED, HOLD_TAGS)


@cache
def library() -> str:
    """The Redis Functions library of every script: the prelude and ``lua/lib.lua`` once,
    then each script's file as the body of a function that takes ``KEYS`` and ``ARGV``."""
    body = "".join(f"redis.register_function('{s.function}', function(KEYS, ARGV)\n"
                   f"{read(s.name)}\nend)\n" for s in ALL)
    return (f"#!lua name=orch_{tag()}\n" + prelude() + "local LIVING_VM = true\n"
            + read("lib") + "\n" + body)


def load(client: Any) -> None:
    """Make sure a sync client's server has the scripts, before a transaction (``MULTI``)
    that calls them: there, a missing script is not loaded and retried."""
    if _functions(client):
        try:
            client.function_load(library(), replace=True)
            return
        except ResponseError as exc:
            _without_functions(client, exc)
    for s in ALL:
        client.script_load(s.source)


def _without_functions(client: Any, exc: ResponseError) -> None:
    """After ``FUNCTION LOAD`` failed with ``exc``: mark a server without functions (its
    scripts go by ``EVALSHA``), or raise ``exc``."""
    if _lost(exc) is not False:
        raise exc
    _NO_FUNCTIONS.add(_pool(client))


async def aload(client: Any) -> None:
    """:func:`load` on an asyncio client."""
    if _functions(client):
        try:
            await client.function_load(library(), replace=True)
            return
        except ResponseError as exc:
            _without_functions(client, exc)
    for s in ALL:
        await client.script_load(s.source)


def execute(client: Any, fill: Callable[[Any], None]) -> list[Any]:
    """Run a pipeline of script calls and reads, which ``fill(pipe)`` queues.

    If Redis lost the scripts (no library: ``Function not found``; or ``NOSCRIPT``), none
    of the calls ran (the reads did, and run again): the scripts are loaded and the
    pipeline is filled and run once more.  A server without functions has its pool
    marked, and the pipeline runs again with ``EVALSHA``.
    """
    for attempt in (1, 2, 3):
        pipe = client.pipeline(transaction=False)
        fill(pipe)
        try:
            return list(pipe.execute())
        except ResponseError as exc:
            if _reload(client, exc, attempt):
                load(client)
    raise AssertionError("unreachable")  # pragma: no cover


async def aexecute(client: Any, fill: Callable[[Any], None]) -> list[Any]:
    """:func:`execute` on an asyncio client."""
    for attempt in (1, 2, 3):
        pipe = client.pipeline(transaction=False)
        fill(pipe)
        try:
            return list(await pipe.execute())
        except ResponseError as exc:
            if _reload(client, exc, attempt):
                await aload(client)
    raise AssertionError("unreachable")  # pragma: no cover


def _reload(client: Any, exc: ResponseError, attempt: int) -> bool:
    """What to do after attempt ``attempt`` of a pipeline of script calls failed with
    ``exc``: True to load the scripts and run it again, False to run it again (a
    server without functions: its pool is marked, the scripts go by ``EVALSHA``, which
    loads them itself); raise ``exc`` when it is the script's own error or the last
    attempt."""
    lost = True if isinstance(exc, NoScriptError) else _lost(exc)
    if lost is None or attempt == 3:
        raise exc
    if not lost:
        _NO_FUNCTIONS.add(_pool(client))
    return lost
