"""Schedules in Redis: their definitions, their state, and the due index schedulers claim.

Each schedule is one hash (:meth:`Keys.schedule`); the active ones are in one sorted set
(:meth:`Keys.schedules_due`) scored by when a scheduler must look at them.  Schedulers
coordinate through that set alone, never through a lock: :meth:`ScheduleStore.claim`
(one Lua script) moves each due schedule's score ahead by the claim's length, so two
schedulers never handle one schedule at once, and one that dies leaves its claims to
expire; :meth:`ScheduleStore.advance` records the outcome only if the schedule was not
changed meanwhile (its generation).  Every change goes through a script, so edits,
pauses and claims are atomic against each other.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from orchestrator.core.schedules import Schedule, SourceKind
from orchestrator.core.tenants import DEFAULT_TENANT, tenant_of
from orchestrator.errors import ScheduleConflict, ScheduleNotFound
from orchestrator.store import scripts
from orchestrator.store.keys import Keys

PUT = scripts.SCHEDULE_PUT
PAUSE = scripts.SCHEDULE_PAUSE
CLAIM = scripts.SCHEDULE_CLAIM
ADVANCE = scripts.SCHEDULE_ADVANCE


@dataclass(frozen=True)
class ScheduleState:
    """A stored schedule: its definition and what the schedulers recorded."""

    spec: Schedule
    source: SourceKind
    paused: bool
    next: int | None
    """Its earliest fire not yet handled (Unix s); None: it never fires again."""
    gen: int
    last_fire: int | None = None
    last_run: str | None = None
    queued: tuple[int, ...] = ()
    started: int = 0
    skipped: int = 0
    missed: int = 0
    failed: int = 0
    last_error: str = ""
    updated_at: float = 0.0
    tenant: str = DEFAULT_TENANT
    """Whose it is: the tenant of the API token that added it (declared ones, and
    those the CLI added: the default tenant)."""

    @classmethod
    def from_hash(cls, d: dict[str, str]) -> ScheduleState:
        """Read a stored hash (fields a newer release added are ignored)."""
        def num(name: str) -> int:
            return int(float(d.get(name) or 0))
        return cls(spec=Schedule.model_validate_json(d["spec"]),
                   source="declared" if d.get("source") == "declared" else "api",
                   paused=d.get("paused") == "1",
                   next=int(float(d["next"])) if d.get("next") else None,
                   gen=num("gen"),
                   last_fire=int(float(d["last_fire"])) if d.get("last_fire") else None,
                   last_run=d.get("last_run") or None,
                   queued=tuple(json.loads(d.get("waiting_fires") or "[]")),
                   started=num("fires_started"), skipped=num("fires_skipped"),
                   missed=num("fires_missed"), failed=num("fires_failed"),
                   last_error=d.get("last_error", ""),
                   updated_at=float(d.get("updated_at") or 0),
                   tenant=tenant_of(d.get("tenant")))

    def as_json(self) -> dict[str, Any]:
        """JSON data for the CLI and the API."""
        return {"schedule": self.spec.model_dump(mode="json", exclude_defaults=False),
                "source": self.source, "paused": self.paused, "next_fire": self.next,
                "last_fire": self.last_fire, "last_run": self.last_run,
                "queued": list(self.queued), "started": self.started,
                "skipped": self.skipped, "missed": self.missed, "failed": self.failed,
                "last_error": self.last_error or None}


@dataclass(frozen=True)
class Claim:
    """A schedule a scheduler claimed: what it needs to fire it."""

    id: str
    spec_json: str
    next: int
    gen: str
    last_run: str | None
    queued: tuple[int, ...]
    spec: Schedule | None = field(default=None, compare=False)
    """The parsed spec (None: it does not parse in this release)."""


@dataclass(frozen=True)
class ClaimBatch:
    """What one :meth:`ScheduleStore.claim` returned."""

    now: float
    """Redis' clock (Unix s) when the claim was made."""
    claims: list[Claim]
    earliest: float | None
    """When the earliest schedule left is due (Unix s of Redis' clock), if any."""


