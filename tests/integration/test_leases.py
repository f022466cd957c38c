"""Never two attempts of a step run at once, never a run lost: step leases on real
workers, counted by the step function itself (not by the store)."""

from __future__ import annotations

import base64
import json
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from orchestrator.runtime.catalog import discover
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.runtime.recovery import Recovery
from orchestrator.settings import Settings
from orchestrator.store.leases import Leases
from tests.integration.conftest import (
    kill_while_running,
    make_settings,
    private_stack,
    statuses,
    wait_run,
)
from tests.integration.flows import (
    HANG_VARIABLE,
    HUNG_MARK,
    Counted,
    hung_fan,
    line_across_units,
    line_count,
    long_count,
    random_nsp_60,
    zigzag_11,
)
from tests.integration.flows_sentinel import (
    COUNT_FILE_VARIABLE,
    executions,
    ran_alone,
    ran_once_each,
    restart_long,
)
from tests.support.redis_server import RedisServer
from tests.support.wait import wait_until
from tests.support.workers import TEST_PACKAGES, WorkerProcess, stop_workers, supervise

pytestmark = pytest.mark.redis


class Pool(Counted):
    """A private Redis, workers on it, and a coordinator."""

    def __init__(self, server: RedisServer, workers: list[WorkerProcess],
                 coord: Coordinator) -> None:
        self.server = server
        self.workers = workers
        self.coord = coord
        self.r = redis.Redis.from_url(server.url, decode_responses=True)


def _pool(redis_binary: str, n: int, pool: str, concurrency: int,
          **settings: Any) -> Iterator[Pool]:
    with private_stack(redis_binary, [f"l{i}" for i in range(n)], pool=pool,
                       concurrency=concurrency, **settings) as (server, coord, workers):
        yield Pool(server, workers, coord)


@pytest.fixture(params=["threads", "prefork"])
def busy_pool(request: pytest.FixtureRequest, redis_binary: str) -> Iterator[Pool]:
    pool = str(request.param)
    yield from _pool(redis_binary, 2, pool, 16 if pool == "threads" else 3)


def test_no_step_runs_twice_in_healthy_operation(busy_pool: Pool) -> None:
    """Many parents finish at nearly the same time in these shapes: each completion claims
    and publishes its children.  Every step function must run exactly once."""
    coord = busy_pool.coord
    runs = [coord.submit(zigzag_11) for _ in range(30)]
    runs += [coord.submit(random_nsp_60) for _ in range(8)]
    for rid in runs:
        view = wait_run(coord, rid, timeout_s=240)
        assert view.run.status.value == "succeeded", statuses(view)
    for rid in runs:
        steps = coord.view(rid).steps
        counts = busy_pool.executions(rid)
        assert counts == {s.step_id: 1 for s in steps}, (rid, counts)
        assert busy_pool.overlaps(rid) == {}


@pytest.fixture
def default_pool(redis_binary: str) -> Iterator[Pool]:
    yield from _pool(redis_binary, 2, "prefork", 1)


def test_a_step_whose_script_sent_its_chain_on_sends_no_release(default_pool: Pool
                                                                 ) -> None:
    """The script that ends a chain step and sends the chain's next task settles the
    step's lease in that call: the worker's main process then sends no release for it
    (the unit's terminal step, whose unit completes instead, still gets one).  Every
    step runs once and every lease ends settled, out of the expiry index; and as no step
    has a concurrency limit, no step's end looks for a concurrency slot to give up."""
    coord, r = default_pool.coord, default_pool.r
    seen: list[str] = []
    stop = threading.Event()

    def monitor() -> None:
        with redis.Redis.from_url(default_pool.server.url).monitor() as m:
            for cmd in m.listen():
                if stop.is_set():
                    return
                seen.append(str(cmd["command"]))

    watcher = threading.Thread(target=monitor, daemon=True)
    watcher.start()
    time.sleep(0.3)  # MONITOR is on
    run_id = coord.submit(line_count)
    view = wait_run(coord, run_id, timeout_s=60)
    assert view.run.status.value == "succeeded", statuses(view)
    keys = coord.store.keys
    wait_until(lambda: r.zcount(keys.lease_index(), "-inf", "+inf") == 0, 10.0,
               message="a lease of the run is still in the expiry index")
    time.sleep(1.0)  # a release the keeper would send comes within a tick
    stop.set()
    r.ping()
    watcher.join(5)
    released = [c.split()[6] for c in seen
                if c.startswith("FCALL orch_release_lease") and run_id in c]
    assert released == ["s5"], released
    slot_reads = [c for c in seen if c.startswith("HGET") and keys.slots(run_id) in c]
    assert slot_reads == [], slot_reads
    assert any(c.startswith("FCALL orch_step_transition") and run_id in c for c in seen)
    assert default_pool.executions(run_id) == {f"s{i}": 1 for i in range(6)}
    assert default_pool.overlaps(run_id) == {}
    leases = r.hgetall(keys.leases(run_id))
    assert sorted(leases) == [f"s{i}" for i in range(6)]
    assert all(v.endswith("|settled") for v in leases.values()), leases


