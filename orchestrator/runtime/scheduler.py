"""The scheduler: fires due schedules as runs, from the store, with no lock.

Any number of schedulers may run (``orchestrator scheduler``).  Each loops: claim the due
schedules (:meth:`ScheduleStore.claim`, one Lua script: a claimed schedule is invisible to
the others for ``ORCH_SCHEDULER_CLAIM_S``), decide which fires start (the catch-up and
overlap policies, :mod:`orchestrator.core.fires`), start each with
``Coordinator.submit(run_id="sched-<schedule>-<fire time>", origin=<schedule, fire
time>)``, then record the outcome and the next fire (:meth:`ScheduleStore.advance`).

* **Never twice.**  A fire's run id is deterministic and run ids are claimed atomically
  (``RunExists``), so a fire retried by another scheduler, by a restarted one or after a
  claim that ran out, starts no second run.
* **Never lost.**  The next fire is recorded only after the fires before it were started;
  a scheduler killed in between leaves the schedule's claim to expire, and whichever
  scheduler claims it next computes the same fires again.
* **Redis outages** are ridden out: one line when Redis goes away (the kind, the masked
  URL, the fix), one when it is back, retries with backoff in between; fires that came
  due meanwhile are on time if handled within ``ORCH_SCHEDULER_GRACE_S``, else missed
  and handled by the schedule's catch-up policy.

Declared schedules (``schedules:`` beside a workflow) are synced into the store when a
scheduler starts (:func:`sync_declared`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from jsonschema import Draft202012Validator

from orchestrator.core import fires
from orchestrator.core.origin import Origin, OriginKind
from orchestrator.core.schedules import Overlap, Schedule, run_id
from orchestrator.core.tenants import DEFAULT_TENANT
from orchestrator.errors import (
    InputInvalid,
    OrchestratorError,
    RunDamaged,
    RunExists,
    RunNotFound,
    ScheduleInvalid,
    StoreUnavailable,
)
from orchestrator.outages import explain
from orchestrator.runtime.catalog import Catalog
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.settings import Settings
from orchestrator.store.schedules import Claim, ClaimBatch, Outcome, ScheduleStore

log = logging.getLogger(__name__)

BACKOFF_S = (0.25, 0.5, 1.0, 2.0, 5.0)
"""Waits between tries while Redis cannot be used (the last one repeats)."""
ALIVE_WITHIN_S = 10.0
"""A scheduler seen within this long counts as running (``schedule list``, ``up``)."""
READY = "declared schedule(s) synced"
"""What a scheduler logs (INFO) once it synced the declared schedules and fires."""


@dataclass(frozen=True)
class SyncReport:
    """What :func:`sync_declared` changed."""

    stored: tuple[str, ...]
    removed: tuple[str, ...]


def sync_declared(store: ScheduleStore, declared: dict[str, Schedule], now: float
                  ) -> SyncReport:
    """Make the store's declared schedules those of the catalog.

    A declared schedule replaces the stored one of its id (its definition; its state,
    pause included, is kept, and so is its next fire unless its timing changed); a stored
    schedule marked declared that no workflow declares any more is deleted.  Schedules
    added through the CLI or the API are left alone, unless a declaration takes their id.

    Args:
        declared: the catalog's schedules, by id.
        now: the time now (Unix s), for the first fire of a new or retimed schedule.
    """
    existing = {s.spec.id: s for s in store.all()}
    for sid, spec in sorted(declared.items()):
        have = existing.get(sid)
        if have is not None and have.source != "declared":
            log.warning("schedule %r added through the API or the CLI is replaced by the "
                        "one declared beside workflow %r", sid, spec.workflow)
        store.put(spec, "declared", fires.next_fire(spec, now), replace=True)
    removed = [sid for sid, s in existing.items()
               if s.source == "declared" and sid not in declared]
    for sid in removed:
        store.delete(sid, source="declared")
    return SyncReport(tuple(sorted(declared)), tuple(sorted(removed)))


class Scheduler:
    """One scheduler process's loop (see the module docstring)."""

    def __init__(self, settings: Settings, catalog: Catalog, coordinator: Coordinator,
                 store: ScheduleStore, name: str | None = None,
                 heartbeat_file: str | None = None) -> None:
        """Args:
            settings: the one settings object (``scheduler_*``).
            catalog: the workflows, and the declared schedules to sync.
            coordinator: starts runs (its store should fail within a few seconds).
            store: the schedules.
            name: this scheduler's name (default ``<host>:<pid>``).
            heartbeat_file: touched after every tick that reached Redis (health checks).
        """
        self.settings = settings
        self.catalog = catalog
        self.coordinator = coordinator
        self.store = store
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.heartbeat = Path(heartbeat_file) if heartbeat_file else None
        self._pool = ThreadPoolExecutor(settings.scheduler_threads,
                                        thread_name_prefix="scheduler")

    # --- the loop --------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Sync the declared schedules, then fire due schedules until ``stop`` is set.

        Redis failures never end the loop: they are logged once when they start and once
        when they end, and retried with backoff (:data:`BACKOFF_S`).
        """
        synced = False
        failing: StoreUnavailable | None = None
        failing_since = 0.0
        tries = 0
        try:
            while not stop.is_set():
                try:
                    if not synced:
                        report = sync_declared(self.store, self.declared(), self.store.now())
                        log.info("scheduler %s: %d " + READY + "%s", self.name,
                                 len(report.stored), f", {len(report.removed)} removed"
                                 if report.removed else "")
                        synced = True
                    wait = self.tick()
                except Exception as exc:
                    err = explain(exc, self.settings.redis_url, None)
                    if err is None:
                        raise
                    if failing is None or type(failing) is not type(err):
                        log.error("scheduler %s: %s; retrying until it answers (fires due "
                                  "meanwhile run late, or by their catch-up policy)",
                                  self.name, err.summary)
                        failing, failing_since = err, time.monotonic()
                    stop.wait(BACKOFF_S[min(tries, len(BACKOFF_S) - 1)])
                    tries += 1
                    continue
                if self.heartbeat is not None:
                    self.heartbeat.touch()
                if failing is not None:
                    log.warning("scheduler %s: Redis answers again after %.0f s; firing",
                                self.name, time.monotonic() - failing_since)
                    failing, tries = None, 0
                if wait > 0:
                    stop.wait(wait)
        finally:
            self._pool.shutdown(wait=True)
            with contextlib.suppress(Exception):  # Redis may be gone too
                self.store.gone(self.name)

    def declared(self) -> dict[str, Schedule]:
        """The catalog's declared schedules, by id."""
        schedules: dict[str, Schedule] = getattr(self.catalog, "schedules", {})
        return dict(schedules)

    def tick(self) -> float:
        """Claim and fire one batch of due schedules.

        Returns:
            How long to wait before the next tick (0: more are due now).
        """
        self.store.seen(self.name)
        s = self.settings
        batch = self.store.claim(s.scheduler_claim_s, s.scheduler_batch)
        if batch.claims:
            list(self._pool.map(lambda c: self._fire_and_record(c, batch), batch.claims))
            if len(batch.claims) >= s.scheduler_batch:
                return 0.0
        if batch.earliest is None:
            return s.scheduler_tick_s
        # Redis' clock decides when a schedule is due: wait the difference, not until a
        # local time (the two clocks may disagree by more than the lag we allow).
        return max(0.0, min(s.scheduler_tick_s, batch.earliest - self.store.now() + 0.001))

    def _fire_and_record(self, claim: Claim, batch: ClaimBatch) -> bool:
        try:
            outcome = self.fire(claim, batch.now)
        except Exception as exc:
            if explain(exc, self.settings.redis_url) is not None:
                raise
            # a bug, not an outage: the schedule is tried again when its claim ends
            log.exception("schedule %r: unexpected error; tried again in %g s", claim.id,
                          self.settings.scheduler_claim_s)
            return False
        return self.store.advance(claim, outcome)

    # --- one schedule ----------------------------------------------------------------------

    def fire(self, claim: Claim, now: float) -> Outcome:
        """Start the fires of one claimed schedule that are due at ``now``.

        Raises:
            StoreError / kombu's OperationalError: Redis failed; nothing is recorded (the
                claim expires and the same fires are computed again).
        """
        spec = claim.spec
        if spec is None:
            log.error("schedule %r is stored in a form this release cannot read; it is "
                      "not fired until it is replaced", claim.id)
            return Outcome(next=claim.next, due_ms=None, failed=1,
                           last_error="unreadable schedule; replace it")
        plan = fires.plan(spec, claim.next, now, self.settings.scheduler_grace_s)
        if plan.missed:
            log.warning("schedule %r: %d missed fire(s) dropped by its catch-up policy "
                        "(%s)", spec.id, plan.missed, spec.catch_up.policy.value)
        pending = list(plan.fires)
        if spec.overlap is Overlap.QUEUE:
            pending = sorted(set(claim.queued) | set(pending))
        last_run = claim.last_run
        running = bool(pending) and spec.overlap is not Overlap.ALLOW \
            and self._running(last_run)
        started = skipped = failed = 0
        last_fire: int | None = None
        error = ""
        waiting: list[int] = []
        for t in pending:
            if waiting:
                waiting.append(t)  # queued fires keep their order
                continue
            action = fires.overlap_action(spec.overlap, running)
            if action is fires.Action.SKIP:
                skipped += 1
                log.info("schedule %r: fire %d skipped: run %s is still running", spec.id,
                         t, last_run)
                continue
            if action is fires.Action.WAIT:
                waiting.append(t)
                continue
            if action is fires.Action.CANCEL_AND_START and last_run:
                self._cancel(last_run)
            rid = run_id(spec.id, t)
            try:
                if self._submit(spec, t, rid):
                    started += 1
            except StoreUnavailable:
                raise
            except OrchestratorError as exc:
                if explain(exc, self.settings.redis_url) is not None:
                    raise
                failed += 1
                error = f"fire {t}: {exc}"
                log.error("schedule %r: fire %d started no run: %s", spec.id, t, exc)
                last_fire = t
                continue
            last_run, last_fire, running = rid, t, True
        due_ms: int | None = None if plan.next is None else plan.next * 1000
        if waiting:
            recheck = math.ceil((now + self.settings.scheduler_tick_s) * 1000)
            due_ms = recheck if due_ms is None else min(due_ms, recheck)
        return Outcome(next=plan.next, due_ms=due_ms, last_fire=last_fire,
                       last_run=last_run if last_run != claim.last_run else None,
                       queued=waiting, started=started, skipped=skipped,
                       missed=plan.missed, failed=failed, last_error=error)

    def _submit(self, spec: Schedule, t: int, rid: str) -> bool:
        """Start the run of fire ``t``; False if it had been started already."""
        tenant = self.store.tenant(spec.id)  # its runs are the schedule's tenant's
        try:
            self.coordinator.submit(spec.workflow, spec.input_for(t), run_id=rid,
                                    origin=Origin(kind=OriginKind.SCHEDULE, schedule=spec.id,
                                                  fire_time=float(t),
                                                  tenant=None if tenant in (
                                                      None, DEFAULT_TENANT) else tenant))
        except RunExists:
            return False
        log.info("schedule %r: fire %d started run %s", spec.id, t, rid)
        return True

    def _running(self, rid: str | None) -> bool:
        if rid is None:
            return False
        try:
            return not self.coordinator.store.run(rid).status.terminal
        except (RunNotFound, RunDamaged):
            return False

    def _cancel(self, rid: str) -> None:
        try:
            if self.coordinator.cancel(rid):
                log.info("run %s cancelled: its schedule fired again (cancel_previous)", rid)
        except (RunNotFound, RunDamaged):
            pass


