"""``when`` conditions in CEL, the Common Expression Language (via ``cel-python``).

No Python ``eval``: a condition is parsed once when its workflow loads, and evaluated
against ``input`` (the run's input) and ``steps.<id>.output`` / ``steps.<id>.status``
of the step's ancestors.  Example: ``steps.check_inventory.output.in_stock``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import celpy
from celpy import celparser, celtypes
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError, base_functions
from lark import Lark, Token, Tree

from orchestrator.errors import ConditionError

VARIABLES = frozenset({"input", "steps"})

# Comprehension macros, with how many leading arguments name a bound variable, and how
# many arguments they take (cel-python's forms: ``map`` has no three-argument form).
_MACROS = {"all": 1, "exists": 1, "exists_one": 1, "map": 1, "filter": 1, "reduce": 2,
           "min": 0}
_MACRO_ARGS = {"all": 2, "exists": 2, "exists_one": 2, "map": 2, "filter": 2, "reduce": 4,
               "min": 0}
FUNCTIONS = frozenset(
    name for name in base_functions if name[:1].isalpha()
) | {"has", "dyn"}
"""Functions a condition may call: CEL's standard ones (never Python builtins)."""


# cel-python's string literals are regular expressions of the form
# "(?:<escape>|...|.)*?" : a backslash can be read as the start of an escape or as any
# character, so on a literal that does not close, the regex engine tries every way to
# split it: 2^n steps for n escapes (a 200-character condition ran for minutes; found by
# the fuzzer, fuzz/corpus/cel/redos_*.txt).  Each repetition is made atomic, "(?:(?>...))":
# an escape is read as an escape, as it is when the literal closes, and a literal that
# does not close fails at once.
_LITERAL_FIXES = ((r"""(?:\\[abfnrtv"'\\]|""", r"""(?:(?>\\[abfnrtv"'\\]|"""),
                  ("|.)*?", "|.))*?"))


# cel-python checks a duration string with "^[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+$", whose
# nested repetition takes 2^n steps to refuse n letters that end badly ("0jjj…j5Z": found
# by the fuzzer, fuzz/corpus/cel/redos_duration.txt), and the string may come from a run's
# input.  The same language, with possessive repetitions, is decided in one pass; only a
# string it accepts reaches cel-python, whose pattern then matches at once.
_DURATION = re.compile(r"[-+]?+(?:[0-9]*+(?:\.[0-9]*+)?+[a-z]++)++")


def _duration(value: Any) -> Any:
    """CEL's ``duration()``, with a string checked first (see :data:`_DURATION`)."""
    if isinstance(value, str) and not _DURATION.fullmatch(value):
        return CELEvalError(f"invalid duration {value[:40]!r}", ValueError, (value[:40],))
    return celtypes.DurationType(value)


OVERRIDES: dict[str, Any] = {"duration": _duration}
"""CEL functions evaluated by our own code instead of cel-python's (every program gets
them)."""


def _grammar() -> str:
    """cel-python's grammar with its string literals made atomic (see above).

    Raises:
        RuntimeError: cel-python's grammar no longer has the four literals this fixes.
    """
    text = (Path(celparser.__file__).parent / "cel.lark").read_text()
    for old, new in _LITERAL_FIXES:
        if text.count(old) != 4:
            raise RuntimeError(f"cel-python's grammar changed ({old!r} is not in its four "
                               "string literals): check orchestrator/core/conditions.py")
        text = text.replace(old, new)
    return text


@lru_cache(maxsize=1)
def _env() -> celpy.Environment:
    """cel-python's environment, built when the first expression is parsed (building its
    parser takes a few hundred milliseconds that a command reading no CEL need not pay),
    on the grammar of :func:`_grammar`: the parser cel-python would build, with the same
    options, that every environment of the process then shares."""
    runner = celpy.InterpretedRunner
    celparser.CELParser.CEL_PARSER = Lark(
        _grammar(), parser="lalr", start="expr", debug=True, g_regex_flags=re.M,
        lexer_callbacks={"IDENT": celparser.CELParser.ambiguous_literals},
        propagate_positions=True, maybe_placeholders=False, priority="invert",
        tree_class=runner.tree_node_class)
    return celpy.Environment(runner_class=runner)


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
            result = _env().program(self._ast, OVERRIDES).evaluate(activation)
        except CELEvalError as exc:  # raised for programming errors in the text
            raise ConditionError(self.text, f"evaluation failed: {_reason(exc)}") from exc
        except Exception as exc:  # cel-python's own failures: see evaluation_failed
            raise evaluation_failed(self.text, exc) from exc
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
        ast = _env().compile(text)
    except CELParseError as exc:
        column = int(getattr(exc, "column", 0) or 0)
        near = repr(text[column - 1]) if 0 < column <= len(text) else "end of text"
        if getattr(getattr(exc.__context__, "token", None), "type", None) == "$END":
            column, near = len(text.rstrip()) + 1, "end of text"  # lark names the last token
        raise ConditionError(text, f"syntax error: unexpected {near}", column) from exc
    check_macros(text, ast)
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


def evaluation_failed(text: str, exc: Exception) -> ConditionError:
    """The error for an exception cel-python let out of an evaluation instead of its own
    error value (e.g. a ``TypeError`` for a macro over a number, not a list): the text
    failed on this data, like any evaluation error, and must fail its step, not the
    worker."""
    detail = str(exc).split("\n", 1)[0][:200]
    return ConditionError(text, f"evaluation failed: {type(exc).__name__}: {detail}")


def check_macros(text: str, ast: Tree[Token]) -> None:
    """Refuse a comprehension macro with the wrong number of arguments, or whose variable
    is not a plain name (``xs.all(x)``, ``xs.map(x, y, x + y)``, ``xs.all(x.y, true)``):
    cel-python would fail on it only when evaluating, with no CEL error.

    Raises:
        ConditionError: naming the macro, its arity and the column.
    """
    for node in ast.iter_subtrees():
        if node.data != "member_dot_arg" or str(node.children[1]) not in _MACROS:
            continue
        name = str(node.children[1])
        exprlist = node.children[2] if len(node.children) > 2 else None
        args = exprlist.children if isinstance(exprlist, Tree) else []
        want = _MACRO_ARGS[name]
        col = int(getattr(node.children[1], "column", 0) or 0) or _column(node)
        if len(args) != want:
            form = {0: "()", 2: "(x, <predicate or value>)",
                    4: "(acc, x, <initial value>, <expression>)"}[want]
            raise ConditionError(text, f"macro {name!r} takes {want} argument(s), not "
                                 f"{len(args)}: write .{name}{form}", col)
        for arg in args[:_MACROS[name]]:
            if _bare_name(arg) is None:
                raise ConditionError(text, f"macro {name!r}: its variable must be a plain "
                                     "name, like x", col)


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
