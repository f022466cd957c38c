"""Many hosts, small: Redis, the API and two worker hosts, each a network namespace of its
own; runs submitted over HTTP; one worker host cut off while it runs steps.

``python -m bench.hosts`` runs the full version (1, 2 and 3 hosts; a cut and a kill) and
writes docs/scaling.md. Needs root and ``ip``: without them the test skips and says why,
unless ``ORCH_TEST_REQUIRE_HOSTS`` or ``CI`` is set, where it fails instead (CI is root).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from bench.hosts import STEPS, cluster, fault_phase, run_batch
from orchestrator.dev.hosts import Cluster
from orchestrator.dev.netns import clear, unavailable_reason

pytestmark = pytest.mark.redis

_FALSE_WORDS = {"", "0", "false", "no", "off"}
PREFIX, SUBNET = "orht", "10.213.17.0/24"  # not the bench's: both may run at once
LEASE_S = 3.0


def _hosts_required() -> bool:
    """True when missing root or ``ip`` must fail the test rather than skip it."""
    require = os.environ.get("ORCH_TEST_REQUIRE_HOSTS", "").strip().lower()
    ci = os.environ.get("CI", "").strip().lower()
    return require not in _FALSE_WORDS or ci not in _FALSE_WORDS


@pytest.fixture
def hosts(redis_binary: str) -> Iterator[Cluster]:
    """Redis, the API and worker hosts w1 and w2 (prefork -c 4, 3 s leases), all started."""
    reason = unavailable_reason()
    if reason is not None:
        if _hosts_required():
            pytest.fail(f"{reason} (required: ORCH_TEST_REQUIRE_HOSTS or CI is set)",
                        pytrace=False)
        pytest.skip(reason)
    with cluster(2, prefix=PREFIX, subnet=SUBNET, concurrency=4, lease_s=LEASE_S) as c:
        c.start_workers()
        yield c
    assert clear(PREFIX) == [], "the cluster left namespaces or links behind"


def test_runs_spread_over_hosts_and_survive_a_cut_host(hosts: Cluster) -> None:
    healthy = run_batch(hosts, "healthy", 2, 4, timeout_s=60)
    assert healthy.succeeded == 4, healthy.statuses
    t = healthy.tally
    assert (t.step_runs, t.executions, t.overlaps, t.effects_not_once) == (4 * STEPS,) * 2 + (
        0, 0)
    ran_on = {pid for _key, _t, pid in t.starts}
    assert ran_on & hosts.worker_pids(1) and ran_on & hosts.worker_pids(2), \
        "both hosts' workers ran steps"

    cut = fault_phase(hosts, 8, timeout_s=60, cut_host=2, kill_host=None, cut_at_s=0.5,
                      cut_s=3 * LEASE_S, progress=lambda _line: None)
    assert cut.succeeded == cut.runs == 8, cut.statuses  # nothing lost
    t = cut.tally
    assert t.overlaps == 0, "a step run ran twice at once"
    assert t.effects_not_once == 0, "a side effect was lost or done twice"
    assert t.step_runs == 8 * STEPS
    (hit,) = cut.hit
    assert hit > 0, "the cut host was running no step"
    assert len(cut.rerun_s) == hit, "a step the cut host was running never ran again"
    assert t.executed_twice >= hit