def test_killed_worker_step_runs_again_within_seconds_with_default_settings(
        default_pool: Pool) -> None:
    """Default settings: the visibility timeout is an hour, the lease a few seconds."""
    coord = default_pool.coord
    assert coord.settings.visibility_timeout_s >= 3600
    run_id = coord.submit(long_count)
    victim, killed_at = kill_while_running(coord, run_id, "long", default_pool.workers,
                                           default_pool.r)
    view = wait_run(coord, run_id, timeout_s=90)
    assert view.run.status.value == "succeeded", statuses(view)
    rec = next(s for s in view.steps if s.step_id == "long")
    assert rec.worker != victim.name and rec.started_at is not None
    again_s = rec.started_at - killed_at
    print(f"step ran again {again_s:.1f} s after SIGKILL (lease "
          f"{coord.settings.lease_s} s, visibility timeout "
          f"{coord.settings.visibility_timeout_s} s)")
    assert again_s <= 30
    assert default_pool.executions(run_id) == {"long": 2, "after_long": 1}
    assert default_pool.overlaps(run_id) == {}


def test_a_worker_killed_at_a_unit_boundary_of_a_long_line_loses_nothing(
        default_pool: Pool) -> None:
    """A line longer than a unit (70 steps: three units of at most 32): the worker running
    the first unit's last step is SIGKILLed mid-step; that step runs again on the other
    worker, its unit completes, the next unit is published once, and every other step runs
    exactly once, never two executions at once (counted in the steps)."""
    coord = default_pool.coord
    plan = coord.compile(line_across_units).plan
    assert [len(u.steps) for u in plan.units] == [32, 32, 6]
    run_id = coord.submit(line_across_units)
    victim, _ = kill_while_running(coord, run_id, "s31", default_pool.workers,
                                   default_pool.r)
    view = wait_run(coord, run_id, timeout_s=90)
    assert view.run.status.value == "succeeded", statuses(view)
    assert next(s for s in view.steps if s.step_id == "s31").worker != victim.name
    assert default_pool.executions(run_id) == {
        f"s{i}": 2 if i == 31 else 1 for i in range(70)}
    assert default_pool.overlaps(run_id) == {}


@pytest.fixture
def short_lease_pool(redis_binary: str) -> Iterator[Pool]:
    yield from _pool(redis_binary, 2, "prefork", 2, lease_s=2.0, visibility_timeout_s=3)


def test_a_step_longer_than_lease_and_visibility_timeout_runs_once(
        short_lease_pool: Pool) -> None:
    """7 s of work under a 2 s lease (renewed) and a 3 s visibility timeout (the broker
    redelivers the message while it runs: the copies must not run it)."""
    coord = short_lease_pool.coord
    run_id = coord.submit(long_count)
    view = wait_run(coord, run_id, timeout_s=90)
    assert view.run.status.value == "succeeded", statuses(view)
    assert short_lease_pool.executions(run_id) == {"long": 1, "after_long": 1}
    assert short_lease_pool.overlaps(run_id) == {}


