"""Static type compatibility between a step's output and the input that consumes it."""

from __future__ import annotations

from typing import Any, Optional

import pytest
from pydantic import BaseModel

from orchestrator.core.typecheck import (
    UNKNOWN,
    compatible,
    literal_fits,
    output_type,
    schema_type,
    type_name,
)
from tests.unit.fixtures_steps import Greeting


class Other(BaseModel):
    text: str


class Nested(BaseModel):
    greeting: Greeting
    tags: list[str]
    extra: dict[str, Any]


@pytest.mark.parametrize(
    ("src", "dst", "ok"),
    [
        (str, str, True),
        (str, int, False),
        (int, float, True),
        (float, int, False),
        (bool, int, False),
        (int, bool, False),
        (UNKNOWN, int, True),
        (Any, int, True),
        (str, Any, True),
        (str, str | None, True),
        (str | None, str, False),
        (str | None, str | None, True),
        (Optional[int], float | None, True),  # noqa: UP045  (the typing spelling too)
        (int | str, int | str, True),
        (Greeting, Greeting, True),
        (Greeting, Other, False),
        (dict, Greeting, True),
        (dict[str, Any], Greeting, True),
        (Greeting, dict, True),
        (Greeting, dict[str, Any], True),
        (list[int], list[str], True),  # arguments of generics are not checked
        (list[int], dict[str, int], False),
        (type(None), int | None, True),
    ],
)
def test_compatible(src: Any, dst: Any, ok: bool) -> None:
    assert compatible(src, dst) is ok


def test_output_type_walks_model_fields() -> None:
    assert output_type(Nested, ()) is Nested
    assert output_type(Nested, ("greeting",)) is Greeting
    assert output_type(Nested, ("greeting", "length")) is int
    assert output_type(Nested, ("greeting", "nope")) is None
    assert output_type(Nested, ("tags", "x")) is UNKNOWN
    assert output_type(Nested, ("extra", "anything")) is UNKNOWN
    assert output_type(Any, ("a", "b")) is UNKNOWN
    assert output_type(int, ("a",)) is UNKNOWN


SCHEMA = {
    "type": "object",
    "properties": {
        "order": {"type": "object", "properties": {"qty": {"type": "integer"}},
                  "additionalProperties": False},
        "price": {"type": "number"},
        "flag": {"type": "boolean"},
        "any": {},
        "either": {"type": ["string", "null"]},
    },
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ((), dict),
        (("order",), dict),
        (("order", "qty"), int),
        (("order", "nope"), None),
        (("price",), float),
        (("flag",), bool),
        (("any",), UNKNOWN),
        (("either",), UNKNOWN),
        (("undeclared",), UNKNOWN),
        (("order", "qty", "deeper"), UNKNOWN),
    ],
)
def test_schema_type(path: tuple[str, ...], expected: Any) -> None:
    assert schema_type(SCHEMA, path) is expected


@pytest.mark.parametrize(
    ("value", "dst", "fits"),
    [
        (3, int, True),
        ("3", int, False),
        (True, int, False),
        (3, float, True),
        (3.5, int, False),
        ("x", str, True),
        (None, int | None, True),
        (None, int, False),
        ({"text": "a", "length": 1}, Greeting, True),
        ({"text": "a"}, Greeting, False),
        ([1, 2], list[int], True),
        (["a"], list[int], False),
        ({"k": 1}, dict[str, int], True),
        ("anything", Any, True),
    ],
)
def test_literal_fits(value: Any, dst: Any, fits: bool) -> None:
    reason = literal_fits(value, dst)
    assert (reason is None) is fits
    if not fits:
        assert isinstance(reason, str) and reason


def test_type_name() -> None:
    assert type_name(int) == "int"
    assert type_name(Greeting) == "Greeting"
    assert type_name(UNKNOWN) == "unknown"
    assert type_name(list[int]) == "list[int]"
    assert type_name(Optional[int]) == "Optional[int]"  # noqa: UP045
