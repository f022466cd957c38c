"""Schedules: when a workflow starts by itself, and with what input.

A :class:`Schedule` names a workflow and either a cron expression read in an IANA time
zone (``cron: "0 3 * * *"``, ``timezone: Europe/Paris``) or an interval (``every_s: 60``,
fires at ``anchor + k * every_s``, Unix seconds).  The run input is a JSON value
(``input``) or a CEL expression (``input_expr``) over the fire, evaluated at each fire:

* ``fire``: ``{"time": <Unix s>, "iso": "2026-12-02T02:00:00Z", "local":
  "2026-12-02T03:00:00+01:00", "date": "2026-12-02", "year", "month", "day", "hour",
  "minute", "second", "weekday" (1 Monday .. 7 Sunday), "timezone": "Europe/Paris"}``;
  ``date`` and the calendar fields are in the schedule's zone (UTC for intervals unless
  ``timezone`` says otherwise);
* ``schedule``: ``{"id", "workflow"}``.

Example: ``input_expr: '{"day": fire.date}'``.  Every fire's run id is
:func:`run_id` (``sched-<schedule>-<fire time>``), so a fire starts at most one run.

A schedule is declared beside a workflow (``schedules:`` in YAML, ``Workflow.schedule``
in the DSL) or added through the CLI or the API; it is no part of the workflow's content
and never changes :attr:`WorkflowDef.version`.  Everything here is pure: the store is
:mod:`orchestrator.store.schedules`, the fire times :mod:`orchestrator.core.fires`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, model_validator

from orchestrator.core.expressions import Expression, parse
from orchestrator.core.models import WORKFLOW_NAME
from orchestrator.errors import ConditionError, ScheduleInvalid

SCHEDULE_ID = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$"
VARIABLES = frozenset({"fire", "schedule"})
"""What ``input_expr`` may read."""
RUN_ID_PREFIX = "sched-"
MAX_CATCH_UP = 1000


class Overlap(StrEnum):
    """What a fire does while the previous run of its schedule is still running."""

    ALLOW = "allow"
    """Start anyway: runs of one schedule may overlap."""
    SKIP = "skip"
    """Start nothing; the fire is counted as skipped."""
    CANCEL_PREVIOUS = "cancel_previous"
    """Cancel the previous run, then start."""
    QUEUE = "queue"
    """Wait, in fire order, and start when the previous run ends."""


class CatchUpPolicy(StrEnum):
    """What becomes of fires missed while no scheduler could fire them."""

    SKIP = "skip"
    LATEST = "latest"
    ALL = "all"


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CatchUp(Frozen):
    """Missed fires (handled more than ``ORCH_SCHEDULER_GRACE_S`` after their time):
    ``skip`` runs none, ``latest`` runs the most recent once (unless an on-time fire
    runs), ``all`` runs each, the most recent ``max`` at most."""

    policy: CatchUpPolicy = CatchUpPolicy.LATEST
    max: int = Field(10, ge=1, le=MAX_CATCH_UP, description="With policy all: the most "
                     "missed fires run after one outage (the most recent ones).")


class Schedule(Frozen):
    """One schedule: the frozen model YAML, the DSL, the CLI and the API all produce."""

    id: Annotated[str, Field(pattern=SCHEDULE_ID)]
    workflow: Annotated[str, Field(pattern=WORKFLOW_NAME)]
    cron: str | None = Field(None, description="Cron expression, 5 fields (or 6 with "
                             "seconds first), read in `timezone`.")
    timezone: str = Field("UTC", description="IANA time zone of `cron` and of the fire's "
                          "calendar fields, e.g. Europe/Paris.")
    every_s: int | None = Field(None, ge=1, description="Interval in seconds (instead of "
                                "cron).")
    anchor: int = Field(0, ge=0, description="With every_s: fires at anchor + k * every_s "
                        "(Unix seconds).")
    input: JsonValue = Field(None, description="The run input (JSON).")
    input_expr: str | None = Field(None, description="CEL over `fire` and `schedule` that "
                                   "gives the run input, instead of `input`.")
    overlap: Overlap = Overlap.SKIP
    catch_up: CatchUp = Field(default_factory=CatchUp)
    description: str = ""

    @model_validator(mode="after")
    def _one_timing(self) -> Schedule:
        if (self.cron is None) == (self.every_s is None):
            raise ValueError("give exactly one of cron (e.g. '0 3 * * *') and every_s "
                             "(e.g. 60)")
        if self.input_expr is not None and self.input is not None:
            raise ValueError("give input (a JSON value) or input_expr (CEL), not both")
        return self

    @property
    def zone(self) -> ZoneInfo:
        """The schedule's time zone."""
        return ZoneInfo(self.timezone)

    def timing(self) -> dict[str, Any]:
        """What decides the fire times: a change of these re-computes the next fire."""
        return {"cron": self.cron, "timezone": self.timezone, "every_s": self.every_s,
                "anchor": self.anchor}

    def describe(self) -> str:
        """One line, e.g. ``cron '0 3 * * *' Europe/Paris`` or ``every 60 s``."""
        if self.cron is not None:
            return f"cron '{self.cron}' {self.timezone}"
        return f"every {self.every_s} s" + (f" from {self.anchor}" if self.anchor else "")

    def input_for(self, fire_time: int) -> Any:
        """The run input of the fire at ``fire_time`` (Unix s).

        Raises:
            ScheduleInvalid: ``input_expr`` failed on this fire.
        """
        if self.input_expr is None:
            return self.input
        try:
            return _expression(self.input_expr).value(
                {"fire": fire_context(fire_time, self.zone),
                 "schedule": {"id": self.id, "workflow": self.workflow}})
        except ConditionError as exc:
            raise ScheduleInvalid(f"schedule {self.id!r}: input_expr failed: {exc}. Fix "
                                  "the expression (it reads fire and schedule).") from None


