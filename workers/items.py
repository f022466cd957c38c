"""The task body of a map item (``step_id`` ``fetch[17]``): a step run of the map step's
function, with the item in the parameter ``map.as`` (of a mapped sub-workflow step: a
child run, the item in its input field ``map.as``, that the item waits for).

It takes the item's lease as any step run does (``MapStore.begin_item``, the
``begin_step`` of an item: the run's status, the map step's record and the item's, in one
round trip, and the move to ``running``),
ends ``cancelled`` if the run was cancelled or the map step stopped (too many failed
items), else calls the function through the ordinary step path (:func:`workers.step._call`:
retries, time limits, output limits), whose outcome :class:`Progress` routes to
:func:`orchestrator.runtime.maps.item_ended`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from orchestrator.core import subworkflows
from orchestrator.core.maps import parse_item
from orchestrator.core.models import Ref, Value
from orchestrator.core.states import RunStatus, StepStatus
from orchestrator.errors import RunNotFound
from orchestrator.runtime import maps
from orchestrator.store.records import LeaseMode
from workers.step import (
    StepTask,
    _call,
    _child_resume,
    _defer,
    _done,
    drop_canvas,
    lease_of,
    progress,
)

log = logging.getLogger(__name__)


def execute(task: StepTask, run_id: str, item: str, version: str) -> dict[str, Any]:
    """Run one item of a map step (see the module docstring)."""
    p = progress()
    d = p.definitions.load(version)
    found = parse_item(item)
    assert found is not None
    step = d.wf.step_map[found[0]]
    assert step.map is not None
    attempt = task.request.retries + 1
    token, tag = lease_of(task)
    running = {"attempt": attempt, "started_at": time.time(), "worker": task.request.hostname,
               "task_id": task.request.id, "error": None, "retry_at": None}
    if subworkflows.parks(step):  # a new attempt waits for a new child run
        running["resolution"] = None
    slot = f"in:{item}"
    reads = [slot, *step.input_steps()]
    read_input = any(isinstance(src, Ref) and src.step is None for src in step.inputs.values())
    try:
        run, recs, outs, mode = p.maps.begin_item(run_id, item, step.id, reads, read_input,
                                                  running, token, tag, p.lease_s)
    except RunNotFound:
        log.info("item %s of run %s: the run is gone; message dropped", item, run_id)
        return {"run_id": run_id, "step_id": item, "status": "gone"}
    own = recs[item]
    if mode is LeaseMode.BUSY:
        _defer(task, p, run_id, item)
        return _done(run_id, item, own.status)
    if mode is LeaseMode.DROP:
        drop_canvas(task)
        return _done(run_id, item, own.status)
    if mode is LeaseMode.SETTLE:  # it ended; its follow-ups may not have gone out
        maps.settle_item(p, d, run_id, item, own, run.priority)
        return _done(run_id, item, own.status)
    inputs = {**step.inputs, step.map.as_: Value(value=outs.get(slot))}
    as_item = step.model_copy(update={"id": item, "inputs": inputs})
    if run.status is RunStatus.RUNNING and own.status is StepStatus.WAITING \
            and subworkflows.parks(step):  # its child ran: the item ends as it did
        return _child_resume(task, p, d, as_item, run_id, own, token)
    if run.status is not RunStatus.RUNNING or maps.stopped(recs, step.id):
        reason = ("map step stopped: too many items failed" if run.status is RunStatus.RUNNING
                  else f"run {run.status.value}")
        p.ended(d, run_id, item, StepStatus.CANCELLED, reason, token)
        return _done(run_id, item, StepStatus.CANCELLED)
    if mode is not LeaseMode.BEGAN:  # a retry, or a copy after a lost lease: start it
        running["started_at"] = time.time()
        if not p.running(run_id, item, running, token):
            return _done(run_id, item, own.status)
    if slot not in outs:
        log.error("item %s of run %s: its item is not in the store", item, run_id)
    return _call(task, p, d, as_item, run_id, run.input, outs, attempt, token, run.faults)