def test_a_lease_redis_lost_is_taken_back_and_the_step_runs_on_once(
        short_lease_pool: Pool) -> None:
    """Redis loses a running step's lease (a restart or a failover that lost the last
    writes; here the lease alone is deleted): the holder's keeper takes it back at its
    next renewal, the attempt is not stopped and runs once, and a copy of its message
    delivered meanwhile (the 3 s visibility timeout) does not run it."""
    coord = short_lease_pool.coord
    run_id = coord.submit(long_count)
    leases = coord.store.keys.leases(run_id)
    r = short_lease_pool.r

    def running_held() -> bool:
        return bool(r.hget(leases, "long")) and short_lease_pool.executions(run_id) == {
            "long": 1}

    wait_until(running_held, 30, message="the long step never began")
    time.sleep(1.2)  # renewed (every 0.5 s): its keeper saw it hold the lease
    token = str(r.hget(leases, "long")).split("|")[0]
    assert r.hdel(leases, "long") == 1
    wait_until(lambda: r.hget(leases, "long"), 5, message="the lease was not taken back")
    assert str(r.hget(leases, "long")).split("|")[0] == token
    view = wait_run(coord, run_id, timeout_s=90)
    assert view.run.status.value == "succeeded", statuses(view)
    assert short_lease_pool.executions(run_id) == {"long": 1, "after_long": 1}
    assert short_lease_pool.overlaps(run_id) == {}
    logs = "".join(w.tail(5000) for w in short_lease_pool.workers)
    assert "Redis had lost its lease" in logs
    assert "stopping this attempt" not in logs


@pytest.fixture
def no_stall_pool(redis_binary: str) -> Iterator[Pool]:
    yield from _pool(redis_binary, 1, "prefork", 2, stall_s=600.0)


def test_a_chain_step_whose_end_the_store_refuses_still_sends_its_chain_on(
        no_stall_pool: Pool) -> None:
    """The store refuses a chain step's final move (its record, here set by hand while the
    step runs, is one the table does not move from): the script that would have sent the
    chain's next task with the record sent nothing, so Celery sends it as for any task.
    The next step decides by the record (skipped: its upstream did not succeed) and the
    run ends long before the stalled-run pass (ten minutes here) would find it; each step
    function ran at most once."""
    coord, r = no_stall_pool.coord, no_stall_pool.r
    run_id = coord.submit(long_count)
    wait_until(lambda: no_stall_pool.executions(run_id) == {"long": 1}, 30,
               message="the long step never began")
    steps = coord.store.keys.steps(run_id)
    rec = json.loads(str(r.hget(steps, "long")))
    assert rec["status"] == "running"
    r.hset(steps, "long", json.dumps({**rec, "status": "cancelled"}))
    view = wait_run(coord, run_id, timeout_s=60)
    assert view.run.status.terminal, statuses(view)
    assert statuses(view) == {"long": "cancelled", "after_long": "skipped"}
    assert no_stall_pool.executions(run_id) == {"long": 1}
    assert no_stall_pool.overlaps(run_id) == {}


def test_a_task_hung_after_its_step_ended_is_taken_over(hanging_pool: Pool) -> None:
    """A task records its step's success, then hangs before its fan-out has gone out
    (the first publish of one branch never returns; its worker renews the lease all the
    while): the stalled-run pass (``stall_s`` 3 s here) takes the lease from it and puts
    its message back, the worker's keeper kills the hung pool process at its next
    renewal, and the copy settles the step and carries the fan-out on.  Each step
    function runs once; before, the run stayed stuck for as long as the process hung."""
    coord = hanging_pool.coord
    run_id = coord.submit(hung_fan)
    mark = Path(tempfile.gettempdir()) / f"{HUNG_MARK}{run_id}"
    try:
        view = wait_run(coord, run_id, timeout_s=90)
        assert mark.exists(), "the task never hung"
    finally:
        mark.unlink(missing_ok=True)
    assert view.run.status.value == "succeeded", statuses(view)
    assert hanging_pool.executions(run_id) == {s.step_id: 1 for s in view.steps}
    assert hanging_pool.overlaps(run_id) == {}
    def logs() -> str:
        return "".join(w.tail(3000) for w in hanging_pool.workers)

    assert "its lease is taken back" in logs()
    wait_until(lambda: "hang_split of run" in logs() and "stopping this attempt" in logs(),
               15, message=lambda: "the hung attempt was not stopped:\n" + logs()[-3000:])


