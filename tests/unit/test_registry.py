"""The step-function registry: stable names, typed signatures, no silent overrides."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.core.registry import Registry, describe, function_name, step_function
from orchestrator.errors import DefinitionError
from tests.unit import fixtures_steps as fx


def test_describe_reads_parameters_and_return_type() -> None:
    sf = describe("t.add", fx.add)
    assert sf.name == "t.add"
    assert list(sf.params) == ["a", "b"]
    assert sf.params["a"].annotation is int and sf.params["a"].required
    assert not sf.params["b"].required
    assert sf.output is int
    assert not sf.accepts_any_kwargs
    assert describe("t.anything", fx.anything).accepts_any_kwargs


def test_missing_annotations_mean_any() -> None:
    def loose(x, y=1):  # type: ignore[no-untyped-def]
        return x

    sf = describe("loose", loose)
    assert sf.params["x"].annotation is Any
    assert sf.output is Any


def test_positional_only_and_star_args_are_not_inputs() -> None:
    def f(a: int, /, b: int, *rest: int, c: int = 0) -> None: ...

    assert list(describe("f", f).params) == ["b", "c"]


def test_register_and_get(registry: Registry) -> None:
    assert "t.greet" in registry
    assert registry.get("t.greet") is registry.functions["t.greet"]
    assert registry.get("t.nothing") is None
    assert registry.functions["t.add"](a=1, b=2) == 3


def test_same_function_twice_is_fine_another_is_refused(registry: Registry) -> None:
    registry.register("t.add", fx.add)
    with pytest.raises(DefinitionError, match=r"already registered by .*fixtures_steps\.count"):
        registry.register("t.count", fx.add)


def test_decorator_registers_into_the_given_registry() -> None:
    reg = Registry()

    @step_function("t.double", registry=reg)
    def double(x: int) -> int:
        return 2 * x

    assert reg.get("t.double") is not None
    assert function_name(double) == "t.double"
    assert double(x=2) == 4


def test_function_name() -> None:
    reg = Registry()
    sf = reg.register("t.noop", fx.noop)
    assert function_name("any.name") == "any.name"
    assert function_name(sf) == "t.noop"
    with pytest.raises(DefinitionError, match="not a registered step function"):
        function_name(fx.shout)
