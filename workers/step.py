"""The step wrapper: one Celery task class that runs any step function.

A step's task unpacks its message (run id, step id, workflow version), asks the run
protocol (:class:`orchestrator.runtime.progress.Progress`) for what the step needs,
decides whether the step runs (trigger rule, then ``when``), calls the step function with
its inputs, and maps the outcome (a value, ``SkipStep``, an exception to retry or to fail
with) to the protocol's calls.  Soft and hard time limits come from the step definition.
A wait step (``StepDef.wait``) calls no function: its task parks it (``_park``: the next
message waits in a store timer, the task ends) and the delivery that comes back ends the
wait or parks it again (``_resume``); see :mod:`orchestrator.core.waits`.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from functools import lru_cache, wraps
from typing import Any

from billiard.exceptions import TimeLimitExceeded, WorkerLostError
from celery import Task
from celery.exceptions import Reject, Retry, TaskPredicate
from celery.worker.request import Request
from celery.worker.state import task_ready
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import to_jsonable_python

from orchestrator.core import concurrency, decisions, payloads, subworkflows, waits
from orchestrator.core.expressions import parse as parse_expression
from orchestrator.core.models import Ref, StepDef, Value
from orchestrator.core.registry import StepFunction
from orchestrator.core.simulate import Faults
from orchestrator.core.states import RunStatus, StepStatus
from orchestrator.errors import (
    ConditionError,
    OrchestratorError,
    RedisAuthFailed,
    RetryLater,
    RunNotFound,
    SkipStep,
    StepOutputTooLarge,
    error_data,
)
from orchestrator.outages import kind_of
from orchestrator.runtime import broker, context
from orchestrator.runtime import maps as map_steps
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.runtime.definitions import Definition
from orchestrator.runtime.progress import SETTLED_BY_STEP, Begin, Progress
from orchestrator.settings import Settings
from orchestrator.store import StepRun, StoreError
from orchestrator.store.leases import Held
from orchestrator.store.records import LeaseMode
from orchestrator.store.slots import Taken
from workers import leases

log = logging.getLogger(__name__)

_progress: Progress | None = None
_settings: Settings | None = None
_coordinator: Coordinator | None = None


def install(progress: Progress, settings: Settings, coordinator: Coordinator) -> None:
    """Make ``progress`` the run protocol the tasks of this process use (``coordinator``
    shares it: one definitions cache per process)."""
    global _progress, _settings, _coordinator
    _progress = progress
    _settings = settings
    _coordinator = coordinator


def coordinator() -> Coordinator:
    """The coordinator of this worker process (broker submits, run views)."""
    if _coordinator is None:
        raise OrchestratorError("worker runtime not installed; build the app with "
                                "workers.app.create_app()")
    return _coordinator


def settings() -> Settings:
    """The settings of this worker process."""
    if _settings is None:
        raise OrchestratorError("worker runtime not installed; build the app with "
                                "workers.app.create_app()")
    return _settings


def progress() -> Progress:
    """The run protocol of this worker process.

    Raises:
        OrchestratorError: the app was not built with ``workers.app.create_app``.
    """
    if _progress is None:
        raise OrchestratorError("worker runtime not installed; build the app with "
                                "workers.app.create_app()")
    return _progress


LEASE_TOKEN = "orch_lease"
"""Name of the request field that carries a delivery's lease token to the pool child."""
DELIVERY_TAG = "orch_tag"
"""Name of the request field that carries the broker's delivery tag to the pool child."""
LEASE_RESULT = "orch_lease"
"""Key of a step task's return value that says its lease was settled (value
``"settled"``): the worker's main process then skips the lease's release.  The main
process sees the return value as Celery's tracer hands it over, its ``repr``
(``celery.app.trace.fast_trace_task``), hence :data:`_SETTLED_REPR`."""
_SETTLED_REPR = repr({LEASE_RESULT: leases.SETTLED})[1:-1]