@pytest.fixture
def quick_claims_pool(redis_binary: str) -> Iterator[Pool]:
    yield from _pool(redis_binary, 1, "prefork", 2, claim_grace_s=1.0)


def test_a_submit_cut_short_between_claim_and_publish_is_published(
        quick_claims_pool: Pool) -> None:
    """The coordinator created the run and claimed its first units, then died before it
    published them: the reaper publishes them once the claim is stale."""
    coord = quick_claims_pool.coord
    d = coord.compile(zigzag_11)
    coord.store.create_run("cut-short", d.wf, d.plan, {})
    assert coord.store.claim_sources("cut-short", d.plan.sources)  # ...and no publish
    view = wait_run(coord, "cut-short", timeout_s=60)
    assert view.run.status.value == "succeeded", statuses(view)
    assert quick_claims_pool.executions("cut-short") == {s.step_id: 1 for s in view.steps}


@pytest.fixture
def quick_stall_pool(redis_binary: str) -> Iterator[Pool]:
    yield from _pool(redis_binary, 1, "prefork", 2, stall_s=3.0)


@pytest.fixture
def hanging_pool(redis_binary: str) -> Iterator[Pool]:
    yield from _pool(redis_binary, 1, "prefork", 2, stall_s=3.0, env={HANG_VARIABLE: "1"})


def test_a_submit_cut_short_between_create_and_publish_is_published(
        quick_stall_pool: Pool) -> None:
    """A submit claims and publishes in one script after creating the run: a coordinator
    that died in between left a run nobody claimed.  The reaper's stalled-run pass claims
    and publishes its first units once the run was quiet for ``stall_s``; each step runs
    once."""
    coord = quick_stall_pool.coord
    d = coord.compile(zigzag_11)
    coord.store.create_run("cut-shorter", d.wf, d.plan, {})  # ...and nothing more
    view = wait_run(coord, "cut-shorter", timeout_s=60)
    assert view.run.status.value == "succeeded", statuses(view)
    assert quick_stall_pool.executions("cut-shorter") == {s.step_id: 1 for s in view.steps}


def test_status_and_runs_survive_a_half_expired_run(quick_claims_pool: Pool) -> None:
    from click.testing import CliRunner

    from orchestrator.cli.main import cli

    coord = quick_claims_pool.coord
    done = wait_run(coord, coord.submit(zigzag_11)).run.run_id
    broken = wait_run(coord, coord.submit(zigzag_11)).run.run_id
    r = quick_claims_pool.r
    r.delete(coord.store.keys.steps(done))  # retention took this key first
    r.hdel(coord.store.keys.run(broken), "workflow", "version")  # a partial record
    env = {"ORCH_REDIS_URL": quick_claims_pool.server.url,
           "ORCH_WORKFLOW_PACKAGES": '["workflows", "tests.integration.flows", '
                                     '"tests.integration.flows_queues"]'}
    runs = CliRunner().invoke(cli, ["runs"], env=env)
    assert runs.exit_code == 0, runs.output
    assert done in runs.output and f"{broken}  (damaged record" in runs.output
    status = CliRunner().invoke(cli, ["status", done], env=env)
    assert status.exit_code == 0 and "pending" in status.output  # its steps are gone


def _lose(r: redis.Redis, keys: Any) -> None:
    """Every queued message of the run is gone."""
    assert r.llen("default") > 0
    r.delete("default")


def _strand(r: redis.Redis, keys: Any) -> None:
    """Every queued message sits unacknowledged, as kombu's pop and bookkeeping leave it
    when the popping worker loses Redis before it begins the task."""
    stranded = 0
    while (raw := r.lpop("default")) is not None:
        msg = json.loads(raw)
        tag = msg["properties"]["delivery_tag"]
        r.hset(keys.unacked(), tag, json.dumps([msg, "", "default"]))
        r.zadd(keys.unacked_index(), {tag: time.time()})
        stranded += 1
    assert stranded > 0


