"""Rate limits across the pool (pure): the budget a step run draws from.

A step with ``rate_limit`` (:class:`~orchestrator.core.models.RateLimitDef`) starts at
most ``rate`` step runs per ``key``, spaced evenly, counted in Redis for every worker of
every host (a GCRA: ``store/lua/rate_limit.lua``, one round trip).  A step run over budget
does not sleep in its worker: its task is held in a store timer until its turn and the
task ends (no worker slot, no ETA message; ``store/lua/throttle_step.lua``).
"""

from __future__ import annotations

from typing import Any

from orchestrator.core.expressions import parse
from orchestrator.core.models import StepDef
from orchestrator.errors import ConditionError

KEY_VARIABLES = frozenset({"input"})
"""What a rate limit's ``key`` expression may read."""


def scope(step: StepDef, run_input: Any) -> str:
    """The budget a step run of ``step`` draws from: ``fn:<function>``, or
    ``key:<function>:<key>`` with a key expression.

    Raises:
        ConditionError: the key expression fails on this input.
    """
    rl = step.rate_limit
    assert rl is not None
    if rl.key is None:
        return f"fn:{step.function}"
    value = parse(rl.key, KEY_VARIABLES).value({"input": run_input})
    return f"key:{step.function}:{value}"


def problems(step: StepDef) -> list[tuple[str, str]]:
    """What is wrong with a step's rate limit: ``(message, fix)`` pairs."""
    rl = step.rate_limit
    if rl is None:
        return []
    out: list[tuple[str, str]] = []
    if step.wait is not None:
        out.append(("a wait step starts no step function to limit.",
                    "remove 'rate_limit' from the wait step."))
    if rl.interval_s == float("inf"):
        out.append((f"rate {rl.rate!r} allows nothing.", "use a count of 1 or more."))
    if rl.key is not None:
        try:
            parse(rl.key, KEY_VARIABLES)
        except ConditionError as exc:
            out.append((f"key: {exc}", "write a CEL expression over 'input', e.g. "
                        "input.customer_id."))
    return out
