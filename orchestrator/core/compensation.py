"""Compensation (a saga), pure: which steps a failed run undoes, in what order, and how
the unwinding ended.

A step declares what undoes it (``StepDef.compensate``).  When a run fails (after its
retries and failure handlers), or is cancelled with ``--compensate``, every step that
*succeeded* and declares a compensation is undone, in reverse dependency order: a step's
compensation starts only after the compensations of the steps that depended on it
(directly or through steps without one) have ended.  Independent branches unwind in
parallel.

The unwinding is a run of its own, the **undo run** ``<run id>.undo`` of a derived
workflow ``<name>.undo`` (:func:`undo_workflow`): one step per compensation, with the
same id as the step it undoes, calling the compensation function with ``input`` (the
step's inputs as JSON) and ``output`` (its recorded output), read from the undo run's
input (:func:`undo_input`).  So compensations get everything a step gets (leases,
retries, time limits, Flower, the reaper) and the derived workflow is shared by every
run that unwinds the same steps.  Each runs after its parents have *ended*
(``all_done``): a compensation that fails for good is reported, and the others still
run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from orchestrator.core.models import InputSource, Ref, StepDef, TriggerRule, Value, WorkflowDef
from orchestrator.core.resume import downstream
from orchestrator.core.states import RunStatus, StepStatus
from orchestrator.core.subworkflows import UNDO_FUNCTION

COMPENSATE_PARAMS = ("input", "output")
"""The keyword arguments a compensation function is called with."""
UNDO_SUFFIX = ".undo"
"""Appended to a run id (and a workflow name) for its undo run (and workflow)."""


def undo_run_id(run_id: str) -> str:
    """The id of the undo run of ``run_id``."""
    return run_id + UNDO_SUFFIX


def compensable(wf: WorkflowDef, statuses: Mapping[str, StepStatus],
                undoable: frozenset[str] = frozenset()) -> list[str]:
    """The steps a run undoes: succeeded (or already marked ``compensating``: the undo run
    was about to start), with a compensation or among ``undoable`` (sub-workflow steps
    whose child runs have compensations: ``subworkflows.undoable``), in workflow order."""
    return [s.id for s in wf.steps if (s.compensate is not None or s.id in undoable)
            and statuses.get(s.id) in (StepStatus.SUCCEEDED, StepStatus.COMPENSATING)]


def ending(wf: WorkflowDef, statuses: Mapping[str, StepStatus],
           undoable: frozenset[str] = frozenset()) -> RunStatus:
    """The status a run moves to once all its work is done: ``succeeded`` if no step
    failed; else ``compensating`` if it has succeeded steps to undo, else ``failed``."""
    if not any(s is StepStatus.FAILED for s in statuses.values()):
        return RunStatus.SUCCEEDED
    return RunStatus.COMPENSATING if compensable(wf, statuses, undoable) \
        else RunStatus.FAILED


def undo_workflow(wf: WorkflowDef, steps: Iterable[str]) -> WorkflowDef:
    """The derived workflow that undoes ``steps`` of ``wf`` (each must declare a
    compensation, or be a sub-workflow step): ``<name>.undo``, one step per compensation,
    each after the compensations of the steps among ``steps`` that descend from it.  A
    sub-workflow step is undone by a step that runs its child run's undo run
    (``subworkflows.UNDO_FUNCTION``, input ``run``: the child run's id)."""
    chosen = list(dict.fromkeys(steps))
    members = set(chosen)
    undo: list[StepDef] = []
    for step_id in chosen:
        step = wf.step_map[step_id]
        c = step.compensate
        below = downstream(wf, [step_id]) & members
        after = tuple(o for o in chosen if o != step_id and o in below)
        if c is None and step.workflow is not None:
            undo.append(StepDef(
                id=step_id, function=UNDO_FUNCTION, description=f"undo {step_id}",
                inputs={"run": Ref(source=f"input.steps.{step_id}.run")}, after=after,
                trigger_rule=TriggerRule.ALL_DONE, queue=step.queue))
            continue
        assert c is not None, f"step {step_id!r} declares no compensation"
        inputs: dict[str, InputSource] = {
            p: Ref(source=f"input.steps.{step_id}.{p}") for p in COMPENSATE_PARAMS}
        undo.append(StepDef(
            id=step_id, function=c.function, description=f"undo {step_id}", inputs=inputs,
            after=after, trigger_rule=TriggerRule.ALL_DONE, retry=c.retry,
            soft_timeout_s=c.soft_timeout_s, timeout_s=c.timeout_s,
            queue=c.queue or step.queue))
    assert members == {s.id for s in undo}
    return WorkflowDef(name=wf.name + UNDO_SUFFIX,
                       description=f"compensations of {wf.name}",
                       default_queue=wf.default_queue, steps=tuple(undo))


def step_input(step: StepDef, run_input: Any, outputs: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs a step was called with, as JSON, by parameter name (its references
    resolved against the run's input and its ancestors' outputs, as the runtime does)."""
    out: dict[str, Any] = {}
    for name, src in step.inputs.items():
        if isinstance(src, Value):
            out[name] = src.value
            continue
        value = run_input if src.step is None else outputs.get(src.step)
        for field in src.path:
            value = value.get(field) if isinstance(value, dict) else None
        out[name] = value
    return out


def undo_input(wf: WorkflowDef, steps: Iterable[str], run_input: Any,
               outputs: Mapping[str, Any],
               children: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The undo run's input: ``{"steps": {id: {"input": ..., "output": ...}}}``; for a
    sub-workflow step, ``{"run": <its child run>}`` (``children``, by step id)."""
    kids = children or {}
    return {"steps": {s: {"run": kids[s]} if s in kids else
                      {"input": step_input(wf.step_map[s], run_input, outputs),
                       "output": outputs.get(s)} for s in steps}}


def outcome(undo_statuses: Mapping[str, StepStatus]
            ) -> tuple[dict[str, StepStatus], RunStatus]:
    """How the unwinding ended, from the undo run's final step statuses: each undone
    step's status in the run it undoes (``compensated`` or ``compensation_failed``) and
    that run's final status."""
    steps = {s: StepStatus.COMPENSATED if st is StepStatus.SUCCEEDED
             else StepStatus.COMPENSATION_FAILED for s, st in undo_statuses.items()}
    ok = all(st is StepStatus.COMPENSATED for st in steps.values())
    return steps, RunStatus.COMPENSATED if ok else RunStatus.COMPENSATION_FAILED
