"""YAML in and out: safe loading, sugar, errors, and lossless round trips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.core.models import Ref, RetryPolicy, StepDef, TriggerRule, Value, WorkflowDef
from orchestrator.core.registry import Registry
from orchestrator.core.yamlio import dump_yaml, from_data, load_yaml, parse_yaml
from orchestrator.errors import DefinitionError, WorkflowInvalid
from tests.support.paths import ORDER_YAML
from workflows.order import steps as _order_steps  # noqa: F401  (registers its functions)

SUGAR = """
name: sugar
steps:
  - id: a
    function: t.anything
    inputs:
      ref: {from: input.x}
      lit: {value: {from: not a reference}}
      bare: 3
      bare_map: {a: 1, b: 2}
      bare_null: null
"""


def test_sugar() -> None:
    wf = parse_yaml(SUGAR)
    inputs = wf.steps[0].inputs
    assert inputs["ref"] == Ref(source="input.x")
    assert inputs["lit"] == Value(value={"from": "not a reference"})
    assert inputs["bare"] == Value(value=3)
    assert inputs["bare_map"] == Value(value={"a": 1, "b": 2})
    assert inputs["bare_null"] == Value(value=None)


def test_not_yaml() -> None:
    with pytest.raises(DefinitionError, match="not valid YAML"):
        parse_yaml("name: [unclosed", "broken.yaml")


def test_not_a_mapping() -> None:
    with pytest.raises(DefinitionError, match="must be a YAML mapping"):
        parse_yaml("- a\n- b\n")


def test_unsafe_tags_are_refused() -> None:
    with pytest.raises(DefinitionError, match="not valid YAML"):
        parse_yaml("name: !!python/object/apply:os.system ['true']\nsteps: []\n")


def test_missing_file() -> None:
    with pytest.raises(DefinitionError, match="cannot read workflow file"):
        load_yaml("/nonexistent/workflow.yaml")


def test_load_yaml_validates(tmp_path: Path, registry: Registry) -> None:
    path = tmp_path / "w.yaml"
    path.write_text("name: w\nsteps:\n  - {id: a, function: t.count, inputs: {n: x}}\n"
                    "  - {id: b, function: t.noop, after: [zz]}\n")
    with pytest.raises(WorkflowInvalid) as info:
        load_yaml(path, registry)
    assert info.value.codes() == {"type_mismatch", "unknown_step"}


def test_from_data_collects_every_field_problem() -> None:
    with pytest.raises(WorkflowInvalid) as info:
        from_data({"name": "w", "colour": "red", "steps": [
            {"id": "a", "function": "f", "timeout_s": "soon"},
            {"id": "b", "funtion": "f"},
        ]})
    problems = info.value.problems
    assert {p.code for p in problems} == {"bad_field"}
    assert {p.step for p in problems} == {None, "a", "b"}
    wheres = sorted(p.message.split(":")[0] for p in problems)
    assert wheres == ["colour", "steps.0.timeout_s", "steps.1.function", "steps.1.funtion"]


def test_order_round_trip() -> None:
    wf = load_yaml(ORDER_YAML)
    text = dump_yaml(wf)
    again = parse_yaml(text)
    assert again == wf
    assert again.version == wf.version
    assert dump_yaml(again) == text


def test_dsl_to_yaml_to_model() -> None:
    from workflows.order.dsl import customer_order

    assert parse_yaml(dump_yaml(customer_order)) == customer_order


def test_dump_omits_defaults() -> None:
    text = dump_yaml(WorkflowDef(name="w", steps=(StepDef(id="a", function="f"),)))
    assert text == "name: w\nsteps:\n- id: a\n  function: f\n"


@pytest.mark.parametrize("text", ["caf\u00e9", "\x85", "a\u2028b", "tab\there", "\ufeff"])
def test_round_trip_of_awkward_characters(text: str) -> None:
    wf = WorkflowDef(name="w", description=text, steps=(StepDef(id="a", function="f"),))
    assert parse_yaml(dump_yaml(wf)) == wf


def test_dump_of_an_empty_workflow_keeps_steps() -> None:
    text = dump_yaml(WorkflowDef(name="w", steps=()))
    assert parse_yaml(text) == WorkflowDef(name="w", steps=())


# --- random workflows --------------------------------------------------------------------

IDENT = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=6,
)


@st.composite
def workflows(draw: st.DrawFn) -> WorkflowDef:
    ids = draw(st.lists(IDENT, min_size=1, max_size=8, unique=True))
    steps = []
    for i, sid in enumerate(ids):
        earlier = ids[:i]
        inputs: dict[str, Any] = {}
        for name in draw(st.lists(IDENT, max_size=3, unique=True)):
            kind = draw(st.sampled_from(["input", "step", "value"] if earlier
                                        else ["input", "value"]))
            if kind == "value":
                inputs[name] = Value(value=draw(JSON))
            elif kind == "input":
                path = draw(st.lists(IDENT, max_size=2))
                inputs[name] = Ref(source=".".join(["input", *path]))
            else:
                path = draw(st.lists(IDENT, max_size=2))
                src = draw(st.sampled_from(earlier))
                inputs[name] = Ref(source=".".join(["steps", src, "output", *path]))
        retry = draw(st.none() | st.builds(
            RetryPolicy, max_attempts=st.integers(1, 9), initial_backoff_s=st.floats(0, 5),
            max_backoff_s=st.floats(5, 60), jitter=st.floats(0, 1),
            non_retryable=st.lists(IDENT, max_size=2).map(tuple)))
        fields: dict[str, Any] = {
            "id": sid,
            "function": draw(st.from_regex(r"[a-z]{1,5}(\.[a-z]{1,5})?", fullmatch=True)),
            "description": draw(st.text(max_size=20)),
            "inputs": inputs,
            "after": tuple(draw(st.lists(st.sampled_from(earlier), unique=True, max_size=3))
                           if earlier else ()),
            "when": draw(st.none() | st.just("input.flag")),
            "trigger_rule": draw(st.sampled_from(list(TriggerRule))),
            "timeout_s": draw(st.none() | st.floats(1, 100)),
            "queue": draw(st.none() | IDENT),
        }
        if retry is not None:
            fields["retry"] = retry
        steps.append(StepDef(**fields))
    return WorkflowDef(
        name=draw(st.from_regex(r"[a-z][a-z0-9_.-]{0,10}", fullmatch=True)),
        description=draw(st.text(max_size=30)),
        label=draw(st.none() | st.text(max_size=10)),
        default_queue=draw(st.none() | IDENT),
        steps=tuple(steps),
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workflows())
def test_random_round_trip(wf: WorkflowDef) -> None:
    again = parse_yaml(dump_yaml(wf))
    assert again == wf
    assert again.version == wf.version


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workflows())
def test_stored_form_round_trip(wf: WorkflowDef) -> None:
    """The store keeps definitions without their defaults (so that the previous release
    parses a definition that uses no field it lacks): nothing is lost by that."""
    stored = wf.model_dump_json(by_alias=True, exclude_defaults=True)
    again = WorkflowDef.model_validate_json(stored)
    assert again == wf
    assert again.version == wf.version


# --- hostile and broken files: a one-screen error, bounded memory ----------------------

ALIAS_BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
name: bomb
steps: [{id: x, function: t.noop, args: {v: *i}}]
"""


