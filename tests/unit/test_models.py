"""The canonical model: YAML sugar, references, frozen models, version hash, retry delays."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from orchestrator.core.models import (
    Ref,
    RetryPolicy,
    StepDef,
    TriggerRule,
    Value,
    WorkflowDef,
    parse_ref,
)

PINNED_VERSION = "b91347bf23bde581"


def wf(**fields: Any) -> WorkflowDef:
    data: dict[str, Any] = {"name": "w", "steps": [{"id": "a", "function": "f"}]}
    data.update(fields)
    return WorkflowDef.model_validate(data)


# --- inputs and references -------------------------------------------------------------


def test_from_sugar_is_a_reference() -> None:
    s = StepDef(id="a", function="f", inputs={"x": {"from": "steps.b.output.sku"}})
    src = s.inputs["x"]
    assert isinstance(src, Ref)
    assert src.source == "steps.b.output.sku"
    assert src.step == "b"
    assert src.path == ("sku",)


def test_value_sugar_is_a_literal() -> None:
    s = StepDef(id="a", function="f", inputs={"x": {"value": {"from": "not a ref"}}})
    assert s.inputs["x"] == Value(value={"from": "not a ref"})


@pytest.mark.parametrize("literal", [3, "text", None, [1, 2], {"a": 1, "b": 2}, True, 1.5])
def test_bare_literal_is_a_value(literal: Any) -> None:
    s = StepDef(id="a", function="f", inputs={"x": literal})
    assert s.inputs["x"] == Value(value=literal)


def test_model_instances_pass_through() -> None:
    ref, val = Ref(source="input.q"), Value(value=1)
    s = StepDef(id="a", function="f", inputs={"r": ref, "v": val})
    assert s.inputs == {"r": ref, "v": val}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("input", (None, ())),
        ("input.order.sku", (None, ("order", "sku"))),
        ("steps.a.output", ("a", ())),
        ("steps.a.output.x.y", ("a", ("x", "y"))),
    ],
)
def test_parse_ref(source: str, expected: tuple[str | None, tuple[str, ...]]) -> None:
    assert parse_ref(source) == expected


@pytest.mark.parametrize(
    "source", ["", "inputs.x", "steps.a", "steps.a.result", "steps..output", "input.1x",
               "steps.a.output.x-y", "order.sku"],
)
def test_bad_refs_are_rejected(source: str) -> None:
    with pytest.raises(ValueError):
        parse_ref(source)
    with pytest.raises(ValidationError):
        Ref(source=source)


def test_input_steps_in_order_without_repeats() -> None:
    s = StepDef(id="z", function="f", inputs={
        "a": {"from": "steps.b.output.x"}, "b": {"from": "input.y"},
        "c": {"from": "steps.a.output"}, "d": {"from": "steps.b.output.w"}, "e": 3})
    assert s.input_steps() == ["b", "a"]


def test_dependencies_merge_inputs_after_and_handlers() -> None:
    w = WorkflowDef.model_validate({"name": "w", "steps": [
        {"id": "a", "function": "f", "on_failure": ["h"]},
        {"id": "b", "function": "f", "inputs": {"x": {"from": "steps.a.output"}},
         "after": ["a", "ghost"]},
        {"id": "h", "function": "f"},
    ]})
    assert w.dependencies() == {"a": (), "b": ("a", "ghost"), "h": ("a",)}
    assert w.handlers_of() == {"h": ("a",)}
    assert set(w.step_map) == {"a", "b", "h"}


# --- frozen, strict models -------------------------------------------------------------


def test_models_are_frozen() -> None:
    w = wf()
    with pytest.raises(ValidationError):
        w.name = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        w.steps[0].function = "g"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        w.steps[0].retry.max_attempts = 9  # type: ignore[misc]
    assert isinstance(w.steps, tuple)


def test_unknown_fields_are_forbidden() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        StepDef.model_validate({"id": "a", "function": "f", "retires": 3})
    with pytest.raises(ValidationError, match="Extra inputs"):
        RetryPolicy.model_validate({"max_attemps": 3})


@pytest.mark.parametrize("step_id", ["1a", "a-b", "a b", ""])
def test_step_ids_are_identifiers(step_id: str) -> None:
    with pytest.raises(ValidationError):
        StepDef(id=step_id, function="f")


def test_trigger_rule_parses_from_text() -> None:
    s = StepDef.model_validate({"id": "a", "function": "f", "trigger_rule": "all_done"})
    assert s.trigger_rule is TriggerRule.ALL_DONE


# --- version hash ------------------------------------------------------------------------


def test_version_is_stable() -> None:
    assert wf().version == wf().version
    assert len(wf().version) == 16
    int(wf().version, 16)


def test_version_ignores_the_label() -> None:
    assert wf(label="v1").version == wf(label="release 2").version == wf().version


def test_version_ignores_spelled_out_defaults() -> None:
    explicit = wf(steps=[{"id": "a", "function": "f", "retry": {"max_attempts": 1},
                          "trigger_rule": "all_success", "inputs": {}, "after": []}],
                  input_schema={"type": "object"}, description="")
    assert explicit.version == wf().version


def test_version_is_pinned() -> None:
    """The hash of a fixed definition; if this changes, every stored version changes."""
    assert wf().version == PINNED_VERSION


def test_version_ignores_input_key_order() -> None:
    a = StepDef(id="a", function="f", inputs={"x": 1, "y": {"from": "input.y"}})
    b = StepDef(id="a", function="f", inputs={"y": {"from": "input.y"}, "x": 1})
    assert WorkflowDef(name="w", steps=(a,)).version == WorkflowDef(name="w", steps=(b,)).version


@pytest.mark.parametrize(
    "change",
    [
        {"name": "w2"},
        {"description": "other"},
        {"default_queue": "q"},
        {"input_schema": {"type": "object", "required": ["x"]}},
        {"steps": [{"id": "a", "function": "g"}]},
        {"steps": [{"id": "a", "function": "f", "retry": {"max_attempts": 2}}]},
        {"steps": [{"id": "a", "function": "f", "inputs": {"x": 1}}]},
        {"steps": [{"id": "a", "function": "f", "when": "input.x"}]},
        {"steps": [{"id": "a", "function": "f"}, {"id": "b", "function": "f"}]},
    ],
)
def test_version_depends_on_content(change: dict[str, Any]) -> None:
    assert wf(**change).version != wf().version


def test_model_copy_with_changes_drops_cached_version_and_graph() -> None:
    w = wf()
    before = (w.version, w.graph, w.step_map)
    renamed = w.model_copy(update={"name": "w2"})
    assert renamed.version == wf(name="w2").version != before[0]
    grown = w.model_copy(update={"steps": (*w.steps, StepDef(id="b", function="f"))})
    assert grown.graph.nodes == ("a", "b")
    assert set(grown.step_map) == {"a", "b"}
    assert w.model_copy().version == before[0]


# --- retry policy ------------------------------------------------------------------------


def test_delay_backoff_without_jitter() -> None:
    r = RetryPolicy(max_attempts=10, initial_backoff_s=1.0, multiplier=2.0, max_backoff_s=60,
                    jitter=0.0)
    assert [r.delay_s(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_delay_is_capped() -> None:
    r = RetryPolicy(initial_backoff_s=5, multiplier=10, max_backoff_s=7, jitter=0)
    assert r.delay_s(1) == 5
    assert r.delay_s(2) == 7
    assert r.delay_s(50) == 7


def test_delay_midpoint_is_unjittered() -> None:
    r = RetryPolicy(initial_backoff_s=2, jitter=0.5)
    assert r.delay_s(1) == pytest.approx(2.0)
    assert r.delay_s(1, rand=0.0) == pytest.approx(1.0)
    assert r.delay_s(1, rand=1.0) == pytest.approx(3.0)


def test_delay_for_attempt_zero_is_the_initial_backoff() -> None:
    assert RetryPolicy(initial_backoff_s=3, jitter=0).delay_s(0) == 3


def test_delay_of_a_very_late_attempt_is_the_cap() -> None:
    r = RetryPolicy(max_attempts=100_000, initial_backoff_s=1, max_backoff_s=30, jitter=0)
    assert r.delay_s(5_000) == 30
    assert RetryPolicy(initial_backoff_s=0, jitter=0).delay_s(5_000) == 0


@given(
    initial=st.floats(0, 100),
    multiplier=st.floats(1, 10),
    cap=st.floats(0, 1000),
    jitter=st.floats(0, 1),
    attempt=st.integers(1, 100_000),
    rand=st.floats(0, 1, exclude_max=True),
)
def test_delay_stays_within_jitter_bounds(initial: float, multiplier: float, cap: float,
                                          jitter: float, attempt: int, rand: float) -> None:
    r = RetryPolicy(initial_backoff_s=initial, multiplier=multiplier, max_backoff_s=cap,
                    jitter=jitter)
    try:
        base = min(initial * multiplier ** (attempt - 1), cap)
    except OverflowError:
        base = cap if initial > 0 else 0.0
    d = r.delay_s(attempt, rand)
    assert d >= 0
    assert base * (1 - jitter) - 1e-9 <= d <= base * (1 + jitter) + 1e-9
    assert d <= cap * (1 + jitter) + 1e-9
