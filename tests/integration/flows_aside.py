"""A workflow whose last step is on a queue of its own, ``aside``, that only the replay
test's second worker consumes (tests/integration/test_leases.py): not in the test packages
every worker loads, so that no other test's deployment looks short of a worker for it."""

from __future__ import annotations

from orchestrator.core.dsl import Workflow
from tests.integration.flows import count

# --- a replayed unit with a join in its middle (tests/integration/test_leases.py) --------
# one unit: a -> (p1 | p2) -> join -> c -> d, d on a queue of its own ("aside")
_mj = Workflow("mid_join")
_mj_a = _mj.step("a", count)
_mj_c = _mj.step("c", count, after=[_mj.step("p1", count, after=[_mj_a]),
                                    _mj.step("p2", count, after=[_mj_a])])
_mj.step("d", count, after=[_mj_c], queue="aside")
mid_join = _mj.build()
