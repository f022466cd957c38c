"""Whether a step runs, and why: its trigger rule, then its condition (pure).

The one implementation of the decision: a worker calls :func:`decide` before a step
function runs, and ``orchestrator simulate`` calls it on a virtual clock.  The
:class:`Decision` is recorded on the step run (its *decision trail*) whenever something
other than "every parent succeeded" decided: a trigger rule other than ``all_success``, a
failure handler, a condition, or a skip.  It holds the rule and the parents' statuses it
read, the condition's text, the values it read and its outcome.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.core import rules
from orchestrator.core.conditions import Condition
from orchestrator.core.models import StepDef
from orchestrator.core.states import StepStatus

MAX_VALUE_CHARS = 500
"""A value the trail records is cut to this many characters of JSON."""


@dataclass(frozen=True)
class Decision:
    """What decided whether a step runs."""

    runs: bool
    reason: str | None
    """Why it is skipped (None when it runs)."""
    rule: str
    """The trigger rule (``handler`` for a failure handler)."""
    parents: dict[str, str] = field(default_factory=dict)
    """Each parent's final status, as the rule read it."""
    when: str | None = None
    """The condition's text, if the condition was evaluated."""
    values: dict[str, Any] = field(default_factory=dict)
    """What the condition read: ``input`` and ``steps.<id>.output`` / ``.status``."""
    outcome: bool | None = None
    """The condition's result (None: not evaluated)."""

    @property
    def notable(self) -> bool:
        """Worth recording: something other than "every parent succeeded" decided."""
        return not self.runs or self.when is not None or self.rule != "all_success"

    def to_record(self) -> dict[str, Any]:
        """The JSON the step run records (its ``decision`` field)."""
        out: dict[str, Any] = {"rule": self.rule, "parents": self.parents,
                               "runs": self.runs}
        if self.when is not None:
            out.update(when=self.when, values=self.values, outcome=self.outcome)
        return out


def decide(step: StepDef, parents: Sequence[str], statuses: Mapping[str, StepStatus],
           handles: Sequence[str], condition: Condition | None, run_input: Any,
           outputs: Mapping[str, Any]) -> Decision:
    """Decide whether ``step`` runs: its trigger rule over its parents' final statuses,
    then (if the rule lets it run) its condition.

    Args:
        step: the step.
        parents: its parents' ids.
        statuses: the final status of each parent and of each step the condition reads.
        handles: the steps whose failure it handles (a failure handler).
        condition: its parsed ``when``, if any.
        run_input: the run's input.
        outputs: ancestors' outputs (at least those the condition reads).

    Raises:
        ConditionError: the condition fails to evaluate (the step run fails, no retry).
    """
    rule = "handler" if handles else step.trigger_rule.value
    read = {p: statuses[p] for p in parents}
    reason = rules.decide(step.trigger_rule, read, handles)
    shown = {p: s.value for p, s in read.items()}
    if reason is not None or condition is None:
        return Decision(reason is None, reason, rule, shown)
    views = {s: {"output": outputs.get(s), "status": statuses[s].value}
             for s in condition.steps if s in statuses}
    values = {f"steps.{s}.{k}": _cut(v) for s, view in views.items() for k, v in view.items()}
    if _reads_input(condition.text):
        values["input"] = _cut(run_input)
    ok = condition.evaluate(run_input, views)
    return Decision(ok, None if ok else f"condition is false: {condition.text}", rule, shown,
                    condition.text, values, ok)


def _reads_input(text: str) -> bool:
    return "input" in text


def _cut(value: Any) -> Any:
    text = json.dumps(value, default=str)
    return value if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"
