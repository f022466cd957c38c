"""Integration fixtures: a private Redis, real worker processes, and a coordinator."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
import redis

from orchestrator.runtime.catalog import discover
from orchestrator.runtime.coordinator import Coordinator, RunView
from orchestrator.settings import Settings
from tests.support.api import CALLBACK_NETWORKS, CALLBACK_SECRET
from tests.support.redis_server import RedisServer
from tests.support.wait import wait_until
from tests.support.workers import TEST_PACKAGES, WorkerProcess, stop_workers, supervise

pytestmark = pytest.mark.redis


def make_settings(url: str, **over: Any) -> Settings:
    return Settings(redis_url=url, workflow_packages=TEST_PACKAGES, **over)


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer) -> Iterator[dict[str, Any]]:
    """Two worker processes (prefork, 3 children each) on the session Redis."""
    url = redis_server.url
    redis_server.client().flushall()
    settings = make_settings(url)
    coord = Coordinator(settings, discover(settings.workflow_packages))
    # the workers deliver run-end callbacks: they sign with the API tests' secret
    workers = [WorkerProcess(url, f"w{i}", concurrency=3, callback_secret=CALLBACK_SECRET,
                             callback_allowed_networks=list(CALLBACK_NETWORKS))
               for i in (1, 2)]
    _WORKERS[id(coord)] = workers
    try:
        for w in workers:
            w.wait_ready(coord.app)
        yield {"coord": coord, "workers": workers, "url": url}
    finally:
        _WORKERS.pop(id(coord), None)
        stop_workers(workers)


@pytest.fixture
def coord(stack: dict[str, Any]) -> Coordinator:
    c: Coordinator = stack["coord"]
    return c


@pytest.fixture
def r(stack: dict[str, Any]) -> redis.Redis:
    return redis.Redis.from_url(stack["url"], decode_responses=True)


_WORKERS: dict[int, list[WorkerProcess]] = {}
"""The module stack's workers by ``id(coordinator)``: a run that does not end names them."""


def _why_not_ended(coord: Coordinator, run_id: str) -> str:
    """The run's steps as they are now, its queues' depths and unacknowledged messages,
    and the tails of its workers' logs (for the module stack)."""
    r = coord.store.client
    depths = {q: r.llen(q) for q in ("default", "default.high", "default.low")}
    lines = [f"run {run_id} did not end: "
             + json.dumps({s.step_id: s.status.value for s in coord.view(run_id).steps}),
             f"queue lengths: {depths}, unacked messages: {r.hlen('unacked')}"]
    for w in _WORKERS.get(id(coord), []):
        alive = "alive" if w.proc.poll() is None else f"exited {w.proc.returncode}"
        lines.append(f"--- worker {w.name} ({alive}), last lines:\n{w.tail(25)}")
    return "\n".join(lines)


def wait_run(coord: Coordinator, run_id: str, timeout_s: float = 30.0) -> RunView:
    """Wait until the run ends; return its view (fail with the run's state at the
    deadline, and its workers' log tails, if it does not)."""
    wait_until(lambda: coord.store.run(run_id).status.terminal, timeout_s,
               message=lambda: _why_not_ended(coord, run_id))
    return coord.view(run_id)


def statuses(view: RunView) -> dict[str, str]:
    return {s.step_id: s.status.value for s in view.steps}


@contextmanager
def private_stack(redis_binary: str, names: Sequence[str], *,
                  server_args: Sequence[str] = (), appendonly: bool = False,
                  queues: Sequence[str] = ("default",), pool: str = "prefork",
                  concurrency: int = 1, env: dict[str, str] | None = None, **settings: Any
                  ) -> Iterator[tuple[RedisServer, Coordinator, list[WorkerProcess]]]:
    """A Redis of the test's own, one worker per name (``settings`` go to the workers
    and the coordinator alike; ``env``: extra variables of the workers), ready;
    everything stopped at the end."""
    with RedisServer(binary=redis_binary, appendonly=appendonly,
                     extra_args=tuple(server_args)) as server:
        s = make_settings(server.url, **settings)
        coord = Coordinator(s, discover(s.workflow_packages))
        workers = [WorkerProcess(server.url, n, queues=queues, pool=pool,
                                 concurrency=concurrency, env=env, **settings)
                   for n in names]
        try:
            for w in workers:
                w.wait_ready(coord.app)
            yield server, coord, workers
        except BaseException:
            for w in workers:  # pytest shows what a failed test printed
                alive = "alive" if w.proc.poll() is None else f"exited {w.proc.returncode}"
                print(f"--- worker {w.name} ({alive}), last lines:\n{w.tail(40)}")
            raise
        finally:
            stop_workers(workers)


def kill_while_running(coord: Coordinator, run_id: str, step_id: str,
                       workers: Sequence[WorkerProcess], r: redis.Redis
                       ) -> tuple[WorkerProcess, float]:
    """Wait until ``step_id`` of the run runs, SIGKILL the worker running it (once the
    step function counted its execution), and clear the dead execution's in-flight mark
    (``tests/integration/flows.py``, ``enter``): returns the worker and when it died."""
    def running_on() -> str | None:
        rec = coord.store.step_runs(run_id, [step_id])[step_id]
        return rec.worker if rec.status.value == "running" else None

    wait_until(lambda: running_on() is not None, 30,
               message=f"step {step_id} never started")
    victim = next(w for w in workers if w.name == running_on())
    time.sleep(0.5)  # let the step function count its execution before the kill
    victim.kill()
    killed_at = time.time()
    # the killed execution never cleared its in-flight mark; it is dead now, so clear it
    # (an execution that began before this line would still be counted as an overlap)
    r.delete(f"test:inflight:{run_id}:{step_id}")
    return victim, killed_at



def all_succeed_once_at_a_time(coord: Coordinator, runs: Sequence[str],
                               workers: list[WorkerProcess],
                               executions: Callable[[str], dict[str, int]],
                               overlaps: Callable[[str], dict[str, int]],
                               r: Any) -> int:
    """After a fault: wait for every run to end, restarting a worker that exits (as a
    supervisor would), and check that each succeeded, that every step ran, and that none
    ran twice at once (``executions`` and ``overlaps``: the steps' own counts, read with
    ``r``).  Returns how many step executions were repeated (one after another)."""
    for rid in runs:
        wait_until(lambda rid=rid: supervise(workers) >= 0  # type: ignore[misc]
                   and coord.store.run(rid).status.terminal, 180, interval_s=0.2,
                   message=lambda rid=rid: f"{rid} did not end: "  # type: ignore[misc]
                   f"{statuses(coord.view(rid))}\n"
                   + "\n".join(w.tail(40) for w in workers))
        view = coord.view(rid)
        assert view.run.status.value == "succeeded", statuses(view)
        counts = executions(rid)
        assert set(counts) == {s.step_id for s in view.steps}, (rid, counts)
        if overlaps(rid):
            print("\n".join(line for w in workers for line in w.tail(4000).splitlines()
                            if rid in line or "lease" in line or "Redis" in line))
        assert overlaps(rid) == {}, (rid, r.lrange(f"test:overlap-by:{rid}", 0, -1))
    return sum(n - 1 for rid in runs for n in executions(rid).values())
