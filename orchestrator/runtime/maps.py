"""Map steps at run time: a map step's task expands it into items, each item's end is
recorded (and under ``max_parallel`` hands out the next item), and the last item's end
ends the map step and publishes what comes after it.  Part of the run protocol: the
functions here take the process's :class:`~orchestrator.runtime.progress.Progress`, and
:class:`Progress` routes an item's outcome (``fetch[17]``) here.

The data path of one map step ``fetch`` (its own unit, see ``core/compiler``)::

    fetch's task (the map step's own delivery, holding its lease)
      trigger rule and `when` decide (skipped: the map step is skipped as a whole)
      expand(): evaluate `over`, store the items and counters (one script call), publish
                the first window: one message per item, {run_id, step_id: "fetch[i]",
                version}, all through one producer
    fetch[i]'s task (a step run like any other: lease, attempts, retries, redelivery)
      item_ended(): one script call records its end, counts it, hands back the next item
                to publish (a sliding window), and for the last item ends the map step
                (its output the items' outputs in order) and completes its unit
      -> the successors the call claimed are published by this worker (the join is
         that call: no polling, no extra task)

Recovery: an item's own end records its follow-ups (``follow`` on its record): a
redelivered copy of a task that died after recording (SETTLE) publishes the item it
handed out and finishes the unit completion it began, and so does a delivery whose end
the store refused as already recorded (a Redis restart lost its first call's reply).
A redelivered map step task re-publishes the items it published before that have not
ended: never began, or began and lost their task (a Redis restart can end a task without
its outcome; the stalled-run pass then publishes the map's unit again).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kombu.exceptions import BatchPublishError

from orchestrator.core import maps
from orchestrator.core.maps import item_id, parse_item
from orchestrator.core.models import StepDef
from orchestrator.core.priorities import Priority, band_queue
from orchestrator.core.states import StepStatus
from orchestrator.errors import RunNotFound
from orchestrator.runtime import tracing
from orchestrator.runtime.celeryconf import step_task_name
from orchestrator.runtime.definitions import Definition
from orchestrator.store.maps import Closing
from orchestrator.store.records import StepRun

if TYPE_CHECKING:
    from orchestrator.runtime.progress import Begin, Progress

log = logging.getLogger(__name__)

FENCED, GONE = -2, -1


def step_of(d: Definition, step_run_id: str) -> StepDef:
    """The step a step run id belongs to: the step itself, or a map item's map step."""
    step = d.wf.step_map.get(step_run_id)
    if step is not None:
        return step
    found = parse_item(step_run_id)
    if found is None or found[0] not in d.wf.step_map:
        raise KeyError(step_run_id)
    return d.wf.step_map[found[0]]


def expand(p: Progress, d: Definition, run_id: str, step: StepDef, b: Begin,
           token: str) -> StepStatus:
    """Expand map step ``step`` (its task holds its lease; it is ``running``): evaluate
    ``over`` on the run's input and the ancestors' outputs, store the items and publish
    the first window (all of them without ``max_parallel``).  A list of none ends the map
    step ``succeeded`` now.

    Returns:
        The map step's status after this call.

    Raises:
        ConditionError: ``over`` failed or gave no list (the caller fails the step).
    """
    m = step.map
    assert m is not None
    views = {s: {"output": b.outputs.get(s), "status": b.records[s].status.value}
             for s in d.reads(step) if s in b.records}
    values = maps.items(m, b.run.input, views)
    unit = d.unit_of_terminal[step.id]
    x = p.maps.expand(run_id, step.id, token, d.wf.name, unit, d.plan.successors[unit],
                      m.max_parallel or 0, maps.tolerated(m),
                      [json.dumps(v) for v in values])
    if x.code in (FENCED, GONE):
        log.info("map step %s of run %s: %s; expansion dropped", step.id, run_id,
                 "this delivery lost its lease" if x.code == FENCED else "the run is gone")
        return StepStatus.RUNNING
    if x.code == 0:
        log.info("map step %s of run %s: expanded before; publishing again the %d items "
                 "published then that have not ended", step.id, run_id, len(x.publish))
    publish_items(p, d, run_id, step, x.publish, b.run.priority)
    if x.closing.closed:
        close(p, d, run_id, x.closing)
        return StepStatus.SUCCEEDED
    log.info("map step %s of run %s: %d items, %d published", step.id, run_id, x.count,
             len(x.publish))
    return StepStatus.RUNNING


PUBLISH_CHUNK = 250
"""Item messages published in one pipelined batch (each is an LPUSH and, with
``task_send_sent_event``, its ``task-sent`` PUBLISH: 500 commands, one round trip)."""


