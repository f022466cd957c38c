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

import contextlib
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from celery import Celery
from celery.canvas import signature as from_dict

from orchestrator.core import concurrency, ratelimits
from orchestrator.core.compensation import (
    compensable,
    ending,
    outcome,
    undo_input,
    undo_run_id,
    undo_workflow,
)
from orchestrator.core.concurrency import Admission
from orchestrator.core.maps import parse_item
from orchestrator.core.models import StepDef, WorkflowDef
from orchestrator.core.origin import Origin, OriginKind
from orchestrator.core.plan import CanvasNode, TaskNode
from orchestrator.core.priorities import Priority
from orchestrator.core.states import RunStatus, StepStatus
from orchestrator.core.subworkflows import WAIT_KIND as SUBWORKFLOW_WAIT
from orchestrator.core.subworkflows import child_run_id, undoable
from orchestrator.errors import (
    ConditionError,
    InputInvalid,
    RunDamaged,
    RunExists,
    RunNotFound,
)
from orchestrator.runtime import broker, messages, tracing
from orchestrator.runtime import maps as map_steps
from orchestrator.runtime.canvas import (
    continue_canvas,
    held_chain,
    lone_key,
    signature,
    step_signature,
)
from orchestrator.runtime.definitions import Definition, Definitions, entry_steps
from orchestrator.store import RunRecord, RunStore, StepRun
from orchestrator.store.leases import Leases
from orchestrator.store.maps import MapStore
from orchestrator.store.records import LeaseMode, Resumed
from orchestrator.store.runs import Completed
from orchestrator.store.slots import Slots, Taken
from orchestrator.store.waits import WaitStore, wait_timer_id

log = logging.getLogger(__name__)

MOVED, FENCED, GONE = 1, -2, -1
SETTLED_BY_STEP = "orch_settled"
"""Attribute set on a task's request context when the script that ended its step run
also sent its chain's next task and so settled its lease (``step_transition.lua``)."""
WAKE_REARM_S = 5.0
"""A woken parent step's timer, taken by the process that ended its child run, is re-armed
this far ahead until its message is published: if the publish fails (the broker just
restarted, say), the reaper publishes it that much later.  (A second copy, were the first
merely slow, is dropped by the step's lease.)"""


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


def awaited_runs(records: Iterable[StepRun]) -> list[str]:
    """The runs that the waiting steps among ``records`` wait for (sub-workflow steps'
    child runs, undo steps' undo runs)."""
    return [str(r.wait["run"]) for r in records if r.status is StepStatus.WAITING
            and r.wait is not None and r.wait.get("kind") == SUBWORKFLOW_WAIT
            and r.wait.get("run")]


def _slotted(d: Definition, step_id: str) -> bool:
    """Whether step ``step_id``'s step run may hold a concurrency slot (its step has a
    concurrency limit; a step this version does not know: assume it may), so that its
    final status looks for the slot to give up."""
    step = d.wf.step_map.get(step_id)
    return step is None or step.concurrency is not None


def _runs_child(d: Definition, step_run_id: str) -> bool:
    """Whether step run ``step_run_id`` (a step, or an item of a mapped sub-workflow step)
    starts a child run."""
    try:
        step = map_steps.step_of(d, step_run_id)
    except KeyError:  # a map's own bookkeeping entry, or a step of another version
        return False
    return step.workflow is not None and (step.map is None or step_run_id != step.id)


