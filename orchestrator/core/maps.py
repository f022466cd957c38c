"""Map steps (dynamic fan-out): the items of a step with ``map:`` as step runs of their
own, what a map step's definition must satisfy, and how its items' outcomes end it.

A map step ``fetch`` whose ``over`` yields ``n`` items has ``n`` item runs ``fetch[0]`` …
``fetch[n-1]``: each is a step run (its own record, lease, attempts and retries) of the
step's function, called with the item in the parameter ``MapDef.as_``.  The map step's own
record ends when the last item ends; its output is the list of item outputs in item
order (``null`` for an item that failed).  A mapped sub-workflow step (``workflow:`` and
``map:``) runs one child run per item instead of a function, its input the step's inputs
plus the item under ``as``; each item waits for its child as a sub-workflow step does
(:mod:`orchestrator.core.subworkflows`).  The runtime side is
:mod:`orchestrator.runtime.maps`, the store side :mod:`orchestrator.store.maps`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Optional

from orchestrator.core.conditions import parse as parse_condition
from orchestrator.core.expressions import Expression
from orchestrator.core.expressions import parse as parse_expression
from orchestrator.core.models import MapDef, StepDef
from orchestrator.errors import ConditionError

VARIABLES = frozenset({"input", "steps"})
"""What ``over`` may read: the run's input and ancestors' ``steps.<id>.output`` (and
``.status``), as a condition does."""

FAILURES_KEPT = 100
"""At most this many item failures (index, error type and message) are kept on the map
step's record; the count of failures is always exact, each item's record has its error."""

_ITEM = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\[(\d+)\]$")


def item_id(step_id: str, index: int) -> str:
    """The step run id of item ``index`` of map step ``step_id``: ``fetch[17]``."""
    return f"{step_id}[{index}]"


def parse_item(step_run_id: str) -> tuple[str, int] | None:
    """(map step id, item index) of an item's step run id, None for any other id."""
    if not step_run_id.endswith("]"):
        return None
    m = _ITEM.match(step_run_id)
    return (m.group(1), int(m.group(2))) if m else None


def over(m: MapDef) -> Expression:
    """The parsed ``over`` expression.

    Raises:
        ConditionError: it does not parse, or reads a variable other than ``input`` and
            ``steps``.
    """
    return parse_expression(m.over, VARIABLES)


def reads(m: MapDef) -> frozenset[str]:
    """The steps whose outputs ``over`` reads.

    Raises:
        ConditionError: as :func:`over`.
    """
    return parse_condition(m.over).steps


def items(m: MapDef, run_input: Any, views: dict[str, dict[str, Any]]) -> list[Any]:
    """Evaluate ``over`` to the list of items.

    Args:
        views: ``{step_id: {"output": …, "status": …}}`` for the steps ``over`` reads.

    Raises:
        ConditionError: evaluation failed, or the result is not a list.
    """
    value = over(m).value({"input": run_input, "steps": views})
    if not isinstance(value, list):
        raise ConditionError(m.over, f"map 'over' gave {type(value).__name__}, not a list; "
                             "write an expression that yields a list")
    return value


def fails(m: MapDef, failed: int) -> bool:
    """Whether a map step with ``failed`` failed items ends ``failed`` (all its items
    ended): under ``fail_fast`` one failure is enough, under ``allow`` more than
    ``max_failures``, under ``continue`` never."""
    if m.failure_policy == "continue":
        return False
    if m.failure_policy == "allow":
        return failed > m.max_failures
    return failed > 0


def tolerated(m: MapDef) -> int:
    """How many item failures the map step tolerates before it stops publishing items
    (-1: any number)."""
    if m.failure_policy == "continue":
        return -1
    return m.max_failures if m.failure_policy == "allow" else 0


def output_type(item_output: Any) -> Any:
    """The type of a map step's output given its function's: a list of it or None (an
    item that failed, under ``continue`` or ``allow``)."""
    return list[Optional[item_output]]  # noqa: UP045  (a runtime annotation, not syntax)


def problems(s: StepDef, params: dict[str, Any] | None, any_kwargs: bool = False
             ) -> Iterator[tuple[str, str, str]]:
    """What is wrong with a map step's ``map`` (nothing for other steps), as (code,
    message, fix).

    Args:
        params: the step function's parameters (None: the function is unknown, checked
            elsewhere).
        any_kwargs: the function takes ``**kwargs``.
    """
    m = s.map
    if m is None:
        return
    try:
        over(m)
        parse_condition(m.over)
    except ConditionError as exc:
        yield ("bad_map", f"map.over {exc}.",
               "write a CEL expression over 'input' and 'steps.<id>.output' that yields a "
               "list, e.g. input.files")
    if s.wait is not None:
        yield ("bad_map", "a step cannot both wait and map.",
               "remove 'wait' or 'map' (put the wait in a step before the map).")
    for name, what in (("rate_limit", "a rate limit"), ("concurrency", "a concurrency limit")):
        if getattr(s, name, None) is not None:
            yield ("bad_map", f"a map step cannot have {what} (its items do not draw from "
                   "it yet).",
                   f"remove '{name}', or put it on a step the map's items do not run.")
    if m.max_parallel is not None and m.max_parallel < 1:
        yield ("bad_map", f"map.max_parallel is {m.max_parallel}.",
               "set max_parallel to 1 or more, or omit it (no limit).")
    if m.max_failures < 0:
        yield ("bad_map", f"map.max_failures is {m.max_failures}.",
               "set max_failures to 0 or more.")
    elif m.max_failures and m.failure_policy != "allow":
        yield ("bad_map", f"map.max_failures is set but failure_policy is "
               f"{m.failure_policy!r}.",
               "set failure_policy: allow, or remove max_failures.")
    if m.as_ in s.inputs:
        yield ("bad_map", f"input {m.as_!r} is also the parameter that receives each item.",
               f"remove {m.as_!r} from 'inputs', or name another parameter in map.as.")
    if s.workflow is not None:  # each item is the child's input field ``as``
        return
    if params is not None and m.as_ not in params and not any_kwargs:
        yield ("bad_map", f"the step function has no parameter {m.as_!r} to receive each "
               "item.",
               f"add a parameter {m.as_!r} to the function, or set map.as to one of: "
               f"{', '.join(params) or '(none)'}.")