@pytest.mark.parametrize("how", [_lose, _strand], ids=["lost", "stranded_unacknowledged"])
def test_a_run_whose_messages_went_missing_is_replayed(
        redis_binary: str, how: Callable[[redis.Redis, Any], None]) -> None:
    """kombu pops a message, then records it as unacknowledged: a worker killed between the
    two loses it (``lost``); a worker that lost Redis before it began a popped message
    leaves it unacknowledged until the visibility timeout, an hour (``stranded``).  Either
    way the reaper finds the run quiet, with no lease and no queued message, and publishes
    its units again; each step runs once (counted in the step)."""
    with RedisServer(binary=redis_binary) as server:
        s = make_settings(server.url, stall_s=2.0)
        coord = Coordinator(s, discover(s.workflow_packages))
        run_id = coord.submit(zigzag_11)
        r = redis.Redis.from_url(server.url, decode_responses=True)
        how(r, coord.store.keys)
        worker = WorkerProcess(server.url, "replay", concurrency=2, stall_s=2.0)
        try:
            worker.wait_ready(coord.app)
            view = wait_run(coord, run_id, timeout_s=60)
            assert view.run.status.value == "succeeded", statuses(view)
            counts = {k: int(v) for k, v in r.hgetall(f"test:exec:{run_id}").items()}
            assert counts == {s.step_id: 1 for s in view.steps}
        finally:
            worker.stop()


def test_a_message_lost_across_a_redis_restart_is_replayed_without_waiting_stall_s(
        redis_binary: str) -> None:
    """A run's queued message is lost and Redis restarts (SIGKILL, down 4 s, back from its
    AOF): the reaper sees the server's new ``run_id`` and, for the next ``stall_s``, looks
    at runs quiet for ``stall_after_restart_s`` (2 s here), so the run is replayed long
    before ``stall_s`` (ten minutes here, so that path cannot be what recovers it).  Two
    workers: the reaper lock runs out while Redis is down, and whichever takes it after
    has seen the restart too.  Each step runs once (counted in the step)."""
    with RedisServer(binary=redis_binary, appendonly=True,
                     extra_args=("--appendfsync", "always")) as server:
        quick = {"stall_s": 600.0, "stall_after_restart_s": 2.0}
        s = make_settings(server.url, **quick)
        coord = Coordinator(s, discover(s.workflow_packages))
        run_id = coord.submit(zigzag_11)
        r = redis.Redis.from_url(server.url, decode_responses=True)
        _lose(r, coord.store.keys)
        workers = [WorkerProcess(server.url, f"restart{i}", concurrency=2, **quick)
                   for i in range(2)]
        try:
            for w in workers:
                w.wait_ready(coord.app)
            time.sleep(3.0)  # reaper ticks: each worker knows the server before the restart
            assert r.hlen(f"test:exec:{run_id}") == 0, "a step ran"
            server.kill()
            time.sleep(4.0)  # longer than the reaper lock's 3 s
            server.restart()
            wait_until(server.ping, 30, message="redis did not come back")
            r = redis.Redis.from_url(server.url, decode_responses=True)
            wait_until(lambda: supervise(workers) >= 0 and coord.store.run(run_id).status
                       .terminal, 60, interval_s=0.2,
                       message=lambda: f"not replayed: {statuses(coord.view(run_id))}")
            view = coord.view(run_id)
            assert view.run.status.value == "succeeded", statuses(view)
            counts = {k: int(v) for k, v in r.hgetall(f"test:exec:{run_id}").items()}
            assert counts == {s.step_id: 1 for s in view.steps}
            logs = [w.tail(400) for w in workers]
            assert all("Redis restarted or failed over" in log for log in logs)
            assert any(f"run {run_id} made no progress" in log for log in logs)
        finally:
            stop_workers(workers)


