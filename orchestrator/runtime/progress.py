"""The run protocol: how a run starts, how each step run's outcome is recorded, and how
the end of a unit publishes the units after it and finalises the run.

Every change to how a run advances goes through :class:`Progress`; the Celery tasks
(``workers/``), the coordinator and the reaper (:mod:`orchestrator.runtime.recovery`)
call it, and nothing else writes a run's progress.

The data path of one run::

    start(d, run_id, input)           create the run, claim its source units, publish them
      -> a step task runs             begin() reads what the step needs and takes the step
                                      run's lease (on the fast path it also starts it);
                                      the step function runs; then one of succeeded /
                                      ended (skipped, cancelled) / failed / retry;
                                      a wait step parks instead (wait(): waiting, its
                                      next message in a store timer) until its event,
                                      decision or time, then succeeds or fails
      -> the unit's terminal task     unit_task_done(): complete the unit, publish the
                                      successors whose counters reach zero
      -> no unit left                 finalize(): the run succeeds or fails

A unit's canvas runs natively in Celery (chains and chords); only its terminal task (the
last step of its chain, or its chord's join) moves the run on.

**Exactly one attempt at a time.**  Each delivery of a step's task carries a token (made
by the worker that received it).  ``begin`` gives the step run's lease to that token, or
refuses (another delivery runs it, or it ended); every outcome is recorded only by the
lease's holder (fencing).  **One claim, one publish.**  A unit is claimed once
(``complete_unit``), published by its claimer, then marked published; a claim left
unpublished (its claimer died) is published by the reaper after ``claim_grace_s``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from celery import Celery
from celery.canvas import signature as from_dict

from orchestrator.core import ratelimits
from orchestrator.core.compensation import (
    compensable,
    ending,
    outcome,
    undo_input,
    undo_run_id,
    undo_workflow,
)
from orchestrator.core.models import StepDef
from orchestrator.core.origin import Origin, OriginKind
from orchestrator.core.priorities import Priority
from orchestrator.core.states import RunStatus, StepStatus
from orchestrator.errors import RunExists, RunNotFound
from orchestrator.runtime import tracing
from orchestrator.runtime.canvas import continue_canvas, signature
from orchestrator.runtime.definitions import Definition, Definitions, entry_steps
from orchestrator.store import RunRecord, RunStore, StepRun
from orchestrator.store.leases import Leases
from orchestrator.store.records import LeaseMode, Resumed
from orchestrator.store.waits import WaitStore

log = logging.getLogger(__name__)

MOVED, FENCED, GONE = 1, -2, -1


@dataclass(frozen=True)
class Begin:
    """What a delivery of a step's task starts from (:meth:`Progress.begin`)."""

    run: RunRecord
    records: dict[str, StepRun]
    """Records of the step's parents, of the steps its condition reads, and its own."""
    outputs: dict[str, Any]
    """Outputs of the steps it reads."""
    mode: LeaseMode
    """What this delivery may do (it holds the lease in BEGAN, OWNED and SETTLE)."""


