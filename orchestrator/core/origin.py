"""What started a run: a caller (API, CLI, broker, Python), a schedule's fire or an event.

Every run records its origin in the store; ``status``, the API and the run's events show
it.  Stored origins are read leniently (``extra="ignore"``): an origin written by a newer
release with more fields stays readable by this one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class OriginKind(StrEnum):
    """Who or what started a run."""

    PYTHON = "python"
    """``Coordinator.submit`` called from Python (the default)."""
    CLI = "cli"
    API = "api"
    BROKER = "broker"
    """The ``orchestrator.submit`` task, sent by any Celery client."""
    SCHEDULE = "schedule"
    EVENT = "event"
    COMPENSATION = "compensation"
    """An undo run, started when the run it undoes failed or was cancelled with
    compensation (``orchestrator.core.compensation``)."""
    WORKFLOW = "workflow"
    """A child run, started by a sub-workflow step of its parent run
    (``orchestrator.core.subworkflows``; ``by`` names the parent run and step)."""


class Origin(BaseModel):
    """What started a run, with what identifies it: the API token's name, the schedule
    and its fire time, the trigger and the event's id."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: OriginKind = OriginKind.PYTHON
    by: str | None = None
    """Who: the API token's name, or the user who ran the CLI."""
    schedule: str | None = None
    fire_time: float | None = None
    """The fire's nominal time (epoch seconds), not when it was handled."""
    trigger: str | None = None
    event_id: str | None = None
    tenant: str | None = None
    """The tenant the run belongs to (``orchestrator.core.tenants``; None: the default
    one): the API token's, or the schedule's or the trigger's."""

    def describe(self) -> str:
        """One line, e.g. ``schedule nightly at 2026-12-02T03:00:00Z``."""
        parts = [self.kind.value]
        if self.schedule:
            parts.append(self.schedule)
        if self.fire_time is not None:
            when = datetime.fromtimestamp(self.fire_time, UTC)
            parts.append("at " + when.isoformat(timespec="seconds").replace("+00:00", "Z"))
        if self.trigger:
            parts.append(f"trigger {self.trigger}")
        if self.event_id:
            parts.append(f"event {self.event_id}")
        if self.by:
            parts.append(f"by {self.by}")
        return " ".join(parts)

    def to_json(self) -> str:
        """The stored form (fields left unset are left out)."""
        return self.model_dump_json(exclude_none=True)
