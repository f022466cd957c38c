"""The broker on a Redis of its own (``ORCH_BROKER_URL``), the run store on another:
real workers on both, each step counting its executions itself (in the store's Redis,
through ``ctx.redis``, apart from the run's records).

Apart, no script of the store sends or puts back a message (they run on the store's
Redis, the messages are on the broker's): messages go by Celery's own publish, and the
reaper puts a dead worker's message back in two steps (``Leases.restore``).  The tests
check that the keys land where they belong, that every step runs exactly once in
healthy operation, that a SIGKILLed worker's step runs again within seconds and never
twice at once, and that either Redis crashing mid-run (SIGKILL, back from its AOF) loses
no run.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from orchestrator.runtime.catalog import discover
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.runtime.doctor import redis_findings
from tests.integration.conftest import (
    all_succeed_once_at_a_time,
    kill_while_running,
    make_settings,
    statuses,
    wait_run,
)
from tests.integration.flows import Counted, long_count, random_nsp_60, zigzag_11
from tests.support.redis_server import RedisServer
from tests.support.wait import wait_until
from tests.support.workers import WorkerProcess, stop_workers

pytestmark = pytest.mark.redis

BOUNCE = re.compile(r"\] (\S+ of run \S+): Redis failed before the outcome was recorded")
"""A worker's line for a delivery requeued because the store could not be reached."""
DURABLE = ("--appendfsync", "always")
"""Both servers write every command to their AOF before answering: a SIGKILL loses
nothing acknowledged, so the steps' own counts survive a crash of the store's Redis."""


@dataclass
class Apart(Counted):
    store: RedisServer
    broker: RedisServer
    coord: Coordinator
    workers: list[WorkerProcess]

    @property
    def r(self) -> redis.Redis:
        return redis.Redis.from_url(self.store.url, decode_responses=True)


@pytest.fixture
def apart(redis_binary: str) -> Iterator[Apart]:
    with RedisServer(binary=redis_binary, appendonly=True, extra_args=DURABLE) as store, \
            RedisServer(binary=redis_binary, appendonly=True, extra_args=DURABLE) as broker:
        over: dict[str, Any] = {"broker_url": broker.url, "lease_s": 3.0}
        s = make_settings(store.url, **over)
        coord = Coordinator(s, discover(s.workflow_packages))
        workers = [WorkerProcess(store.url, f"a{i}", concurrency=3, **over) for i in (1, 2)]
        try:
            for w in workers:
                w.wait_ready(coord.app)
            yield Apart(store, broker, coord, workers)
        except BaseException:
            for w in workers:
                print(f"--- worker {w.name}, last lines:\n{w.tail(40)}")
            raise
        finally:
            stop_workers(workers)


def test_runs_complete_with_messages_on_the_broker_and_records_in_the_store(
        apart: Apart) -> None:
    coord = apart.coord
    assert coord.settings.broker_apart and coord.store.broker_apart
    runs = [coord.submit(zigzag_11) for _ in range(10)]
    runs += [coord.submit(random_nsp_60) for _ in range(3)]
    for rid in runs:
        view = wait_run(coord, rid, timeout_s=120)
        assert view.run.status.value == "succeeded", statuses(view)
        assert apart.executions(rid) == {s.step_id: 1 for s in view.steps}, rid
        assert apart.overlaps(rid) == {}
    store_keys = set(apart.store.client().keys("*"))
    broker_keys = set(apart.broker.client().keys("*"))
    # the queues and kombu's bookkeeping on the broker's Redis, none on the store's
    assert {b"unacked", b"unacked_index", b"default"}.isdisjoint(store_keys), store_keys
    assert b"_kombu.binding.default" in broker_keys, broker_keys
    # the run store (and Celery's result backend) on the store's Redis, none on the broker's
    assert not [k for k in broker_keys if k.startswith((b"orch:", b"celery-task-meta"))]
    assert any(k.startswith(b"orch:run:") for k in store_keys)
    # what reads the queues reads the broker's lists
    apart.broker.client().rpush("q-probe", "x", "y")
    assert coord.store.queue_lengths(["q-probe"]) == {"q-probe": 2}
    # `orchestrator doctor` checks both servers
    checks = {f.check: f.ok for f in redis_findings(coord)}
    assert checks["redis"] and checks["broker redis"], checks
    assert checks["broker persistence"], checks


def test_a_killed_workers_step_is_put_back_on_the_broker_and_runs_once_more(
        apart: Apart) -> None:
    """The visibility timeout is an hour: only the reaper, putting the dead worker's
    message back on the broker's Redis after checking its lease in the store's, can bring
    the step back within seconds."""
    coord = apart.coord
    assert coord.settings.visibility_timeout_s >= 3600
    run_id = coord.submit(long_count)
    victim, killed_at = kill_while_running(coord, run_id, "long", apart.workers, apart.r)
    view = wait_run(coord, run_id, timeout_s=90)
    assert view.run.status.value == "succeeded", statuses(view)
    rec = next(s for s in view.steps if s.step_id == "long")
    assert rec.worker != victim.name and rec.started_at is not None
    again_s = rec.started_at - killed_at
    print(f"step ran again {again_s:.1f} s after SIGKILL (lease {coord.settings.lease_s} s)")
    assert again_s <= 30
    assert apart.executions(run_id) == {"long": 2, "after_long": 1}
    assert apart.overlaps(run_id) == {}
    others = [w for w in apart.workers if w is not victim]
    assert any("its message is back in queue" in w.tail(400) for w in others), \
        "\n".join(w.tail(60) for w in others)


@pytest.mark.parametrize("which", ["broker", "store"])
def test_either_redis_crashing_mid_run_loses_no_run(apart: Apart, which: str) -> None:
    """SIGKILL one of the two servers while steps run, bring it back from its AOF: every
    run succeeds, every step ran, none twice at once (the workers run under a
    supervisor, as in the other Redis-restart tests); while the store is down, the
    deliveries it fails wait for it instead of bouncing through the broker."""
    coord = apart.coord
    runs = [coord.submit(zigzag_11) for _ in range(8)]
    wait_until(lambda: sum(len(apart.executions(r)) for r in runs) >= 20, 60,
               interval_s=0.05, message="the steps never got going")
    server = apart.broker if which == "broker" else apart.store
    server.kill()
    time.sleep(1.0)
    server.restart()
    wait_until(server.ping, 30, message=f"the {which}'s Redis did not come back")
    again = all_succeed_once_at_a_time(coord, runs, apart.workers, apart.executions,
                                       apart.overlaps, apart.r)
    bounces = Counter(m.group(1) for w in apart.workers
                      for m in BOUNCE.finditer(w.tail(20000)))
    most = max(bounces.values(), default=0)
    print(f"{which} crash: {len(runs)} runs succeeded; {again} step executions repeated; "
          f"{sum(bounces.values())} requeues for an unreachable store, at most {most} of "
          "one step run")
    # a delivery that cannot reach the store waits for it (up to a quarter lease, 0.75 s
    # here) before its requeue: 6 pool slots bounce a handful of messages through the
    # outage, where they bounced every queued one as fast as they could (about 150)
    assert sum(bounces.values()) < 60, bounces
