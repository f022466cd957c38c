"""``when`` conditions in CEL, the Common Expression Language (via ``cel-python``).

No Python ``eval``: a condition is parsed once when its workflow loads, and evaluated
against ``input`` (the run's input) and ``steps.<id>.output`` / ``steps.<id>.status``
of the step's ancestors.  Example: ``steps.check_inventory.output.in_stock``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import celpy
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError, base_functions
from lark import Token, Tree

from orchestrator.errors import ConditionError

VARIABLES = frozenset({"input", "steps"})

# Comprehension macros, with how many leading arguments name a bound variable.
_MACROS = {"all": 1, "exists": 1, "exists_one": 1, "map": 1, "filter": 1, "reduce": 2,
           "min": 0}
FUNCTIONS = frozenset(
    name for name in base_functions if name[:1].isalpha()
) | {"has", "dyn"}
"""Functions a condition may call: CEL's standard ones (never Python builtins)."""

_ENV = celpy.Environment()


@dataclass(frozen=True)
class Condition:
    """A parsed condition and the step ids it reads."""

    text: str
    steps: frozenset[str]
    _ast: Any = field(repr=False, compare=False)

    def evaluate(self, run_input: Any, step_views: dict[str, dict[str, Any]]) -> bool:
        """Evaluate the condition.

        Args:
            run_input: the run's input (JSON data).
            step_views: ``{step_id: {"output": …, "status": "succeeded"|…}}`` for at least
                the steps in :attr:`steps`.

        Returns:
            The boolean result.

        Raises:
            ConditionError: evaluation failed (missing field, wrong type) or the result
                is not a boolean.
        """
        activation = {
            "input": json_to_cel(run_input),
            "steps": json_to_cel({k: step_views.get(k) for k in self.steps}),
        }
        try:
            result = _ENV.program(self._ast).evaluate(activation)
        except CELEvalError as exc:  # raised for programming errors in the text
            raise ConditionError(self.text, f"evaluation failed: {_reason(exc)}") from exc
        if isinstance(result, CELEvalError):
            raise ConditionError(self.text, f"evaluation failed: {_reason(result)}")
        if not isinstance(result, celtypes.BoolType):
            raise ConditionError(self.text, f"result is {type(result).__name__}, not a bool")
        return bool(result)


@lru_cache(maxsize=4096)
def parse(text: str) -> Condition:
    """Parse ``text`` and find the steps it reads.

    Raises:
        ConditionError: a syntax error (with its column), an unknown variable or
            function, or a ``steps[...]`` index (write ``steps.<id>`` so the reference can
            be checked).
    """
    try:
        ast = _ENV.compile(text)
    except CELParseError as exc:
        column = int(getattr(exc, "column", 0) or 0)
        near = repr(text[column - 1]) if 0 < column <= len(text) else "end of text"
        if getattr(getattr(exc.__context__, "token", None), "type", None) == "$END":
            column, near = len(text.rstrip()) + 1, "end of text"  # lark names the last token
        raise ConditionError(text, f"syntax error: unexpected {near}", column) from exc
    bound = _macro_variables(ast)
    steps: set[str] = set()
    for node in ast.iter_subtrees():
        if node.data == "member_dot":
            inner = node.children[0]
            name = _root_ident(inner)
            if name == "steps" and _is_bare_ident(inner):
                steps.add(str(node.children[1]))
        elif node.data == "member_index" and _root_ident(node.children[0]) == "steps" \
                and _is_bare_ident(node.children[0]):
            raise ConditionError(text, "index 'steps[...]' is not allowed; write steps.<id>",
                                 _column(node))
        elif node.data in ("ident", "dot_ident"):
            name = str(node.children[0])
            if name not in VARIABLES and name not in bound:
                raise ConditionError(
                    text, f"unknown variable {name!r}; use 'input' or 'steps.<id>'",
                    _column(node))
        elif node.data in ("ident_arg", "dot_ident_arg"):
            name = str(node.children[0])
            if name not in FUNCTIONS:
                raise ConditionError(text, f"unknown function {name!r}", _column(node))
        elif node.data == "member_dot_arg":
            name = str(node.children[1])
            if name not in FUNCTIONS and name not in _MACROS:
                method = node.children[1]
                col = int(getattr(method, "column", 0) or 0) or _column(node)
                raise ConditionError(text, f"unknown method {name!r}", col)
    return Condition(text=text, steps=frozenset(steps), _ast=ast)


def _macro_variables(ast: Tree[Token]) -> frozenset[str]:
    """Names bound by comprehension macros, e.g. the ``i`` of ``xs.all(i, i > 0)``."""
    names: set[str] = set()
    for node in ast.iter_subtrees():
        if node.data != "member_dot_arg" or len(node.children) < 3:
            continue
        binds = _MACROS.get(str(node.children[1]), 0)
        exprlist = node.children[2]
        if not isinstance(exprlist, Tree):
            continue
        for arg in exprlist.children[:binds]:
            tok = _bare_name(arg)
            if tok is not None:
                names.add(tok)
    return frozenset(names)


def _bare_name(expr: Any) -> str | None:
    """The identifier when ``expr`` is nothing but one identifier, else ``None``."""
    node = expr
    while isinstance(node, Tree) and len(node.children) == 1 and node.data != "ident":
        node = node.children[0]
    if isinstance(node, Tree) and node.data == "ident":
        return str(node.children[0])
    return None


def _reason(exc: BaseException) -> str:
    """celpy's message without the dump of the whole activation it appends."""
    text = str(exc.args[0]) if exc.args else str(exc)
    return text.split(" (in activation", 1)[0]


def _column(node: Tree[Token]) -> int:
    """1-based column of the first token under ``node`` (0 when unknown)."""
    for tok in node.scan_values(lambda v: isinstance(v, Token)):
        return int(getattr(tok, "column", 0) or 0)
    return 0


def _is_bare_ident(member: Any) -> bool:
    """True when ``member`` is just ``primary(ident)``, e.g. the ``steps`` in ``steps.x``."""
    return (
        isinstance(member, Tree)
        and member.data == "member"
        and len(member.children) == 1
        and isinstance(member.children[0], Tree)
        and member.children[0].data == "primary"
        and isinstance(member.children[0].children[0], Tree)
        and member.children[0].children[0].data == "ident"
    )


def _root_ident(member: Any) -> str | None:
    if not _is_bare_ident(member):
        return None
    tok = member.children[0].children[0].children[0]
    return str(tok) if isinstance(tok, Token) else None
