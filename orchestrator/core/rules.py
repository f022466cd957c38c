"""Whether a step runs, given its parents' final states: trigger rules, pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from orchestrator.core.models import TriggerRule
from orchestrator.core.states import StepStatus

OK = StepStatus.SUCCEEDED
BAD = StepStatus.FAILED


def decide(rule: TriggerRule, parents: Mapping[str, StepStatus],
           handles: Sequence[str] = ()) -> str | None:
    """Return ``None`` if the step should run, else the reason it is skipped.

    Args:
        rule: the step's trigger rule.
        parents: final status of each parent.
        handles: steps whose failure this step handles; when given, the step runs only
            if one of them failed (its other parents only have to be finished).
    """
    if handles:
        failed = [h for h in handles if parents.get(h) == BAD]
        return None if failed else "no handled step failed"
    states = list(parents.values())
    if not states:
        return None
    not_ok = sorted(p for p, s in parents.items() if s != OK)
    failed = sorted(p for p, s in parents.items() if s == BAD)
    if rule is TriggerRule.ALL_SUCCESS:
        return None if not not_ok else f"upstream not succeeded: {', '.join(not_ok)}"
    if rule is TriggerRule.ALL_DONE:
        return None
    if rule is TriggerRule.ALL_FAILED:
        return None if len(failed) == len(states) else "not every parent failed"
    if rule is TriggerRule.ONE_FAILED:
        return None if failed else "no parent failed"
    if rule is TriggerRule.ONE_SUCCESS:
        return None if OK in states else "no parent succeeded"
    if rule is TriggerRule.NONE_FAILED:
        return None if not failed else f"upstream failed: {', '.join(failed)}"
    raise ValueError(f"unknown trigger rule {rule!r}")
