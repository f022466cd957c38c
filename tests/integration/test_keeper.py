"""The worker's lease keeper stops an attempt cut off from Redis before its lease can end,
however many other Redis calls of the keeper wait out their timeouts meanwhile.

The keeper runs in this process on a private ``redis-server`` that the test freezes with
SIGSTOP (every call then waits out its socket timeout, as on a cut link); the attempt is a
request in Celery's own ``active_requests`` whose pool records the kill.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest
from celery.worker import state as worker_state

from orchestrator.runtime import broker
from orchestrator.store.keys import Keys
from orchestrator.store.leases import Held, Leases
from tests.support.redis_server import RedisServer
from tests.support.wait import wait_until
from workers import leases as keeper_mod
from workers.leases import Keeper

pytestmark = pytest.mark.redis

LEASE_S = 4.0


class Request:
    """What the keeper reads of a Celery request that executes a step."""

    def __init__(self, held: Held, pid: int = 4242, accepted: float = 0.0) -> None:
        self.orch_held = held
        self.worker_pid = pid
        self.orch_accepted = accepted  # when its pool process took it (monotonic)


class Pool:
    """Records which pool process the keeper kills, and when."""

    def __init__(self) -> None:
        self.killed: list[tuple[int, float]] = []

    def terminate_job(self, pid: int, sig: int) -> None:
        assert sig == signal.SIGKILL
        self.killed.append((pid, time.monotonic()))


@pytest.fixture
def server(redis_binary: str) -> Iterator[RedisServer]:
    with RedisServer(binary=redis_binary) as s:
        yield s


def _keeper(server: RedisServer, keys: Keys) -> tuple[Keeper, Pool]:
    pool = Pool()
    return Keeper(Leases.from_url(server.url, keys, timeout_s=LEASE_S / 4),
                  cast(Any, None), LEASE_S, reaper_interval_s=1e6, hostname="w1",
                  pool=pool, can_kill_one=True), pool


def test_an_attempt_cut_off_from_redis_stops_before_its_lease_ends(
        server: RedisServer) -> None:
    keys = Keys("keeper")
    held = Held("run-1", "step-a", "token-1")
    r = server.client(decode_responses=True)
    r.hset(keys.leases(held.run_id), held.step_id, f"{held.token}|0|tag-1|")
    keeper, pool = _keeper(server, keys)
    request = Request(held)
    worker_state.active_requests.add(request)
    pid = server.pid
    assert pid is not None
    frozen = False
    late = Request(Held("run-3", "step-c", "token-3"), pid=4343)
    keeper.start()
    try:
        wait_until(lambda: held.token in keeper.holding, 10, message="no renewal confirmed")
        time.sleep(LEASE_S)  # Redis answers: renewals go on, nothing is stopped
        assert pool.killed == []
        assert str(r.hget(keys.leases(held.run_id), held.step_id)).startswith(f"{held.token}|")

        wait_until(lambda: time.monotonic() - keeper.last_ok < 0.2, 10,
                   message="no renewal", interval_s=0.01)
        os.kill(pid, signal.SIGSTOP)
        frozen = True
        last_ok = keeper.last_ok
        # Other calls of the keeper wait on Redis too: a lease to release and a message to
        # put back (each waits out its timeout, and the requeue is tried again each tick)
        keeper_mod.release_later(Held("run-2", "step-b", "token-2"), "done")
        broker.stranded.append("tag-stranded")
        # a task handed out while Redis is away: its lease, if it took one, began after
        # this, so it gets its own 0.75 of a lease, not a stop the instant it arrives
        time.sleep(LEASE_S / 2)
        late.orch_accepted = time.monotonic()
        worker_state.active_requests.add(late)
        wait_until(lambda: pool.killed, 3 * LEASE_S, message="the attempt was never stopped")
        ((killed_pid, at),) = pool.killed
        assert killed_pid == request.worker_pid
        # the lease, renewed no earlier than last_ok, ends LEASE_S after it on Redis' clock
        assert at - last_ok < 0.9 * LEASE_S, f"stopped {at - last_ok:.2f} s after renewal"
        wait_until(lambda: len(pool.killed) == 2, 3 * LEASE_S, message="the late one ran on")
        late_pid, late_at = pool.killed[1]
        assert late_pid == late.worker_pid
        assert 0.7 * LEASE_S < late_at - late.orch_accepted < 0.9 * LEASE_S
        time.sleep(LEASE_S / 2)
        assert len(pool.killed) == 2  # stopped once, not once per thread or per tick
    finally:
        if frozen:
            os.kill(pid, signal.SIGCONT)
        keeper.stop()  # before the stranded tags go: its thread pops them
        broker.stranded.clear()
        worker_state.active_requests.discard(request)
        worker_state.active_requests.discard(late)
        r.close()


def test_a_task_slow_to_begin_keeps_its_delivery_and_a_lost_lease_comes_back(
        server: RedisServer) -> None:
    """A task whose begin has not reached Redis after several renewals (a slow begin
    right after a failover) is not stopped: its keeper takes the lease for it.  A lease
    Redis lost is taken back; one another delivery took stops the attempt."""
    keys = Keys("keeper")
    held = Held("run-1", "step-a", "token-1", "tag-1")
    r = server.client(decode_responses=True)
    # a run this server created (its epoch), not one from before a restart, which the
    # restart grace would keep from a delivery the keeper never saw hold its lease
    r.hset(keys.run(held.run_id), mapping={"status": "running",
                                           "epoch": r.info("server")["run_id"]})
    keeper, pool = _keeper(server, keys)
    request = Request(held)
    worker_state.active_requests.add(request)
    keeper.start()
    try:
        wait_until(lambda: held.token in keeper.holding, 10, message="no lease taken")
        assert str(r.hget(keys.leases(held.run_id), held.step_id)).startswith(
            f"{held.token}|")
        r.hdel(keys.leases(held.run_id), held.step_id)  # Redis lost it
        wait_until(lambda: r.hget(keys.leases(held.run_id), held.step_id), 5,
                   message="the lost lease was not taken back")
        time.sleep(LEASE_S / 2)
        assert pool.killed == []
        r.hset(keys.leases(held.run_id), held.step_id, "token-2|0|tag-2|")  # taken over
        wait_until(lambda: pool.killed, 5, message="the attempt was not stopped")
        assert [pid for pid, _ in pool.killed] == [request.worker_pid]
    finally:
        keeper.stop()
        worker_state.active_requests.discard(request)
        r.close()
