"""What changed between two versions of a workflow (pure).

A workflow's version is the hash of its content (:attr:`WorkflowDef.version`), so two
versions of one name differ in at least one field.  :func:`diff` names each: steps added,
removed and changed (with the fields that changed, old and new value), and the
workflow's own fields.  ``orchestrator diff`` prints it; resuming a run on a newer
version uses :meth:`VersionDiff.changed_steps` to refuse reusing a step whose
definition changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from orchestrator.core.models import StepDef, WorkflowDef

_WORKFLOW_FIELDS = ("description", "input_schema", "default_queue")


@dataclass(frozen=True)
class FieldChange:
    """One field that differs: its dotted name, its old and its new value (JSON)."""

    field: str
    old: Any
    new: Any


@dataclass(frozen=True)
class VersionDiff:
    """The difference from version ``old`` to version ``new`` of one workflow."""

    old: str
    new: str
    added: tuple[str, ...]
    """Step ids only in ``new``, in its order."""
    removed: tuple[str, ...]
    """Step ids only in ``old``, in its order."""
    changed: dict[str, tuple[FieldChange, ...]]
    """Step id → the fields of the step that changed, for steps in both."""
    workflow: tuple[FieldChange, ...]
    """Workflow-level fields that changed (description, input schema, default queue)."""

    @property
    def same(self) -> bool:
        """Nothing but the label differs (then the versions are equal too)."""
        return not (self.added or self.removed or self.changed or self.workflow)

    def changed_steps(self, among: set[str] | None = None) -> list[str]:
        """Step ids removed or changed in what they do (a new description alone is not a
        change), optionally only those in ``among``, sorted."""
        ids = set(self.removed) | {s for s, fields in self.changed.items()
                                   if any(f.field != "description" for f in fields)}
        if among is not None:
            ids &= among
        return sorted(ids)

    def lines(self) -> list[str]:
        """The diff as text lines: ``+ step``, ``- step``, ``~ step.field: old -> new``."""
        out = [f"--- {self.old}", f"+++ {self.new}"]
        out += [f"~ workflow.{c.field}: {_short(c.old)} -> {_short(c.new)}"
                for c in self.workflow]
        out += [f"- {s}" for s in self.removed]
        out += [f"+ {s}" for s in self.added]
        for step_id, changes in self.changed.items():
            out += [f"~ {step_id}.{c.field}: {_short(c.old)} -> {_short(c.new)}"
                    for c in changes]
        if self.same:
            out.append("(no change)")
        return out


def diff(old: WorkflowDef, new: WorkflowDef) -> VersionDiff:
    """Compare two definitions field by field (defaults count as values).

    Args:
        old: the earlier definition.
        new: the later one (usually of the same name; a different name is a change of
            nothing but the name, which is not reported).

    Returns:
        The :class:`VersionDiff`; its lists keep each definition's step order.
    """
    old_steps, new_steps = old.step_map, new.step_map
    changed: dict[str, tuple[FieldChange, ...]] = {}
    for step_id, step in old_steps.items():
        other = new_steps.get(step_id)
        if other is not None:
            fields = _fields(_dump(step), _dump(other))
            if fields:
                changed[step_id] = fields
    wf_old = old.model_dump(mode="json", by_alias=True, include=set(_WORKFLOW_FIELDS))
    wf_new = new.model_dump(mode="json", by_alias=True, include=set(_WORKFLOW_FIELDS))
    return VersionDiff(
        old=old.version, new=new.version,
        added=tuple(s for s in new_steps if s not in old_steps),
        removed=tuple(s for s in old_steps if s not in new_steps),
        changed=changed,
        workflow=_fields(wf_old, wf_new))


def _dump(step: StepDef) -> dict[str, Any]:
    return step.model_dump(mode="json", by_alias=True)


def _fields(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> tuple[FieldChange, ...]:
    out: list[FieldChange] = []
    for name in sorted(old.keys() | new.keys()):
        a, b = old.get(name), new.get(name)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict) and name != "input_schema":
            out += _fields(a, b, f"{prefix}{name}.")
        else:
            out.append(FieldChange(f"{prefix}{name}", a, b))
    return tuple(out)


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 1] + "…"
