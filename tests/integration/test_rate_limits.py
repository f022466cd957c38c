"""Rate limits across the pool, on real workers: steps sharing a budget of 4 starts a
second start at most that often, whichever worker runs them; a step over budget waits in
the store, not in a worker slot (a concurrency-1 worker runs other work meanwhile).  The
steps record their own start times (Redis' clock) and count their executions."""

from __future__ import annotations

import pytest

from orchestrator.runtime.coordinator import Coordinator
from tests.integration.conftest import private_stack, statuses, wait_run
from tests.support.waits import executions

pytestmark = pytest.mark.redis

RATE = 4.0
"""rate_limited's budget: 4 starts a second (test.stamp's)."""


def stamps(coord: Coordinator, tag: str) -> list[float]:
    return sorted(float(x) for x in coord.store.client.lrange(f"test:stamps:{tag}", 0, -1))


def test_a_budget_is_shared_by_every_worker(coord: Coordinator) -> None:
    runs = [coord.submit("rate_limited", {"tag": "shared"}) for _ in range(2)]
    for rid in runs:
        view = wait_run(coord, rid, 60)
        assert view.run.status.value == "succeeded", statuses(view)
        assert executions(coord, rid) == {**{f"b{i}": 1 for i in range(12)}, "src": 1,
                                          "join": 1}
    starts = stamps(coord, "shared")
    assert len(starts) == 24
    # 4 a second, whichever of the 6 worker slots ran them: the reservations are spaced
    # 1/RATE apart by Redis' clock and no start comes before its own, so the 24 starts
    # span at least 23/RATE s (the first drew at once; the slack is its own lateness)
    assert starts[-1] - starts[0] >= (len(starts) - 1) / RATE - 1.0, starts
    # A reserved start is released by a timer pass (every 0.1 s) and then waits for a
    # free slot, so on a loaded machine a few bunch.  Allow a second of such lateness
    # (RATE more starts in any 2 s); a budget each worker kept for itself would multiply
    # the 2 * RATE by the number of workers
    for i, t in enumerate(starts):
        assert sum(1 for u in starts[i:] if u < t + 2.0) <= 3 * RATE + 1, starts


def test_a_step_over_budget_holds_no_worker_slot(redis_binary: str) -> None:
    with private_stack(redis_binary, ["solo"], concurrency=1) as (_, coord, _workers):
        limited = coord.submit("rate_limited", {"tag": "solo"})
        coord.submit("free_run")  # queued behind the 12 limited steps
        view = wait_run(coord, limited, 60)
        assert view.run.status.value == "succeeded", statuses(view)
        starts, free = stamps(coord, "solo"), stamps(coord, "free")
        assert len(starts) == 12 and len(free) == 1
        # the one worker slot ran the free step while the limited ones waited their turn
        assert free[0] < starts[-1] - 1.0, (free, starts)
        raw = coord.store.client.hgetall(coord.store.keys.steps(limited))
        waited = [s for s, rec in raw.items() if "throttled_until" in rec]
        assert len(waited) >= 8, raw  # they waited in the store
