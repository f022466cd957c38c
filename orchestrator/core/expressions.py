"""CEL expressions that compute a value from JSON data (an event trigger's filter, input
mapping and event id), via ``cel-python``.

A ``when`` condition (:mod:`orchestrator.core.conditions`) reads a run's steps and yields a
bool; an expression here reads a fixed set of variables (``event``, ``headers``, ``id``
for a trigger) and yields any JSON value.  Both are parsed once, when their definition
loads, with the same checks: a syntax error names its column, and a variable or function
that is not allowed is refused then, not when the first event arrives.  No Python
``eval``, ever.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from celpy.adapter import CELJSONEncoder, json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError

from orchestrator.core.conditions import (
    FUNCTIONS,
    OVERRIDES,
    _column,
    _env,
    _macro_variables,
    _reason,
    check_macros,
    evaluation_failed,
)
from orchestrator.errors import ConditionError

_METHODS = frozenset({"all", "exists", "exists_one", "map", "filter", "reduce", "min"})


@dataclass(frozen=True)
class Expression:
    """A parsed expression over the variables it was checked against."""

    text: str
    variables: frozenset[str]
    _ast: Any = field(repr=False, compare=False)

    def value(self, activation: dict[str, Any]) -> Any:
        """Evaluate the expression to a JSON value.

        Args:
            activation: a JSON value for each of :attr:`variables`.

        Returns:
            The result as plain JSON data (dicts, lists, str, int, float, bool, None).

        Raises:
            ConditionError: evaluation failed (a missing field, a wrong type), or the
                result is not representable as JSON.
        """
        bindings = {name: json_to_cel(activation.get(name)) for name in self.variables}
        try:
            result = _env().program(self._ast, OVERRIDES).evaluate(bindings)
        except CELEvalError as exc:
            raise ConditionError(self.text, f"evaluation failed: {_reason(exc)}") from exc
        except Exception as exc:  # cel-python's own failures: see evaluation_failed
            raise evaluation_failed(self.text, exc) from exc
        if isinstance(result, CELEvalError):
            raise ConditionError(self.text, f"evaluation failed: {_reason(result)}")
        try:
            return json.loads(json.dumps(result, cls=CELJSONEncoder))
        except (TypeError, ValueError) as exc:
            raise ConditionError(self.text, f"the result is not JSON: {exc}") from exc

    def truth(self, activation: dict[str, Any]) -> bool:
        """Evaluate the expression as a filter.

        Raises:
            ConditionError: evaluation failed, or the result is not a bool.
        """
        result = self.value(activation)
        if not isinstance(result, bool):
            raise ConditionError(self.text, f"result is {type(result).__name__}, not a bool")
        return result


@lru_cache(maxsize=1024)
def parse(text: str, variables: frozenset[str]) -> Expression:
    """Parse ``text``, allowing only ``variables`` and CEL's standard functions.

    Raises:
        ConditionError: a syntax error (with its column), an unknown variable, function
            or method.
    """
    try:
        ast = _env().compile(text)
    except CELParseError as exc:
        column = int(getattr(exc, "column", 0) or 0)
        near = repr(text[column - 1]) if 0 < column <= len(text) else "end of text"
        raise ConditionError(text, f"syntax error: unexpected {near}", column) from exc
    check_macros(text, ast)
    bound = _macro_variables(ast)
    allowed = ", ".join(sorted(variables))
    for node in ast.iter_subtrees():
        if node.data in ("ident", "dot_ident"):
            name = str(node.children[0])
            if name not in variables and name not in bound:
                raise ConditionError(text, f"unknown variable {name!r}; use {allowed}",
                                     _column(node))
        elif node.data in ("ident_arg", "dot_ident_arg"):
            name = str(node.children[0])
            if name not in FUNCTIONS:
                raise ConditionError(text, f"unknown function {name!r}", _column(node))
        elif node.data == "member_dot_arg":
            name = str(node.children[1])
            if name not in FUNCTIONS and name not in _METHODS:
                raise ConditionError(text, f"unknown method {name!r}", _column(node))
    return Expression(text=text, variables=variables, _ast=ast)
