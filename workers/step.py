"""The step wrapper: one Celery task class that runs any step function.

A step's task resolves its inputs by reference from the run store, decides whether the
step runs (trigger rule, then ``when``), calls the step function, stores the output and
records every transition of the step run.  Retries use the step's backoff with jitter;
soft and hard time limits come from the step definition.
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

from orchestrator.core import rules as triggers
from orchestrator.core.models import Ref, RetryPolicy, StepDef, TriggerRule, Value
from orchestrator.core.registry import StepFunction
from orchestrator.core.states import RunStatus, StepStatus
from orchestrator.errors import (
    ConditionError,
    FailPermanently,
    RetryLater,
    SkipStep,
    error_data,
)
from orchestrator.runtime import context
from orchestrator.runtime.canvas import continue_canvas
from orchestrator.runtime.progress import Definition
from workers.runtime import Runtime

_runtime: Runtime | None = None

# rules under which "every parent succeeded" means "run" (see store.begin_step)
_FAST_RULES = frozenset({TriggerRule.ALL_SUCCESS, TriggerRule.ALL_DONE,
                         TriggerRule.ONE_SUCCESS, TriggerRule.NONE_FAILED})


def install(runtime: Runtime) -> None:
    """Make ``runtime`` the one the tasks of this process use."""
    global _runtime
    _runtime = runtime


def runtime() -> Runtime:
    if _runtime is None:
        raise RuntimeError("worker runtime not installed; build the app with create_app()")
    return _runtime


class StepRequest(Request):
    """Records a hard time limit in the run store before Celery fails the task.

    A hard limit kills the pool process, so the step's own code never sees it; this runs
    in the worker's main process instead.
    """

    def on_timeout(self, soft: bool, timeout: float) -> None:
        if not soft:
            kw = self.kwargs or {}
            rt = runtime()
            run_id, step_id, version = kw.get("run_id"), kw.get("step_id"), kw.get("version")
            if run_id and step_id and version:
                err = error_data(TimeLimitExceeded(timeout))
                err["message"] = f"hard time limit of {timeout} s exceeded"
                d = rt.dispatcher.definition(version)
                rt.store.transition_step(run_id, step_id, StepStatus.FAILED, error=err,
                                         ended_at=time.time(), workflow=d.wf.name)
                continue_canvas(self.task.app, self._context)
                rt.dispatcher.task_finished(run_id, d, step_id)
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


def _reads(step: StepDef, d: Definition) -> list[str]:
    out = dict.fromkeys(step.input_steps())
    cond = d.conditions.get(step.id)
    if cond:
        out.update(dict.fromkeys(sorted(cond.steps)))
    return list(out)


def _is_non_retryable(exc: BaseException, policy: RetryPolicy) -> bool:
    if not policy.non_retryable:
        return False
    names = set()
    for cls in type(exc).__mro__:
        names.add(cls.__name__)
        names.add(f"{cls.__module__}.{cls.__qualname__}")
    return bool(names & set(policy.non_retryable))


def execute(task: StepTask, run_id: str, step_id: str, version: str) -> dict[str, Any]:
    """Run one step run; the body of every step task.  See the module docstring."""
    rt = runtime()
    store, disp = rt.store, rt.dispatcher
    d = disp.definition(version)
    step = d.wf.step_map[step_id]
    parents = list(d.deps[step_id])
    reads = _reads(step, d)  # parents' and condition-read ancestors' outputs
    attempt = task.request.retries + 1
    running = {"attempt": attempt, "started_at": time.time(), "worker": task.request.hostname,
               "task_id": task.request.id, "error": None, "retry_at": None}
    # fast path: when only "every parent succeeded" decides, the store checks that and
    # starts the step in the same round trip as the reads
    fast = (step.trigger_rule in _FAST_RULES and step_id not in d.handlers
            and step_id not in d.conditions)
    run, recs, outs, began = store.begin_step(run_id, step_id, parents, reads, reads, fast,
                                              running)
    if began:
        return _call(task, rt, d, step, run_id, run.input, outs, attempt)
    own = recs[step_id]
    if own.status.terminal:  # a duplicate delivery: the step run already ended
        disp.task_finished(run_id, d, step_id)
        return {"run_id": run_id, "step_id": step_id, "status": own.status.value}
    if run.status is RunStatus.CANCELLED:
        return _end(rt, d, run_id, step_id, StepStatus.CANCELLED, reason="run cancelled")
    reason = triggers.decide(step.trigger_rule, {p: recs[p].status for p in parents},
                             d.handlers.get(step_id, ()))
    if reason is None and step.id in d.conditions:
        views = {s: {"output": outs.get(s), "status": recs[s].status.value}
                 for s in d.conditions[step.id].steps if s in recs}
        try:
            if not d.conditions[step.id].evaluate(run.input, views):
                reason = f"condition is false: {step.when}"
        except ConditionError as exc:
            return _fail(task, rt, d, run_id, step_id, exc)
    if reason is not None:
        return _end(rt, d, run_id, step_id, StepStatus.SKIPPED, reason=reason)

    running["started_at"] = time.time()
    store.transition_step(run_id, step_id, StepStatus.RUNNING, **running)
    return _call(task, rt, d, step, run_id, run.input, outs, attempt)


def _call(task: StepTask, rt: Runtime, d: Definition, step: StepDef, run_id: str,
          run_input: Any, outs: dict[str, Any], attempt: int) -> dict[str, Any]:
    """Call the step function of a step run that is ``running``; record the outcome."""
    store, step_id = rt.store, step.id

    try:
        kwargs = _resolve(step, task.function, run_input, outs)
    except ValidationError as exc:
        return _fail(task, rt, d, run_id, step_id, exc)
    token = context.set_current(context.StepContext(run_id, step_id, attempt, store.r))
    try:
        result = task.function.fn(**kwargs)
    except SkipStep as exc:
        return _end(rt, d, run_id, step_id, StepStatus.SKIPPED,
                    reason=str(exc) or "skipped by the step")
    except Exception as exc:
        policy = step.retry
        retry = (not isinstance(exc, FailPermanently)
                 and not _is_non_retryable(exc, policy)
                 and attempt < policy.max_attempts)
        if retry:
            delay = exc.delay_s if isinstance(exc, RetryLater) and exc.delay_s is not None \
                else policy.delay_s(attempt, random.random())
            store.transition_step(run_id, step_id, StepStatus.RETRYING, error=error_data(exc),
                                  retry_at=time.time() + delay)
            raise task.retry(countdown=delay, exc=exc, max_retries=None) from exc
        return _fail(task, rt, d, run_id, step_id, exc)
    finally:
        context.reset(token)
    output = result.model_dump(mode="json") if isinstance(result, BaseModel) \
        else to_jsonable_python(result)
    return _end(rt, d, run_id, step_id, StepStatus.SUCCEEDED, output=output, has_output=True)


def _end(rt: Runtime, d: Definition, run_id: str, step_id: str, status: StepStatus,
         **patch: Any) -> dict[str, Any]:
    """Record a final status that is not a failure, then advance the run."""
    rt.store.transition_step(run_id, step_id, status, ended_at=time.time(),
                             workflow=d.wf.name, **patch)
    rt.dispatcher.task_finished(run_id, d, step_id)
    return {"run_id": run_id, "step_id": step_id, "status": status.value}


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


def _fail(task: StepTask, rt: Runtime, d: Definition, run_id: str, step_id: str,
          exc: BaseException) -> dict[str, Any]:
    """Record the step as failed, carry the canvas on, and raise so Celery shows FAILURE."""
    rt.store.transition_step(run_id, step_id, StepStatus.FAILED, error=error_data(exc),
                             ended_at=time.time(), workflow=d.wf.name)
    continue_canvas(task.app, task.request)
    rt.dispatcher.task_finished(run_id, d, step_id)
    raise exc