class Progress:
    """Advances the runs of one store; one per process."""

    def __init__(self, app: Celery, store: RunStore, definitions: Definitions,
                 default_queue: str, lease_s: float = 8.0) -> None:
        self.app = app
        self.store = store
        self.definitions = definitions
        self.default_queue = default_queue
        self.lease_s = lease_s
        self.leases = Leases(store.client, store.keys, broker=store.broker_client)
        self.waits = WaitStore(store.client, store.keys, store.retention_s)
        self.maps = MapStore(store.client, store.keys)
        self.slots = Slots(store.client, store.keys)
        self.templates = messages.Templates(app)

    # --- start ---------------------------------------------------------------------------

    def start(self, d: Definition, run_id: str, run_input: Any,
              origin: Origin | None = None, resumed: Resumed | None = None,
              compensates: str | None = None, faults: str | None = None,
              priority: Priority = Priority.NORMAL,
              parent: tuple[str, str] | None = None) -> Admission:
        """Create the run (recording its ``origin`` and ``priority``), claim its source
        units and publish them.  A run that ``resumed`` another begins with the reused
        steps ``succeeded``: their tasks settle (call no step function) and carry their
        canvases on.  ``parent``: (run, step) of the sub-workflow step whose child run
        this is (:meth:`start_child`).

        A workflow with a concurrency limit (:mod:`orchestrator.core.concurrency`): the
        run takes a slot of its key as it is created; with every slot held it is
        ``queued`` (it starts when a holder ends: :meth:`end_run`), ends ``cancelled``
        (``cancel_newest``), or takes the oldest holder's slot, which is cancelled here
        (``cancel_oldest``).

        Returns:
            What became of the run.

        Raises:
            RunExists: ``run_id`` is taken.  InputInvalid: the concurrency key's
            expression fails on this input.
        """
        try:
            slot = concurrency.run_slot(d.wf, run_input)
        except ConditionError as exc:
            assert d.wf.concurrency is not None
            raise InputInvalid(
                f"input of workflow {d.wf.name!r} gives no concurrency key: {exc}. Fix: give "
                f"the input what the key {d.wf.concurrency.key!r} reads") from None
        admission, displaced = self.store.create_run(
            run_id, d.wf, d.plan, run_input, origin, resumed, compensates, faults, priority,
            parent, slot=slot)
        if admission is Admission.QUEUED:
            log.info("run %s: queued (%s)", run_id, slot.waiting if slot else "")
            return admission
        if admission is Admission.CANCELLED:
            assert slot is not None
            for step in d.wf.steps:
                self.store.transition_step(run_id, step.id, StepStatus.CANCELLED,
                                           reason=slot.refused)
            log.info("run %s: cancelled (%s)", run_id, slot.refused)
            return admission
        if displaced:
            assert slot is not None and d.wf.concurrency is not None
            self.cancel(displaced, concurrency.displaced_reason(run_id, d.wf.concurrency,
                                                                slot.value))
        self.publish(d, run_id, d.plan.sources, priority, claim=True)
        return admission

    def end_run(self, run_id: str, status: RunStatus, **fields: Any) -> bool:
        """Move the run to ``status`` (:meth:`RunStore.transition_run`); a run that ends
        holding a concurrency slot passes it, in the same script, to the oldest run
        ``queued`` for its key, whose first units this call then publishes (were this
        process to die first, the reaper publishes the claimed units after
        ``claim_grace_s``).  Returns whether the run moved.

        Raises:
            RunNotFound: no such run.
        """
        moved, passed = self.store.end_run(run_id, status, **fields)
        if moved and status.terminal:
            self.wake_parent(run_id)
        if passed is not None:
            try:
                d = self.definitions.load(passed.version)
            except (RunNotFound, RunDamaged):
                return moved  # the reaper publishes its claims (and logs why it cannot)
            log.info("run %s: started in the concurrency slot run %s left", passed.run_id,
                     run_id)
            self.publish(d, passed.run_id, d.plan.sources, passed.priority)
        return moved

    def cancel(self, run_id: str, reason: str = "run cancelled") -> bool:
        """Cancel a run (queued or running): pending steps never start, running ones are
        revoked (SIGTERM), waiting ones end; its concurrency slot passes on.

        Returns:
            True if the run was cancelled now; False if it had already ended (or is
            being unwound).
        """
        fields = {} if reason == "run cancelled" else {"reason": reason}
        if not self.end_run(run_id, RunStatus.CANCELLED, **fields):
            return False
        running: list[str] = []
        records = self.store.step_runs(run_id).values()
        for rec in records:
            if rec.status is StepStatus.RUNNING and rec.task_id:
                running.append(rec.task_id)
        run = self.store.run(run_id)
        tracing.run_ended(run)
        d = self.definitions.load(run.version)
        waiting_items = [r.step_id for r in records if r.status is StepStatus.WAITING
                         and parse_item(r.step_id) is not None]  # mapped children's
        for s in [*(s.id for s in d.wf.steps), *waiting_items]:
            self.store.transition_step(run_id, s, StepStatus.CANCELLED, reason=reason)
        # its waits end: their timers and parked messages go, they leave their keys
        self.waits.end(run_id, [r for r in records if r.status is StepStatus.WAITING])
        if running:
            self.app.control.revoke(running, terminate=True, signal="SIGTERM")
        starting = [child_run_id(run_id, r.step_id, r.attempt) for r in records
                    if r.status is StepStatus.RUNNING and _runs_child(d, r.step_id)]
        for child in [*awaited_runs(records), *starting]:  # cancelled with it
            with contextlib.suppress(RunNotFound):
                if self.cancel(child, reason=f"parent run {run_id} cancelled"):
                    log.info("run %s: child run %s cancelled", run_id, child)
        return True

    def warm(self, d: Definition, units: Sequence[str],
             priority: Priority = Priority.NORMAL) -> bool:
        """Whether :meth:`held` would render every one of ``units`` from a message
        template this process holds (no Celery build, which for a wide version's first
        publish in a band took seconds before the lone steps' tasks shared theirs)."""
        return self.templates.warm(self._template_key(d, uid, priority) for uid in units)

    def _template_key(self, d: Definition, uid: str, priority: Priority
                      ) -> tuple[Any, ...]:
        """What fixes a unit's messages but the run id (``Templates.commands``' key), or
        but the run and step ids for a lone step's task (``Templates.lone``')."""
        canvas = d.plan.unit_map[uid].canvas
        lone = lone_key(d, canvas, self.default_queue, priority)
        if (lone is not None and isinstance(canvas, TaskNode)
                and len(canvas.id) <= messages.LONE_STEP_ID_MAX):
            return lone
        return self._unit_key(d, uid, priority)

    def _unit_key(self, d: Definition, uid: str, priority: Priority) -> tuple[Any, ...]:
        """What fixes one unit's messages but the run id."""
        return (d.wf.version, uid, priority.value, self.default_queue)

    def held(self, d: Definition, run_id: str, units: Sequence[str],
             priority: Priority = Priority.NORMAL
             ) -> list[tuple[str, list[str], list[messages.Command]]]:
        """What :meth:`publish` sends on a capturing broker (:func:`broker.captures`), unit
        by unit: the unit, its entry steps and kombu's Redis commands of its messages
        (Celery's build, or its template: :mod:`orchestrator.runtime.messages`), for
        ``RunStore.publish_units``."""
        held: list[tuple[str, list[str], list[messages.Command]]] = []
        with tracing.run_context(run_id):
            for uid in units:
                canvas = d.plan.unit_map[uid].canvas

                def build(rid: str, canvas: CanvasNode = canvas) -> list[messages.Command]:
                    with broker.capture() as got:
                        signature(self.app, d, canvas, rid, self.default_queue,
                                  priority).apply_async()
                    return got.commands

                held.append((uid, entry_steps(canvas),
                             self._lone(d, canvas, run_id, priority)
                             or self.templates.commands(
                                 self._unit_key(d, uid, priority), canvas, run_id, build)))
        return held

    def _lone(self, d: Definition, canvas: CanvasNode, run_id: str, priority: Priority
              ) -> list[messages.Command] | None:
        """A lone step's task from the template it shares (``Templates.lone``), or None
        (another unit, or one the shared template cannot render)."""
        key = lone_key(d, canvas, self.default_queue, priority)
        if key is None:
            return None
        assert isinstance(canvas, TaskNode)
        step_id = canvas.id

        def build(rid: str, as_id: str) -> list[messages.Command]:
            with broker.capture() as got:
                step_signature(self.app, d, step_id, as_id, rid, self.default_queue,
                               priority).apply_async()
            return got.commands

        return self.templates.lone(key, run_id, step_id, build)

    def publish(self, d: Definition, run_id: str, units: Sequence[str],
                priority: Priority = Priority.NORMAL, claim: bool = False) -> list[str]:
        """Publish the canvases of ``units`` in the run's ``priority`` band of queues,
        then record them published and their entry steps ``queued``: a ``queued`` step
        has a message.  With ``claim``, first claim them (a unit another caller claimed
        is not published); without it, the caller claimed them.  With traces on, they are
        published as children of the run's span.

        On a plain Redis broker (:func:`broker.captures`) this is one round trip: Celery
        builds the messages as always (or, outside a task, once per version, unit and
        band: :mod:`orchestrator.runtime.messages`), kombu's Redis commands for them are
        held (:func:`broker.capture`) and one script sends them with the claims and
        records (``publish_units.lua``), so a message exists if and only if its unit is
        recorded published.  On Sentinel: claim, publish, record, as three steps.

        Returns:
            The units published.
        """
        if not units:
            return []
        if broker.captures(self.app):
            return self.store.publish_units(run_id, self.held(d, run_id, units, priority),
                                            claim)
        if claim:
            units = self.store.claim_sources(run_id, units)
            if not units:
                return []
        steps: list[str] = []
        with tracing.run_context(run_id):
            for uid in units:
                unit = d.plan.unit_map[uid]
                signature(self.app, d, unit.canvas, run_id, self.default_queue,
                          priority).apply_async()
                steps += entry_steps(unit.canvas)
        self.store.published(run_id, units, steps)
        return list(units)

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
                  token: str, request: Any = None, retval: Any = None) -> bool:
        """Record the step's output and success, then move the run on; False (nothing
        recorded) if this delivery lost the lease.

        Args:
            request: the task's request context (``task.request``), whose chain goes on
                after this step: when its next element is a plain task, its message is
                sent by the script that records the success (:func:`held_chain`), and
                the request's chain is cleared so that Celery does not send it again.
            retval: what the task returns (Celery's tracer hands it to the chain).
        """
        if parse_item(step_id) is not None:
            return self._goes_on(run_id, step_id, map_steps.item_ended(
                self, d, run_id, step_id, StepStatus.SUCCEEDED, token, output, True))
        uid = d.unit_of_terminal.get(step_id)
        if uid is not None:  # the step's end and its unit's completion: one script
            code, done = self.store.end_step(
                run_id, step_id, StepStatus.SUCCEEDED, uid, d.plan.successors[uid],
                output=output, has_output=True, ended_at=time.time(), workflow=d.wf.name,
                token=token, slotted=_slotted(d, step_id))
            if not self._goes_on(run_id, step_id, code):
                return False
            if done is not None:
                self._unit_completed(d, run_id, uid, done)
            return True
        return self._ended_in_chain(d, run_id, step_id, StepStatus.SUCCEEDED, token, request,
                                    retval, output=output, has_output=True)

    def ended(self, d: Definition, run_id: str, step_id: str, status: StepStatus,
              reason: str, token: str, decision: dict[str, Any] | None = None,
              request: Any = None, retval: Any = None) -> bool:
        """Record a final status that is neither a success nor a failure (``skipped``,
        ``cancelled``) with its reason (and the ``decision`` trail that skipped it), then
        move the run on; False if fenced.  ``request`` and ``retval``: as
        :meth:`succeeded`."""
        extra: dict[str, Any] = {} if decision is None else {"decision": decision}
        if parse_item(step_id) is not None:
            return self._goes_on(run_id, step_id, map_steps.item_ended(
                self, d, run_id, step_id, status, token, patch={"reason": reason, **extra}))
        return self._ended_in_chain(d, run_id, step_id, status, token, request, retval,
                                    reason=reason, **extra)

    def _ended_in_chain(self, d: Definition, run_id: str, step_id: str, status: StepStatus,
                        token: str, request: Any, retval: Any, failing: bool = False,
                        **fields: Any) -> bool:
        """Record a final ``status`` (with ``fields``: the output, the reason...) of a
        step that is not its unit's terminal, with its chain's next task's message when
        :func:`held_chain` can hold it (then ``request.chain`` is cleared: it went with
        the record), then move the run on; False if fenced.  ``failing``: the task fails,
        so Celery will not carry its canvas on: a chord part, or a chain not held, goes
        on here (:func:`continue_canvas`) before the unit completes."""
        canvas = None if request is None else held_chain(self.app, request, retval)
        code = self.store.step_transition(run_id, step_id, status, ended_at=time.time(),
                                          workflow=d.wf.name, token=token,
                                          followers=d.followers.get(step_id, ()),
                                          canvas=canvas or (), slotted=_slotted(d, step_id),
                                          **fields)
        if not self._goes_on(run_id, step_id, code):
            return False
        # sent with the record, and its lease settled (step_transition.lua); a move the
        # table refused sent nothing: Celery sends the chain on as for any task
        if canvas is not None and code == MOVED:
            request.chain = None
            setattr(request, SETTLED_BY_STEP, True)
        if failing:
            continue_canvas(self.app, request)
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
        if parse_item(step_id) is not None:  # an item's task has no chain or chord
            return self._goes_on(run_id, step_id, map_steps.item_ended(
                self, d, run_id, step_id, StepStatus.FAILED, token, patch={"error": error}))
        return self._ended_in_chain(d, run_id, step_id, StepStatus.FAILED, token, request,
                                    None, failing=True, error=error)

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

    # --- sub-workflows (orchestrator.core.subworkflows) ---------------------------------

    def start_child(self, child: Definition, parent: RunRecord, step_id: str, attempt: int,
                    child_input: Any) -> str:
        """Start the child run of attempt ``attempt`` of the sub-workflow step ``step_id``
        of run ``parent``, with ``child_input`` (checked by the caller), in the parent's
        priority band and tenant; the child records its parent.  Idempotent: the child's
        id is fixed (:func:`child_run_id`), so a redelivered task finds it started.

        A mapped sub-workflow step starts one child per item by calling this with the
        item's step run id as ``step_id``.

        Returns:
            The child run's id.
        """
        child_id = child_run_id(parent.run_id, step_id, attempt)
        origin = Origin(kind=OriginKind.WORKFLOW, by=f"{parent.run_id}/{step_id}",
                        tenant=parent.origin.tenant)
        try:
            self.start(child, child_id, child_input, origin, priority=parent.priority,
                       parent=(parent.run_id, step_id))
            log.info("step %s of run %s: child run %s started (%s)", step_id,
                     parent.run_id, child_id, child.wf.name)
        except RunExists:
            log.info("step %s of run %s: child run %s was started already", step_id,
                     parent.run_id, child_id)
        return child_id

    def wait_for_run(self, run_id: str, step_id: str, token: str, patch: dict[str, Any],
                     awaited: str, message: dict[str, Any]) -> bool:
        """Park a step that waits for run ``awaited`` (its child run, or in an undo run the
        child's undo run): ``waiting`` with ``patch``, its next task ``message`` in a store
        timer that only the awaited run's end makes due (``run_transition.lua``).  If the
        awaited run ended before the step parked (its end found no waiting step), it is
        woken now.  False if fenced."""
        patch = {**patch, "wait": {"kind": SUBWORKFLOW_WAIT, "run": awaited}}
        if not self.wait(run_id, step_id, token, patch, None, None, message):
            return False
        if self.store.run(run_id).status is RunStatus.CANCELLED:  # while it started it
            with contextlib.suppress(RunNotFound):
                self.cancel(awaited, reason=f"parent run {run_id} cancelled")
            return True
        try:
            ended = self.store.run(awaited).status
        except RunNotFound:
            ended = None
        if (ended is None or ended.terminal) and self.waits.wake(
                run_id, step_id, {"run": awaited, "status": ended.value if ended else None}
        ) == 1:
            self._publish_due(wait_timer_id(run_id, step_id))
        return True

    def undo_child(self, undo_run: RunRecord, step_id: str, child_id: str) -> str | None:
        """Start the undo run of child run ``child_id`` (the undo of the sub-workflow step
        ``step_id`` whose compensations the undo run ``undo_run`` runs), linked to that
        step like a child run.  Idempotent.

        Returns:
            The child's undo run id, or None if the child has nothing left to undo.
        """
        try:
            child = self.store.run(child_id)
        except RunNotFound:
            return None
        records = self.store.step_runs(child_id)
        d = self.definitions.load(child.version)
        ids = compensable(d.wf, {s: r.status for s, r in records.items()}, self.undoable(d.wf))
        if not ids:
            return None
        undo_id = undo_run_id(child_id)
        self._start_undo(child, d, ids, records, (undo_run.run_id, step_id))
        return undo_id

    def wake_parent(self, run_id: str) -> None:
        """A run that ended wakes the step waiting for it (a child run's parent step): the
        script that ended it made that step's timer due; publish its message now rather
        than at the reaper's next timer pass (the timer stays until published: if this
        process dies here, the reaper publishes it)."""
        parent = self.store.parent(run_id)
        if parent is not None:
            self._publish_due(wait_timer_id(*parent))

    def _publish_due(self, timer_id: str) -> None:
        """Publish the message of one store timer if it is due now (else leave it)."""
        message = self.store.take_timer(timer_id, WAKE_REARM_S)
        if message is None:
            return
        try:
            self.publish_message(json.loads(message))
        except Exception as exc:  # the run ended all the same; the timer is re-armed
            log.warning("timer %s: publish failed (%s: %s); the reaper publishes it in "
                        "%.0f s", timer_id, type(exc).__name__, exc, WAKE_REARM_S)
            return
        self.store.timers_done([timer_id])

    def undoable(self, wf: WorkflowDef) -> frozenset[str]:
        """The sub-workflow steps of ``wf`` whose child versions have compensations."""
        if not any(s.workflow is not None for s in wf.steps):
            return frozenset()
        return undoable(wf, lambda v: self.definitions.load(v).wf)

    def draw(self, step: StepDef, run_input: Any) -> float:
        """Draw a start from the step's rate limit (shared by every worker): 0 if the step
        run may start now, else the seconds until it may.

        Raises:
            ConditionError: the limit's key expression fails on this input.
        """
        assert step.rate_limit is not None
        return self.leases.draw(ratelimits.scope(step, run_input), step.rate_limit.interval_s)

    def take_slot(self, run_id: str, step_id: str, slot: concurrency.Slot, token: str,
                  message: dict[str, Any]) -> Taken:
        """Take a slot of the step's concurrency key for its step run, held until its final
        status; with every slot held, hold its task ``message`` (a signature's dict, with
        its chain and chord) in the store until a holder's end passes it a slot (its task
        then ends without carrying the canvas on), or say the limit is full
        (``cancel_newest``: the caller ends it cancelled)."""
        got = self.slots.acquire(run_id, step_id, slot, token, message, self.store.retention_s)
        if got is Taken.WAITING:
            log.info("step %s of run %s: %s", step_id, run_id, slot.waiting)
        return got

    def defer(self, run_id: str, step_id: str, message: dict[str, Any]) -> None:
        """A copy of the step's task arrived while another delivery holds the lease: hold
        the copy (``message``, its signature) until just after the lease would expire, so
        that it takes over if the holder died and is dropped if it finished."""
        self.leases.defer_copy(run_id, step_id, message, self.store.retention_s,
                               self.lease_s)

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
        self._unit_completed(d, run_id, uid, self.store.complete_unit_in_band(
            run_id, uid, d.plan.successors[uid]))

    def _unit_completed(self, d: Definition, run_id: str, uid: str, done: Completed) -> None:
        """After a unit's completion: publish the successors it claimed, and finalise
        the run when it was the last unit."""
        if done.remaining < 0:
            log.info("run %s is gone (retention): unit %s left alone", run_id, uid)
            return
        self.publish(d, run_id, done.ready, done.priority)
        if done.remaining == 0:
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
        wf = self.definitions.load(run.version).wf
        status = ending(wf, {s: r.status for s, r in steps.items()
                             if parse_item(s) is None},  # a map's items: its own status
                        self.undoable(wf))
        if status is RunStatus.COMPENSATING:
            if self.end_run(run_id, status, compensation_cause="failed"):
                log.info("run %s failed: undoing its succeeded steps", run_id)
            self.compensate(run_id)
            return self.store.run(run_id).status
        moved = self.end_run(run_id, status)
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
        ids = compensable(d.wf, {s: r.status for s, r in records.items()},
                          self.undoable(d.wf))
        if not ids:
            if self.end_run(run_id, RunStatus.COMPENSATED):
                tracing.run_ended(self.store.run(run_id))
            return
        self._start_undo(run, d, ids, records)

    def _start_undo(self, run: RunRecord, d: Definition, ids: list[str],
                    records: dict[str, StepRun], parent: tuple[str, str] | None = None
                    ) -> None:
        """Start the undo run of ``run`` for its steps ``ids`` (idempotent); ``parent``:
        the undo step that waits for it (the run is a child run being undone)."""
        run_id = run.run_id
        undo_id = undo_run_id(run_id)
        undo = self.definitions.compile(undo_workflow(d.wf, ids))
        children = {s: str((records[s].wait or {}).get("run")) for s in ids
                    if d.wf.step_map[s].workflow is not None}
        data = undo_input(d.wf, ids, run.input, self.store.outputs(run_id), children)
        for step_id in ids:  # succeeded -> compensating (refused if already)
            self.store.transition_step(run_id, step_id, StepStatus.COMPENSATING,
                                       reason=f"undone by run {undo_id}")
        try:
            self.start(undo, undo_id, data, Origin(kind=OriginKind.COMPENSATION,
                                                   tenant=run.origin.tenant),
                       compensates=run_id, priority=run.priority, parent=parent)
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
        if self.end_run(run_id, status):
            tracing.run_ended(self.store.run(run_id))

    def publish_message(self, message: dict[str, Any]) -> None:
        """Publish a task message held in the store (a retry timer's signature), as a
        child of its run's span (traces)."""
        run_id = (message.get("kwargs") or {}).get("run_id")
        with tracing.run_context(run_id if isinstance(run_id, str) else None):
            from_dict(message, app=self.app).apply_async()
