"""Carrying a canvas past a failed step.

Celery stops a chain at a failed task and fails the chord it belongs to.  Our trigger
rules need the canvas to go on (successors decide for themselves whether to run), while
the failed task must still show as FAILURE, with its traceback, in Flower.  So before a
step's task raises its final error, it publishes the rest of its chain itself and reports
its chord part as done, then clears both from the request so that Celery's failure path
does not propagate the error into them.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, states
from celery.canvas import signature


def continue_canvas(app: Celery, request: Any) -> None:
    """Publish the next chain element and report the chord part, then detach both.

    Args:
        app: the worker's Celery app.
        request: the task's request context (``task.request`` or ``Request._context``).
    """
    chain = getattr(request, "chain", None)
    if chain:
        nxt = signature(chain[-1], app=app)
        nxt.apply_async(chain=chain[:-1], parent_id=request.id,
                        root_id=getattr(request, "root_id", None) or request.id)
        request.chain = None
    if getattr(request, "chord", None):
        app.backend.on_chord_part_return(request, states.SUCCESS, None)
        request.chord = None