def publish_items(p: Progress, d: Definition, run_id: str, step: StepDef,
                  indexes: Sequence[int], priority: Priority = Priority.NORMAL) -> None:
    """Publish the tasks of items ``indexes`` of map step ``step``: each message carries
    only the run id, the item's step run id and the version, so its size does not grow
    with the number of items; they go through one producer, in batches of
    :data:`PUBLISH_CHUNK` (kombu's ``Producer.batch``: one pipelined round trip for the
    messages and their ``task-sent`` events, not one each).  A batch whose delivery is
    uncertain (Redis failed mid-flush) is published again one message at a time, with
    the producer's retries: an item published twice is begun once (its lease decides)."""
    if not indexes:
        return
    name = step_task_name(step.function)
    opts: dict[str, Any] = {"queue": band_queue(d.queue(step.id, p.default_queue), priority)}
    if step.timeout_s:
        opts["time_limit"] = step.timeout_s
    if step.soft_timeout_s:
        opts["soft_time_limit"] = step.soft_timeout_s
    version = d.wf.version

    def send(chunk: Sequence[int], producer: Any) -> None:
        for i in chunk:
            p.app.send_task(name, kwargs={"run_id": run_id, "step_id": item_id(step.id, i),
                                          "version": version},
                            producer=producer, add_to_parent=False, **opts)

    with tracing.run_context(run_id), p.app.producer_or_acquire() as producer:
        for at in range(0, len(indexes), PUBLISH_CHUNK):
            chunk = indexes[at:at + PUBLISH_CHUNK]
            if len(chunk) == 1:
                send(chunk, producer)
                continue
            try:
                with producer.batch(max_size=4 * PUBLISH_CHUNK):
                    send(chunk, producer)
            except BatchPublishError as exc:
                log.warning("publishing %d items of %s of run %s in one batch failed (%s); "
                            "publishing them one by one", len(chunk), step.id, run_id,
                            exc.__cause__ or exc)
                send(chunk, producer)


def item_ended(p: Progress, d: Definition, run_id: str, item: str, status: StepStatus,
               token: str, output: Any = None, has_output: bool = False,
               patch: dict[str, Any] | None = None) -> int:
    """Record item ``item``'s final ``status`` (fenced by its lease) and move its map
    step on: publish the next item it hands out, and if it was the last item, publish
    the successors its call claimed (and finalize the run when no unit is left).

    Returns:
        The store's code: 1 recorded, 0 refused by the transition table, -1 the run is
        gone, -2 this delivery lost its lease (nothing recorded).
    """
    found = parse_item(item)
    assert found is not None
    step_id, index = found
    step = d.wf.step_map[step_id]
    patch = {"ended_at": time.time(), **(patch or {})}
    failure = None
    if status is StepStatus.FAILED and patch.get("error"):
        err = patch["error"]
        failure = {"index": index, "type": err.get("type"), "message": err.get("message")}
    unit = d.unit_of_terminal[step_id]
    end = p.maps.item_ended(run_id, item, step_id, token, status, patch, output, has_output,
                            d.wf.name, unit, d.plan.successors[unit], failure)
    if end.code == 0:
        _refused(p, d, run_id, item)
    if end.code != 1:
        return end.code
    if end.handed >= 0:
        publish_items(p, d, run_id, step, [end.handed], end.closing.priority)
    if end.closing.closed:
        close(p, d, run_id, end.closing)
    return end.code


def _refused(p: Progress, d: Definition, run_id: str, item: str) -> None:
    """The store refused an item's end: it had ended already.  Maybe by this very call:
    Redis ran the script and restarted before it answered, and the client's retry found
    the item ended.  That first run handed out the next item and may have closed the map,
    and no other delivery will publish them (this one acknowledges its message), so carry
    its follow-ups on as a redelivered copy would (:func:`settle_item`: a copy of the
    handed item is harmless, completing the unit again changes nothing).  Seen in the
    Redis-restart map test: every item ended, the map never closed."""
    try:
        own = p.store.step_runs(run_id, [item]).get(item)
        priority = p.store.run(run_id).priority
    except RunNotFound:
        return
    if own is not None and own.status.terminal and own.follow:
        log.info("item %s of run %s had ended already; its follow-ups go out again",
                 item, run_id)
        settle_item(p, d, run_id, item, own, priority)


def settle_item(p: Progress, d: Definition, run_id: str, item: str, own: StepRun,
                priority: Priority) -> None:
    """An item ended but the delivery that ended it died before its follow-ups: publish
    the item it handed out (a copy is harmless: the item's lease lets one run it) and
    complete the map's unit again if it closed the map (idempotent)."""
    follow = own.follow or {}
    step = step_of(d, item)
    if follow.get("handed") is not None:
        publish_items(p, d, run_id, step, [int(follow["handed"])], priority)
    if follow.get("closes"):
        p.unit_task_done(d, run_id, step.id)


def close(p: Progress, d: Definition, run_id: str, closing: Closing) -> None:
    """The map step ended and its unit completed in the store: publish the successors
    that call claimed, and finalize the run if no unit is left."""
    if closing.remaining < 0:
        log.info("run %s is gone (retention): the map's successors are left alone", run_id)
        return
    p.publish(d, run_id, closing.ready, closing.priority)
    if closing.remaining == 0:
        p.finalize(run_id)


def stopped(records: dict[str, StepRun], step_id: str) -> bool:
    """Whether map step ``step_id`` (its record among ``records``) stopped publishing
    items (too many failed): an item that begins now ends ``cancelled``."""
    rec = records.get(step_id)
    return bool(rec is not None and rec.map and rec.map.get("stopped"))
