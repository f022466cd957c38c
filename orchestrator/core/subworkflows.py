"""Sub-workflows, the pure part: a step that runs another cataloged workflow as a run of
its own (its *child run*) and waits for it.

A sub-workflow step (``StepDef.workflow``) calls no step function of its own (its
``function`` is :data:`SUBWORKFLOW_FUNCTION`, filled in).  Its task resolves the step's
``inputs`` into the child's input (a JSON object, parameter name -> value), starts the
child run ``<run>.<step>.<attempt>`` (:func:`child_run_id`: a redelivered task finds it
started, never starts a second) and parks the step (``waiting``, its next message in a
store timer, no worker slot held).  The child run records its parent (``parent_run``,
``parent_step``); when it ends, the script that ends it makes the parent's timer due, and
the delivery that comes back decides here (:func:`outcome`): the step succeeds with the
child's output (:func:`child_output`) or fails, and the step's retry policy starts a new
child run (attempt + 1).

**Pinning.**  A step names the child by ``name`` and, optionally, ``version``.  Without a
version, the catalog pins the child's version it holds when it loads the parent
(:func:`pin`), so the parent's own version (a content hash) includes it: every run of that
parent version starts that child version, and an edit of the child makes a new parent
version (runs in flight keep theirs).

**Undo.**  A succeeded sub-workflow step whose child version declares compensations
(directly, or through its own sub-workflow steps: :func:`undoable`) is undone with its run:
the parent's undo run has a step :data:`UNDO_FUNCTION` that starts the child's undo run
``<child>.undo`` and waits for it the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jsonschema import Draft202012Validator
from pydantic import BaseModel, ConfigDict, Field, model_validator

from orchestrator.core.registry import default_registry
from orchestrator.core.states import RunStatus
from orchestrator.errors import Problem, RunError

if TYPE_CHECKING:
    from orchestrator.core.models import StepDef, WorkflowDef

SUBWORKFLOW_FUNCTION = "orchestrator.subworkflow"
"""The function name (and task ``step.orchestrator.subworkflow``) of every sub-workflow
step."""
UNDO_FUNCTION = "orchestrator.subworkflow.undo"
"""The function of the step of an undo run that undoes a sub-workflow step: it starts the
child run's undo run and waits for it."""
WAIT_KIND = "workflow"
"""The ``kind`` of the ``wait`` record of a step that waits for a run."""
NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
_ITEM = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\[(\d+)\]$")  # core.maps.item_id's form


