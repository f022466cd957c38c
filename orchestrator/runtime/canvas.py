"""Canvases: plan units as Celery signatures, and carrying a canvas past a failed step.

:func:`signature` turns a plan node into a chain, a chord closed by a join, or a task;
signatures are built by task name (immutable, data by reference: each task's kwargs are
the run id, its step or join id and the workflow version), so no task code is needed.

Celery stops a chain at a failed task and fails the chord it belongs to.  Our trigger
rules need the canvas to go on (successors decide for themselves whether to run), while
the failed task must still show as FAILURE, with its traceback, in Flower.  So before a
step's task raises its final error, it publishes the rest of its chain itself and reports
its chord part as done, then clears both from the request so that Celery's failure path
does not propagate the error into them.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, chain, chord, group, states
from celery.canvas import Signature
from celery.canvas import signature as from_dict

from orchestrator.core.plan import CanvasNode, ChainNode, ChordNode, TaskNode, is_join
from orchestrator.core.priorities import Priority, band_queue
from orchestrator.runtime.celeryconf import JOIN_TASK, step_task_name
from orchestrator.runtime.definitions import Definition


def signature(app: Celery, d: Definition, node: CanvasNode, run_id: str,
              default_queue: str, priority: Priority = Priority.NORMAL) -> Signature:
    """The Celery canvas of a plan node (immutable signatures, data by reference).

    Args:
        app: the app the signatures are bound to (tasks by name: it needs none).
        d: the run's definition.
        node: a node of one of ``d``'s plan units.
        run_id: the run the tasks belong to.
        default_queue: the queue of join tasks and of steps that name none.
        priority: the run's priority: each task goes to that band of its queue
            (:func:`~orchestrator.core.priorities.band_queue`; ``normal``: the queue).
    """
    if isinstance(node, TaskNode):
        if is_join(node.id):
            return Signature(
                JOIN_TASK, kwargs={"run_id": run_id, "join_id": node.id,
                                   "version": d.wf.version},
                immutable=True, app=app, queue=band_queue(default_queue, priority))
        step = d.wf.step_map[node.id]
        opts: dict[str, Any] = {"queue": band_queue(d.queue(node.id, default_queue), priority)}
        if step.timeout_s:
            opts["time_limit"] = step.timeout_s
        if step.soft_timeout_s:
            opts["soft_time_limit"] = step.soft_timeout_s
        # Signature itself, not app.signature: that goes through a property behind a lock
        # that every submitting thread of the process takes
        return Signature(step_task_name(step.function),
                         kwargs={"run_id": run_id, "step_id": node.id,
                                 "version": d.wf.version},
                         immutable=True, app=app, **opts)
    if isinstance(node, ChainNode):
        return chain(*(signature(app, d, n, run_id, default_queue, priority)
                       for n in node.items), app=app)
    assert isinstance(node, ChordNode)
    join = signature(app, d, TaskNode(id=node.join), run_id, default_queue, priority)
    # the header as a group: chord() takes a group's tasks as they are, where it would
    # clone each signature of a list (deeply: every chain in it) once more
    header = group([signature(app, d, n, run_id, default_queue, priority)
                    for n in node.header], app=app)
    return chord(header, join, app=app)


def continue_canvas(app: Celery, request: Any) -> None:
    """Publish the next chain element and report the chord part, then detach both.

    Args:
        app: the worker's Celery app.
        request: the task's request context (``task.request`` or ``Request._context``).
    """
    rest = getattr(request, "chain", None)
    if rest:
        nxt = from_dict(rest[-1], app=app)
        nxt.apply_async(chain=rest[:-1], parent_id=request.id,
                        root_id=getattr(request, "root_id", None) or request.id)
        request.chain = None
    if getattr(request, "chord", None):
        app.backend.on_chord_part_return(request, states.SUCCESS, None)
        request.chord = None