def test_a_restart_that_lost_a_running_step_s_lease_starts_no_second_attempt(
        redis_binary: str, tmp_path: Path) -> None:
    """Redis restarts from a snapshot taken before a step began, as a restart from an AOF
    ``everysec`` loses its last second: the step's lease, its record ``running`` and the
    pop of its message are gone, so the message is back in its queue while the first
    attempt still runs.  The first attempt's worker is frozen (SIGSTOP) across the restart
    so that its keeper cannot take the lease back first, and a second worker pops the copy.
    Within the restart grace (a lease length after the restart) the copy does not take the
    step run: it is deferred; the first worker, thawed, takes its lost lease back, and the
    copy meets it.  The step counts its executions in a file (this Redis loses writes):
    never two at once, and the run succeeds.  Without the grace the copy ran while the
    first attempt was frozen mid-step, which then went on."""
    count_file = tmp_path / "executions.jsonl"
    packages = (*TEST_PACKAGES, "tests.integration.flows_sentinel")
    quick = {"lease_s": 12.0, "workflow_packages": packages}
    env = {COUNT_FILE_VARIABLE: str(count_file)}
    with RedisServer(binary=redis_binary) as server:
        s = Settings(redis_url=server.url, **quick)  # type: ignore[arg-type]
        coord = Coordinator(s, discover(s.workflow_packages))
        run_id = coord.submit(restart_long)
        r = redis.Redis.from_url(server.url, decode_responses=True)
        assert r.llen("default") == 1
        r.save()  # the snapshot: the run and its queued message; no lease, no pop
        first = WorkerProcess(server.url, "first", pool="threads", concurrency=2, env=env,
                              **quick)
        workers = [first]
        try:
            first.wait_ready(coord.app)
            wait_until(lambda: any(e["event"] == "start" for e in executions(count_file)),
                       30, interval_s=0.05, message="the step never started")
            time.sleep(quick["lease_s"] / 4 + 1.0)  # a renewal confirmed the lease
            os.kill(first.proc.pid, signal.SIGSTOP)  # mid-step, its keeper with it
            try:
                server.kill()
                server.restart()  # back from the snapshot: the message is queued again
                second = WorkerProcess(server.url, "second", pool="threads", concurrency=2,
                                       env=env, **quick)
                workers.append(second)
                second.wait_ready(coord.app)
                wait_until(lambda: "step=long]" in second.tail(100), 20, interval_s=0.1,
                           message=lambda: "the copy never came:\n" + second.tail(60))
                time.sleep(1.0)  # the copy begins (without the grace: runs) meanwhile
            finally:
                os.kill(first.proc.pid, signal.SIGCONT)
            wait_until(lambda: supervise(workers) >= 0 and coord.store.run(run_id).status
                       .terminal, 60, interval_s=0.2,
                       message=lambda: f"did not end: {statuses(coord.view(run_id))}\n"
                       + "\n".join(w.tail(60) for w in workers))
            view = coord.view(run_id)
            assert view.run.status.value == "succeeded", statuses(view)
            ran_alone(executions(count_file), "long")
            assert statuses(view) == {"long": "succeeded", "after": "succeeded"}
            ran_once_each(executions(count_file), ["long", "after"])
            assert "Redis had lost its lease" in first.tail(400)
        finally:
            stop_workers(workers)


def test_a_message_a_dead_worker_held_prefetched_goes_back_to_its_queue(
        redis_binary: str) -> None:
    """A worker killed with messages prefetched leaves them unacknowledged, with no lease
    (its steps never began).  While a live worker lists them as its own, they stay; once
    no live worker does, the reaper puts them back within about a lease, long before the
    stalled-run pass (ten minutes here, so it cannot be what recovers them) or the
    visibility timeout (an hour).  Each step runs once (counted in the step)."""
    with RedisServer(binary=redis_binary) as server:
        s = make_settings(server.url, stall_s=600.0, lease_s=3.0)
        coord = Coordinator(s, discover(s.workflow_packages))
        keys = coord.store.keys
        run_id = coord.submit(zigzag_11)
        r = redis.Redis.from_url(server.url, decode_responses=True)
        _strand(r, keys)
        tags = {str(t) for t in r.hkeys(keys.unacked())}
        leases = Leases.from_url(s.redis_target, keys, timeout_s=5.0)
        leases.hold("alive@elsewhere", sorted(tags), 600.0)  # a live worker holds them
        worker = WorkerProcess(server.url, "rescuer", concurrency=2, stall_s=600.0,
                               lease_s=3.0)
        try:
            worker.wait_ready(coord.app)
            time.sleep(3 * s.lease_s)  # several reaper passes
            unacked = {str(t) for t in r.hkeys(keys.unacked())}
            assert unacked == tags, "a held message was taken back"
            assert r.hlen(f"test:exec:{run_id}") == 0, "a step ran"
            leases.hold("alive@elsewhere", sorted(tags), 0.5)  # that worker dies
            view = wait_run(coord, run_id, timeout_s=60)
            assert view.run.status.value == "succeeded", statuses(view)
            counts = {k: int(v) for k, v in r.hgetall(f"test:exec:{run_id}").items()}
            assert counts == {s.step_id: 1 for s in view.steps}
            assert "no live worker held it" in worker.tail(400)
        finally:
            worker.stop()


