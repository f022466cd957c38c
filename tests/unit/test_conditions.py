"""``when`` conditions: CEL parsing, the steps they read, evaluation, and no Python eval."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.core.conditions import parse
from orchestrator.errors import ConditionError

SUCCEEDED = "succeeded"


def view(output: Any, status: str = SUCCEEDED) -> dict[str, Any]:
    return {"output": output, "status": status}


def test_parse_keeps_text_and_finds_steps() -> None:
    cond = parse("steps.check.output.in_stock && steps.price.output.cents > input.limit")
    assert cond.text.startswith("steps.check")
    assert cond.steps == frozenset({"check", "price"})


def test_input_only_condition_reads_no_steps() -> None:
    assert parse("input.qty > 3").steps == frozenset()


def test_step_status_counts_as_a_read() -> None:
    assert parse('steps.a.status == "failed"').steps == frozenset({"a"})


def test_has_macro_reads_its_step() -> None:
    assert parse("has(steps.a.output.note)").steps == frozenset({"a"})


def test_nested_field_of_input_named_steps_is_not_a_step() -> None:
    assert parse("input.steps.x == 1").steps == frozenset()


@pytest.mark.parametrize(
    ("text", "run_input", "views", "expected"),
    [
        ("steps.check.output.in_stock", {}, {"check": view({"in_stock": True})}, True),
        ("steps.check.output.in_stock", {}, {"check": view({"in_stock": False})}, False),
        ("!steps.check.output.in_stock", {}, {"check": view({"in_stock": False})}, True),
        ("input.qty >= 3 && input.sku.startsWith('A')", {"qty": 3, "sku": "A-1"}, {}, True),
        ("input.qty > 3 || input.vip", {"qty": 1, "vip": False}, {}, False),
        ('steps.a.status == "succeeded"', {}, {"a": view(None)}, True),
        ("steps.a.output == 7", {}, {"a": view(7)}, True),
        ("size(input.items) == 2", {"items": [1, 2]}, {}, True),
        ("input.items.all(i, i.qty > 0)", {"items": [{"qty": 1}, {"qty": 0}]}, {}, False),
        ("input.items.exists(i, i.qty > 0)", {"items": [{"qty": 1}, {"qty": 0}]}, {}, True),
        ("has(input.note)", {}, {}, False),
        ('input.tier in ["gold", "silver"]', {"tier": "gold"}, {}, True),
    ],
)
def test_evaluate(text: str, run_input: Any, views: dict[str, dict[str, Any]],
                  expected: bool) -> None:
    result = parse(text).evaluate(run_input, views)
    assert result is expected


def test_non_boolean_result_is_an_error() -> None:
    with pytest.raises(ConditionError, match="not a bool"):
        parse("input.qty + 1").evaluate({"qty": 1}, {})


def test_missing_field_fails_evaluation_without_dumping_the_activation() -> None:
    with pytest.raises(ConditionError, match="evaluation failed") as info:
        parse("input.missing").evaluate({"qty": 1}, {})
    assert "activation" not in str(info.value)
    assert len(str(info.value)) < 200


def test_missing_step_view_fails_evaluation() -> None:
    with pytest.raises(ConditionError, match="evaluation failed"):
        parse("steps.a.output.ok").evaluate({}, {})


def test_unknown_variable() -> None:
    with pytest.raises(ConditionError, match="unknown variable 'order'") as info:
        parse("input.ok && order.ok")
    assert info.value.column == 13


def test_comprehension_variables_are_known() -> None:
    cond = parse("input.xs.map(x, x * 2).exists(y, y > 3)")
    assert cond.steps == frozenset()
    assert cond.evaluate({"xs": [1, 2]}, {}) is True
    assert cond.evaluate({"xs": [1]}, {}) is False


def test_steps_index_is_rejected() -> None:
    with pytest.raises(ConditionError, match=r"steps\[\.\.\.\]"):
        parse('steps["a"].output.ok')


def test_index_into_an_output_is_allowed() -> None:
    cond = parse('steps.a.output["odd key"] == 1')
    assert cond.steps == frozenset({"a"})
    assert cond.evaluate({}, {"a": view({"odd key": 1})}) is True


@pytest.mark.parametrize(
    ("text", "column", "near"),
    [("input.a == = 2", 12, "'='"), ("input.a @ 2", 9, "'@'"),
     ("input.ok &&", 12, "end of text"), ("(input.a", 9, "end of text")],
)
def test_syntax_error_has_its_column(text: str, column: int, near: str) -> None:
    with pytest.raises(ConditionError, match="syntax error") as info:
        parse(text)
    assert info.value.column == column
    assert f"at column {column}: syntax error: unexpected {near}" in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('true')",
        "__import__('os')",
        "eval('1')",
        "open('/etc/passwd')",
        "input.__class__",
        "input.x.__class__.__subclasses__()",
        "getattr(input, 'x')",
    ],
)
def test_no_python_eval(text: str) -> None:
    """CEL is a separate language: Python builtins and dunders are not reachable."""
    try:
        cond = parse(text)
    except ConditionError:
        return  # rejected when the workflow loads: the normal case
    with pytest.raises(ConditionError):
        cond.evaluate({"x": 1}, {})


def test_python_builtins_are_unknown_functions() -> None:
    with pytest.raises(ConditionError, match="unknown function '__import__'") as info:
        parse("__import__('os')")
    assert info.value.column == 1


def test_unknown_method() -> None:
    with pytest.raises(ConditionError, match="unknown method 'system'") as info:
        parse("input.x.system('ls')")
    assert info.value.column == 9


def test_parse_is_cached() -> None:
    assert parse("input.a == 1") is parse("input.a == 1")


@pytest.mark.parametrize(("text", "words"), [
    ("input.l.exists(x)", "macro 'exists' takes 2 argument(s), not 1"),
    ("input.l.all(k, k, true)", "macro 'all' takes 2 argument(s), not 3"),
    ("input.l.map(x, x, x)", "macro 'map' takes 2 argument(s), not 3"),
    ("input.l.reduce(r, 0, r)", "macro 'reduce' takes 4 argument(s), not 3"),
    ("input.l.all(x.y, true)", "its variable must be a plain name"),
])
def test_a_macro_with_wrong_arguments_is_refused_when_it_loads(text: str, words: str) -> None:
    """Found by the fuzzer (fuzz/corpus/cel/macro_arity.txt): cel-python failed on these
    only when evaluating, with a ValueError instead of a CEL error."""
    with pytest.raises(ConditionError) as info:
        parse(text)
    assert words in str(info.value) and info.value.column == 9


def test_cel_pythons_own_failures_are_evaluation_errors() -> None:
    """A macro over a number (not a list) made cel-python raise a TypeError, which escaped
    the step wrapper; it is an evaluation error of the condition, like any other."""
    cond = parse("input.n.all(x, x > 0)")
    with pytest.raises(ConditionError, match="evaluation failed: TypeError"):
        cond.evaluate({"n": 3}, {})
    assert parse("input.l.exists(x, x > 1)").evaluate({"l": [1, 2]}, {})


@pytest.mark.parametrize("text", [
    'input.s == "' + "\\n" * 40,
    "input.s == '" + "\\t" * 40,
    'input.s == """' + "\r\n" * 40 + '"',
    'input.s == b"' + "\\\\" * 40,
])
def test_an_unclosed_string_with_many_escapes_fails_at_once(text: str) -> None:
    """Found by the fuzzer (fuzz/corpus/cel/redos_*.txt): cel-python's string literal
    regexes backtracked over every way to read the escapes, 2^n steps (minutes for this
    text); with atomic repetitions the literal fails in one pass."""
    with pytest.raises(ConditionError, match="syntax error"):
        parse(text)


def test_the_cel_parser_is_the_atomic_one() -> None:
    parse("input.a == 'x'")  # builds the parser
    from celpy.celparser import CELParser

    patterns = [t.pattern.value for t in CELParser.CEL_PARSER.terminals
                if t.name.endswith("STRING_LIT")]
    assert patterns and all("(?>" in p for p in patterns), patterns
    assert parse('input.s == "a\\"b\\\\"').evaluate({"s": 'a"b\\'}, {})


def test_a_duration_string_that_ends_badly_fails_at_once() -> None:
    """Found by the fuzzer (fuzz/corpus/cel/redos_duration.txt): cel-python's duration
    pattern took 2^n steps to refuse such a string, and it may come from a run's input."""
    cond = parse('duration(input.d) > duration("1s")')
    with pytest.raises(ConditionError, match="invalid duration"):
        cond.evaluate({"d": "0" + "j" * 200 + "5Z"}, {})
    assert cond.evaluate({"d": "1h30m"}, {})
    assert not cond.evaluate({"d": "0.5s"}, {})
