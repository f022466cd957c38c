"""Following a run's event stream from the API: ``wait`` on submit, and server-sent events.

Both block on ``XREAD`` of the run's Redis stream (asyncio client), so a waiting request
costs a connection and no polling.  A run is over when its stream carries a ``run`` event
with a final status.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import redis.asyncio as aioredis

from orchestrator.api.deps import ApiContext
from orchestrator.api.models import RunEvent, RunOut
from orchestrator.core.states import RunStatus
from orchestrator.errors import RunNotFound

HEARTBEAT_MS = 15_000
READ_COUNT = 200
RETRY_MS = 2_000

Entries = list[tuple[str, dict[str, str]]]


async def read_stream(r: aioredis.Redis, key: str, after: str,
                      block_ms: int | None = None) -> Entries:
    """Entries of one stream after the id ``after``; with ``block_ms``, wait that long."""
    res: Any = await r.xread({key: after}, count=READ_COUNT, block=block_ms)
    if not res:
        return []
    return [(str(eid), dict(fields)) for eid, fields in res[0][1]]


async def run_status(r: aioredis.Redis, run_key: str) -> RunStatus | None:
    """The run's status, or None if it is not in the store."""
    raw: Any = await r.hget(run_key, "status")
    return None if raw is None else RunStatus(raw)


async def wait_for_end(ctx: ApiContext, run_id: str, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for the run to end; return whether it did."""
    key = ctx.keys.events(run_id)
    deadline = time.monotonic() + timeout_s
    cursor = "0-0"
    while True:
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        if remaining_ms <= 0:
            return False
        # block=0 would mean "for ever": never pass less than 1 ms
        for eid, fields in await read_stream(ctx.aredis, key, cursor, max(1, remaining_ms)):
            cursor = eid
            if RunEvent.from_stream(eid, fields).ends_run:
                return True


def frame(event: str, data: str, event_id: str | None = None) -> bytes:
    """One server-sent event."""
    lines = [f"id: {event_id}"] if event_id else []
    lines.append(f"event: {event}")
    lines += [f"data: {line}" for line in (data.splitlines() or [""])]
    return ("\n".join(lines) + "\n\n").encode()


async def run_events(ctx: ApiContext, run_id: str, after: str) -> AsyncIterator[bytes]:
    """Server-sent events of a run, live, from the event after ``after`` to the run's end.

    Each stream entry is an event named ``run`` or ``step`` with a :class:`RunEvent` as
    data and the stream id as its id (for ``Last-Event-ID``).  The last event is ``end``
    with the final :class:`RunOut`; then the stream closes.  A comment line is sent every
    :data:`HEARTBEAT_MS` while nothing happens.
    """
    r = ctx.aredis
    key = ctx.keys.events(run_id)
    yield f"retry: {RETRY_MS}\n\n".encode()
    cursor = after
    status = await run_status(r, ctx.keys.run(run_id))
    # Resumed after the end: send what is left without blocking.
    ended = status is None or status.terminal
    while not ended:
        entries = await read_stream(r, key, cursor, HEARTBEAT_MS)
        if not entries:
            status = await run_status(r, ctx.keys.run(run_id))
            if status is None or status.terminal:
                break
            yield b": keepalive\n\n"
            continue
        for eid, fields in entries:
            cursor = eid
            ev = RunEvent.from_stream(eid, fields)
            yield frame(ev.kind, ev.model_dump_json(), eid)
            ended = ended or ev.ends_run
    # What follows the end at once (steps cancelled with their run), then the final view.
    while True:
        entries = await read_stream(r, key, cursor)
        if not entries:
            break
        for eid, fields in entries:
            cursor = eid
            ev = RunEvent.from_stream(eid, fields)
            yield frame(ev.kind, ev.model_dump_json(), eid)
    try:
        view = await anyio.to_thread.run_sync(ctx.coordinator.view, run_id)
    except RunNotFound:
        return
    yield frame("end", RunOut.from_view(view).model_dump_json())
