"""Fire times of a schedule, and what the scheduler does with them: pure functions.

A fire time is a whole Unix second.  Interval schedules fire at ``anchor + k * every_s``.
Cron schedules are read in their time zone with ``cronsim`` (Debian cron's rules across
daylight-saving changes):

* a job at a fixed time (minute and hour fields without ``*``) whose local time does not
  exist on the day clocks go forward (02:30 in Europe/Paris on the last Sunday of March)
  fires at the first moment after the gap (03:00); one whose local time happens twice
  when clocks go back fires once, at the first of the two;
* a job with ``*`` in its minute or hour field runs in real time: it fires at the local
  times that exist, and in both passes of an hour that happens twice.

Fire times are strictly increasing: no instant is fired twice.

:func:`plan` decides, for one schedule that a scheduler claimed, which fires start now
(the catch-up policy) and the next fire; :func:`overlap_action` decides what one fire does
while the schedule's previous run is running.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

from cronsim import CronSim

from orchestrator.core.schedules import CatchUp, CatchUpPolicy, Overlap, Schedule

MISSED_COUNT_CAP = 1000
""":func:`plan` counts missed fires up to this many (past it, ``missed`` is a floor)."""


def _imaginary(dt: datetime) -> bool:
    """True for a local time that does not exist (skipped by a clock change)."""
    return dt.replace(fold=0).timestamp() != dt.replace(fold=1).timestamp() \
        and datetime.fromtimestamp(dt.timestamp(), dt.tzinfo).replace(tzinfo=None) \
        != dt.replace(tzinfo=None)


def _cron(expr: str, zone: ZoneInfo, start: int, reverse: bool) -> Iterator[int]:
    """Cron fire times strictly after ``start`` (or at/before it, descending)."""
    origin = datetime.fromtimestamp(start + 1 if reverse else start, zone)
    last = start + 1 if reverse else start
    for dt in CronSim(expr, origin, reverse=reverse):
        if _imaginary(dt):
            continue  # a '*' job at a local time that does not exist today
        t = math.floor(dt.timestamp())
        if (t >= last) if reverse else (t <= last):
            continue  # a repeated local time, or the start itself
        last = t
        yield t


def _interval(every: int, anchor: int, start: int, reverse: bool) -> Iterator[int]:
    if reverse:
        t = anchor + ((start - anchor) // every) * every
        while t >= anchor:
            yield t
            t -= every
        return
    k = max(0, (start - anchor) // every + 1)
    t = anchor + k * every
    while True:
        yield t
        t += every


def after(s: Schedule, t: int) -> Iterator[int]:
    """Fire times strictly after ``t`` (Unix s), ascending, without end."""
    if s.every_s is not None:
        return _interval(s.every_s, s.anchor, t, reverse=False)
    assert s.cron is not None
    return _cron(s.cron, s.zone, t, reverse=False)


def at_or_before(s: Schedule, t: int) -> Iterator[int]:
    """Fire times at or before ``t``, descending."""
    if s.every_s is not None:
        return _interval(s.every_s, s.anchor, t, reverse=True)
    assert s.cron is not None
    return _cron(s.cron, s.zone, t, reverse=True)


def next_fire(s: Schedule, t: float) -> int | None:
    """The first fire time strictly after ``t`` (None: the cron expression never fires
    again within cronsim's 50-year horizon)."""
    return next(after(s, math.floor(t)), None)


def upcoming(s: Schedule, t: float, count: int) -> list[int]:
    """The next ``count`` fire times strictly after ``t``."""
    out: list[int] = []
    for ft in after(s, math.floor(t)):
        if len(out) >= count:
            break
        out.append(ft)
    return out


@dataclass(frozen=True)
class Plan:
    """What to do with one claimed schedule now.

    Attributes:
        fires: fire times to start now (ascending): the on-time ones and the missed ones
            the catch-up policy keeps.
        missed: fires dropped by the catch-up policy (a floor past ``MISSED_COUNT_CAP``).
        next: the next fire time after now (None: never again).
    """

    fires: tuple[int, ...]
    missed: int
    next: int | None
    late: tuple[int, ...] = field(default=())
    """The missed fires that are run (a subset of ``fires``)."""


def plan(s: Schedule, next_due: int, now: float, grace_s: float,
         catch_up: CatchUp | None = None) -> Plan:
    """Which fires start now, by the catch-up policy.

    Args:
        s: the schedule.
        next_due: its earliest fire not yet handled (Unix s).
        now: the time now (Redis' clock, Unix s).
        grace_s: a fire handled at most this long after its time is on time and always
            runs; an older one is *missed* and follows the catch-up policy.
        catch_up: default ``s.catch_up``.

    Returns:
        The fires to start (ascending), how many were dropped, and the next fire.
    """
    policy = catch_up or s.catch_up
    keep = {CatchUpPolicy.SKIP: 0, CatchUpPolicy.LATEST: 1,
            CatchUpPolicy.ALL: policy.max}[policy.policy]
    on_time: list[int] = []
    kept: list[int] = []
    missed = 0
    for t in at_or_before(s, math.floor(now)):
        if t < next_due:
            break
        if now - t <= grace_s:
            on_time.append(t)
            continue
        if len(kept) < keep:
            kept.append(t)
        else:
            missed += 1
            if missed >= MISSED_COUNT_CAP:
                break
    if policy.policy is CatchUpPolicy.LATEST and on_time and kept:
        missed += len(kept)  # the latest fire is an on-time one: it is the one that runs
        kept = []
    fires = tuple(sorted(on_time + kept))
    return Plan(fires=fires, missed=missed, next=next_fire(s, now),
                late=tuple(sorted(kept)))


class Action(StrEnum):
    """What one fire does, by the overlap policy."""

    START = "start"
    SKIP = "skip"
    CANCEL_AND_START = "cancel_and_start"
    WAIT = "wait"


def overlap_action(policy: Overlap, previous_running: bool) -> Action:
    """What a fire does when the schedule's previous run is (or is not) still running."""
    if not previous_running or policy is Overlap.ALLOW:
        return Action.START
    return {Overlap.SKIP: Action.SKIP, Overlap.CANCEL_PREVIOUS: Action.CANCEL_AND_START,
            Overlap.QUEUE: Action.WAIT}[policy]


def display(t: int | None, zone: str = "UTC") -> str:
    """A fire time for people: ISO 8601 in UTC, and the local time when the zone is not
    UTC, e.g. ``2026-12-02T02:00:00Z (2026-12-02T03:00:00+01:00)``; ``never`` for None."""
    if t is None:
        return "never"
    utc = datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")
    if zone == "UTC":
        return utc
    return f"{utc} ({datetime.fromtimestamp(t, ZoneInfo(zone)).isoformat()})"
