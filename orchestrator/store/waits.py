"""Durable waits in the store: parked step runs, events by key, approval decisions.

A parked step run is ``waiting``; its next task message waits in a store timer (the
``orch:timers`` schedule that retries use, fired by the reaper), due when its sleep ends
or its timeout passes, or never.  An event (:meth:`WaitStore.send_event`) or a decision
(:meth:`WaitStore.decide`) records the wait's *resolution* in the step record and makes
the timer due at once.  Every change is one Lua script (``lua/park_wait.lua``,
``send_event.lua``, ``decide_wait.lua``), so an event that arrives while a step parks is
never lost: it is either found by the park (the key's latest event is kept for the
event retention) or finds the step among the key's waiters.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

from orchestrator.core.states import StepStatus, held_sources, step_sources
from orchestrator.core.tenants import DEFAULT_TENANT, tenant_of
from orchestrator.store import scripts
from orchestrator.store.keys import Keys
from orchestrator.store.records import StepRun
from orchestrator.store.runs import WAKE_TIMER_PREFIX, lease_member

NEVER_MS = 2**52
"""The due time (ms) of a timer that only an event or a decision makes due."""


WAIT_TIMER_PREFIX = WAKE_TIMER_PREFIX


def wait_timer_id(run_id: str, step_id: str) -> str:
    """The timer id of a waiting step run (one per step run)."""
    return WAIT_TIMER_PREFIX + lease_member(run_id, step_id)


class WaitStore:
    """Waits on one Redis client (decoded responses)."""

    def __init__(self, client: Any, keys: Keys, retention_s: int) -> None:
        """Args:
            retention_s: the run retention; a timer's message outlives its due time by
                at least this long.
        """
        self._r = client
        self.keys = keys
        self.retention_s = retention_s

    def now(self) -> float:
        """Redis' clock, unix seconds (every wait is judged by it)."""
        secs, micros = self._r.time()
        return int(secs) + int(micros) / 1e6

    def park(self, run_id: str, step_id: str, token: str, patch: dict[str, Any],
             timer_at: float | None, message: str, event_key: str | None) -> tuple[int, bool]:
        """Move the step run to ``waiting`` with ``patch`` (fenced by ``token``, whose lease
        it gives up) and hold ``message``, its next task, in a timer due at ``timer_at``
        (unix s by Redis' clock; None: only an event or a decision wakes it).

        Returns:
            (1 moved / 0 refused by the table / -1 no run / -2 fenced, whether the wait
            is already resolved: its timer is then due now).
        """
        k = self.keys
        tid = wait_timer_id(run_id, step_id)
        ttl = 0 if timer_at is None else int(max(0.0, timer_at - time.time())) \
            + self.retention_s
        key = event_key or ""
        tenant = self._tenant(run_id) if key else DEFAULT_TENANT
        res = scripts.PARK_WAIT(
            self._r,
            [k.run(run_id), k.steps(run_id), k.events(run_id), k.outputs(run_id), k.metrics(),
             k.leases(run_id), k.lease_index(), k.timers(), k.timer(tid),
             k.wait_event(key, tenant), k.wait_waiters(key, tenant)],
            [step_id, ",".join(s.value for s in (held_sources if token else step_sources)(
                StepStatus.WAITING)),
             json.dumps(patch), time.time(), token, lease_member(run_id, step_id), tid,
             "" if timer_at is None else int(timer_at * 1000), message, ttl, key, NEVER_MS])
        return int(res[0]), bool(int(res[2]))

    def _tenant(self, run_id: str) -> str:
        """The run's tenant: event keys are scoped to it."""
        return tenant_of(self._r.hget(self.keys.run(run_id), "tenant"))

    def send_event(self, key: str, data: Any, event_id: str | None, by: str,
                   retention_s: int, tenant: str = DEFAULT_TENANT) -> tuple[str, bool, int]:
        """Send an event of ``tenant``: every step of the tenant's runs waiting for
        ``key`` gets ``data`` as its output, and one that starts waiting for it within
        ``retention_s`` still gets it (the key's latest event is kept).  Another tenant's
        steps waiting for the same key never see it.

        Returns:
            (the event id, False if it repeats the key's latest event id, how many waiting
            steps it resumed).
        """
        k = self.keys
        eid = event_id or uuid.uuid4().hex
        before, after = k.steps_parts()
        new, n = scripts.SEND_EVENT(
            self._r, [k.wait_event(key, tenant), k.wait_waiters(key, tenant), k.timers()],
            [eid, time.time(), json.dumps(data), by, retention_s, before, after,
             WAIT_TIMER_PREFIX, key])
        return eid, bool(int(new)), int(n)

    def latest_event(self, key: str, tenant: str = DEFAULT_TENANT) -> dict[str, Any] | None:
        """The key's latest event (``id``, ``at``, ``data``, ``by``) if still kept."""
        raw = self._r.hgetall(self.keys.wait_event(key, tenant))
        if not raw:
            return None
        return {"id": raw.get("id"), "at": float(raw.get("at") or 0),
                "data": json.loads(raw.get("data") or "null"), "by": raw.get("by")}

    def decide(self, run_id: str, step_id: str, decision: str, comment: str,
               by: str) -> tuple[int, StepStatus]:
        """Record a decision on a step that waits for approval (the caller checked that
        it is an approval step).

        Returns:
            (1 recorded / 0 it does not wait for a decision / 2 already decided / -1 no
            run, the step's status).
        """
        k = self.keys
        resolution = {"decision": decision, "comment": comment, "by": by, "at": time.time()}
        code, status = scripts.DECIDE_WAIT(
            self._r, [k.run(run_id), k.steps(run_id), k.timers()],
            [step_id, json.dumps(resolution), wait_timer_id(run_id, step_id)])
        return int(code), StepStatus(status or StepStatus.PENDING.value)

    def wake(self, run_id: str, step_id: str, resolution: dict[str, Any]) -> int:
        """Record ``resolution`` on a waiting step run that has none yet and make its
        timer due now (a step waiting for a run whose end came before it parked).

        Returns:
            As :meth:`decide`'s code.
        """
        k = self.keys
        code, _ = scripts.DECIDE_WAIT(
            self._r, [k.run(run_id), k.steps(run_id), k.timers()],
            [step_id, json.dumps(resolution), wait_timer_id(run_id, step_id)])
        return int(code)

    def done(self, run_id: str, step_id: str, event_key: str | None) -> None:
        """A wait is over: the step no longer counts among the key's waiters."""
        if event_key:
            self._r.srem(self.keys.wait_waiters(event_key, self._tenant(run_id)),
                         lease_member(run_id, step_id))

    def end(self, run_id: str, records: Sequence[StepRun]) -> int:
        """End the waits of ``records`` (a cancelled run's): their timers and messages are
        dropped and they leave their keys' waiters.  Returns how many there were."""
        waiting = [r for r in records if r.wait is not None]
        if not waiting:
            return 0
        k = self.keys
        tenant = self._tenant(run_id)
        p = self._r.pipeline(transaction=False)
        for rec in waiting:
            tid = wait_timer_id(run_id, rec.step_id)
            p.zrem(k.timers(), tid)
            p.delete(k.timer(tid))
            key = (rec.wait or {}).get("key")
            if key:
                p.srem(k.wait_waiters(str(key), tenant), lease_member(run_id, rec.step_id))
        p.execute()
        return len(waiting)
