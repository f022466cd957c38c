"""Following a run live, and printing its per-step table."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from orchestrator.core.priorities import Priority
from orchestrator.core.states import RunStatus, StepStatus
from orchestrator.core.subworkflows import WAIT_KIND as SUBWORKFLOW_WAIT
from orchestrator.core.waits import WaitKind
from orchestrator.store import StepRun
from orchestrator.store.fields import EVENT_STEP, Event

if TYPE_CHECKING:  # the runtime (Celery) is imported only by the commands that use it
    from orchestrator.runtime.coordinator import Coordinator, RunView

FOLLOW_BLOCK_MS = 500
"""Longest blocking read of a run's events: below the CLI's Redis timeout
(``ORCH_REDIS_TIMEOUT_S``, 1 s by default), so that a quiet run is not taken for a
server that stopped answering."""


def step_table(view: RunView) -> str:
    """A fixed-width table: step, status, attempts, duration, note (reason or error)."""
    rows = [("STEP", "STATUS", "ATTEMPT", "DURATION", "NOTE")]
    for s in view.steps:
        dur = f"{s.duration_s * 1000:.0f} ms" if s.duration_s is not None else "-"
        note = s.reason or (s.error or {}).get("message") or wait_note(s)
        if s.step_id in view.items:
            note = f"{items_note(view.items[s.step_id])} {note}".rstrip()
        rows.append((s.step_id, s.status.value, str(s.attempt or "-"), dur, str(note)[:90]))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
             for r in rows]
    run = view.run
    total = f"{(run.ended_at - run.created_at):.2f} s" if run.ended_at else \
        "waiting" if run.status is RunStatus.QUEUED else "running"
    band = f", priority {run.priority.value}" if run.priority is not Priority.NORMAL else ""
    lines.append(f"run {run.run_id}: {run.status.value} ({total}), started by "
                 f"{run.origin.describe()}{band}")
    for s in view.steps:
        if s.decision:
            lines.append(f"  decided {s.step_id}: {decision_line(s.decision)}")
    if run.reason:  # queued for, or cancelled at, a concurrency limit
        place = f" (position {view.queue_position})" if view.queue_position else ""
        lines.append(f"{run.status.value}: {run.reason}{place}")
    if run.compensates:
        lines.append(f"undoes run {run.compensates}")
    if run.parent_run:
        lines.append(f"child run of run {run.parent_run} (step {run.parent_step})")
    for s in view.steps:
        if s.child_runs:
            lines.append(f"  child runs of {s.step_id}: {', '.join(s.child_runs)}")
    if run.status.value.startswith("compensat"):
        lines.append(f"undo run: {run.run_id}.undo")
    if run.resumed_from:
        lines.append(f"resumes run {run.resumed_from}")
    if run.resumes:
        lines.append(f"resumed by run(s) {', '.join(run.resumes)}")
    if view.callback:
        lines.append(callback_line(view.callback))
    return "\n".join(lines)


_ITEM_ORDER = ("succeeded", "failed", "running", "retrying", "queued", "cancelled",
               "skipped", "pending")


def items_note(counts: dict[str, int]) -> str:
    """A map step's items by status: ``[3120 succeeded, 16 running, 6864 pending]``."""
    order = [k for k in _ITEM_ORDER if counts.get(k)] + sorted(
        k for k in counts if k not in _ITEM_ORDER and counts[k])
    return "[" + ", ".join(f"{counts[k]} {k}" for k in order) + "]"


def items_table(items: list[StepRun], outputs: dict[str, Any]) -> str:
    """A map step's items, one line each: item, status, attempt, duration, output or
    error."""
    rows = [("ITEM", "STATUS", "ATTEMPT", "DURATION", "OUTPUT / NOTE")]
    for s in items:
        dur = f"{s.duration_s * 1000:.0f} ms" if s.duration_s is not None else "-"
        note = (s.error or {}).get("message") or s.reason or (
            json.dumps(outputs[s.step_id]) if s.step_id in outputs else "")
        rows.append((s.step_id, s.status.value, str(s.attempt or "-"), dur, str(note)[:90]))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True))
                     + "  " + r[4] for r in rows)