class Progress:
    """Advances the runs of one store; one per process."""

    def __init__(self, app: Celery, store: RunStore, definitions: Definitions,
                 default_queue: str, lease_s: float = 8.0) -> None:
        self.app = app
        self.store = store
        self.definitions = definitions
        self.default_queue = default_queue
        self.lease_s = lease_s
        self.leases = Leases(store.client, store.keys)
        self.waits = WaitStore(store.client, store.keys, store.retention_s)

    # --- start ---------------------------------------------------------------------------

    def start(self, d: Definition, run_id: str, run_input: Any,
              origin: Origin | None = None, resumed: Resumed | None = None,
              compensates: str | None = None, faults: str | None = None,
              priority: Priority = Priority.NORMAL) -> None:
        """Create the run (recording its ``origin`` and ``priority``), claim its source
        units and publish them.  A run that ``resumed`` another begins with the reused
        steps ``succeeded``: their tasks settle (call no step function) and carry their
        canvases on.

        Raises:
            RunExists: ``run_id`` is taken.
        """
        self.store.create_run(run_id, d.wf, d.plan, run_input, origin, resumed, compensates,
                              faults, priority)
        self.publish(d, run_id, self.store.claim_sources(run_id, d.plan.sources), priority)

    def publish(self, d: Definition, run_id: str, units: Sequence[str],
                priority: Priority = Priority.NORMAL) -> None:
        """Publish the canvases of ``units`` (claimed by this caller) in the run's
        ``priority`` band of queues, then record them published and their entry steps
        ``queued``: a ``queued`` step has a message.  With traces on, they are published
        as children of the run's span."""
        if not units:
            return
        steps: list[str] = []
        with tracing.run_context(run_id):
            for uid in units:
                unit = d.plan.unit_map[uid]
                signature(self.app, d, unit.canvas, run_id, self.default_queue,
                          priority).apply_async()
                steps += entry_steps(unit.canvas)
        self.store.published(run_id, units, steps)

    # --- a step run ----------------------------------------------------------------------

    def begin(self, d: Definition, run_id: str, step_id: str, running: dict[str, Any],
              token: str, tag: str) -> Begin:
        """Read what the step needs in one round trip and take the step run's lease for
        this delivery; on the fast path (see :meth:`Definition.fast`) also move it to
        ``running`` with the patch ``running``.

        Raises:
            RunNotFound: the run is not in the store.
        """
        step = d.wf.step_map[step_id]
        reads = d.reads(step)  # parents' and condition-read ancestors' outputs
        run, recs, outs, mode = self.store.begin_step(
            run_id, step_id, list(d.deps[step_id]), reads, reads, d.fast(step), running,
            token=token, tag=tag, lease_s=self.lease_s)
        return Begin(run, recs, outs, mode)

    def running(self, run_id: str, step_id: str, running: dict[str, Any],
                token: str) -> bool:
        """Move the step to ``running`` (after the trigger rule and condition said run);
        False if this delivery no longer holds the lease."""
        return self._goes_on(run_id, step_id, self.store.step_transition(
            run_id, step_id, StepStatus.RUNNING, token=token, **running))

    def succeeded(self, d: Definition, run_id: str, step_id: str, output: Any,
                  token: str) -> bool:
        """Record the step's output and success, then move the run on; False (nothing
        recorded) if this delivery lost the lease."""
        code = self.store.step_transition(run_id, step_id, StepStatus.SUCCEEDED, output=output,
                                          has_output=True, ended_at=time.time(),
                                          workflow=d.wf.name, token=token,
                                          followers=d.followers.get(step_id, ()))
        if not self._goes_on(run_id, step_id, code):
            return False
        self.unit_task_done(d, run_id, step_id)
        return True

    def ended(self, d: Definition, run_id: str, step_id: str, status: StepStatus,
              reason: str, token: str, decision: dict[str, Any] | None = None) -> bool:
        """Record a final status that is neither a success nor a failure (``skipped``,
        ``cancelled``) with its reason (and the ``decision`` trail that skipped it), then
        move the run on; False if fenced."""
        extra: dict[str, Any] = {} if decision is None else {"decision": decision}
        code = self.store.step_transition(run_id, step_id, status, ended_at=time.time(),
                                          workflow=d.wf.name, reason=reason, token=token,
                                          followers=d.followers.get(step_id, ()), **extra)
        if not self._goes_on(run_id, step_id, code):
            return False
        self.unit_task_done(d, run_id, step_id)
        return True

    def failed(self, d: Definition, run_id: str, step_id: str, error: dict[str, Any],
               request: Any, token: str) -> bool:
        """Record the step's final failure, carry its canvas on past it (successors decide
        by their trigger rules), then move the run on; False if fenced.

        Args:
            request: the task's request context (``task.request``, or in the worker's
                main process ``Request._context``), whose chain and chord go on.
        """
        code = self.store.step_transition(run_id, step_id, StepStatus.FAILED, error=error,
                                          ended_at=time.time(), workflow=d.wf.name,
                                          token=token, followers=d.followers.get(step_id, ()))
        if not self._goes_on(run_id, step_id, code):
            return False
        continue_canvas(self.app, request)
        self.unit_task_done(d, run_id, step_id)
        return True

    def retry(self, run_id: str, step_id: str, token: str, error: dict[str, Any],
              delay_s: float, timer_id: str, message: dict[str, Any]) -> bool:
        """Record that the attempt failed and hold the next attempt's task ``message`` (a
        signature with its chain and chord) in a timer due in ``delay_s``; False if fenced.
        """
        code = self.store.retry_later(run_id, step_id, token, error, delay_s, timer_id,
                                      json.dumps(message))
        return self._goes_on(run_id, step_id, code)

    def wait(self, run_id: str, step_id: str, token: str, patch: dict[str, Any],
             timer_at: float | None, event_key: str | None, message: dict[str, Any]) -> bool:
        """Park a wait step: record it ``waiting`` with ``patch`` (its ``wait``) and hold
        its next task ``message`` (a signature with its chain and chord) in a store timer
        due at ``timer_at`` (None: only an event or a decision wakes it), giving the lease
        up; the caller's task then ends without carrying its canvas on.  False if fenced.
        """
        code, resolved = self.waits.park(run_id, step_id, token, patch, timer_at,
                                         json.dumps(message), event_key)
        if code == MOVED:
            log.info("step %s of run %s: waiting%s", step_id, run_id,
                     " (already resolved: resumes now)" if resolved else "")
        return self._goes_on(run_id, step_id, code)

    def draw(self, step: StepDef, run_input: Any) -> float:
        """Draw a start from the step's rate limit (shared by every worker): 0 if the step
        run may start now, else the seconds until it may.

        Raises:
            ConditionError: the limit's key expression fails on this input.
        """
        assert step.rate_limit is not None
        return self.leases.draw(ratelimits.scope(step, run_input), step.rate_limit.interval_s)

    def defer(self, run_id: str, step_id: str, message: dict[str, Any]) -> None:
        """A copy of the step's task arrived while another delivery holds the lease: hold
        the copy (``message``, its signature) until just after the lease would expire, so
        that it takes over if the holder died and is dropped if it finished."""
        self.leases.defer_copy(run_id, step_id, message, self.store.retention_s)

    def settle(self, d: Definition, run_id: str, step_id: str) -> None:
        """A step run ended but the attempt that ended it died before its canvas went on:
        move the run on again (idempotent); the caller's task then carries the canvas."""
        self.unit_task_done(d, run_id, step_id)

    def _goes_on(self, run_id: str, step_id: str, code: int) -> bool:
        """Whether the delivery that tried a transition goes on: not when it lost the lease
        or the run is gone.  (A move the table refused, say a step cancelled with its run
        while it ran, still goes on: the unit completes and the canvas carries on.)"""
        if code == FENCED:
            log.info("step %s of run %s: this attempt lost its lease; its outcome is "
                     "dropped (another attempt owns the step run)", step_id, run_id)
        elif code == GONE:
            log.info("step %s of run %s: the run is gone (retention); outcome dropped",
                     step_id, run_id)
        return code == MOVED or code == 0

    # --- units and the run ---------------------------------------------------------------

    def unit_task_done(self, d: Definition, run_id: str, task_id: str) -> None:
        """A step or join task of the run is done (whatever its outcome).

        Args:
            task_id: the step id or join id of the task.  If it is its unit's terminal
                task, the unit is complete: successors whose counters reach zero are
                published, and the run is finalised when no unit is left.
        """
        uid = d.unit_of_terminal.get(task_id)
        if uid is None:
            return
        remaining, ready, priority = self.store.complete_unit_in_band(
            run_id, uid, d.plan.successors[uid])
        if remaining < 0:
            log.info("run %s is gone (retention): unit %s left alone", run_id, uid)
            return
        self.publish(d, run_id, ready, priority)
        if remaining == 0:
            self.finalize(run_id)

    def finalize(self, run_id: str) -> RunStatus:
        """Give the run its final status from its steps' (no-op if already final); the
        call that ends it emits its run span (traces).

        A run that failed with succeeded steps that declare compensations is unwound
        instead (``compensating``, then :meth:`compensate`); an undo run that ends ends
        the run it undoes (:meth:`compensation_ended`)."""
        steps = self.store.step_runs(run_id)
        run = self.store.run(run_id)
        if run.status is RunStatus.COMPENSATING:  # cancelled with compensation
            self.compensate(run_id)
            return self.store.run(run_id).status
        status = ending(self.definitions.load(run.version).wf,
                        {s: r.status for s, r in steps.items()})
        if status is RunStatus.COMPENSATING:
            if self.store.transition_run(run_id, status, compensation_cause="failed"):
                log.info("run %s failed: undoing its succeeded steps", run_id)
            self.compensate(run_id)
            return self.store.run(run_id).status
        moved = self.store.transition_run(run_id, status)
        run = self.store.run(run_id)
        if moved:
            tracing.run_ended(run)
        if run.compensates and run.status.terminal:
            self.compensation_ended(run.compensates)
        return run.status

    # --- compensation (orchestrator.core.compensation) -----------------------------------

    def compensate(self, run_id: str) -> None:
        """Start the undo run of a ``compensating`` run once none of its steps is running
        (idempotent: the undo run's id is fixed, and created at most once); end the run if
        its undo run has ended or there is nothing to undo.  The run's finalization, its
        cancellation with compensation and the reaper call it."""
        run = self.store.run(run_id)
        if run.status is not RunStatus.COMPENSATING:
            return
        undo_id = undo_run_id(run_id)
        if self.store.exists(undo_id):
            if self.store.run(undo_id).status.terminal:
                self.compensation_ended(run_id)
            return
        records = self.store.step_runs(run_id)
        if any(r.status is StepStatus.RUNNING for r in records.values()):
            return  # a step still runs: it may succeed, and then it is undone too
        d = self.definitions.load(run.version)
        ids = compensable(d.wf, {s: r.status for s, r in records.items()})
        if not ids:
            if self.store.transition_run(run_id, RunStatus.COMPENSATED):
                tracing.run_ended(self.store.run(run_id))
            return
        undo = self.definitions.compile(undo_workflow(d.wf, ids))
        data = undo_input(d.wf, ids, run.input, self.store.outputs(run_id))
        for step_id in ids:  # succeeded -> compensating (refused if already)
            self.store.transition_step(run_id, step_id, StepStatus.COMPENSATING,
                                       reason=f"undone by run {undo_id}")
        try:
            self.start(undo, undo_id, data, Origin(kind=OriginKind.COMPENSATION,
                                                   tenant=run.origin.tenant),
                       compensates=run_id, priority=run.priority)
            log.info("run %s: undo run %s started (%s)", run_id, undo_id, ", ".join(ids))
        except RunExists:
            pass  # another caller started it

    def compensation_ended(self, run_id: str) -> None:
        """The undo run of ``run_id`` ended: record each compensation's outcome on the step
        it undid (``compensated`` or ``compensation_failed``, with its error) and end the
        run (idempotent)."""
        undo_id = undo_run_id(run_id)
        try:
            if not self.store.run(undo_id).status.terminal:
                return
        except RunNotFound:
            return
        records = self.store.step_runs(undo_id)
        steps, status = outcome({s: r.status for s, r in records.items()})
        for step_id, st in steps.items():
            err = records[step_id].error
            patch: dict[str, Any] = {"reason": f"undone by run {undo_id}"}
            if st is StepStatus.COMPENSATION_FAILED:
                patch["reason"] = f"its compensation {records[step_id].status.value} in run "\
                    f"{undo_id}" + (f": {err.get('message')}" if err else "")
            self.store.transition_step(run_id, step_id, st, **patch)
        if self.store.transition_run(run_id, status):
            tracing.run_ended(self.store.run(run_id))

    def publish_message(self, message: dict[str, Any]) -> None:
        """Publish a task message held in the store (a retry timer's signature), as a
        child of its run's span (traces)."""
        run_id = (message.get("kwargs") or {}).get("run_id")
        with tracing.run_context(run_id if isinstance(run_id, str) else None):
            from_dict(message, app=self.app).apply_async()
