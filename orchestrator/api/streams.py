"""Following a run's event stream from the API: ``wait`` on submit, and server-sent events.

Both block on ``XREAD`` of the run's Redis stream (asyncio client), so a waiting request
costs a connection and no polling.  A run is over when its stream carries a ``run`` event
with a final status.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import anyio

from orchestrator.api.deps import ApiContext
from orchestrator.api.models import RunDetail, RunEvent, RunOut
from orchestrator.errors import RunNotFound

HEARTBEAT_MS = 15_000
RETRY_MS = 2_000


async def wait_for_end(ctx: ApiContext, run_id: str, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for the run to end; return whether it did."""
    deadline = time.monotonic() + timeout_s
    cursor = "0-0"
    while True:
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        if remaining_ms <= 0:
            return False
        # block=0 would mean "for ever": never pass less than 1 ms
        for ev in await ctx.reader.events(run_id, cursor, max(1, remaining_ms)):
            cursor = ev.id
            if RunEvent.of(ev).ends_run:
                return True


def frame(event: str, data: str, event_id: str | None = None) -> bytes:
    """One server-sent event."""
    lines = [f"id: {event_id}"] if event_id else []
    lines.append(f"event: {event}")
    lines += [f"data: {line}" for line in (data.splitlines() or [""])]
    return ("\n".join(lines) + "\n\n").encode()


async def run_events(ctx: ApiContext, run_id: str, after: str,
                     detail: RunDetail = "full") -> AsyncIterator[bytes]:
    """Server-sent events of a run, live, from the event after ``after`` to the run's end.

    Each stream entry is an event named ``run`` or ``step`` with a :class:`RunEvent` as
    data and the stream id as its id (for ``Last-Event-ID``).  The last event is ``end``
    with the final :class:`RunOut` as a caller entitled to ``detail`` sees it; then the
    stream closes.  A comment line is sent every
    :data:`HEARTBEAT_MS` while nothing happens.
    """
    reader = ctx.reader
    yield f"retry: {RETRY_MS}\n\n".encode()
    cursor = after
    status = await reader.run_status(run_id)
    # Resumed after the end: send what is left without blocking.
    ended = status is None or status.terminal
    while not ended:
        entries = await reader.events(run_id, cursor, HEARTBEAT_MS)
        if not entries:
            status = await reader.run_status(run_id)
            if status is None or status.terminal:
                break
            yield b": keepalive\n\n"
            continue
        for entry in entries:
            cursor = entry.id
            ev = RunEvent.of(entry)
            yield frame(ev.kind, ev.model_dump_json(), entry.id)
            ended = ended or ev.ends_run
    # What follows the end at once (steps cancelled with their run), then the final view.
    while True:
        entries = await reader.events(run_id, cursor)
        if not entries:
            break
        for entry in entries:
            cursor = entry.id
            ev = RunEvent.of(entry)
            yield frame(ev.kind, ev.model_dump_json(), entry.id)
    try:
        view = await anyio.to_thread.run_sync(ctx.coordinator.view, run_id)
    except RunNotFound:
        return
    yield frame("end", RunOut.from_view(view).shaped(detail).model_dump_json())
