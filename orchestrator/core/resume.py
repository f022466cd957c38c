"""Resuming a run (pure): which steps a new run reuses, and its patched input.

A resume starts a **new run** of the same workflow (its pinned version, or a newer one whose
reused steps are unchanged) that takes the recorded outputs of some succeeded steps
instead of running them again, and runs the rest.  The steps it runs again are the
*resume points* and everything downstream of them:

- the step named with ``--from`` (if any), and
- every step that did not succeed (failed, skipped, cancelled, never ran).

Every other step that succeeded is reused: its record and output are copied into the new
run, which begins with them ``succeeded``; the runtime's normal path for a step that has
already ended (it settles and carries its canvas on) moves the new run past them without
calling their step functions.

A failure handler downstream of a resume point runs again only if the step it handles
fails again; a step skipped by its condition is evaluated again (the input may differ).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.core.models import WorkflowDef
from orchestrator.core.states import StepStatus
from orchestrator.core.versions import diff
from orchestrator.errors import ResumeRefused


@dataclass(frozen=True)
class ResumePlan:
    """What a resume reuses and what it runs again."""

    reuse: tuple[str, ...]
    """Succeeded steps whose records and outputs the new run takes, in workflow order."""
    rerun: tuple[str, ...]
    """Steps the new run runs (or decides) again, in workflow order."""


def plan_resume(wf: WorkflowDef, statuses: Mapping[str, StepStatus],
                from_step: str | None = None, target: WorkflowDef | None = None) -> ResumePlan:
    """Decide which steps a resume reuses.

    Args:
        wf: the version the run being resumed is pinned to.
        statuses: each step's final status in that run (missing: never ran).
        from_step: run this step again, and everything downstream of it, even if it
            succeeded.
        target: the version the new run uses (default ``wf``).  Every step it reuses must
            exist in it unchanged.

    Returns:
        The :class:`ResumePlan` (over ``target``'s steps).

    Raises:
        ResumeRefused: ``from_step`` is not a step of ``wf``; or steps the resume would
            reuse changed in ``target`` (the message lists them and the fix).
    """
    target = target or wf
    if from_step is not None and from_step not in wf.step_map:
        raise ResumeRefused(f"--from {from_step!r} is not a step of workflow {wf.name!r} "
                            f"(steps: {', '.join(s.id for s in wf.steps)}). Fix: name one "
                            "of its steps")
    points = {s.id for s in wf.steps if statuses.get(s.id) is not StepStatus.SUCCEEDED}
    if from_step is not None:
        points.add(from_step)
    again = downstream(wf, points)
    reuse = [s.id for s in wf.steps if s.id not in again]
    if target.version != wf.version:
        d = diff(wf, target)
        changed = d.changed_steps(set(reuse))
        if changed:
            first = next(s.id for s in wf.steps if s.id in changed)
            raise ResumeRefused(
                f"version {target.version} of {wf.name!r} changed step(s) the resume would "
                f"reuse: {', '.join(changed)}. Fix: resume on the run's version "
                f"{wf.version}, or run the changed steps again (--from {first})")
        # a step added upstream of a reused one would not have run: run it and its
        # descendants again
        added = set(d.added)
        if added:
            again_new = downstream(target, added)
            reuse = [s for s in reuse if s not in again_new]
    in_target = set(target.step_map)
    reuse = [s for s in reuse if s in in_target]
    kept = set(reuse)
    return ResumePlan(tuple(reuse), tuple(s.id for s in target.steps if s.id not in kept))


def downstream(wf: WorkflowDef, roots: Iterable[str]) -> set[str]:
    """``roots`` and every step that depends on one of them, directly or not."""
    children: dict[str, list[str]] = {}
    for step_id, parents in wf.dependencies().items():
        for p in parents:
            children.setdefault(p, []).append(step_id)
    seen = set(roots)
    stack = list(seen)
    while stack:
        for c in children.get(stack.pop(), ()):
            if c not in seen:
                seen.add(c)
                stack.append(c)
    return seen


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply a JSON Merge Patch (RFC 7386) to ``target``; neither is modified.

    An object patch sets its members on an object (``null`` removes one); any other
    patch replaces the target.
    """
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out
