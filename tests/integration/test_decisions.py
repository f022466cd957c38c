"""The decision trail on real workers: a step that ran or was skipped because of a
condition or a trigger rule records the rule, the parents' statuses it read, the
condition, the values the condition read and its outcome; ``status`` and the API show
it."""

from __future__ import annotations

import pytest

from orchestrator.api.models import RunOut
from orchestrator.cli.follow import step_table
from orchestrator.runtime.coordinator import Coordinator
from tests.integration.conftest import wait_run

pytestmark = pytest.mark.redis


def test_conditions_record_what_they_read_and_decided(coord: Coordinator) -> None:
    view = wait_run(coord, coord.submit("grandparent_condition"))
    steps = {s.step_id: s for s in view.steps}
    a_out = view.outputs["a"]
    assert steps["c"].status.value == "succeeded" and steps["d"].status.value == "skipped"
    assert steps["c"].decision == {
        "rule": "all_success", "parents": {"b": "succeeded"}, "runs": True,
        "when": "steps.a.output > 0.0", "outcome": True,
        "values": {"steps.a.output": a_out, "steps.a.status": "succeeded"}}
    assert steps["d"].decision is not None and steps["d"].decision["outcome"] is False
    assert steps["d"].decision["runs"] is False
    assert steps["a"].decision is None  # no parents, no condition: nothing decided
    table = step_table(view)
    assert f"decided d: rule all_success (b=succeeded); when 'steps.a.output > 1.0' read " \
        f"steps.a.output={a_out}, steps.a.status=\"succeeded\" -> false; skipped" in table
    wire = RunOut.from_view(view)
    assert next(s for s in wire.steps if s.step_id == "c").decision == steps["c"].decision
    bare = wire.shaped("status")  # runs:write without runs:read: no values
    assert all(s.decision is None for s in bare.steps)


def test_trigger_rules_record_the_parents_they_read(coord: Coordinator) -> None:
    view = wait_run(coord, coord.submit("fail_flow"))
    steps = {s.step_id: s for s in view.steps}
    parents = {"bad": "failed", "good": "succeeded"}
    assert steps["cleanup"].decision == {"rule": "all_done", "parents": parents, "runs": True}
    assert steps["needs_bad"].decision == {"rule": "all_success", "parents": parents,
                                           "runs": False}
    assert steps["needs_bad"].reason == "upstream not succeeded: bad"