@dataclass(frozen=True)
class Outcome:
    """What a scheduler did with one claim (see :meth:`ScheduleStore.advance`)."""

    next: int | None
    due_ms: int | None
    last_fire: int | None = None
    last_run: str | None = None
    queued: Sequence[int] = ()
    started: int = 0
    skipped: int = 0
    missed: int = 0
    failed: int = 0
    last_error: str = ""


class ScheduleStore:
    """Schedules in Redis.  Thread-safe as redis-py's client is."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._r: Any = client
        self.keys = keys

    def put(self, spec: Schedule, source: SourceKind, next_fire: int | None,
            replace: bool = False, tenant: str = DEFAULT_TENANT) -> int | None:
        """Add a schedule of ``tenant``, or replace one (``replace``) of the same tenant.

        Args:
            next_fire: its first fire if it is new or its timing changed; an edit that
                keeps the timing keeps the stored next fire (no fire is dropped).

        Returns:
            The stored next fire.

        Raises:
            ScheduleConflict: the id is taken and ``replace`` is false, or it is another
                tenant's; or the schedule is declared beside its workflow and ``source``
                is not ``declared``.
        """
        k = self.keys
        timing = json.dumps(spec.timing(), sort_keys=True)
        ok, value = PUT(self._r, [k.schedule(spec.id), k.schedules(), k.schedules_due()],
                        [spec.id, spec.model_dump_json(), timing, source,
                         "" if next_fire is None else str(next_fire),
                         "1" if replace else "0",
                         "" if tenant == DEFAULT_TENANT else tenant])
        if int(ok) == 0:
            raise ScheduleConflict(f"schedule {spec.id!r} exists; replace it (`orchestrator "
                                   "schedule add --replace`, PUT /v1/schedules/<id>) or "
                                   "choose another id")
        if int(ok) < 0:
            raise ScheduleConflict(f"schedule {spec.id!r} is declared beside workflow "
                                   f"{spec.workflow!r}; change it in the workflow's "
                                   "schedules: (YAML) or Workflow.schedule (DSL), or pick "
                                   "another id")
        return int(float(value)) if value else None

    def get(self, schedule_id: str) -> ScheduleState:
        """The stored schedule.

        Raises:
            ScheduleNotFound: no schedule has this id.
        """
        d = self._r.hgetall(self.keys.schedule(schedule_id))
        if not d or "spec" not in d:
            raise self.missing(schedule_id)
        return ScheduleState.from_hash(d)

    @staticmethod
    def missing(schedule_id: str) -> ScheduleNotFound:
        """The error of a schedule that is not there (the API answers it, too, for
        another tenant's: the two must not differ)."""
        return ScheduleNotFound(f"no schedule {schedule_id!r}; `orchestrator schedule "
                                "list` shows them")

    def tenant(self, schedule_id: str) -> str | None:
        """The schedule's tenant, or None when there is no such schedule."""
        row = self._r.hmget(self.keys.schedule(schedule_id), "spec", "tenant")
        return None if row[0] is None else tenant_of(row[1])

    def ids(self) -> list[str]:
        """Every schedule id, sorted."""
        return sorted(self._r.smembers(self.keys.schedules()))

    def all(self) -> list[ScheduleState]:
        """Every stored schedule, by id (one round trip)."""
        ids = self.ids()
        p = self._r.pipeline(transaction=False)
        for sid in ids:
            p.hgetall(self.keys.schedule(sid))
        return [ScheduleState.from_hash(d) for d in p.execute() if d and "spec" in d]

    def set_paused(self, schedule_id: str, paused: bool, next_fire: int | None) -> bool:
        """Pause, or resume from ``next_fire``.  Returns False if it already was so.

        Raises:
            ScheduleNotFound: no schedule has this id.
        """
        k = self.keys
        n = int(PAUSE(self._r, [k.schedule(schedule_id), k.schedules_due()],
                      [schedule_id, "1" if paused else "0",
                       "" if next_fire is None else str(next_fire)]))
        if n == 0:
            raise ScheduleNotFound(f"no schedule {schedule_id!r}; `orchestrator schedule "
                                   "list` shows them")
        return n == 1

    def delete(self, schedule_id: str, source: SourceKind = "api") -> None:
        """Delete a schedule (its runs stay).

        Raises:
            ScheduleNotFound: no schedule has this id.
            ScheduleConflict: it is declared beside its workflow and ``source`` is not
                ``declared``.
        """
        k = self.keys
        have = self._r.hget(k.schedule(schedule_id), "source")
        if have is None:
            raise ScheduleNotFound(f"no schedule {schedule_id!r}; `orchestrator schedule "
                                   "list` shows them")
        if have == "declared" and source != "declared":
            raise ScheduleConflict(f"schedule {schedule_id!r} is declared beside its "
                                   "workflow; remove it from the workflow's schedules: "
                                   "(or pause it: `orchestrator schedule pause`)")
        p = self._r.pipeline(transaction=True)
        p.delete(k.schedule(schedule_id))
        p.srem(k.schedules(), schedule_id)
        p.zrem(k.schedules_due(), schedule_id)
        p.execute()

    def claim(self, lease_s: float, limit: int) -> ClaimBatch:
        """Claim up to ``limit`` due schedules for ``lease_s`` (see the module docstring)."""
        k = self.keys
        before, after = k.schedule_parts()
        raw = CLAIM(self._r, [k.schedules_due()],
                    [int(lease_s * 1000), limit, before, after])
        now = float(raw[0]) / 1000
        earliest = float(raw[1]) / 1000 if raw[1] else None
        claims = []
        for i in range(2, len(raw), 6):
            sid, spec_json, nxt, gen, last_run, queued = raw[i:i + 6]
            try:
                spec: Schedule | None = Schedule.model_validate_json(spec_json)
            except ValueError:
                spec = None
            claims.append(Claim(sid, spec_json, int(float(nxt)), str(gen), last_run or None,
                                tuple(json.loads(queued or "[]")), spec))
        return ClaimBatch(now, claims, earliest)

    def advance(self, claim: Claim, outcome: Outcome) -> bool:
        """Record ``outcome`` of a claim and re-arm the schedule in the due index.

        Returns:
            False if the schedule was changed (or deleted) since the claim: nothing is
            recorded (the change re-armed it; the fires already started stay started).
        """
        k = self.keys
        o = outcome
        return bool(ADVANCE(self._r, [k.schedule(claim.id), k.schedules_due()], [
            claim.id, claim.gen, "" if o.next is None else str(o.next),
            "" if o.due_ms is None else str(o.due_ms),
            "" if o.last_fire is None else str(o.last_fire), o.last_run or "",
            json.dumps(list(o.queued)), o.started, o.skipped, o.missed, o.failed,
            o.last_error[:500]]))

    def seen(self, scheduler: str) -> None:
        """Record that ``scheduler`` is alive (now, by Redis' clock)."""
        t = self._r.time()
        self._r.zadd(self.keys.schedulers(), {scheduler: int(t[0]) * 1000 + int(t[1]) // 1000})

    def gone(self, scheduler: str) -> None:
        """Forget ``scheduler`` (it stopped)."""
        self._r.zrem(self.keys.schedulers(), scheduler)

    def alive(self, within_s: float) -> list[str]:
        """Schedulers seen within ``within_s`` (by Redis' clock)."""
        t = self._r.time()
        now_ms = int(t[0]) * 1000 + int(t[1]) // 1000
        return list(self._r.zrangebyscore(self.keys.schedulers(),
                                          now_ms - int(within_s * 1000), "+inf"))

    def now(self) -> float:
        """Redis' clock (Unix s): the one clock every scheduler fires by."""
        t = self._r.time()
        return int(t[0]) + int(t[1]) / 1e6
