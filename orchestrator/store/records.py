"""What the store hands out: a run's record and its step runs' records."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from orchestrator.core.origin import Origin
from orchestrator.core.priorities import Priority, stored_priority
from orchestrator.core.states import RunStatus, StepStatus
from orchestrator.core.tenants import DEFAULT_TENANT, tenant_of


class LeaseMode(IntEnum):
    """What a delivered copy of a step's task may do, as ``begin_step`` decided it."""

    BEGAN = 1
    """It holds the lease and the step run moved to ``running`` (the fast path)."""
    OWNED = 0
    """It holds the lease; the caller decides (trigger rule, condition) what happens."""
    BUSY = -1
    """Another delivery holds the step run's live lease: this copy must not run it; it
    is deferred until the lease would expire (the holder may be dead)."""
    DROP = -2
    """The step run ended and its canvas went on: nothing to do."""
    SETTLE = -3
    """The step run ended but the attempt that ended it died before its canvas went on:
    this copy holds the lease and carries the canvas on."""
    GONE = -4
    """The run is not in the store (expired by retention)."""


LEASE_SETTLED = "settled"
"""A lease's flag once its step run ended and its canvas went on."""
LEASE_RESTORED = "restored"
"""A lease's flag once its message went back to the queue: the next copy takes over."""
LEASE_GIVEN = "given"
"""A lease's flag once its delivery gave it up with its step run not ended (a retry, a
throttled or slot-waiting start, a durable wait): the next copy takes over."""


@dataclass(frozen=True)
class StepRun:
    """One step's record in a run."""

    step_id: str
    status: StepStatus
    attempt: int = 0
    queued_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    worker: str | None = None
    task_id: str | None = None
    reason: str | None = None
    error: dict[str, Any] | None = None
    retry_at: float | None = None
    wait: dict[str, Any] | None = None
    """A wait step's wait (``orchestrator.core.waits.Parked.to_record``)."""
    resolution: dict[str, Any] | None = None
    """What ended a wait: an event (``event_id``, ``at``, ``data``: JSON text, ``by``) or a
    decision (``decision``, ``comment``, ``by``, ``at``)."""
    throttled_until: float | None = None
    """When the start it reserved from its rate limit's budget comes (it waits in the
    store until then); cleared when it starts."""
    decision: dict[str, Any] | None = None
    """Why it ran or was skipped, when a trigger rule other than ``all_success``, a
    condition or a handler decided (``orchestrator.core.decisions.Decision.to_record``)."""
    map: dict[str, Any] | None = None
    """A map step's items: ``count`` once expanded; ``stopped`` once too many failed;
    at its end ``failed`` and ``failures`` (the first ``core.maps.FAILURES_KEPT``: index,
    type, message)."""
    follow: dict[str, Any] | None = None
    """A map item's follow-ups, recorded with its end (``store/lua/map_step.lua``): the
    next item's index it ``handed`` out to publish, and whether it ``closes`` the map
    (its end ended the map step and completed its unit)."""
    child_runs: list[str] | None = None
    """A sub-workflow step's child runs, one per attempt, oldest first (the last one is
    the one its ``wait`` waits for); an undo step's undo run of the child it undoes."""

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to end; None until both are known."""
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at

    @classmethod
    def from_json(cls, step_id: str, raw: str | None) -> StepRun:
        """Parse a stored record (None: the step has no record yet, it is ``pending``)."""
        if raw is None:
            return cls(step_id, StepStatus.PENDING)
        d = json.loads(raw)
        fields = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        fields["status"] = StepStatus(d.get("status", "pending"))
        return cls(step_id=step_id, **{k: v for k, v in fields.items() if k != "step_id"})


@dataclass(frozen=True)
class Resumed:
    """What a new run takes from the run it resumes (see :mod:`orchestrator.core.resume`)."""

    run_id: str
    """The run it resumes."""
    records: dict[str, str]
    """Step id → the reused step's record (JSON text, ``succeeded``)."""
    outputs: dict[str, str]
    """Step id → the reused step's output (JSON text, as stored)."""


@dataclass(frozen=True)
class RunRecord:
    """A run's fields."""

    run_id: str
    workflow: str
    version: str
    status: RunStatus
    input: Any
    created_at: float
    started_at: float | None
    ended_at: float | None
    units_remaining: int
    origin: Origin = field(default_factory=Origin)
    """What started the run (runs stored before origins were recorded: ``python``)."""
    tenant: str = DEFAULT_TENANT
    """The tenant the run belongs to (runs stored before tenants: the default one)."""
    resumed_from: str | None = None
    """The run this one resumes (``orchestrator resume``), if any."""
    resumes: tuple[str, ...] = ()
    """The runs that resume this one, oldest first."""
    compensates: str | None = None
    """The run whose succeeded steps this undo run undoes, if it is one."""
    faults: str | None = None
    """Faults to inject into its step runs (JSON of ``core.simulate.Faults``; tests only,
    when ``Settings.fault_injection`` allows)."""
    priority: Priority = Priority.NORMAL
    """The band of queues its tasks go to (``orchestrator.core.priorities``; runs stored
    before priorities: ``normal``)."""
    reason: str | None = None
    """Why it is ``queued`` (what it waits for) or was ``cancelled`` at a full
    concurrency limit."""
    slot_key: str | None = None
    """The value of its workflow's concurrency key, if the workflow has a limit."""
    parent_run: str | None = None
    """The run whose sub-workflow step started this run (its child run), if any."""
    parent_step: str | None = None
    """That sub-workflow step's id."""

    @classmethod
    def from_hash(cls, run_id: str, d: dict[str, str]) -> RunRecord:
        """Parse the run hash (every field ``create_run`` writes must be there).

        Raises:
            KeyError, ValueError: the hash is partial or malformed.
        """
        return cls(
            run_id=run_id, workflow=d["workflow"], version=d["version"],
            status=RunStatus(d["status"]), input=json.loads(d["input"]),
            created_at=float(d["created_at"]), started_at=_f(d.get("started_at")),
            ended_at=_f(d.get("ended_at")), units_remaining=int(d["units_remaining"]),
            origin=Origin.model_validate_json(d["origin"]) if d.get("origin") else Origin(),
            tenant=tenant_of(d.get("tenant")),
            resumed_from=d.get("resumed_from") or None,
            resumes=tuple(json.loads(d["resumes"])) if d.get("resumes") else (),
            compensates=d.get("compensates") or None,
            faults=d.get("faults") or None,
            priority=stored_priority(d.get("priority")),
            reason=d.get("reason") or None,
            slot_key=d.get("slot_key"),
            parent_run=d.get("parent_run") or None,
            parent_step=d.get("parent_step") or None,
        )


def _f(v: Any) -> float | None:
    return None if v in (None, "") else float(v)
