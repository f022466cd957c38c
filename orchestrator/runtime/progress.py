"""Turning plan units into Celery canvases and advancing the dependency counters.

Used by the coordinator (to start a run's source units) and by the workers (to start a
unit when the last of its predecessor units finishes).  Signatures are built by task
name, so no task code is needed here.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from celery import Celery, chain, chord
from celery.canvas import Signature

from orchestrator.core.conditions import Condition, parse
from orchestrator.core.models import WorkflowDef
from orchestrator.core.plan import CanvasNode, ChainNode, ChordNode, Plan, TaskNode, is_join
from orchestrator.core.states import RunStatus, StepStatus
from orchestrator.runtime.celeryconf import JOIN_TASK, step_task_name
from orchestrator.store.runs import RunStore


@dataclass(frozen=True)
class Definition:
    """A workflow version with everything derived from it that the runtime needs."""

    wf: WorkflowDef
    plan: Plan

    @cached_property
    def deps(self) -> dict[str, tuple[str, ...]]:
        return self.wf.dependencies()

    @cached_property
    def handlers(self) -> dict[str, tuple[str, ...]]:
        return self.wf.handlers_of()

    @cached_property
    def unit_of_terminal(self) -> dict[str, str]:
        return {u.terminal: u.id for u in self.plan.units}

    @cached_property
    def conditions(self) -> dict[str, Condition]:
        return {s.id: parse(s.when) for s in self.wf.steps if s.when}

    def queue(self, step_id: str, default: str) -> str:
        return self.wf.step_map[step_id].queue or self.wf.default_queue or default


class Dispatcher:
    """Publishes units and advances counters for runs in one store."""

    def __init__(self, app: Celery, store: RunStore, default_queue: str,
                 cache_size: int = 256) -> None:
        self.app = app
        self.store = store
        self.default_queue = default_queue
        self._cache: OrderedDict[str, Definition] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def definition(self, version: str) -> Definition:
        """The stored definition of ``version`` (cached in this process)."""
        with self._lock:
            d = self._cache.get(version)
            if d is not None:
                self._cache.move_to_end(version)
                return d
        wf, plan = self.store.load_definition(version)
        d = Definition(wf, plan)
        with self._lock:
            self._cache[version] = d
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return d

    def remember(self, wf: WorkflowDef, plan: Plan) -> Definition:
        """Store a definition and cache it here."""
        self.store.save_definition(wf, plan)
        d = Definition(wf, plan)
        with self._lock:
            self._cache[wf.version] = d
        return d

    # --- canvases ------------------------------------------------------------------------

    def signature(self, d: Definition, node: CanvasNode, run_id: str) -> Signature:
        """The Celery canvas of a plan node (immutable signatures, data by reference)."""
        if isinstance(node, TaskNode):
            if is_join(node.id):
                return self.app.signature(
                    JOIN_TASK, kwargs={"run_id": run_id, "join_id": node.id,
                                       "version": d.wf.version},
                    immutable=True, queue=self.default_queue)
            step = d.wf.step_map[node.id]
            opts: dict[str, Any] = {"queue": d.queue(node.id, self.default_queue)}
            if step.timeout_s:
                opts["time_limit"] = step.timeout_s
            if step.soft_timeout_s:
                opts["soft_time_limit"] = step.soft_timeout_s
            return self.app.signature(step_task_name(step.function),
                                      kwargs={"run_id": run_id, "step_id": node.id,
                                              "version": d.wf.version},
                                      immutable=True, **opts)
        if isinstance(node, ChainNode):
            return chain(*(self.signature(d, n, run_id) for n in node.items), app=self.app)
        assert isinstance(node, ChordNode)
        join = self.signature(d, TaskNode(id=node.join), run_id)
        return chord([self.signature(d, n, run_id) for n in node.header], join, app=self.app)

    def launch(self, run_id: str, d: Definition, units: Sequence[str]) -> None:
        """Publish the canvases of ``units`` (already claimed by this process)."""
        for uid in units:
            unit = d.plan.unit_map[uid]
            self.store.mark_queued(run_id, unit.steps)
            self.signature(d, unit.canvas, run_id).apply_async()
        self.store.mark_published(run_id, list(units))

    # --- progress ------------------------------------------------------------------------

    def task_finished(self, run_id: str, d: Definition, task_id: str) -> None:
        """Called when a step or join task of ``run_id`` is done (whatever its outcome).

        If it was its unit's terminal task, the unit is complete: successors whose
        counters reach zero are dispatched, and the run is finalised when no unit is left.
        """
        uid = d.unit_of_terminal.get(task_id)
        if uid is None:
            return
        successors = d.plan.successors[uid]
        remaining, ready = self.store.complete_unit(run_id, uid, successors)
        # a redelivered terminal: re-publish what a dead worker claimed but never sent
        ready += [u for u in self.store.unpublished_ready(run_id, successors) if u not in ready]
        if ready:
            self.launch(run_id, d, ready)
        if remaining <= 0:
            self.finalize(run_id)

    def finalize(self, run_id: str) -> RunStatus:
        """Give the run its final status from its steps' statuses (no-op if already final)."""
        steps = self.store.step_runs(run_id)
        failed = any(s.status is StepStatus.FAILED for s in steps.values())
        final = RunStatus.FAILED if failed else RunStatus.SUCCEEDED
        self.store.transition_run(run_id, final)
        return self.store.run(run_id).status
