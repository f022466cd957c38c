"""The input schema's validator: built once per version, same verdicts as a fresh one."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator

from orchestrator.core import inputschema
from orchestrator.core.models import WorkflowDef


def _wf(schema: dict[str, Any]) -> WorkflowDef:
    return WorkflowDef.model_validate({"name": "schema_wf", "input_schema": schema,
                                       "steps": [{"id": "a", "function": "test.a"}]})


SCHEMA = {"type": "object", "required": ["n", "tags"], "additionalProperties": False,
          "properties": {"n": {"type": "integer", "minimum": 1},
                         "tags": {"type": "array", "items": {"type": "string"}}}}


def test_one_validator_per_version() -> None:
    wf = _wf(SCHEMA)
    same = _wf(SCHEMA)  # equal content: the same version
    other = _wf({**SCHEMA, "required": ["n"]})
    assert same.version == wf.version and other.version != wf.version
    assert inputschema.validator(wf) is inputschema.validator(same)
    assert inputschema.validator(other) is not inputschema.validator(wf)


@pytest.mark.parametrize("data", [
    {"n": 2, "tags": ["x"]},
    {"n": 0, "tags": ["x", 3]},
    {"tags": "x", "extra": True},
    [],
    {"n": "2", "tags": [1, 2, 3]},
])
def test_problems_are_those_of_a_fresh_validator(data: Any) -> None:
    wf = _wf(SCHEMA)
    fresh = sorted(Draft202012Validator(SCHEMA).iter_errors(data), key=lambda e: list(e.path))
    expected = [f"{'/'.join(str(p) for p in e.path) or '(input)'}: {e.message}"
                for e in fresh]
    assert inputschema.problems(wf, data) == expected
    assert (expected == []) == (data == {"n": 2, "tags": ["x"]})
