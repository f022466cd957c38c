"""The run protocol: how a run starts, how each step run's outcome is recorded, and how
the end of a unit publishes the units after it and finalises the run.

Every change to how a run advances goes through :class:`Progress`; the Celery tasks
(``workers/``) and the coordinator call it and nothing else writes a run's progress.

The data path of one run::

    start(d, run_id, input)           create the run, claim its source units, publish them
      -> a step task runs             begin() reads what the step needs (and, on the fast
                                      path, starts it), the step function runs, then one of
                                      succeeded / skipped / failed / cancelled / retrying
      -> the unit's terminal task     unit_task_done(): complete the unit, publish the
                                      successors whose counters reach zero
      -> no unit left                 finalize(): the run succeeds or fails

A unit's canvas runs natively in Celery (chains and chords); only its terminal task (the
last step of its chain, or its chord's join) moves the run on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from celery import Celery

from orchestrator.core.states import RunStatus, StepStatus
from orchestrator.runtime.canvas import continue_canvas, signature
from orchestrator.runtime.definitions import Definition, Definitions
from orchestrator.store import RunRecord, RunStore, StepRun


@dataclass(frozen=True)
class Begin:
    """What a step run starts from (:meth:`Progress.begin`)."""

    run: RunRecord
    records: dict[str, StepRun]
    """Records of the step's parents, of the steps its condition reads, and its own."""
    outputs: dict[str, Any]
    """Outputs of the steps it reads."""
    began: bool
    """True when the step moved to ``running`` here (the fast path)."""


class Progress:
    """Advances the runs of one store; one per process."""

    def __init__(self, app: Celery, store: RunStore, definitions: Definitions,
                 default_queue: str) -> None:
        self.app = app
        self.store = store
        self.definitions = definitions
        self.default_queue = default_queue

    # --- start ---------------------------------------------------------------------------

    def start(self, d: Definition, run_id: str, run_input: Any) -> None:
        """Create the run, claim its source units and publish them.

        Raises:
            RunExists: ``run_id`` is taken.
        """
        self.store.create_run(run_id, d.wf, d.plan, run_input)
        self.publish(d, run_id, self.store.claim_sources(run_id, d.plan.sources))

    def publish(self, d: Definition, run_id: str, units: Sequence[str]) -> None:
        """Publish the canvases of ``units`` (claimed by this process)."""
        for uid in units:
            unit = d.plan.unit_map[uid]
            self.store.mark_queued(run_id, unit.steps)
            signature(self.app, d, unit.canvas, run_id, self.default_queue).apply_async()
        self.store.mark_published(run_id, list(units))

    # --- a step run ----------------------------------------------------------------------

    def begin(self, d: Definition, run_id: str, step_id: str,
              running: dict[str, Any]) -> Begin:
        """Read what the step needs in one round trip; on the fast path (see
        :meth:`Definition.fast`) also move it to ``running`` with the patch ``running``.

        Raises:
            RunNotFound: the run is not in the store.
        """
        step = d.wf.step_map[step_id]
        reads = d.reads(step)  # parents' and condition-read ancestors' outputs
        run, recs, outs, began = self.store.begin_step(
            run_id, step_id, list(d.deps[step_id]), reads, reads, d.fast(step), running)
        return Begin(run, recs, outs, began)

    def running(self, run_id: str, step_id: str, running: dict[str, Any]) -> None:
        """Move the step to ``running`` (after the trigger rule and condition said run)."""
        self.store.transition_step(run_id, step_id, StepStatus.RUNNING, **running)

    def retrying(self, run_id: str, step_id: str, error: dict[str, Any],
                 retry_at: float) -> None:
        """Record that the step run failed and will be retried at ``retry_at``."""
        self.store.transition_step(run_id, step_id, StepStatus.RETRYING, error=error,
                                   retry_at=retry_at)

    def succeeded(self, d: Definition, run_id: str, step_id: str, output: Any) -> None:
        """Record the step's output and success, then move the run on."""
        self.store.transition_step(run_id, step_id, StepStatus.SUCCEEDED, output=output,
                                   has_output=True, ended_at=time.time(),
                                   workflow=d.wf.name)
        self.unit_task_done(d, run_id, step_id)

    def ended(self, d: Definition, run_id: str, step_id: str, status: StepStatus,
              reason: str) -> None:
        """Record a final status that is neither a success nor a failure (``skipped``,
        ``cancelled``) with its reason, then move the run on."""
        self.store.transition_step(run_id, step_id, status, ended_at=time.time(),
                                   workflow=d.wf.name, reason=reason)
        self.unit_task_done(d, run_id, step_id)

    def failed(self, d: Definition, run_id: str, step_id: str, error: dict[str, Any],
               request: Any) -> None:
        """Record the step's final failure, carry its canvas on past it (successors decide
        by their trigger rules), then move the run on.

        Args:
            request: the task's request context (``task.request``, or in the worker's
                main process ``Request._context``), whose chain and chord go on.
        """
        self.store.transition_step(run_id, step_id, StepStatus.FAILED, error=error,
                                   ended_at=time.time(), workflow=d.wf.name)
        continue_canvas(self.app, request)
        self.unit_task_done(d, run_id, step_id)

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
        successors = d.plan.successors[uid]
        remaining, ready = self.store.complete_unit(run_id, uid, successors)
        # a redelivered terminal: re-publish what a dead worker claimed but never sent
        ready += [u for u in self.store.unpublished_ready(run_id, successors) if u not in ready]
        if ready:
            self.publish(d, run_id, ready)
        if remaining <= 0:
            self.finalize(run_id)

    def finalize(self, run_id: str) -> RunStatus:
        """Give the run its final status from its steps' (no-op if already final)."""
        steps = self.store.step_runs(run_id)
        failed = any(s.status is StepStatus.FAILED for s in steps.values())
        self.store.transition_run(run_id, RunStatus.FAILED if failed else RunStatus.SUCCEEDED)
        return self.store.run(run_id).status
