"""Concurrency limits by key (pure): which slot a run or a step run takes, and what a new
one does when every slot of its key is held.

A workflow or a step with ``concurrency``
(:class:`~orchestrator.core.models.ConcurrencyDef`) lets at most ``limit`` runs (or step
runs) hold a slot of the same key at once, counted in the store for every worker of every
host (a sorted set of holders and a FIFO of waiters per scope; the keys are
``Keys.concurrency_holders`` and ``Keys.concurrency_queue``).

* **A workflow's** slot is taken when the run is created (``store/lua/create_run.lua``,
  the same script) and held until its final status (``store/lua/run_transition.lua``
  releases it and, in the same script, passes it to the oldest waiting run of the key,
  moving that run from ``queued`` to ``running`` and claiming its first units; the
  process that ended the run publishes them, the reaper does if it died).
* **A step's** slot is taken when its step run is about to start
  (``store/lua/acquire_slot.lua``) and held while it runs; a step run over the limit
  waits ``queued`` in the store (its message held in a timer that is not due, no worker
  slot); the step run's final transition releases the slot and makes the oldest waiter's
  timer due.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from orchestrator.core.expressions import parse
from orchestrator.core.models import ConcurrencyDef, StepDef, WorkflowDef
from orchestrator.errors import ConditionError

KEY_VARIABLES = frozenset({"input"})
"""What a concurrency limit's ``key`` expression may read."""


class Admission(StrEnum):
    """What became of a new run under its workflow's concurrency limit."""

    STARTED = "started"
    """It took a slot (or its workflow has no limit): it runs now."""
    QUEUED = "queued"
    """Every slot of its key was held: it waits (``queued``) for one, in arrival order."""
    CANCELLED = "cancelled"
    """Every slot was held and ``when_full`` is ``cancel_newest``: it ended cancelled."""
    DISPLACED = "displaced"
    """Every slot was held and ``when_full`` is ``cancel_oldest``: it took the slot of
    the oldest holder, which the caller cancels."""


def key_value(limit: ConcurrencyDef, run_input: Any) -> str:
    """The value of the limit's key for ``run_input``, as text (a string as is; any other
    JSON value as compact JSON, so ``1`` and ``"1"`` are two keys).

    Raises:
        ConditionError: the key expression fails on this input.
    """
    value = parse(limit.key, KEY_VARIABLES).value({"input": run_input})
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def workflow_scope(wf: WorkflowDef, value: str) -> str:
    """The scope of a workflow's slots for one key value: ``wf:<workflow>:<value>``
    (each workflow counts its own runs)."""
    return f"wf:{wf.name}:{value}"


def step_scope(step: StepDef, value: str) -> str:
    """The scope of a step's slots for one key value: ``step:<function>:<value>`` (every
    step calling the function shares them, as a rate limit's budget)."""
    return f"step:{step.function}:{value}"


def full_reason(what: str, limit: ConcurrencyDef, value: str) -> str:
    """Why a new run (or step run) ended ``cancelled`` at a full limit."""
    return (f"concurrency limit of {what}: {limit.limit} already hold key {value!r} "
            "(when_full: cancel_newest)")


def displaced_reason(by: str, limit: ConcurrencyDef, value: str) -> str:
    """Why the oldest holder of a full key was cancelled for the new run ``by``."""
    return (f"cancelled for run {by!r}: concurrency limit {limit.limit} of key {value!r} "
            "(when_full: cancel_oldest)")


def wait_reason(limit: ConcurrencyDef, value: str) -> str:
    """What a waiting run or step run waits for."""
    return (f"waits for a slot of concurrency key {value!r} (limit {limit.limit}, "
            "in arrival order)")


@dataclass(frozen=True)
class Slot:
    """The slot a run (or a step run) asks for: what the store needs to take it."""

    scope: str
    value: str
    """The key's value for this input."""
    limit: int
    when_full: str
    waiting: str
    """The reason recorded while it waits."""
    refused: str
    """The reason recorded if it ends cancelled at a full limit (``cancel_newest``)."""


def run_slot(wf: WorkflowDef, run_input: Any) -> Slot | None:
    """The slot a new run of ``wf`` asks for (None: the workflow has no limit).

    Raises:
        ConditionError: the key expression fails on this input.
    """
    c = wf.concurrency
    if c is None:
        return None
    value = key_value(c, run_input)
    return Slot(workflow_scope(wf, value), value, c.limit, c.when_full,
                wait_reason(c, value), full_reason(f"workflow {wf.name!r}", c, value))


def step_slot(step: StepDef, run_input: Any) -> Slot:
    """The slot a step run of ``step`` (which has a limit) asks for.

    Raises:
        ConditionError: the key expression fails on this input.
    """
    c = step.concurrency
    assert c is not None
    value = key_value(c, run_input)
    return Slot(step_scope(step, value), value, c.limit, c.when_full,
                wait_reason(c, value), full_reason(f"step {step.id!r}", c, value))


def problems(limit: ConcurrencyDef | None, step: StepDef | None = None
             ) -> list[tuple[str, str]]:
    """What is wrong with a workflow's (``step`` None) or a step's limit: ``(message,
    fix)`` pairs."""
    if limit is None:
        return []
    out: list[tuple[str, str]] = []
    try:
        parse(limit.key, KEY_VARIABLES)
    except ConditionError as exc:
        out.append((f"key: {exc}", "write a CEL expression over 'input', e.g. "
                    "input.customer_id."))
    if step is not None and limit.when_full == "cancel_oldest":
        out.append(("a running step run cannot be cancelled alone without stalling its "
                    "run (its canvas would never go on).",
                    "use when_full: queue or cancel_newest on a step, or put cancel_oldest "
                    "on the workflow's concurrency."))
    if step is not None and step.wait is not None:
        out.append(("a wait step runs no step function and holds no worker.",
                    "remove 'concurrency' from the wait step, or limit the step after it."))
    return out