def _expression(text: str) -> Expression:
    return parse(text, VARIABLES)


def fire_context(fire_time: int, zone: ZoneInfo) -> dict[str, Any]:
    """What ``input_expr`` sees as ``fire`` (see the module docstring)."""
    utc = datetime.fromtimestamp(fire_time, UTC)
    local = utc.astimezone(zone)
    return {"time": fire_time, "iso": utc.isoformat().replace("+00:00", "Z"),
            "local": local.isoformat(), "date": local.date().isoformat(),
            "year": local.year, "month": local.month, "day": local.day,
            "hour": local.hour, "minute": local.minute, "second": local.second,
            "weekday": local.isoweekday(), "timezone": zone.key}


def run_id(schedule: str, fire_time: int) -> str:
    """The run id of one fire: ``sched-<schedule>-<fire time, Unix s>``, the same in every
    scheduler, so a fire starts at most one run."""
    return f"{RUN_ID_PREFIX}{schedule}-{fire_time}"


def check(s: Schedule, source: str = "") -> Schedule:
    """Check what the model alone cannot: the zone exists, the cron expression parses and
    fires at all, ``input_expr`` parses.  Returns ``s``.

    Raises:
        ScheduleInvalid: every problem, each with its fix, in one message.
    """
    problems = []
    zone: ZoneInfo | None = None
    try:
        zone = ZoneInfo(s.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"timezone {s.timezone!r} is not an IANA zone; write e.g. "
                        "Europe/Paris or UTC")
    if s.cron is not None and zone is not None:
        try:
            next(iter(CronSim(s.cron, datetime.now(zone))))
        except CronSimError as exc:
            problems.append(f"cron {s.cron!r}: {exc}; write 5 fields (minute hour day "
                            "month weekday), e.g. '0 3 * * *'")
        except StopIteration:
            problems.append(f"cron {s.cron!r} never fires; fix its day and month")
    if s.input_expr is not None:
        try:
            _expression(s.input_expr)
        except ConditionError as exc:
            problems.append(f"input_expr: {exc}; it may read fire and schedule")
    if problems:
        where = f"{source}: " if source else ""
        raise ScheduleInvalid(f"{where}schedule {s.id!r}: " + "; ".join(problems))
    return s


def from_data(data: Any, workflow: str | None = None, source: str = "<data>") -> Schedule:
    """Build and check a schedule from plain data (YAML, an API body, CLI options).

    Args:
        workflow: the workflow it is declared beside (fills ``workflow`` when left out).

    Raises:
        ScheduleInvalid: every field problem, with its location, in one message.
    """
    if not isinstance(data, dict):
        raise ScheduleInvalid(f"{source}: a schedule must be a mapping with id, workflow "
                              "and cron or every_s")
    if workflow is not None:
        data = {"workflow": workflow, **data}
    try:
        s = Schedule.model_validate(data)
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "schedule"
            parts.append(f"{where}: {str(err['msg']).removeprefix('Value error, ')}")
        raise ScheduleInvalid(f"{source}: invalid schedule: " + "; ".join(parts)
                              + ". Fix the fields as the messages say.") from None
    return check(s, "" if source == "<data>" else source)


def parse_list(items: Any, workflow: str, source: str) -> tuple[Schedule, ...]:
    """The ``schedules:`` list declared beside a workflow.

    Raises:
        ScheduleInvalid: it is not a list, or an item is invalid.
    """
    if items is None:
        return ()
    if not isinstance(items, list):
        raise ScheduleInvalid(f"{source}: schedules must be a list of schedules")
    return tuple(from_data(item, workflow, f"{source}: schedules.{i}")
                 for i, item in enumerate(items))


SourceKind = Literal["declared", "api"]
