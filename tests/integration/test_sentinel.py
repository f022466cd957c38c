"""High availability with Redis Sentinel: the broker, the result backend and the run store
follow a failover, and the runs in flight complete.

A master, a replica and three Sentinels (quorum 2, passwords on all) on loopback; two
real workers (prefork) and a coordinator configured with the Sentinel URL.  Runs of three
shapes (a chain, a fan-out/fan-in, a zigzag) are submitted; once steps are running, the
master is SIGKILLed.  The Sentinels promote the replica, and every run must still
succeed, each step executed at least once and never twice at the same time, counted by
the step itself in a file (not in Redis, where a failover may lose the last writes).
How often a step ran twice is printed: replication is asynchronous, so writes the master
acknowledged but had not yet sent to the replica are lost with it, and a step whose
outcome was among them runs again (``docs/operations.md``, High availability with
Sentinel).  A second test chooses the lost writes (a relay in front of the master drops
its replication stream): a running step's lease and the pop of its message.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.runtime.catalog import discover
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.settings import Settings
from orchestrator.store import AsyncRunReader, StoreError, scripts
from tests.integration.conftest import statuses
from tests.integration.flows_sentinel import (
    COUNT_FILE_VARIABLE,
    SHAPES,
    executions,
    failover_long,
    overlaps,
    ran_alone,
    ran_once_each,
)
from tests.support.sentinel import SentinelGroup
from tests.support.wait import wait_until
from tests.support.workers import TEST_PACKAGES, WorkerProcess, stop_workers, supervise

pytestmark = pytest.mark.redis

PACKAGES = [*TEST_PACKAGES, "tests.integration.flows_sentinel"]
RUNS_PER_SHAPE = 5
KILL_AFTER_STARTS = 25
# recovery without the hour-long defaults of a real deployment: a message lost in the
# failover is replayed by the stalled-run check after 5 s, an unpublished claim after 3 s
RECOVERY = {"stall_s": 5.0, "claim_grace_s": 3.0}
BUDGET_S = 150.0
"""Every wait of the test, after the servers are up, shares this budget (typically 17-25
s; the rest is room for a slow machine)."""


@pytest.fixture
def group(redis_binary: str) -> Iterator[SentinelGroup]:
    with SentinelGroup(redis_binary, down_after_ms=1000, failover_timeout_ms=4000) as g:
        yield g


def _ended(coord: Coordinator, run_ids: list[str]) -> bool:
    try:
        return all(coord.store.run(rid).status.terminal for rid in run_ids)
    except StoreError:
        return False  # between the master's death and the promotion


def test_master_killed_mid_run_every_run_completes(group: SentinelGroup,
                                                   tmp_path: Path) -> None:
    count_file = tmp_path / "executions.jsonl"
    deadline = time.monotonic() + BUDGET_S

    def left(most_s: float) -> float:
        return max(1.0, min(most_s, deadline - time.monotonic()))

    settings = Settings(**group.settings(), workflow_packages=tuple(PACKAGES),
                        **RECOVERY)  # type: ignore[arg-type]
    coord = Coordinator(settings, discover(settings.workflow_packages))
    extra = {"redis_sentinel_master": settings.redis_sentinel_master,
             "redis_sentinel_password": settings.redis_sentinel_password.get_secret_value(),
             "workflow_packages": PACKAGES, **RECOVERY}
    workers = [WorkerProcess(group.url, f"sentinel{i}", concurrency=2,
                             env={COUNT_FILE_VARIABLE: str(count_file)}, **extra)
               for i in range(2)]
    try:
        for w in workers:
            w.wait_ready(coord.app, timeout_s=left(45))
        run_ids = [coord.submit(wf) for wf in SHAPES for _ in range(RUNS_PER_SHAPE)]
        wait_until(lambda: sum(e["event"] == "start" for e in executions(count_file))
                   >= KILL_AFTER_STARTS, left(30), interval_s=0.05,
                   message="the steps never started")
        assert group.master is not None and group.replica is not None
        assert group.master_port() == group.master.port  # no failover before the kill
        # the store's scripts are a Functions library, which Redis replicates like data:
        # the replica has it before the promotion, and no client has to load it again
        library = f"orch_{scripts.tag()}"
        on_replica = bool(group.replica.client().function_list(library=library))
        assert on_replica
        group.master.kill()
        killed_at = time.time()
        wait_until(group.promoted, left(20), interval_s=0.1,
                   message=lambda: "no failover: " + group.describe())
        promoted_s = time.time() - killed_at
        wait_until(lambda: _ended(coord, run_ids), left(60), interval_s=0.25,
                   message=lambda: "runs did not end after the failover: " + json.dumps(
                       {rid: coord.store.run(rid).status.value for rid in run_ids})
                   + "\n" + "\n".join(w.tail(30) for w in workers))
        ended_s = time.time() - killed_at

        ended = {rid: coord.store.run(rid).status.value for rid in run_ids}
        assert set(ended.values()) == {"succeeded"}, ended
        # the store's client follows the failover: it talks to the promoted replica now,
        # whose library its scripts ran from
        assert group.replica.client().function_list(library=library)
        pool: Any = coord.store.client.connection_pool
        assert pool.get_master_address()[1] == group.replica.port

        lines = executions(count_file)
        starts: dict[str, int] = defaultdict(int)
        for e in lines:
            if e["event"] == "start":
                starts[e["key"]] += 1
        expected = {f"{rid}:{s.step_id}" for rid in run_ids for s in coord.view(rid).steps}
        assert expected <= set(starts), sorted(expected - set(starts))[:5]
        assert overlaps(lines) == 0
        twice = sorted(k for k, n in starts.items() if n > 1)
        # a step that ended well before the kill (its outcome recorded, acknowledged) and
        # ran again: its outcome was among the writes the master had not replicated; the
        # others were running at the kill (a worker cancels its running tasks when it
        # loses the broker), or recording their outcome when the master died
        ended_before = {e["key"] for e in lines
                        if e["event"] == "end" and e["t"] < killed_at - 1.0}
        lost = [k for k in twice if k in ended_before]
        print(f"failover: replica promoted {promoted_s:.1f} s after the master's SIGKILL; "
              f"every run ended {ended_s:.1f} s after it; {len(expected)} step runs, "
              f"{len(twice)} executed more than once ({len(twice) - len(lost)} were running "
              f"at the kill, {len(lost)} had ended over 1 s before it: {lost}); scripts on the "
              f"replica before the promotion: {on_replica}")

        # the API's asyncio reader also finds the new master
        reader = AsyncRunReader(settings.redis_target, coord.store.keys)

        async def read() -> str | None:
            reader.open()
            try:
                status = await reader.run_status(run_ids[0])
                return None if status is None else status.value
            finally:
                await reader.close()

        assert asyncio.run(read()) == "succeeded"
    finally:
        stop_workers(workers)


def test_a_failover_that_lost_a_running_step_s_lease_starts_no_second_attempt(
        redis_binary: str, tmp_path: Path) -> None:
    """The replica misses the master's writes from just before a 25 s step began (the
    relay in front of the master drops its replication stream: asynchronous replication
    behind), so the promoted replica has the step's message queued again and no lease,
    while the first attempt still runs.  Its worker is frozen (SIGSTOP) across the
    failover so that its keeper cannot take the lease back first, and a second worker pops
    the copy.  The promoted replica starts the restart grace when the store's library first
    runs there (``lua/lib.lua``, ``server_boot``): the copy is deferred, the first worker,
    thawed, takes its lost lease back, and the copy meets it.  Counted in the step (in a
    file): never two at once, and the run succeeds.  Without the grace on promotion the
    copy ran while the first attempt was frozen mid-step."""
    count_file = tmp_path / "executions.jsonl"
    # a lease long enough that the frozen worker, thawed, is within 0.75 of one since
    # its last renewal (on a slow machine the failover and the copy took 12 s)
    quick = {"lease_s": 20.0}
    env = {COUNT_FILE_VARIABLE: str(count_file)}
    with SentinelGroup(redis_binary, down_after_ms=1000, failover_timeout_ms=4000,
                       relay=True) as group:
        assert group.master is not None and group.relay is not None
        settings = group.orch_settings(workflow_packages=tuple(PACKAGES), **quick)
        coord = Coordinator(settings, discover(settings.workflow_packages))
        extra = {"redis_sentinel_master": settings.redis_sentinel_master,
                 "redis_sentinel_password":
                     settings.redis_sentinel_password.get_secret_value(),
                 "workflow_packages": PACKAGES, **quick}
        run_id = coord.submit(failover_long)
        assert group.master.client().wait(1, 10_000) == 1  # the run and its message
        group.relay.hold_replication()  # from here on, the replica misses every write

        def worker(name: str) -> WorkerProcess:
            return WorkerProcess(group.url, name, pool="threads", concurrency=2, env=env,
                                 **extra)

        first = worker("first")
        workers = [first]
        try:
            first.wait_ready(coord.app)
            wait_until(lambda: any(e["event"] == "start" for e in executions(count_file)),
                       30, interval_s=0.05, message="the step never started")
            second = worker("second")  # idle: the old master's queue is empty
            workers.append(second)
            second.wait_ready(coord.app)
            began = executions(count_file)[0]["t"]  # then a renewal, on the master alone
            time.sleep(max(0.0, began + quick["lease_s"] / 4 + 0.5 - time.time()))
            assert group.relay.dropped > 0
            os.kill(first.proc.pid, signal.SIGSTOP)  # mid-step, its keeper with it
            try:
                group.master.kill()
                wait_until(group.promoted, 20, interval_s=0.1,
                           message=lambda: "no failover: " + group.describe())
                wait_until(lambda: "step=long]" in second.tail(100), 20, interval_s=0.1,
                           message=lambda: "the copy never came:\n" + second.tail(60))
                time.sleep(1.0)  # the copy begins (without the grace: runs) meanwhile
            finally:
                os.kill(first.proc.pid, signal.SIGCONT)
            wait_until(lambda: supervise(workers) >= 0 and _ended(coord, [run_id]), 60,
                       interval_s=0.2, message=lambda: "did not end:\n"
                       + "\n".join(w.tail(60) for w in workers))
            view = coord.view(run_id)
            assert view.run.status.value == "succeeded"
            ran_alone(executions(count_file), "long")
            assert statuses(view) == {"long": "succeeded", "after": "succeeded"}
            ran_once_each(executions(count_file), ["long", "after"])
            assert "Redis had lost its lease" in first.tail(400)
        finally:
            stop_workers(workers)