def _refused(path: Path, words: str) -> str:
    """Load ``path``: it must fail with one short DefinitionError, within 50 MB of memory."""
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(DefinitionError) as info:
            load_yaml(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert words in message, message
    assert len(message.splitlines()) <= 3 and len(message) < 600, message
    assert peak < 50 * 1024 * 1024, f"peak {peak / 1e6:.0f} MB"
    return message


def test_an_alias_bomb_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB)
    _refused(path, "aliases expand to more than")


def test_a_huge_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as fh:
        fh.truncate(50 * 1024 * 1024)  # 50 MB (sparse: nothing to read)
    _refused(path, "more than the 1,048,576 a workflow file may have")


def test_a_file_that_is_not_utf8_names_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: x\ndescription: caf\xe9\nsteps: []\n".encode("latin-1"))
    _refused(path, "not UTF-8 text (byte 0xe9 at offset 24, line 2)")


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("name: deep\nsteps: []\ndescription: " + "[" * 500 + "]" * 500 + "\n")
    _refused(path, "nested deeper than 64 levels")


def test_too_many_steps_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "many.yaml"
    path.write_text("name: many\nsteps:\n" + "".join(
        f"  - {{id: s{i}, function: t.noop}}\n" for i in range(10_001)))
    _refused(path, "10,001 steps, more than the 10,000")


@pytest.mark.parametrize("text", [
    "name: r\nsteps: &s [{id: a, function: t.noop, inputs: {v: *s}}]\n",
    "a: &a [1, *a]\nname: r\nsteps: []\n",
    "a: &a {b: {<<: *a}}\nname: r\nsteps: []\n",
])
def test_a_recursive_alias_is_refused(text: str) -> None:
    """Found by the fuzzer (fuzz/corpus/yaml/recursive_alias.yaml): an alias inside its
    own anchor made the loader loop forever."""
    with pytest.raises(DefinitionError, match="recursive alias"):
        parse_yaml(text)
