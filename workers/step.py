"""The step wrapper: one Celery task class that runs any step function.

A step's task unpacks its message (run id, step id, workflow version), asks the run
protocol (:class:`orchestrator.runtime.progress.Progress`) for what the step needs,
decides whether the step runs (trigger rule, then ``when``), calls the step function with
its inputs, and maps the outcome (a value, ``SkipStep``, an exception to retry or to fail
with) to the protocol's calls.  Soft and hard time limits come from the step definition.
"""

from __future__ import annotations

import random
import time
from functools import lru_cache
from typing import Any

from billiard.exceptions import TimeLimitExceeded
from celery import Task
from celery.worker.request import Request
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import to_jsonable_python

from orchestrator.core import rules
from orchestrator.core.models import Ref, RetryPolicy, StepDef, Value
from orchestrator.core.registry import StepFunction
from orchestrator.core.states import RunStatus, StepStatus
from orchestrator.errors import (
    ConditionError,
    FailPermanently,
    OrchestratorError,
    RetryLater,
    SkipStep,
    error_data,
)
from orchestrator.runtime import context
from orchestrator.runtime.definitions import Definition
from orchestrator.runtime.progress import Progress

_progress: Progress | None = None


def install(progress: Progress) -> None:
    """Make ``progress`` the run protocol the tasks of this process use."""
    global _progress
    _progress = progress


def progress() -> Progress:
    """The run protocol of this worker process.

    Raises:
        OrchestratorError: the app was not built with ``workers.app.create_app``.
    """
    if _progress is None:
        raise OrchestratorError("worker runtime not installed; build the app with "
                                "workers.app.create_app()")
    return _progress


class StepRequest(Request):
    """Records a hard time limit in the run store before Celery fails the task.

    A hard limit kills the pool process, so the step's own code never sees it; this runs
    in the worker's main process instead.
    """

    def on_timeout(self, soft: bool, timeout: float) -> None:
        if not soft:
            kw = self.kwargs or {}
            run_id, step_id, version = kw.get("run_id"), kw.get("step_id"), kw.get("version")
            if run_id and step_id and version:
                err = error_data(TimeLimitExceeded(timeout))
                err["message"] = f"hard time limit of {timeout} s exceeded"
                p = progress()
                p.failed(p.definitions.load(version), run_id, step_id, err, self._context)
        super().on_timeout(soft, timeout)


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


def _is_non_retryable(exc: BaseException, policy: RetryPolicy) -> bool:
    if not policy.non_retryable:
        return False
    names = set()
    for cls in type(exc).__mro__:
        names.add(cls.__name__)
        names.add(f"{cls.__module__}.{cls.__qualname__}")
    return bool(names & set(policy.non_retryable))


def _done(run_id: str, step_id: str, status: StepStatus) -> dict[str, Any]:
    return {"run_id": run_id, "step_id": step_id, "status": status.value}


def execute(task: StepTask, run_id: str, step_id: str, version: str) -> dict[str, Any]:
    """Run one step run; the body of every step task.  See the module docstring."""
    p = progress()
    d = p.definitions.load(version)
    step = d.wf.step_map[step_id]
    attempt = task.request.retries + 1
    running = {"attempt": attempt, "started_at": time.time(), "worker": task.request.hostname,
               "task_id": task.request.id, "error": None, "retry_at": None}
    b = p.begin(d, run_id, step_id, running)
    if b.began:
        return _call(task, p, d, step, run_id, b.run.input, b.outputs, attempt)
    own = b.records[step_id]
    if own.status.terminal:  # a duplicate delivery: the step run already ended
        p.unit_task_done(d, run_id, step_id)
        return _done(run_id, step_id, own.status)
    if b.run.status is RunStatus.CANCELLED:
        p.ended(d, run_id, step_id, StepStatus.CANCELLED, "run cancelled")
        return _done(run_id, step_id, StepStatus.CANCELLED)
    parents = d.deps[step_id]
    reason = rules.decide(step.trigger_rule, {q: b.records[q].status for q in parents},
                          d.handlers.get(step_id, ()))
    if reason is None and step.id in d.conditions:
        views = {s: {"output": b.outputs.get(s), "status": b.records[s].status.value}
                 for s in d.conditions[step.id].steps if s in b.records}
        try:
            if not d.conditions[step.id].evaluate(b.run.input, views):
                reason = f"condition is false: {step.when}"
        except ConditionError as exc:
            return _fail(task, p, d, run_id, step_id, exc)
    if reason is not None:
        p.ended(d, run_id, step_id, StepStatus.SKIPPED, reason)
        return _done(run_id, step_id, StepStatus.SKIPPED)

    running["started_at"] = time.time()
    p.running(run_id, step_id, running)
    return _call(task, p, d, step, run_id, b.run.input, b.outputs, attempt)


def _call(task: StepTask, p: Progress, d: Definition, step: StepDef, run_id: str,
          run_input: Any, outs: dict[str, Any], attempt: int) -> dict[str, Any]:
    """Call the step function of a step run that is ``running``; record the outcome."""
    step_id = step.id
    try:
        kwargs = _resolve(step, task.function, run_input, outs)
    except ValidationError as exc:
        return _fail(task, p, d, run_id, step_id, exc)
    token = context.set_current(context.StepContext(run_id, step_id, attempt,
                                                    p.store.client))
    try:
        result = task.function.fn(**kwargs)
    except SkipStep as exc:
        p.ended(d, run_id, step_id, StepStatus.SKIPPED, str(exc) or "skipped by the step")
        return _done(run_id, step_id, StepStatus.SKIPPED)
    except Exception as exc:
        policy = step.retry
        retry = (not isinstance(exc, FailPermanently)
                 and not _is_non_retryable(exc, policy)
                 and attempt < policy.max_attempts)
        if retry:
            delay = exc.delay_s if isinstance(exc, RetryLater) and exc.delay_s is not None \
                else policy.delay_s(attempt, random.random())
            p.retrying(run_id, step_id, error_data(exc), time.time() + delay)
            raise task.retry(countdown=delay, exc=exc, max_retries=None) from exc
        return _fail(task, p, d, run_id, step_id, exc)
    finally:
        context.reset(token)
    output = result.model_dump(mode="json") if isinstance(result, BaseModel) \
        else to_jsonable_python(result)
    p.succeeded(d, run_id, step_id, output)
    return _done(run_id, step_id, StepStatus.SUCCEEDED)


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
          exc: BaseException) -> dict[str, Any]:
    """Record the step as failed and move the run on, then raise so Celery shows FAILURE."""
    p.failed(d, run_id, step_id, error_data(exc), task.request)
    raise exc
