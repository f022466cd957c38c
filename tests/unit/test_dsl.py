"""The Python DSL builds the same frozen model as YAML, with parents given by handle."""

from __future__ import annotations

import pytest

from orchestrator.core import yamlio
from orchestrator.core.dsl import Workflow
from orchestrator.core.models import Ref, RetryPolicy, TriggerRule, Value
from orchestrator.core.registry import Registry
from orchestrator.errors import DefinitionError, WorkflowInvalid
from tests.support.paths import ORDER_YAML
from tests.unit import fixtures_steps as fx
from workflows.order import steps as _order_steps  # noqa: F401  (registers its functions)


def test_order_workflow_dsl_equals_yaml() -> None:
    from workflows.order.dsl import customer_order

    from_yaml = yamlio.load_yaml(ORDER_YAML)
    assert customer_order == from_yaml
    assert customer_order.version == from_yaml.version


def test_order_workflow_is_rebuilt_identically() -> None:
    from workflows.order.dsl import build, customer_order

    assert build() == customer_order


def test_inputs_by_handle(registry: Registry) -> None:
    wf = Workflow("w", input_schema={"type": "object",
                                     "properties": {"name": {"type": "string"}}})
    hello = wf.step("hello", "t.greet", name=wf.input.name)
    wf.step("loud", "t.shout", text=hello.output.text)
    wf.step("keep_all", "t.keep", data=hello)
    wf.step("lit", "t.count", n=3)
    built = wf.build(registry)
    steps = built.step_map
    assert steps["hello"].inputs == {"name": Ref(source="input.name")}
    assert steps["loud"].inputs == {"text": Ref(source="steps.hello.output.text")}
    assert steps["keep_all"].inputs == {"data": Ref(source="steps.hello.output")}
    assert steps["lit"].inputs == {"n": Value(value=3)}


def test_function_by_step_function_object(registry: Registry) -> None:
    wf = Workflow("w")
    wf.step("a", registry.functions["t.noop"])
    assert wf.build(registry).steps[0].function == "t.noop"


def test_unregistered_function_fails_at_the_line_that_uses_it() -> None:
    wf = Workflow("w")
    with pytest.raises(DefinitionError, match="step_function"):
        wf.step("a", fx.noop)


def test_handles_sets_on_failure(registry: Registry) -> None:
    wf = Workflow("w")
    a = wf.step("a", "t.noop")
    b = wf.step("b", "t.noop", after=[a])
    wf.step("alert", "t.noop", handles=[a, b])
    built = wf.build(registry)
    assert built.step_map["a"].on_failure == ("alert",)
    assert built.step_map["b"].on_failure == ("alert",)
    assert built.step_map["alert"].after == ()
    assert built.dependencies()["alert"] == ("a", "b")


def test_options_reach_the_model(registry: Registry) -> None:
    wf = Workflow("w", description="d", label="l", default_queue="q")
    wf.step("a", "t.noop", retry=RetryPolicy(max_attempts=3), timeout_s=5, soft_timeout_s=4,
            queue="fast", trigger_rule="all_done", description="step a")
    built = wf.build(registry)
    s = built.steps[0]
    assert (built.description, built.label, built.default_queue) == ("d", "l", "q")
    assert s.retry.max_attempts == 3
    assert (s.timeout_s, s.soft_timeout_s, s.queue) == (5, 4, "fast")
    assert s.trigger_rule is TriggerRule.ALL_DONE
    assert s.description == "step a"


def test_input_schema_from_a_model(registry: Registry) -> None:
    wf = Workflow("w", input_schema=fx.Greeting)
    wf.step("a", "t.shout", text=wf.input.text)
    built = wf.build(registry)
    assert built.input_schema["properties"]["text"] == {"title": "Text", "type": "string"}


def test_a_field_named_text_is_a_reference_not_the_path_itself(registry: Registry) -> None:
    wf = Workflow("w")
    hello = wf.step("hello", "t.greet", name="x")
    wf.step("loud", "t.shout", text=hello.output.text)
    wf.step("raw", "t.anything", v=wf.input["eq"])
    built = wf.build(registry)
    assert built.step_map["loud"].inputs["text"] == Ref(source="steps.hello.output.text")
    assert built.step_map["raw"].inputs["v"] == Ref(source="input.eq")


@pytest.mark.parametrize(
    ("make", "text"),
    [
        (lambda c: c.output.ok, "steps.c.output.ok"),
        (lambda c: ~c.output.ok, "!steps.c.output.ok"),
        (lambda c: c.output.n.eq(3), "steps.c.output.n == 3"),
        (lambda c: c.output.s.eq("x"), 'steps.c.output.s == "x"'),
        (lambda c: c.output.s.ne(None), "steps.c.output.s != null"),
        (lambda c: c.output.n.gt(1) & c.output.n.lt(9),
         "(steps.c.output.n > 1) && (steps.c.output.n < 9)"),
        (lambda c: c.output.ok | c.output.n.eq(0),
         "(steps.c.output.ok) || (steps.c.output.n == 0)"),
        (lambda c: c.output.ok & c.output.other, "(steps.c.output.ok) && (steps.c.output.other)"),
        (lambda c: ~(c.output.ok & c.output.n.eq(1)),
         "!((steps.c.output.ok) && (steps.c.output.n == 1))"),
        (lambda c: "steps.c.output.ok", "steps.c.output.ok"),
    ],
)
def test_conditions(registry: Registry, make: object, text: str) -> None:
    wf = Workflow("w")
    c = wf.step("c", "t.anything")
    wf.step("d", "t.noop", after=[c], when=make(c))  # type: ignore[operator]
    built = wf.build(registry)
    assert built.step_map["d"].when == text


def test_conditions_evaluate_as_written(registry: Registry) -> None:
    from orchestrator.core.conditions import parse

    wf = Workflow("w")
    c = wf.step("c", "t.anything")
    wf.step("d", "t.noop", after=[c], when=~(c.output.n.gt(1) & c.output.ok))
    cond = parse(wf.build(registry).step_map["d"].when or "")
    assert cond.evaluate({}, {"c": {"output": {"n": 2, "ok": True}}}) is False
    assert cond.evaluate({}, {"c": {"output": {"n": 0, "ok": True}}}) is True


def test_build_validates(registry: Registry) -> None:
    wf = Workflow("w")
    wf.step("a", "t.count", n="three")
    wf.step("b", "t.nothing")
    with pytest.raises(WorkflowInvalid) as info:
        wf.build(registry)
    assert info.value.codes() == {"type_mismatch", "unknown_function"}
    assert wf.build(registry, validate=False).steps[1].function == "t.nothing"
