"""The spliced canonical text (hashtext) equals the whole model's dump, byte for byte.

Every stored run names its workflow's version, so the text a version hashes must not
change: :func:`canonical_text` is compared with the dump it replaces for the example
workflows, the benchmark's shapes and random definitions that set every kind of field.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.core.hashtext import canonical_text, dump_text, step_text
from orchestrator.core.models import RetryPolicy, StepDef, WorkflowDef
from orchestrator.core.yamlio import parse_yaml
from orchestrator.dev.shapes import chain, fan_out, layered, nested_diamonds, random_dag, workflow

ROOT = Path(__file__).resolve().parents[2]


def old_version(wf: WorkflowDef) -> str:
    """The version as it was computed before hashtext: the whole model dumped."""
    return hashlib.sha256(dump_text(wf, exclude={"label"}).encode()).hexdigest()[:16]


def assert_same(wf: WorkflowDef) -> None:
    assert canonical_text(wf) == dump_text(wf, exclude={"label"})
    assert wf.version == old_version(wf)


@pytest.mark.parametrize("path", sorted(ROOT.glob("workflows/*/*.yaml")), ids=str)
def test_example_yaml_workflows(path: Path) -> None:
    assert_same(parse_yaml(path.read_text(), str(path)))


def test_example_dsl_workflows() -> None:
    from workflows.etl.dsl import build as etl
    from workflows.order.dsl import build as order

    assert_same(etl())
    assert_same(order())


@pytest.mark.parametrize("deps", [
    chain(50), fan_out(40), nested_diamonds(12), layered(random.Random(3), 300, 20, 3),
    random_dag(random.Random(5), 200),
], ids=["chain", "fan_out", "diamonds", "layered", "random_dag"])
def test_shapes(deps: dict[str, list[str]]) -> None:
    assert_same(workflow(deps, name="shape", function="f"))


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)
_ident = st.from_regex(r"[a-z_][a-z0-9_]{0,5}", fullmatch=True)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=6)


@st.composite
def _step(draw: st.DrawFn, step_id: str, earlier: list[str]) -> dict[str, Any]:
    """A step that sets a random few of every kind of field (defaults spelled out too)."""
    s: dict[str, Any] = {"id": step_id, "function": draw(_text)}
    maybe = draw(st.sets(st.sampled_from([
        "description", "after", "when", "queue", "on_failure", "trigger_rule", "retry",
        "timeouts", "inputs", "compensate", "rate_limit", "concurrency", "map", "wait",
        "workflow"]), max_size=5))
    if "description" in maybe:
        s["description"] = draw(_text)
    if "after" in maybe and earlier:
        s["after"] = draw(st.lists(st.sampled_from(earlier), max_size=3))
    if "when" in maybe:
        s["when"] = draw(st.sampled_from(["", "input.x > 1", "true", "é"]))
    if "queue" in maybe:
        s["queue"] = draw(st.none() | _text)
    if "on_failure" in maybe and earlier:
        s["on_failure"] = draw(st.lists(st.sampled_from(earlier), max_size=2))
    if "trigger_rule" in maybe:
        s["trigger_rule"] = draw(st.sampled_from(["all_success", "all_done", "one_failed"]))
    if "retry" in maybe:
        s["retry"] = draw(st.sampled_from([
            {}, {"max_attempts": 1}, {"max_attempts": 3, "jitter": 0.0},
            {"initial_backoff_s": 1, "non_retryable": ["ValueError"]}]))
    if "timeouts" in maybe:
        s["timeout_s"] = draw(st.none() | st.floats(allow_nan=False))
        s["soft_timeout_s"] = draw(st.none() | st.floats(0, 10))
    if "inputs" in maybe:
        s["inputs"] = draw(st.dictionaries(_ident, _json | st.sampled_from(
            [{"from": "input"}, {"from": "input.a.b"}, {"value": {"z": 1, "a": [2]}}]),
            max_size=3))
    if "compensate" in maybe:
        s["compensate"] = draw(st.sampled_from(["undo", {"function": "undo", "queue": "q"}]))
    if "rate_limit" in maybe:
        s["rate_limit"] = draw(st.sampled_from(["10/s", {"rate": "5/m", "key": "input.k"}]))
    if "concurrency" in maybe:
        s["concurrency"] = {"key": "input.k", "limit": draw(st.integers(1, 5))}
    if "map" in maybe:
        s["map"] = draw(st.sampled_from([{"over": "input.items"},
                                         {"over": "input.xs", "as": "x", "max_parallel": 2}]))
    elif "wait" in maybe:
        s.pop("function")
        s["wait"] = draw(st.sampled_from([{"kind": "sleep", "duration_s": 5},
                                          {"kind": "event", "key": "go", "timeout_s": 1e300}]))
    elif "workflow" in maybe:
        s.pop("function")
        s["workflow"] = {"name": draw(st.sampled_from(["child", "other.flow"]))}
    return s


@st.composite
def _workflow(draw: st.DrawFn) -> WorkflowDef:
    ids = [f"s{i}" for i in range(draw(st.integers(0, 6)))]
    steps = [draw(_step(i, ids[:k])) for k, i in enumerate(ids)]
    data: dict[str, Any] = {"name": draw(st.sampled_from(["w", "a.b-c", "0x"])),
                            "steps": steps}
    for key, values in (("description", st.sampled_from(["", "d", "ü"])),
                        ("label", st.sampled_from(["v1", None])),
                        ("input_schema", st.sampled_from([{"type": "object"}, {
                            "type": "object", "required": ["x"]}])),
                        ("default_queue", st.none() | _text),
                        ("concurrency", st.sampled_from([{"key": "input.k", "limit": 2}]))):
        if draw(st.booleans()):
            data[key] = draw(values)
    return WorkflowDef.model_validate(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_workflow())
def test_random_workflows(wf: WorkflowDef) -> None:
    assert_same(wf)


def test_a_step_built_without_validation_is_dumped_the_slow_way() -> None:
    """A step of another class (here: a subclass) never takes the fast path."""

    class Mine(StepDef):
        pass

    s = Mine(id="a", function="f")
    assert step_text(s) == dump_text(s)


def test_spelled_out_defaults_and_copies() -> None:
    """A default given explicitly is left out; a copy's updated fields count as set."""
    steps = [StepDef(id="a", function="f", after=(), when=None, description=""),
             StepDef(id="a", function="f").model_copy(
                 update={"retry": RetryPolicy(max_attempts=3)}),
             StepDef(id="a", function="f").model_copy(update={"queue": "q\u00e9"})]
    for s in steps:
        assert step_text(s) == dump_text(s)
    assert step_text(steps[0]) == '{"function":"f","id":"a"}'
