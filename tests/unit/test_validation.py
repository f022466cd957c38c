"""Validation: one test per problem code, each problem named with its workflow, step and fix."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.core.models import WorkflowDef
from orchestrator.core.registry import Registry
from orchestrator.core.validation import check, problems_of
from orchestrator.core.yamlio import from_data, parse_yaml
from orchestrator.errors import Problem, WorkflowInvalid


def make(*steps: dict[str, Any], **fields: Any) -> WorkflowDef:
    """A workflow named ``w`` from plain step dicts (YAML sugar allowed)."""
    return from_data({"name": "w", "steps": list(steps), **fields})


def step(id: str, function: str = "t.noop", **fields: Any) -> dict[str, Any]:
    return {"id": id, "function": function, **fields}


def of_code(problems: list[Problem], code: str) -> list[Problem]:
    found = [p for p in problems if p.code == code]
    assert found, f"no {code!r} problem in {[str(p) for p in problems]}"
    return found


def test_valid_workflow_has_no_problems(registry: Registry) -> None:
    wf = make(
        step("hello", "t.greet", inputs={"name": {"from": "input.name"}}),
        step("loud", "t.shout", inputs={"text": {"from": "steps.hello.output.text"}},
             when="steps.hello.output.length > 2"),
        input_schema={"type": "object", "properties": {"name": {"type": "string"}}},
    )
    assert problems_of(wf, registry) == []
    assert check(wf, registry) is wf


def test_no_steps(registry: Registry) -> None:
    [p] = of_code(problems_of(make(), registry), "no_steps")
    assert p.step is None
    assert "add at least one step" in p.fix


def test_bad_input_schema(registry: Registry) -> None:
    wf = make(step("a"), input_schema={"type": "no-such-type"})
    [p] = of_code(problems_of(wf, registry), "bad_input_schema")
    assert "input_schema" in p.message


def test_duplicate_step(registry: Registry) -> None:
    wf = make(step("a"), step("b"), step("a"))
    [p] = of_code(problems_of(wf, registry), "duplicate_step")
    assert p.step == "a"
    assert "'a'" in p.message


def test_unknown_step_in_input_reference(registry: Registry) -> None:
    wf = make(step("a", "t.shout", inputs={"text": {"from": "steps.ghost.output"}}))
    [p] = of_code(problems_of(wf, registry), "unknown_step")
    assert p.step == "a"
    assert "'ghost'" in p.message and "'text'" in p.message


def test_unknown_step_in_after(registry: Registry) -> None:
    wf = make(step("a", after=["ghost"]))
    [p] = of_code(problems_of(wf, registry), "unknown_step")
    assert "'after'" in p.message and "'ghost'" in p.message


def test_unknown_step_in_on_failure(registry: Registry) -> None:
    wf = make(step("a", on_failure=["ghost_handler"]))
    [p] = of_code(problems_of(wf, registry), "unknown_step")
    assert "'on_failure'" in p.message and "'ghost_handler'" in p.message


def test_unknown_step_in_condition(registry: Registry) -> None:
    wf = make(step("a", when="steps.ghost.output.ok"))
    [p] = of_code(problems_of(wf, registry), "unknown_step")
    assert "condition" in p.message and "'ghost'" in p.message


def test_cycle_prints_the_cycle(registry: Registry) -> None:
    wf = make(step("a", after=["c"]), step("b", after=["a"]), step("c", after=["b"]),
              step("d", after=["a"]))
    [p] = of_code(problems_of(wf, registry), "cycle")
    assert "a -> b -> c -> a" in p.message
    assert p.step == "a"


def test_cycle_through_an_input_reference(registry: Registry) -> None:
    wf = make(step("a", "t.shout", inputs={"text": {"from": "steps.b.output"}}),
              step("b", "t.shout", inputs={"text": {"from": "steps.a.output"}}))
    [p] = of_code(problems_of(wf, registry), "cycle")
    assert "a -> b -> a" in p.message


def test_self_loop_is_a_cycle(registry: Registry) -> None:
    [p] = of_code(problems_of(make(step("a", after=["a"])), registry), "cycle")
    assert "a -> a" in p.message


def test_not_ancestor(registry: Registry) -> None:
    wf = make(step("a", "t.greet", inputs={"name": "x"}),
              step("b", when="steps.a.output.length > 1"))
    [p] = of_code(problems_of(wf, registry), "not_ancestor")
    assert p.step == "b"
    assert "'a'" in p.message and "after" in p.fix


def test_condition_reading_its_own_step(registry: Registry) -> None:
    wf = make(step("a", when="steps.a.output.ok"))
    [p] = of_code(problems_of(wf, registry), "not_ancestor")
    assert "own output" in p.message


def test_bad_condition_names_the_column(registry: Registry) -> None:
    wf = make(step("a", when="input.ok &&"))
    [p] = of_code(problems_of(wf, registry), "bad_condition")
    assert "column 12" in p.message
    assert "CEL" in p.fix


def test_bad_condition_unknown_variable(registry: Registry) -> None:
    wf = make(step("a", when="order.ok"))
    [p] = of_code(problems_of(wf, registry), "bad_condition")
    assert "unknown variable 'order'" in p.message


def test_unknown_function(registry: Registry) -> None:
    wf = make(step("a", "t.no_such_function"))
    [p] = of_code(problems_of(wf, registry), "unknown_function")
    assert "'t.no_such_function'" in p.message
    assert "@step_function('t.no_such_function')" in p.fix


def test_missing_input(registry: Registry) -> None:
    wf = make(step("a", "t.add", inputs={"b": 1}))
    [p] = of_code(problems_of(wf, registry), "missing_input")
    assert "'a'" in p.message and "'t.add'" in p.message
    # b has a default, so leaving it out is fine
    assert problems_of(make(step("a", "t.add", inputs={"a": 1})), registry) == []


def test_unknown_input(registry: Registry) -> None:
    wf = make(step("a", "t.count", inputs={"n": 1, "m": 2}))
    [p] = of_code(problems_of(wf, registry), "unknown_input")
    assert "'m'" in p.message
    assert "n" in p.fix


def test_any_kwargs_accept_any_input(registry: Registry) -> None:
    assert problems_of(make(step("a", "t.anything", inputs={"z": 1})), registry) == []


def test_type_mismatch_str_output_to_int_param(registry: Registry) -> None:
    wf = make(step("a", "t.shout", inputs={"text": "hi"}),
              step("b", "t.count", inputs={"n": {"from": "steps.a.output"}}))
    [p] = of_code(problems_of(wf, registry), "type_mismatch")
    assert p.step == "b"
    assert "str" in p.message and "int" in p.message


def test_type_mismatch_missing_field_of_output_model(registry: Registry) -> None:
    wf = make(step("a", "t.greet", inputs={"name": "x"}),
              step("b", "t.shout", inputs={"text": {"from": "steps.a.output.txet"}}))
    [p] = of_code(problems_of(wf, registry), "type_mismatch")
    assert "steps.a.output.txet" in p.message and "does not have" in p.message


def test_type_mismatch_model_field_of_wrong_type(registry: Registry) -> None:
    wf = make(step("a", "t.greet", inputs={"name": "x"}),
              step("b", "t.shout", inputs={"text": {"from": "steps.a.output.length"}}))
    [p] = of_code(problems_of(wf, registry), "type_mismatch")
    assert "int" in p.message and "str" in p.message


def test_type_mismatch_literal(registry: Registry) -> None:
    wf = make(step("a", "t.count", inputs={"n": "three"}))
    [p] = of_code(problems_of(wf, registry), "type_mismatch")
    assert "literal" in p.message and "'n'" in p.message


@pytest.mark.parametrize("value", ["3", True, 3.5])
def test_literals_are_strict_for_scalars(registry: Registry, value: Any) -> None:
    wf = make(step("a", "t.count", inputs={"n": value}))
    assert [p.code for p in problems_of(wf, registry)] == ["type_mismatch"]


def test_type_mismatch_input_schema(registry: Registry) -> None:
    wf = make(step("a", "t.count", inputs={"n": {"from": "input.name"}}),
              input_schema={"type": "object", "properties": {"name": {"type": "string"}}})
    [p] = of_code(problems_of(wf, registry), "type_mismatch")
    assert "input_schema" in p.message


def test_closed_input_schema_without_the_field(registry: Registry) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}},
              "additionalProperties": False}
    wf = make(step("a", "t.shout", inputs={"text": {"from": "input.nmae"}}),
              input_schema=schema)
    [p] = of_code(problems_of(wf, registry), "type_mismatch")
    assert "does not have" in p.message


def test_compatible_types_pass(registry: Registry) -> None:
    wf = make(
        step("a", "t.greet", inputs={"name": {"from": "input.name"}}),
        step("b", "t.read_greeting", inputs={"greeting": {"from": "steps.a.output"}}),
        step("c", "t.keep", inputs={"data": {"from": "steps.a.output"}}),
        step("d", "t.scale", inputs={"x": {"from": "steps.a.output.length"}}),
        step("e", "t.read_greeting", inputs={"greeting": {"from": "input.greeting"}}),
        step("f", "t.scale", inputs={"x": 3}),
        step("g", "t.count", inputs={"n": {"from": "input.untyped"}}),
        input_schema={"type": "object", "properties": {
            "name": {"type": "string"}, "greeting": {"type": "object"}}},
    )
    assert problems_of(wf, registry) == []


@pytest.mark.parametrize(
    ("retry", "words"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"initial_backoff_s": -1}, "negative"),
        ({"initial_backoff_s": 10, "max_backoff_s": 5}, "max_backoff_s"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"jitter": 1.5}, "jitter"),
    ],
)
def test_bad_retry(registry: Registry, retry: dict[str, Any], words: str) -> None:
    [p] = of_code(problems_of(make(step("a", retry=retry)), registry), "bad_retry")
    assert words in p.message


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"timeout_s": 0}, "timeout_s is 0"),
        ({"soft_timeout_s": -1.0}, "soft_timeout_s is -1.0"),
        ({"soft_timeout_s": 10, "timeout_s": 5}, "not below timeout_s"),
    ],
)
def test_bad_timeout(registry: Registry, fields: dict[str, Any], words: str) -> None:
    [p] = of_code(problems_of(make(step("a", **fields)), registry), "bad_timeout")
    assert words in p.message


def test_bad_field_unknown_key_in_yaml() -> None:
    text = "name: w\nsteps:\n  - id: a\n    function: t.noop\n    retires: 3\n"
    with pytest.raises(WorkflowInvalid) as info:
        parse_yaml(text)
    [p] = info.value.problems
    assert p.code == "bad_field"
    assert p.step == "a"
    assert "steps.0.retires" in p.message and "Extra inputs" in p.message


def test_bad_field_wrong_type() -> None:
    text = ("name: w\nsteps:\n  - id: a\n    function: t.noop\n"
            "    retry: {max_attempts: lots}\n    after: 7\n")
    with pytest.raises(WorkflowInvalid) as info:
        parse_yaml(text)
    assert info.value.codes() == {"bad_field"}
    messages = " ".join(p.message for p in info.value.problems)
    assert "steps.0.retry.max_attempts" in messages
    assert "steps.0.after" in messages


def test_bad_field_reference_names_the_input() -> None:
    with pytest.raises(WorkflowInvalid) as info:
        from_data({"name": "w", "steps": [
            {"id": "a", "function": "t.shout", "inputs": {"text": {"from": "stpes.x.output"}}}]})
    [p] = info.value.problems
    assert p.code == "bad_field"
    assert "input 'text'" in p.message and "stpes.x.output" in p.message


def test_bad_field_workflow_level() -> None:
    with pytest.raises(WorkflowInvalid) as info:
        from_data({"name": "bad name!", "steps": []})
    [p] = info.value.problems
    assert p.code == "bad_field" and p.step is None and "name" in p.message


def test_every_problem_is_reported_at_once(registry: Registry) -> None:
    wf = make(
        step("a", "t.count", inputs={"n": "three"}),              # type_mismatch
        step("a", "t.noop"),                                       # duplicate_step
        step("b", "t.missing", after=["ghost"]),                  # unknown_function, unknown_step
        step("c", "t.add", retry={"max_attempts": 0}),            # missing_input, bad_retry
        step("d", when="input.x &&", timeout_s=-1),               # bad_condition, bad_timeout
        step("e", "t.count", inputs={"n": 1, "q": 2}),            # unknown_input
        input_schema={"type": 12},                                 # bad_input_schema
    )
    with pytest.raises(WorkflowInvalid) as info:
        check(wf, registry)
    expected = {"type_mismatch", "duplicate_step", "unknown_function", "unknown_step",
                "missing_input", "bad_retry", "bad_condition", "bad_timeout",
                "unknown_input", "bad_input_schema"}
    assert info.value.codes() == expected
    assert info.value.workflow == "w"
    text = str(info.value)
    assert f"has {len(info.value.problems)} problem(s)" in text
    for p in info.value.problems:
        assert f"[{p.code}]" in text


def test_cycle_and_other_problems_together(registry: Registry) -> None:
    wf = make(step("a", after=["b"]), step("b", "t.nope", after=["a"]))
    assert {p.code for p in problems_of(wf, registry)} == {"cycle", "unknown_function"}


def test_problem_str_names_workflow_step_and_fix(registry: Registry) -> None:
    wf = make(step("a", "t.count", inputs={"n": "x"}), step("b", after=["ghost"]),
              step("c", "t.unknown"))
    problems = problems_of(wf, registry)
    assert len(problems) == 3
    for p in problems:
        text = str(p)
        assert text.startswith("workflow 'w', step ")
        assert f"step {p.step!r}" in text
        assert "Fix: " in text and p.fix in text


def test_default_registry_is_used_when_none_is_given() -> None:
    # t.* functions live only in the test registry, never in the default one
    wf = make(step("a", "t.noop"))
    assert [p.code for p in problems_of(wf)] == ["unknown_function"]