class StepRequest(Request):
    """A delivery of a step or join task, as the worker's main process sees it.

    It makes the delivery's lease token (a new one per delivery) and hands it, with the
    broker's delivery tag, to the pool child in the request; the lease keeper renews the
    lease while the request is active (:mod:`workers.leases`), and the lease is released
    when the message is acknowledged or requeued.  It also records a hard time limit in
    the run store before Celery fails the task (a hard limit kills the pool process, so
    the step's own code never sees it).
    """

    def __init__(self, message: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(message, *args, **kwargs)
        kw = self.kwargs or {}
        item = kw.get("step_id") or kw.get("join_id")
        self.orch_held: Held | None = None
        self.orch_accepted = 0.0
        self._orch_cancelled = False
        self._orch_settled = False
        self._orch_head = False  # its requeue goes to the head of the queue
        if kw.get("run_id") and item:
            token = uuid.uuid4().hex
            tag = str(getattr(message, "delivery_tag", "") or "")
            self.orch_held = Held(str(kw["run_id"]), str(item), token, tag)
            self._request_dict[LEASE_TOKEN] = token
            self._request_dict[DELIVERY_TAG] = tag

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Celery builds a request class per task type on top of this one
        # (celery.worker.request.create_request_cls), whose on_success acknowledges the
        # message without calling a base class's: its own is wrapped to see the return
        # value first
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("on_success")
        if own is not None:
            cls.on_success = _noting_settled(own)  # type: ignore[method-assign]

    def on_success(self, failed__retval__runtime: Any, **kwargs: Any) -> None:
        _note_settled(self, failed__retval__runtime)
        super().on_success(failed__retval__runtime, **kwargs)

    def on_accepted(self, pid: int, time_accepted: float) -> None:
        # when the pool process took the task (its time.monotonic(), the same clock as
        # this process' on Linux): the lease keeper's deadline for a task accepted while
        # Redis could not be reached runs from here (workers/leases.py)
        self.orch_accepted = time_accepted
        super().on_accepted(pid, time_accepted)

    def cancel(self, pool: Any, signal: Any = None, emit_retry: bool = True) -> None:
        # Celery cancels the acks_late tasks running when the broker connection is lost
        # (worker_cancel_long_running_tasks_on_connection_loss); flagged first, because
        # Celery's own bookkeeping of the cancel needs Redis and may raise before it
        # records it
        self._orch_cancelled = True
        super().cancel(pool, signal, emit_retry)

    def on_failure(self, exc_info: Any, send_failed_event: bool = True,
                   return_ok: bool = False) -> None:
        exc = getattr(exc_info.exception, "exc", exc_info.exception)  # ExceptionWithTraceback
        if self.orch_held is not None and (
                self._orch_cancelled or unrecorded(exc)):
            # the step run's outcome may not be recorded: keep the message (a failed task's
            # would be acknowledged, leaving the step run with no message to deliver)
            task_ready(self)
            log.warning("%s of run %s: %s; its message is requeued", self.orch_held.step_id,
                        self.orch_held.run_id,
                        "cancelled on a lost broker connection"
                        if self._orch_cancelled
                        else f"Redis failed before its outcome was recorded ({exc!r})")
            self._orch_head = True
            self.reject(requeue=True)
            return
        # a pool process that died (WorkerLostError), or the pool process' own requeue of
        # an unrecorded outcome (Reject): Celery requeues it
        self._orch_head = isinstance(exc, WorkerLostError | SystemExit | Reject)
        super().on_failure(exc_info, send_failed_event, return_ok)

    def acknowledge(self) -> None:
        super().acknowledge()
        if self.orch_held is not None:
            # "check": settled if the step run ended (a task that returned without ending
            # it, as a deferred or throttled one, gave its lease up already).  A request
            # cannot tell a normal return here, but the task's return value says when
            # the script that ended its step run settled the lease: then nothing is left
            # to release
            leases.release_later(self.orch_held,
                                 leases.SETTLED if self._orch_settled else "check")

    def reject(self, requeue: bool = False) -> None:
        if self.orch_held is not None:
            # the release first: the lease keeper sends it before it puts a message back
            # at the head, whose copy then takes the step run over at once
            leases.release_later(self.orch_held, "back" if requeue else "check")
            if requeue and self._orch_head and self.orch_held.tag \
                    and not (self.delivery_info or {}).get("redelivered"):
                # its first requeue goes to the head of its queue; a message requeued
                # before goes to kombu's tail, so that a step that kills its pool process
                # every time cannot loop at the head
                broker.at_head.add(self.orch_held.tag)
        super().reject(requeue=requeue)

    def on_timeout(self, soft: bool, timeout: float) -> None:
        if not soft and self.orch_held is not None:
            kw = self.kwargs or {}
            run_id, step_id, version = kw.get("run_id"), kw.get("step_id"), kw.get("version")
            if run_id and step_id and version:
                err = error_data(TimeLimitExceeded(timeout))
                err["message"] = f"hard time limit of {timeout} s exceeded"
                p = progress()
                p.failed(p.definitions.load(version), run_id, step_id, err, self._context,
                         self.orch_held.token)
        super().on_timeout(soft, timeout)


def _note_settled(req: StepRequest, failed__retval__runtime: Any) -> None:
    failed, retval, _ = failed__retval__runtime
    if isinstance(retval, dict):  # a pool that hands the value itself over
        retval = repr(retval)
    req._orch_settled = not failed and isinstance(retval, str) and _SETTLED_REPR in retval


def _noting_settled(on_success: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(on_success)
    def wrapper(self: StepRequest, failed__retval__runtime: Any, **kwargs: Any) -> Any:
        _note_settled(self, failed__retval__runtime)
        return on_success(self, failed__retval__runtime, **kwargs)
    return wrapper


class StepTask(Task):
    """Base of every ``step.<function>`` task."""

    Request = StepRequest
    # outcomes live in the run store; Celery keeps no result (failures still are, for
    # Flower and AsyncResult, by task_store_errors_even_if_ignored), and chord counting
    # does not need one
    ignore_result = True
    acks_late = True
    reject_on_worker_lost = True
    max_retries = None
    typing = False
    function: StepFunction


@lru_cache(maxsize=1024)
def _adapter(annotation: Any) -> TypeAdapter[Any]:
    return TypeAdapter(annotation)


def _dig(value: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    return value


def _done(run_id: str, step_id: str, status: StepStatus) -> dict[str, Any]:
    return {"run_id": run_id, "step_id": step_id, "status": status.value}


def lease_of(task: Task) -> tuple[str, str]:
    """This delivery's lease token and delivery tag (made by :class:`StepRequest`; a task
    run without one, e.g. called directly, gets a token of its own)."""
    req = task.request
    return (str(getattr(req, LEASE_TOKEN, None) or uuid.uuid4().hex),
            str(getattr(req, DELIVERY_TAG, None) or ""))


def drop_canvas(task: Task) -> None:
    """This delivery must not carry its canvas on (another one does, or did)."""
    task.request.chain = None
    task.request.chord = None


_RECORDED = "_orch_recorded"
"""Attribute set on an exception whose step run was recorded failed before it is raised
again for Celery (:func:`_fail`): not a failure to record, whatever it is."""


def requeue_when_unrecorded(body: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """Wrap a step, item or join task body: when it fails because Redis could not be
    reached or timed out (the store client's retries ran out while it recorded an outcome,
    began a step or published what follows), the delivery is rejected with requeue instead
    of failing.  A failed task's message is acknowledged (``task_acks_on_failure_or_timeout``),
    and a step run whose outcome was never recorded would then be left ``running`` with no
    message for anyone to deliver again.  Requeued, the message comes back (if the reject
    cannot reach Redis either, it stays among the unacknowledged and the worker's lease
    keeper puts it back once Redis answers, see ``broker.stranded``); its lease is given
    back, and the next delivery
    begins, settles or drops it as the store says.  Nothing runs twice at once: the lease
    still fences every copy.  A step function's own Redis error that the step's policy
    recorded as its failure is raised as is (see :func:`_fail`)."""

    @wraps(body)
    def guarded(*args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return body(*args, **kwargs)
        except Exception as exc:
            if not unrecorded(exc):
                raise
            log.warning("%s: Redis failed before the outcome was recorded (%s); the message "
                        "is requeued", _describe(args, kwargs), exc)
            _wait_for_store()
            raise Reject(f"store unreachable: {exc}", requeue=True) from exc

    return guarded


STORE_WAIT_S = 2.0
"""With the broker on a Redis of its own (``ORCH_BROKER_URL``), the most a delivery whose
store could not be reached waits for the store before its message is requeued (and at
most a quarter of the lease, so that the lease keeper need not stop the attempt).  The
broker takes the requeue and delivers the message again at once: without the wait, a
store outage bounced every queued message between the workers as fast as they could
take it (about 150 requeues in a 2 s outage of the test's 8 runs)."""


def _wait_for_store() -> None:
    """Wait until the store answers a PING (or :data:`STORE_WAIT_S`), when the broker is
    another Redis; at once otherwise (the requeue waits for the same Redis anyway)."""
    p, s = _progress, _settings
    if p is None or s is None or not p.store.broker_apart:
        return
    deadline = time.monotonic() + min(STORE_WAIT_S, s.lease_s / 4)
    while time.monotonic() < deadline:
        try:
            if p.store.ping():
                return
        except StoreError:
            pass
        time.sleep(0.1)


def unrecorded(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis being unreachable or timing out, raised before the step
    run's outcome was recorded (not a step function's own error recorded as its failure,
    see :func:`_fail`; not a refused password, which no retry mends)."""
    if isinstance(exc, TaskPredicate):  # Retry, Reject, Ignore: Celery's own verdicts
        return False
    kind = kind_of(exc)
    return kind is not None and kind is not RedisAuthFailed \
        and not getattr(exc, _RECORDED, False)


def _describe(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    names = ("run_id", "step_id", "version")
    given = {**dict(zip(names, args[1:], strict=False)), **kwargs}
    what = given.get("step_id") or given.get("join_id") or "?"
    return f"{what} of run {given.get('run_id', '?')}"


def execute(task: StepTask, run_id: str, step_id: str, version: str) -> dict[str, Any]:
    """Run one step run; the body of every step task.  See the module docstring."""
    p = progress()
    d = p.definitions.load(version)
    step = d.wf.step_map[step_id]
    attempt = task.request.retries + 1
    token, tag = lease_of(task)
    running = {"attempt": attempt, "started_at": time.time(), "worker": task.request.hostname,
               "task_id": task.request.id, "error": None, "retry_at": None}
    if subworkflows.parks(step):  # a new attempt waits for a new run
        running["resolution"] = None
    try:
        b = p.begin(d, run_id, step_id, running, token, tag)
    except RunNotFound:
        log.info("step %s of run %s: the run is gone (expired or never created); message "
                 "dropped", step_id, run_id)
        drop_canvas(task)
        return {"run_id": run_id, "step_id": step_id, "status": "gone"}
    if b.mode is LeaseMode.BEGAN:
        return _call(task, p, d, step, run_id, b.run.input, b.outputs, attempt, token,
                     b.run.faults)
    own = b.records[step_id]
    if b.mode is LeaseMode.BUSY:
        _defer(task, p, run_id, step_id)
        return _done(run_id, step_id, own.status)
    if b.mode is LeaseMode.DROP:
        log.info("step %s of run %s: duplicate delivery dropped (it ended %s)", step_id,
                 run_id, own.status.value)
        drop_canvas(task)
        return _done(run_id, step_id, own.status)
    if b.mode is LeaseMode.SETTLE:  # ended, but its canvas may not have gone on: carry it
        p.settle(d, run_id, step_id)
        return _done(run_id, step_id, own.status)
    if b.run.status in (RunStatus.CANCELLED, RunStatus.COMPENSATING):  # no new step starts
        reason = "run cancelled" if b.run.status is RunStatus.CANCELLED else \
            "run cancelled with compensation"
        done = _done(run_id, step_id, StepStatus.CANCELLED)
        if not p.ended(d, run_id, step_id, StepStatus.CANCELLED, reason, token, None,
                       task.request, done):
            drop_canvas(task)
        return done
    if step.wait is not None and own.status is StepStatus.WAITING:
        return _resume(task, p, d, step, run_id, own, token)
    if own.status is StepStatus.WAITING and subworkflows.parks(step):
        return _child_resume(task, p, d, step, run_id, own, token)
    try:
        decision = decisions.decide(step, d.deps[step_id],
                                    {q: r.status for q, r in b.records.items()},
                                    d.handlers.get(step_id, ()), d.conditions.get(step_id),
                                    b.run.input, b.outputs)
    except ConditionError as exc:
        return _fail(task, p, d, run_id, step_id, exc, token)
    trail = decision.to_record() if decision.notable else None
    if not decision.runs:
        reason = decision.reason or "skipped"
        log.info("step %s of run %s: skipped (%s)", step_id, run_id, reason)
        done = _done(run_id, step_id, StepStatus.SKIPPED)
        if not p.ended(d, run_id, step_id, StepStatus.SKIPPED, reason, token, trail,
                       task.request, done):
            drop_canvas(task)
        return done
    if trail is not None:
        running["decision"] = trail
    if step.rate_limit is not None:
        if own.throttled_until is None:  # else it waited for the start it had reserved
            try:
                wait_s = p.draw(step, b.run.input)
            except ConditionError as exc:
                return _fail(task, p, d, run_id, step_id, exc, token)
            if wait_s > 0:
                return _throttle(task, p, run_id, step_id, wait_s, token)
        running["throttled_until"] = None  # a retry draws again
    if step.concurrency is not None:
        held = _take_slot(task, p, d, step, run_id, b.run.input, token)
        if held is not None:
            return held

    if step.wait is not None:
        return _park(task, p, d, step, run_id, b, running, token)
    running["started_at"] = time.time()
    if not p.running(run_id, step_id, running, token):
        drop_canvas(task)
        return _done(run_id, step_id, own.status)
    if step.map is not None:
        return _expand(task, p, d, step, run_id, b, token)
    return _call(task, p, d, step, run_id, b.run.input, b.outputs, attempt, token,
                 b.run.faults)


def _expand(task: StepTask, p: Progress, d: Definition, step: StepDef, run_id: str,
            b: Begin, token: str) -> dict[str, Any]:
    """A map step's task expands it into its items (:func:`orchestrator.runtime.maps.
    expand`) and ends; the map step stays ``running`` until its last item ends it.  An
    ``over`` that fails or gives no list fails the step."""
    try:
        status = map_steps.expand(p, d, run_id, step, b, token)
    except ConditionError as exc:
        return _fail(task, p, d, run_id, step.id, exc, token)
    return _done(run_id, step.id, status)


def _inject(step: StepDef, faults: str | None, attempt: int) -> None:
    """Faults a test asked for (``Settings.fault_injection`` only): sleep for ``slow``, run
    into the real time limit for ``timeout``, raise for ``fail``."""
    if faults is None:
        return
    if not settings().fault_injection:
        log.warning("step %s: its run carries faults, but fault injection is off on this "
                    "worker (ORCH_FAULT_INJECTION): ignored", step.id)
        return
    f = Faults.from_json(faults)
    time.sleep(f.slow.get(step.id, 0.0))
    if step.id in f.timeout:  # Celery's own limits end it
        time.sleep((step.timeout_s or step.soft_timeout_s or 0.0) + 2.0)
    err = f.failure(step.id, attempt)
    if err is not None:
        raise err


def _call(task: StepTask, p: Progress, d: Definition, step: StepDef, run_id: str,
          run_input: Any, outs: dict[str, Any], attempt: int, token: str,
          faults: str | None = None) -> dict[str, Any]:
    """Call the step function of a step run that is ``running``; record the outcome."""
    if subworkflows.parks(step):  # no function: it starts a run and waits for it
        return _start_child(task, p, d, step, run_id, run_input, outs, attempt, token)
    step_id = step.id
    try:
        kwargs = _resolve(step, task.function, run_input, outs)
    except ValidationError as exc:
        return _fail(task, p, d, run_id, step_id, exc, token)
    by = f"step:{run_id}/{step_id}"

    def send(key: str, data: Any, event_id: str | None) -> None:
        waits.check_key(key)
        p.waits.send_event(key, data, event_id, by, settings().event_retention_s)

    token_ctx = context.set_current(context.StepContext(run_id, step_id, attempt,
                                                        p.store.client, send))
    try:
        _inject(step, faults, attempt)
        result = task.function.fn(**kwargs)
    except SkipStep as exc:
        log.info("step %s of run %s: skipped by the step (%s)", step_id, run_id,
                 str(exc) or "no reason given")
        done = _done(run_id, step_id, StepStatus.SKIPPED)
        if not p.ended(d, run_id, step_id, StepStatus.SKIPPED,
                       str(exc) or "skipped by the step", token, None, task.request, done):
            drop_canvas(task)
        return done
    except Exception as exc:
        policy = step.retry
        if policy.allows_retry(exc, attempt):
            delay = exc.delay_s if isinstance(exc, RetryLater) and exc.delay_s is not None \
                else policy.delay_s(attempt, random.random())
            return _retry(task, p, run_id, step_id, exc, delay, token)
        return _fail(task, p, d, run_id, step_id, exc, token)
    finally:
        context.reset(token_ctx)
    output = result.model_dump(mode="json") if isinstance(result, BaseModel) \
        else to_jsonable_python(result)
    return _succeed(task, p, d, run_id, step_id, output, token)


def _succeed(task: StepTask, p: Progress, d: Definition, run_id: str, step_id: str,
             output: Any, token: str) -> dict[str, Any]:
    """Record the step's output and success; an output larger than
    ``Settings.step_output_max_bytes`` fails the step run instead, without retry (the same
    data would be as large on the next attempt)."""
    try:
        payloads.check_output(output, settings().step_output_max_bytes, step_id)
    except StepOutputTooLarge as exc:
        log.warning("step %s of run %s: %s", step_id, run_id, exc)
        return _fail(task, p, d, run_id, step_id, exc, token)
    done = _done(run_id, step_id, StepStatus.SUCCEEDED)
    if not p.succeeded(d, run_id, step_id, output, token, task.request, done):
        drop_canvas(task)
    elif getattr(task.request, SETTLED_BY_STEP, False):
        done[LEASE_RESULT] = leases.SETTLED
    return done


def join(task: Task, run_id: str, join_id: str, version: str) -> dict[str, Any]:
    """The body of the join task: it holds a lease like a step (so a killed worker's
    join is recovered in seconds), then completes its unit if it is the terminal."""
    p = progress()
    d = p.definitions.load(version)
    token, tag = lease_of(task)
    try:
        mode = p.store.begin_step(run_id, join_id, [], [], [], False, {}, token=token,
                                  tag=tag, lease_s=p.lease_s)[3]
    except RunNotFound:
        log.info("%s of run %s: the run is gone; message dropped", join_id, run_id)
        drop_canvas(task)
        return {"run_id": run_id, "join_id": join_id, "status": "gone"}
    if mode is LeaseMode.BUSY:
        _defer(task, p, run_id, join_id)
        return {"run_id": run_id, "join_id": join_id, "status": "deferred"}
    if mode is LeaseMode.DROP:
        log.info("%s of run %s: duplicate delivery dropped", join_id, run_id)
        drop_canvas(task)
        return {"run_id": run_id, "join_id": join_id, "status": "duplicate"}
    p.unit_task_done(d, run_id, join_id)
    return {"run_id": run_id, "join_id": join_id}


def _defer(task: Task, p: Progress, run_id: str, item: str) -> None:
    """Another delivery holds the lease: this copy runs nothing and carries no canvas on,
    but it is kept (deferred) in case the holder died."""
    sig = task.signature_from_request(task.request, None, None)
    drop_canvas(task)
    p.defer(run_id, item, dict(sig))
    log.info("%s of run %s: another delivery holds it; this copy is deferred until that "
             "lease would expire", item, run_id)


def _throttle(task: StepTask, p: Progress, run_id: str, step_id: str, wait_s: float,
              token: str) -> dict[str, Any]:
    """Over the rate limit's budget: its start is reserved ``wait_s`` from now; hold this
    delivery's message (same attempt, with its chain and chord) in a store timer until
    then, and end the task without carrying the canvas on (no worker slot held while it
    waits, no ETA message)."""
    sig = task.signature_from_request(task.request, None, None)
    drop_canvas(task)
    if p.leases.throttle(run_id, step_id, token, wait_s, dict(sig), p.store.retention_s):
        log.info("step %s of run %s: over its rate limit; waits %.3f s in the store",
                 step_id, run_id, wait_s)
    return {"run_id": run_id, "step_id": step_id, "status": "throttled"}


def _take_slot(task: StepTask, p: Progress, d: Definition, step: StepDef, run_id: str,
               run_input: Any, token: str) -> dict[str, Any] | None:
    """Take a slot of the step's concurrency key (held until the step run's final
    status); None when it holds one and starts.  Every slot held: it waits in the store
    (this delivery's message, with its chain and chord, held until a slot passes to it;
    the task ends without carrying the canvas on, holding no worker slot), or ends
    ``cancelled`` (``cancel_newest``)."""
    try:
        slot = concurrency.step_slot(step, run_input)
    except ConditionError as exc:
        return _fail(task, p, d, run_id, step.id, exc, token)
    sig = task.signature_from_request(task.request, None, None)
    got = p.take_slot(run_id, step.id, slot, token, dict(sig))
    if got is Taken.HELD:
        return None
    if got is Taken.FULL:
        log.info("step %s of run %s: cancelled (%s)", step.id, run_id, slot.refused)
        done = _done(run_id, step.id, StepStatus.CANCELLED)
        if not p.ended(d, run_id, step.id, StepStatus.CANCELLED, slot.refused, token, None,
                       task.request, done):
            drop_canvas(task)
        return done
    drop_canvas(task)  # waiting: the held message carries the canvas on; fenced: another
    return {"run_id": run_id, "step_id": step.id, "status": "waiting for a slot"}


def _retry(task: StepTask, p: Progress, run_id: str, step_id: str, exc: Exception,
           delay: float, token: str) -> dict[str, Any]:
    """Hold the next attempt in a store timer (not an ETA message a worker would hold),
    then end this attempt as Celery's RETRY (Flower shows it)."""
    req = task.request
    sig = task.signature_from_request(req, None, None, retries=req.retries + 1)
    timer_id = f"retry:{run_id}|{step_id}:{req.retries + 1}"
    if not p.retry(run_id, step_id, token, error_data(exc), delay, timer_id, dict(sig)):
        drop_canvas(task)
        return _done(run_id, step_id, StepStatus.RETRYING)
    raise Retry(exc=exc, when=delay, sig=sig) from exc


_WAIT_VARIABLES = frozenset({"input", "steps"})


def _park(task: StepTask, p: Progress, d: Definition, step: StepDef, run_id: str,
          b: Begin, running: dict[str, Any], token: str) -> dict[str, Any]:
    """A wait step starts waiting: evaluate its expressions, then park it (its next
    message in a store timer); the task ends here, its canvas carried by that message."""
    assert step.wait is not None
    views = {s: {"output": b.outputs.get(s), "status": b.records[s].status.value}
             for s in d.reads(step) if s in b.records}
    try:
        values = {name: parse_expression(text, _WAIT_VARIABLES).value(
                      {"input": b.run.input, "steps": views})
                  for name, text in step.wait.expressions().items()}
        now = p.waits.now()
        parked = waits.park(step.wait, now, values)
    except (ConditionError, waits.WaitError) as exc:
        return _fail(task, p, d, run_id, step.id, exc, token)
    patch = {**running, "started_at": now, "wait": parked.to_record()}
    return _park_with(task, p, run_id, step.id, parked, patch, token)


def _park_with(task: StepTask, p: Progress, run_id: str, step_id: str, parked: waits.Parked,
               patch: dict[str, Any], token: str) -> dict[str, Any]:
    sig = task.signature_from_request(task.request, None, None)
    drop_canvas(task)  # the parked message carries the chain and the chord on
    p.wait(run_id, step_id, token, patch, parked.timer_at, parked.key, dict(sig))
    return _done(run_id, step_id, StepStatus.WAITING)


def _resume(task: StepTask, p: Progress, d: Definition, step: StepDef, run_id: str,
            own: StepRun, token: str) -> dict[str, Any]:
    """A delivery of a waiting step (its timer fired, or an event or a decision came):
    succeed, fail (timeout, rejection: the failure path) or park again."""
    parked = waits.Parked.from_record(own.wait or {})  # parked with it, atomically
    out = waits.outcome(parked, own.resolution, p.waits.now())
    if out.action == "wait":
        log.info("step %s of run %s: delivered before its wait is over; waiting again",
                 step.id, run_id)
        return _park_with(task, p, run_id, step.id, parked, {"wait": parked.to_record()},
                          token)
    p.waits.done(run_id, step.id, parked.key)
    if out.action == "fail":
        assert out.error is not None
        log.info("step %s of run %s: wait failed (%s)", step.id, run_id, out.error)
        return _fail(task, p, d, run_id, step.id, out.error, token)
    return _succeed(task, p, d, run_id, step.id, out.output, token)


def _start_child(task: StepTask, p: Progress, d: Definition, step: StepDef, run_id: str,
                 run_input: Any, outs: dict[str, Any], attempt: int,
                 token: str) -> dict[str, Any]:
    """A sub-workflow step starts its child run (an undo step the undo run of the child
    it undoes), then parks until that run ends; see :mod:`orchestrator.core.subworkflows`.
    A child that cannot start (unknown version, input against its schema) fails the
    step without retry."""
    data = subworkflows.child_input(step, run_input, outs)
    parent = p.store.run(run_id)
    if step.workflow is None:  # the undo of a sub-workflow step
        child_id = str(data.get("run"))
        undo_id = p.undo_child(parent, step.id, child_id)
        if undo_id is None:
            log.info("step %s of run %s: child run %s has nothing to undo", step.id, run_id,
                     child_id)
            return _succeed(task, p, d, run_id, step.id, {"run": child_id, "undone": False},
                            token)
        return _park_for(task, p, run_id, step.id, undo_id, {"child_runs": [undo_id]},
                         token)
    c = coordinator()
    try:
        child = c.child(step.workflow)
        data = c.check_input(child, data)
    except OrchestratorError as exc:
        return _fail(task, p, d, run_id, step.id, exc, token)
    child_id = p.start_child(child, parent, step.id, attempt, data)
    runs = [subworkflows.child_run_id(run_id, step.id, a) for a in range(1, attempt + 1)]
    return _park_for(task, p, run_id, step.id, child_id, {"child_runs": runs}, token)


def _park_for(task: StepTask, p: Progress, run_id: str, step_id: str, awaited: str,
              patch: dict[str, Any], token: str) -> dict[str, Any]:
    """Park the step until run ``awaited`` ends (its next message in a store timer)."""
    sig = task.signature_from_request(task.request, None, None)
    drop_canvas(task)  # the parked message carries the chain and the chord on
    p.wait_for_run(run_id, step_id, token, patch, awaited, dict(sig))
    return _done(run_id, step_id, StepStatus.WAITING)


def _child_resume(task: StepTask, p: Progress, d: Definition, step: StepDef, run_id: str,
                  own: StepRun, token: str) -> dict[str, Any]:
    """A delivery of a step waiting for a run (that run ended, or a copy came early):
    succeed with the child's output, fail (the retry policy of a sub-workflow step starts
    a new child run), or park again."""
    awaited = str((own.wait or {}).get("run") or "")
    try:
        ended = p.store.run(awaited)
    except RunNotFound:
        ended = None
    out = subworkflows.outcome(awaited, ended.status if ended else None)
    if out.action == "wait":
        log.info("step %s of run %s: delivered before run %s ended; waiting again",
                 step.id, run_id, awaited)
        return _park_for(task, p, run_id, step.id, awaited, {}, token)
    if out.action == "succeed":
        assert ended is not None
        output: Any = {"run": awaited, "undone": True}
        if step.workflow is not None:
            output = subworkflows.child_output(p.definitions.load(ended.version).wf,
                                               p.store.outputs(awaited))
        return _succeed(task, p, d, run_id, step.id, output, token)
    assert out.error is not None
    attempt = task.request.retries + 1
    log.info("step %s of run %s: %s", step.id, run_id, out.error)
    if step.workflow is not None and step.retry.allows_retry(out.error, attempt):
        return _retry(task, p, run_id, step.id, out.error,
                      step.retry.delay_s(attempt, random.random()), token)
    return _fail(task, p, d, run_id, step.id, out.error, token)


def _resolve(step: StepDef, fn: StepFunction, run_input: Any,
             outs: dict[str, Any]) -> dict[str, Any]:
    """The step function's keyword arguments, validated against its parameter types."""
    kwargs: dict[str, Any] = {}
    for name, src in step.inputs.items():
        if isinstance(src, Value):
            value = src.value
        else:
            assert isinstance(src, Ref)
            base = run_input if src.step is None else outs.get(src.step)
            value = _dig(base, src.path)
        param = fn.params.get(name)
        kwargs[name] = _adapter(param.annotation).validate_python(value) if param else value
    return kwargs


def _fail(task: StepTask, p: Progress, d: Definition, run_id: str, step_id: str,
          exc: BaseException, token: str) -> dict[str, Any]:
    """Record the step as failed and move the run on, then raise so Celery shows FAILURE
    (unless this attempt lost its lease: then nothing is recorded and nothing raised)."""
    if not p.failed(d, run_id, step_id, error_data(exc), task.request, token):
        drop_canvas(task)
        return _done(run_id, step_id, StepStatus.FAILED)
    with suppress(AttributeError):  # an exception type with no attributes of its own
        setattr(exc, _RECORDED, True)
    raise exc