class SubWorkflowDef(BaseModel):
    """The workflow a sub-workflow step runs (``StepDef.workflow``): a cataloged
    workflow's ``name`` and its ``version`` (omitted: pinned when the parent loads).
    In YAML the name alone will do: ``workflow: payment``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=NAME)
    version: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v


class SubWorkflowFailed(RunError):
    """A sub-workflow step's child run did not succeed (its retry policy and failure
    path apply as for any failed step)."""


def child_run_id(run_id: str, step_id: str, attempt: int) -> str:
    """The id of the child run that attempt ``attempt`` of step run ``step_id`` starts:
    ``<run>.<step>.<attempt>``, and for item ``i`` of a mapped sub-workflow step (step run
    ``kid[i]``) ``<run>.kid.<i>.<attempt>``, so that a run id never holds ``[`` or ``]``
    (``RUN_ID`` of the API and the CLI; glob characters in Redis patterns).  A step id
    never starts with a digit, so the two forms cannot meet."""
    item = _ITEM.match(step_id)
    if item is not None:
        return f"{run_id}.{item.group(1)}.{item.group(2)}.{attempt}"
    return f"{run_id}.{step_id}.{attempt}"


def parks(step: StepDef) -> bool:
    """Whether the step waits for a run of its own (a sub-workflow step, or the undo of
    one in an undo run)."""
    return step.workflow is not None or step.function == UNDO_FUNCTION


def child_input(step: StepDef, run_input: Any, outputs: Mapping[str, Any]) -> dict[str, Any]:
    """The child run's input: the step's inputs resolved (references read from the run's
    input and its ancestors' outputs), by parameter name."""
    from orchestrator.core.compensation import step_input  # it imports models, which
    return step_input(step, run_input, outputs)            # import this module


def sinks(wf: WorkflowDef) -> list[str]:
    """The steps no other step follows, failure handlers left out, in workflow order."""
    handlers = set(wf.handlers_of())
    followed = {p for s, deps in wf.dependencies().items() if s not in handlers
                for p in deps}
    return [s.id for s in wf.steps if s.id not in followed and s.id not in handlers]


def child_output(wf: WorkflowDef, outputs: Mapping[str, Any]) -> Any:
    """A succeeded child run's output, as its parent step's output: the output of its one
    sink step, or with several sinks a JSON object of their outputs by step id (a sink
    that gave none, say skipped, gives ``null``)."""
    ends = sinks(wf)
    if len(ends) == 1:
        return outputs.get(ends[0])
    return {s: outputs.get(s) for s in ends}


@dataclass(frozen=True)
class Outcome:
    """What a delivery of a step waiting for run ``run`` does: ``succeed``, ``fail`` with
    ``error``, or ``wait`` (the run has not ended: park again)."""

    action: str
    error: SubWorkflowFailed | None = None


def outcome(run_id: str, status: RunStatus | None) -> Outcome:
    """Decide a delivery of a step that waits for run ``run_id`` now in ``status`` (None:
    the run is not in the store)."""
    if status is None:
        return Outcome("fail", SubWorkflowFailed(
            f"run {run_id} is not in the store (expired, or deleted); run the step again "
            "(resume its run)"))
    if not status.terminal:
        return Outcome("wait")
    if status is RunStatus.SUCCEEDED:
        return Outcome("succeed")
    return Outcome("fail", SubWorkflowFailed(
        f"run {run_id} ended {status.value}; read why with `orchestrator status {run_id}`"))


# --- checks ------------------------------------------------------------------------------


def step_problems(step: StepDef) -> list[tuple[str, str]]:
    """Shape problems of one step about sub-workflows, as (message, fix) pairs."""
    out: list[tuple[str, str]] = []
    if step.workflow is None:
        if step.function in (SUBWORKFLOW_FUNCTION, UNDO_FUNCTION):
            out.append((f"function {step.function!r} is only for sub-workflow steps.",
                        "give the step a 'workflow' (the name of a cataloged workflow), or "
                        "another function."))
        return out
    if step.wait is not None:
        out.append(("a step cannot both wait and run a sub-workflow.",
                    "split it into a wait step and a sub-workflow step."))
    elif step.function != SUBWORKFLOW_FUNCTION:
        out.append((f"a sub-workflow step calls no function, but names {step.function!r}.",
                    f"remove 'function' (it is {SUBWORKFLOW_FUNCTION!r}), or remove "
                    "'workflow'."))
    if step.compensate is not None:
        out.append(("a sub-workflow step is undone by its child run's compensations.",
                    "remove 'compensate'; declare compensations on the child's steps."))
    if step.soft_timeout_s is not None or step.timeout_s is not None:
        out.append(("a sub-workflow step's time limits would bound only the start of its "
                    "child run, not the run.",
                    "remove soft_timeout_s and timeout_s; give the child's steps time "
                    "limits."))
    return out


def pin(workflows: Mapping[str, WorkflowDef]
        ) -> tuple[dict[str, WorkflowDef], dict[str, list[Problem]]]:
    """Check the sub-workflow steps of a catalog and pin their children's versions.

    Children are pinned before their parents, so a parent's version includes its
    children's pins all the way down.

    Returns:
        (every workflow without problems, pinned; the others' problems by name:
        ``unknown_workflow`` (no such cataloged workflow, or one with problems),
        ``subworkflow_cycle`` (a workflow that runs itself, directly or through others),
        ``bad_subworkflow_input`` (the step's literal inputs break the child's
        ``input_schema``; references are checked when the child run starts)).
    """
    pinned: dict[str, WorkflowDef] = {}
    problems: dict[str, list[Problem]] = {}
    state: dict[str, int] = {}  # 1: on the path, 2: done
    for root in workflows:
        if root in state:
            continue
        path: list[str] = [root]
        stack: list[tuple[str, list[str]]] = [(root, _children(workflows[root]))]
        state[root] = 1
        while stack:
            name, todo = stack[-1]
            if todo:
                child = todo.pop(0)
                if child in workflows and state.get(child) is None:
                    state[child] = 1
                    path.append(child)
                    stack.append((child, _children(workflows[child])))
                elif state.get(child) == 1:
                    cycle = [*path[path.index(child):], child]
                    problems.setdefault(name, []).append(Problem(
                        "subworkflow_cycle",
                        f"the workflows run each other: {' -> '.join(cycle)}.",
                        "remove one of these sub-workflow steps.", name,
                        _step_running(workflows[name], child)))
                continue
            stack.pop()
            path.pop()
            state[name] = 2
            wf, found = _pin_one(workflows[name], pinned, workflows)
            cyclic = {p.step for p in problems.get(name, [])}
            found = problems.get(name, []) + [p for p in found if p.step not in cyclic]
            if found:
                problems[name] = found
            else:
                pinned[name] = wf
    return pinned, problems


def _children(wf: WorkflowDef) -> list[str]:
    return list(dict.fromkeys(s.workflow.name for s in wf.steps if s.workflow is not None))


def _step_running(wf: WorkflowDef, child: str) -> str | None:
    return next((s.id for s in wf.steps if s.workflow is not None
                 and s.workflow.name == child), None)


def _pin_one(wf: WorkflowDef, pinned: Mapping[str, WorkflowDef],
             every: Mapping[str, WorkflowDef]) -> tuple[WorkflowDef, list[Problem]]:
    from orchestrator.core.models import Value  # models import this module
    problems: list[Problem] = []
    steps = list(wf.steps)
    changed = False
    for i, s in enumerate(steps):
        if s.workflow is None:
            continue
        child = pinned.get(s.workflow.name)
        if child is None:
            why = "has problems of its own" if s.workflow.name in every else \
                "is not in the catalog"
            problems.append(Problem(
                "unknown_workflow", f"sub-workflow {s.workflow.name!r} {why}.",
                "name a cataloged workflow (`orchestrator list`), or fix that one.",
                wf.name, s.id))
            continue
        literal = {k: v.value for k, v in s.inputs.items() if isinstance(v, Value)}
        if len(literal) == len(s.inputs) and s.map is None:  # a map adds each item
            errors = sorted(Draft202012Validator(child.input_schema).iter_errors(literal),
                            key=lambda e: list(e.path))
            for e in errors:
                where = "/".join(str(p) for p in e.path) or "(input)"
                problems.append(Problem(
                    "bad_subworkflow_input",
                    f"the input of sub-workflow {child.name!r} breaks its input_schema at "
                    f"{where}: {e.message}.",
                    "change the step's inputs to match the child's input_schema.",
                    wf.name, s.id))
        if s.workflow.version is None:
            steps[i] = s.model_copy(update={"workflow": SubWorkflowDef(
                name=child.name, version=child.version)})
            changed = True
    if not changed or problems:
        return wf, problems
    return wf.model_copy(update={"steps": tuple(steps)}), problems


def undoable(wf: WorkflowDef, load: Any) -> frozenset[str]:
    """The sub-workflow steps of ``wf`` whose child version has something to undo: a step
    with a compensation, or a sub-workflow step of its own that has (``load(version)``
    gives a stored ``WorkflowDef``; a version it cannot give counts as nothing to undo)."""
    memo: dict[str, bool] = {}

    def has(version: str, seen: frozenset[str]) -> bool:
        if version in memo:
            return memo[version]
        if version in seen:
            return False
        try:
            child = load(version)
        except Exception:  # a version gone from the store undoes nothing
            return False
        ok = any(s.compensate is not None for s in child.steps) or any(
            s.workflow is not None and s.workflow.version is not None
            and has(s.workflow.version, seen | {version}) for s in child.steps)
        memo[version] = ok
        return ok

    return frozenset(s.id for s in wf.steps if s.workflow is not None
                     and s.map is None  # a mapped one's children are not undone (yet)
                     and s.workflow.version is not None
                     and has(s.workflow.version, frozenset()))


def _never_called() -> Any:
    """A sub-workflow step's function: never called (its task starts the child run)."""
    raise SubWorkflowFailed("a sub-workflow step's function is never called; run it on a "
                            "worker")


def _undo_never_called(run: str) -> Any:
    """The undo of a sub-workflow step: never called (its task starts the undo run)."""
    raise SubWorkflowFailed("an undo step's function is never called; run it on a worker")


default_registry.register(SUBWORKFLOW_FUNCTION, _never_called)
default_registry.register(UNDO_FUNCTION, _undo_never_called)