def decision_line(d: dict[str, Any]) -> str:
    """A step's decision trail on one line: the rule and the parents it read, then the
    condition, the values it read and its outcome."""
    parents = ", ".join(f"{p}={st}" for p, st in (d.get("parents") or {}).items())
    text = f"rule {d.get('rule')} ({parents or 'no parents'})"
    if d.get("when") is not None:
        values = ", ".join(f"{k}={json.dumps(v)}" for k, v in (d.get("values") or {}).items())
        text += f"; when {d['when']!r} read {values or 'nothing'} -> " \
            f"{str(d.get('outcome')).lower()}"
    return text + ("; ran" if d.get("runs") else "; skipped")


def _at(ts: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(ts)))


def wait_note(s: StepRun) -> str:
    """What a wait step waits for, or what ended its wait ("" for other steps)."""
    w, res = s.wait or {}, s.resolution or {}
    if res.get("decision"):
        comment = f": {res['comment']}" if res.get("comment") else ""
        return f"{res['decision']} by {res.get('by') or '?'}{comment}"
    if res.get("event_id"):
        return f"event {res['event_id']}" + (f" from {res['by']}" if res.get("by") else "")
    if s.status is not StepStatus.WAITING or not w:
        return ""
    timeout = f" (timeout {_at(w['timeout_at'])})" if w.get("timeout_at") else ""
    if w.get("kind") == WaitKind.EVENT.value:
        return f"waits for event {w.get('key')!r}{timeout}"
    if w.get("kind") == SUBWORKFLOW_WAIT:
        return f"waits for run {w.get('run')}"
    if w.get("kind") == WaitKind.APPROVAL.value:
        prompt = f": {w['prompt']}" if w.get("prompt") else ""
        return f"waits for approval{prompt}{timeout}"
    return f"sleeps until {_at(w['due_at'])}" if w.get("due_at") else ""


def callback_line(reg: dict[str, Any]) -> str:
    """One line on a run's callback: where to, and how its tries went."""
    tries = reg.get("attempts") or []
    last = tries[-1] if tries else None
    if last is None:
        state = "waiting for the run to end"
    elif last.get("ok"):
        state = f"delivered (try {last.get('attempt')}, answer {last.get('status_code')})"
    elif reg.get("done"):
        state = f"given up after try {last.get('attempt')}: {last.get('error')}"
    else:
        state = f"retrying (try {last.get('attempt')} failed: {last.get('error')})"
    return f"callback to {reg.get('url')}: {state}"


def follow(coord: Coordinator, run_id: str, emit: Callable[[str], None],
           timeout_s: float | None = None) -> RunView:
    """Print each step transition as it happens until the run ends; return the final view.

    Reads the run's event stream (blocking reads, no polling loop of the run itself).
    """
    last = "0-0"
    start = time.monotonic()
    block_ms = max(10, min(FOLLOW_BLOCK_MS, int(coord.settings.redis_timeout_s * 500)))
    def show(block: int | None) -> int:
        nonlocal last
        got = coord.store.events(run_id, after=last, block_ms=block)
        for eid, fields in got:
            last = eid
            ev = Event.parse(eid, fields)
            t = time.strftime("%H:%M:%S", time.localtime(ev.ts))
            if ev.kind == EVENT_STEP:
                attempt = f" (attempt {ev.attempt})" if ev.attempt else ""
                emit(f"{t}  {ev.step or '':<28} {ev.status}{attempt}")
            else:
                emit(f"{t}  run {ev.status}")
        return len(got)

    while True:
        show(block_ms)
        run = coord.store.run(run_id)
        if run.status.terminal:
            # the run ended after the read above: its last events (the run's end is
            # recorded with its event, in one script) are in the stream now
            while show(None):
                pass
            return coord.view(run_id)
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            return coord.view(run_id)