def upcoming_fires(store: ScheduleStore, count: int, schedule_id: str | None = None
                   ) -> list[tuple[int, str, Schedule]]:
    """The next ``count`` fires of the active schedules (or of one), in time order:
    ``(fire time, schedule id, schedule)``."""
    states = [store.get(schedule_id)] if schedule_id else store.all()
    now = store.now()
    out: list[tuple[int, str, Schedule]] = []
    for st in states:
        if st.paused or st.next is None:
            continue
        for t in fires.upcoming(st.spec, min(st.next - 1, now), count):
            out.append((t, st.spec.id, st.spec))
    return sorted(out, key=lambda x: (x[0], x[1]))[:count]


def check_runnable(catalog: Catalog, spec: Schedule, now: float) -> None:
    """Check that a schedule's fires can start runs: its workflow is cataloged, it fires
    again, and its input (``input``, or ``input_expr`` at its next fire) matches the
    workflow's input schema.

    Raises:
        WorkflowNotFound: the workflow is not cataloged.  ScheduleInvalid: it never
            fires again, or ``input_expr`` fails.  InputInvalid: the input does not match.
    """
    wf = catalog.get(spec.workflow)
    nxt = fires.next_fire(spec, now)
    if nxt is None:
        raise ScheduleInvalid(f"schedule {spec.id!r} never fires again; fix its cron "
                              "expression")
    data = spec.input_for(nxt)
    errors = sorted(Draft202012Validator(wf.input_schema).iter_errors(
        {} if data is None else data), key=lambda e: list(e.path))
    if errors:
        lines = "; ".join(f"{'/'.join(str(p) for p in e.path) or '(input)'}: {e.message}"
                          for e in errors)
        raise InputInvalid(f"schedule {spec.id!r}: the input of its next fire does not "
                           f"match workflow {wf.name!r}'s input_schema: {lines}. Fix "
                           "input or input_expr.")


def serve(settings: Settings, catalog: Catalog, stop: threading.Event,
          on_ready: Callable[[Scheduler], None] | None = None,
          name: str | None = None, heartbeat_file: str | None = None) -> None:
    """Build a scheduler on ``settings`` and run it until ``stop`` is set.

    Its Redis calls and publishes fail within a few seconds instead of hanging, so an
    outage is noticed and logged, not waited out silently.
    """
    from orchestrator.runtime.celeryconf import client_app
    from orchestrator.store import RunStore

    timeout_s = max(settings.redis_timeout_s, 5.0)
    run_store = RunStore.from_url(settings.redis_target, settings.key_prefix,
                                  settings.run_retention_s, timeout_s=timeout_s,
                                  broker=settings.broker_target)
    coord = Coordinator(settings, catalog, app=client_app(settings, timeout_s=timeout_s),
                        store=run_store)
    scheduler = Scheduler(settings, catalog, coord,
                          ScheduleStore(run_store.client, run_store.keys), name=name,
                          heartbeat_file=heartbeat_file)
    if on_ready is not None:
        on_ready(scheduler)
    scheduler.run(stop)
