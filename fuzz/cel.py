"""Fuzz target ``cel``: CEL ``when`` conditions (:mod:`orchestrator.core.conditions`) and
value expressions (:mod:`orchestrator.core.expressions`), parsed and then evaluated.

The input is the expression's text in UTF-8, with a prefix that picks the parser:
``e:`` an expression over ``event``, ``headers`` and ``id`` (a trigger's filter, input
mapping or event id); anything else (an optional ``c:``) a condition over ``input`` and
``steps.<id>``.  Allowed outcomes: a value, or a
:class:`~orchestrator.errors.ConditionError`.
"""

from __future__ import annotations

from typing import Any

from orchestrator.core import conditions, expressions
from orchestrator.errors import ConditionError

VARIABLES = frozenset({"event", "headers", "id"})
DATA: dict[str, Any] = {
    "s": "text", "n": 3, "f": 2.5, "b": True, "z": None, "big": 2**62,
    "l": [1, "two", 3.0, None, [4], {"k": "v"}], "m": {"a": {"b": [1, 2]}, "": 0},
}
"""JSON data every variable is bound to: one value of each JSON type."""
STATUSES = ("succeeded", "failed", "skipped")


def test_one_input(data: bytes) -> None:
    """Parse and evaluate ``data`` as a condition or an expression; raise only on a
    crash."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return  # definitions are text (yamlio refuses other bytes)
    try:
        if text.startswith("e:"):
            expr = expressions.parse(text[2:], VARIABLES)
            expr.value({"event": DATA, "headers": {"x-kind": "push"}, "id": "evt-1"})
            expr.truth({"event": DATA, "headers": {}, "id": ""})
        else:
            cond = conditions.parse(text.removeprefix("c:"))
            views = {s: {"output": DATA, "status": STATUSES[i % len(STATUSES)]}
                     for i, s in enumerate(sorted(cond.steps))}
            cond.evaluate(DATA, views)
    except ConditionError:
        pass
