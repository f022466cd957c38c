"""A fan-out wider than the compiler's ``MAX_CHORD_WIDTH`` on real workers: one-task
units joined by the fan-in's counter, each branch's unit completed in the script of its
final transition (``RunStore.end_step``).  Every step runs exactly once, counted by the
step function itself (``tests/integration/flows_map.py``), and the fan-in starts after
the last branch ended.  The chaos suite (``test_chaos.py``, shape ``chaos_wide``) runs
the same join through worker kills, a Redis restart and a cut link."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from orchestrator.core.compiler import MAX_CHORD_WIDTH, compile_workflow
from orchestrator.core.models import WorkflowDef
from orchestrator.core.plan import ChordNode, Plan, walk
from orchestrator.runtime.coordinator import Coordinator
from tests.integration.conftest import private_stack, statuses, wait_run
from tests.integration.flows_map import FAN_WIDTH, fan_wide

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def stack(redis_binary: str) -> Iterator[tuple[Coordinator, redis.Redis]]:
    with private_stack(redis_binary, ["f1", "f2"], concurrency=3) as (server, coord, _):
        yield coord, redis.Redis.from_url(server.url, decode_responses=True)


def _chords(plan: Plan) -> int:
    return sum(isinstance(n, ChordNode) for u in plan.units for n in walk(u.canvas))


def _check_run(coord: Coordinator, r: redis.Redis, workflow: str | WorkflowDef
               ) -> None:
    rid = coord.submit(workflow, {"pause_s": 0.02})
    view = wait_run(coord, rid, 90)
    assert view.run.status.value == "succeeded", statuses(view)
    steps = [f"b{i}" for i in range(FAN_WIDTH)] + ["fan_in"]
    runs = {k: int(v) for k, v in r.hgetall(f"test:exec:{rid}").items()}
    assert runs == dict.fromkeys(steps, 1)  # each exactly once
    ends = [float(t) for s in steps[:-1] for t in r.lrange(f"test:ends:{rid}:{s}", 0, -1)]
    fan_in = [float(t) for t in r.lrange(f"test:starts:{rid}:fan_in", 0, -1)]
    assert len(ends) == FAN_WIDTH and len(fan_in) == 1 and fan_in[0] >= max(ends)
    keys = coord.store.keys
    assert r.sdiff([keys.units_published(rid), keys.units_done(rid)]) == set()


def test_a_wide_fan_out_runs_each_step_once_and_joins_by_counter(
        stack: tuple[Coordinator, redis.Redis]) -> None:
    coord, r = stack
    assert FAN_WIDTH > MAX_CHORD_WIDTH
    plan = coord.compile("test_fan_wide").plan
    assert len(plan.units) == FAN_WIDTH + 1 and len(plan.edges) == FAN_WIDTH
    assert _chords(plan) == 0
    for _ in range(3):
        _check_run(coord, r, "test_fan_wide")


def test_a_version_stored_with_another_plan_runs_with_the_stored_one(
        stack: tuple[Coordinator, redis.Redis]) -> None:
    """A version whose plan another release stored (here: a chord of 40, as before
    ``MAX_CHORD_WIDTH``) keeps it: the coordinator publishes by the stored plan, which
    the workers load, not by what its own compiler makes of the workflow now."""
    coord, r = stack
    body = fan_wide.model_dump(by_alias=True, exclude_defaults=True)
    wf = WorkflowDef.model_validate({**body, "name": "test_fan_wide_stored_chord"})
    assert wf.version != fan_wide.version
    assert coord.store.save_definition(wf, compile_workflow(wf, max_chord_width=10**9))
    assert _chords(coord.compile(wf).plan) == 1
    _check_run(coord, r, wf)
