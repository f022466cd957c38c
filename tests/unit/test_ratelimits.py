"""Rate limits, pure: the rate's forms, the budget a step run draws from, the checks."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.core.models import RateLimitDef
from orchestrator.core.ratelimits import scope
from orchestrator.core.validation import problems_of
from orchestrator.core.yamlio import from_data


def wf(rate_limit: Any, **step: Any) -> Any:
    return from_data({"name": "rl", "steps": [
        {"id": "a", "function": "fn", "rate_limit": rate_limit, **step}]})


@pytest.mark.parametrize(("rate", "interval"), [("10/s", 0.1), ("600/m", 0.1),
                                                ("2/h", 1800.0), (" 4 / s ", 0.25)])
def test_rates_and_their_intervals(rate: str, interval: float) -> None:
    assert RateLimitDef.model_validate(rate).interval_s == pytest.approx(interval)


def test_a_malformed_rate_is_a_shape_error() -> None:
    with pytest.raises(Exception, match="rate_limit"):
        wf("10 per second")


def test_the_budget_is_the_functions_unless_a_key_names_one() -> None:
    assert scope(wf("10/s").step_map["a"], {}) == "fn:fn"
    keyed = wf({"rate": "5/s", "key": "input.customer"}).step_map["a"]
    assert scope(keyed, {"customer": "c-7"}) == "key:fn:c-7"


@pytest.mark.parametrize(("limit", "step", "text"), [
    ("0/s", {}, "allows nothing"),
    ({"rate": "1/s", "key": "steps.x.output"}, {}, "key:"),
    ("1/s", {"function": None, "wait": {"kind": "sleep", "duration_s": 1.0}},
     "wait step"),
])
def test_bad_rate_limits_are_refused_with_the_fix(limit: Any, step: dict[str, Any],
                                                  text: str) -> None:
    step = {k: v for k, v in step.items() if v is not None}
    data: dict[str, Any] = {"id": "a", "rate_limit": limit, **step}
    if "wait" not in data:
        data["function"] = "fn"
    problems = [p for p in problems_of(from_data({"name": "rl", "steps": [data]}))
                if p.code == "bad_rate_limit"]
    assert problems and text in problems[0].message and problems[0].fix, problems
