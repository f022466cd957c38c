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

When a step ends (succeeded, skipped, cancelled, failed) and its chain goes on to a plain
task, :func:`held_chain` builds the next task's message with Celery exactly as its tracer
would, but holds kombu's Redis commands instead of sending them
(:func:`orchestrator.runtime.broker.capture`): the store's script that records the end
sends them (``step_transition.lua``), so the next message exists if and only if the end
is recorded, in one round trip where the record and the publish took two.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from celery import Celery, chain, chord, group, states
from celery.canvas import Signature
from celery.canvas import signature as from_dict

from orchestrator.core.plan import CanvasNode, ChainNode, ChordNode, TaskNode, is_join
from orchestrator.core.priorities import Priority, band_queue
from orchestrator.runtime import broker
from orchestrator.runtime.celeryconf import JOIN_TASK, step_task_name
from orchestrator.runtime.definitions import Definition

log = logging.getLogger(__name__)


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
        return step_signature(app, d, node.id, node.id, run_id, default_queue, priority)
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


def step_signature(app: Celery, d: Definition, step_id: str, as_id: str, run_id: str,
                   default_queue: str, priority: Priority = Priority.NORMAL) -> Signature:
    """The task of step ``step_id`` of ``d`` (see :func:`signature`), for step run
    ``as_id`` (the step's id, or a placeholder: :meth:`orchestrator.runtime.messages.
    Templates.lone` builds one message for every step that :func:`lone_key` puts
    together)."""
    step = d.wf.step_map[step_id]
    opts: dict[str, Any] = {"queue": band_queue(d.queue(step_id, default_queue), priority)}
    if step.timeout_s:
        opts["time_limit"] = step.timeout_s
    if step.soft_timeout_s:
        opts["soft_time_limit"] = step.soft_timeout_s
    # Signature itself, not app.signature: that goes through a property behind a lock
    # that every submitting thread of the process takes
    return Signature(step_task_name(step.function),
                     kwargs={"run_id": run_id, "step_id": as_id, "version": d.wf.version},
                     immutable=True, app=app, **opts)


def lone_key(d: Definition, node: CanvasNode, default_queue: str,
             priority: Priority) -> tuple[Any, ...] | None:
    """What fixes the message of a unit that is one step's task alone, but the run and
    step ids (everything :func:`step_signature` reads); None for any other unit."""
    if not isinstance(node, TaskNode) or is_join(node.id):
        return None
    step = d.wf.step_map[node.id]
    return (d.wf.version, "lone", step.function, d.queue(node.id, default_queue),
            step.timeout_s, step.soft_timeout_s, priority.value, default_queue)


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


def held_chain(app: Celery, request: Any, retval: Any
               ) -> Sequence[tuple[str, tuple[Any, ...]]] | None:
    """The broker commands that publish the next element of ``request``'s chain, built as
    Celery's tracer builds them after a task returns ``retval`` (``trace.py``,
    ``_dispatch_callbacks_and_chain``: the chain's last signature, applied with the rest of
    the chain, this task as parent, its root, and its delivery's priority when
    ``task_inherit_parent_priority``), held instead of sent.

    None when Celery must carry the canvas on itself: no chain; a chord part or link
    callbacks to fire as well; a next element that is not a plain task (a group or chord
    writes to the result backend when applied); a transport whose publishes cannot be
    held (Sentinel).  The caller that sends the commands clears ``request.chain``.
    """
    rest = getattr(request, "chain", None)
    if not rest or getattr(request, "chord", None) or getattr(request, "callbacks", None) \
            or not broker.captures(app):
        return None
    nxt = rest[-1]
    if not isinstance(nxt, dict) or nxt.get("subtask_type") or "task" not in nxt:
        return None
    priority = (getattr(request, "delivery_info", None) or {}).get("priority") \
        if app.conf.task_inherit_parent_priority else None
    with broker.capture() as held:
        from_dict(nxt, app=app).apply_async(
            (retval,), chain=rest[:-1], parent_id=request.id,
            root_id=getattr(request, "root_id", None) or request.id, priority=priority)
    if not any(name == "lpush" for name, _ in held.commands):
        # not held (a channel that is not ours): Celery publishes it again after the task;
        # a second copy of a message is dropped by its step's lease
        log.warning("the next task of a chain (%s) was not held for the store's script; "
                    "Celery publishes it", nxt["task"])
        return None
    return held.commands