def test_a_replayed_unit_carries_its_canvas_past_a_join_in_its_middle(
        redis_binary: str) -> None:
    """One unit, a -> (p1 | p2) -> join -> c -> d: d's message is lost after the join and
    c ended.  The replay publishes the unit again from its start: the ended steps and the
    join carry the canvas on (their leases reopened) instead of dropping it, d runs once,
    and the run was replayed once, not at every reaper pass while its copies settled."""
    packages = [*TEST_PACKAGES, "tests.integration.flows_aside"]
    with RedisServer(binary=redis_binary) as server:
        s = Settings(redis_url=server.url, stall_s=2.0, workflow_packages=tuple(packages))
        coord = Coordinator(s, discover(s.workflow_packages))
        r = redis.Redis.from_url(server.url, decode_responses=True)
        first = WorkerProcess(server.url, "first", concurrency=2, stall_s=2.0,
                              workflow_packages=packages)
        try:
            first.wait_ready(coord.app)
            run_id = coord.submit("mid_join")
            wait_until(lambda: r.llen("aside") == 1, 30, message="d was never published")
        finally:
            first.stop()
        r.delete("aside")  # d's message is lost
        assert statuses(coord.view(run_id))["d"] == "queued"
        second = WorkerProcess(server.url, "second", concurrency=2, stall_s=2.0,
                               queues=("default", "aside"), workflow_packages=packages)
        try:
            second.wait_ready(coord.app)
            view = wait_run(coord, run_id, timeout_s=60)
            assert view.run.status.value == "succeeded", statuses(view)
            counts = {k: int(v) for k, v in r.hgetall(f"test:exec:{run_id}").items()}
            assert counts == {"a": 1, "p1": 1, "p2": 1, "c": 1, "d": 1}
            replays = second.tail(400).count(f"run {run_id} made no progress")
            assert replays == 1, second.tail(80)
        finally:
            second.stop()


def test_a_deferred_copy_that_comes_due_goes_ahead_of_the_backlog(
        redis_binary: str) -> None:
    """A copy deferred while another delivery held its step run's lease waits in a store
    timer; when it comes due (the holder may have died, its run waits on it) the
    reaper's timer pass publishes it at the head of its queue, not behind the runs
    queued since (at the tail it waited its turn: 48 and 58 s in ``bench.chaos``'s
    ``all``).  No worker: the queue's order is read."""
    with RedisServer(binary=redis_binary) as server:
        s = make_settings(server.url)
        coord = Coordinator(s, discover(s.workflow_packages))
        held = coord.submit(line_count)
        r = redis.Redis.from_url(server.url, decode_responses=True)
        first = json.loads(r.lindex("default", -1) or "{}")
        assert _run_of(first) == held
        r.delete("default")  # its delivery holds the lease now, as far as the queue goes
        backlog = [coord.submit(line_count) for _ in range(5)]
        assert r.llen("default") == len(backlog)
        copy = coord.app.signature(first["headers"]["task"], kwargs=_kwargs(first),
                                   queue="default")
        coord.progress.leases.defer_copy(held, "s0", dict(copy), 60, 0.0)
        recovery = Recovery(coord.progress, coord.progress.leases, coord.settings)
        wait_until(lambda: recovery.fire_timers() == 1, 10, interval_s=0.1,
                   message="the deferred copy never came due")
        order = [_run_of(json.loads(m)) for m in reversed(r.lrange("default", 0, -1))]
        assert order == [held, *backlog]  # popped first, then the backlog in its order


def _kwargs(message: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of a Celery task message (protocol 2, body in base64)."""
    body = json.loads(base64.b64decode(message["body"]))
    return dict(body[1])


def _run_of(message: dict[str, Any]) -> str:
    return str(_kwargs(message)["run_id"])
