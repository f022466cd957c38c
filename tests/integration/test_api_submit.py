"""Submitting over HTTP at speed: the API served by several processes
(``python -m orchestrator.api --workers 2``), the common submit on the event loop
(:mod:`orchestrator.runtime.submitter`; the first of a workflow, and the rest, in one trip
to a worker thread), and publishing through :mod:`orchestrator.runtime.broker` (one Redis
client per channel).

Each run's steps count their own executions in Redis (``flows.count``: ``test:exec:<run>``
by step, ``test:overlap:<run>`` for two executions at once), so these tests see a step
run twice, or two of its executions overlap, or a run that never ends.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis

from orchestrator.api.app import create_api
from orchestrator.api.server import ServerThread
from orchestrator.dev import procs
from orchestrator.dev.localredis import free_loopback_port
from orchestrator.runtime import broker
from orchestrator.runtime.celeryconf import client_app
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.runtime.submitter import AsyncSubmitter
from orchestrator.settings import Settings
from orchestrator.store import connection
from tests.integration.conftest import private_stack
from tests.support.api import RW_TOKEN, TOKENS, api_settings, bearer
from tests.support.wait import wait_until
from tests.support.workers import worker_env

pytestmark = pytest.mark.redis

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = "zigzag_11"  # 11 counted steps: units, counters and chains (tests/integration/flows)
STEPS = 11
# the reaper publishes what a dead submitter claimed (claim_grace_s), and replays a run
# that a submitter left without a claim (stall_s): both quick here
RECOVERY = {"claim_grace_s": 1.0, "stall_s": 3.0, "reaper_interval_s": 0.5}


@contextmanager
def api_process(redis_url: str, workers: int) -> Iterator[tuple[str, object]]:
    """``python -m orchestrator.api --workers N`` on a free port, ready; stopped (or
    found killed) at the end."""
    port = free_loopback_port()
    env = worker_env(redis_url, api_tokens=TOKENS, api_rate_per_token="1000000/second")
    env["PYTHONPATH"] = str(REPO)
    log = procs.temp_log("test-api-submit-")
    proc = procs.spawn([sys.executable, "-m", "orchestrator.api", "--port", str(port),
                        "--log-level", "warning", "--workers", str(workers)],
                       log=log, env=env, cwd=REPO)
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, "the API exited:\n" + procs.log_tail(log)
        try:
            return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(ready, 60, message="the API did not start")
        yield base, proc
    finally:
        procs.stop(proc, 10)
        log.unlink(missing_ok=True)


def burst(base: str, n: int, clients: int, stop: threading.Event | None = None
          ) -> tuple[list[str], int, list[str]]:
    """POST up to ``n`` runs of :data:`WORKFLOW` from ``clients`` threads (until ``stop``
    is set); return the ids of those answered 201, how many got no answer, and the
    answers that were not a created running run."""
    created: list[str] = []
    bad: list[str] = []
    failed = 0
    lock = threading.Lock()
    todo = iter(range(n))

    def work() -> None:
        nonlocal failed
        with httpx.Client(base_url=base, headers=bearer(RW_TOKEN), timeout=30) as http:
            while stop is None or not stop.is_set():
                with lock:
                    if next(todo, None) is None:
                        return
                try:
                    resp = http.post(f"/v1/workflows/{WORKFLOW}/runs", json={})
                except httpx.TransportError:
                    with lock:
                        failed += 1
                    continue
                body = resp.json()
                with lock:
                    if resp.status_code == 201 and body["status"] == "running" \
                            and len(body["steps"]) == STEPS:
                        created.append(body["run_id"])
                    else:
                        bad.append(f"{resp.status_code} {resp.text[:300]}")

    threads = [threading.Thread(target=work) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return created, failed, bad


def assert_each_step_once(r: redis.Redis, coord: Coordinator, run_ids: list[str]) -> None:
    """Every run ends succeeded, each of its steps executed exactly once, never two at
    once."""
    def ended() -> bool:
        return all(coord.store.run(rid).status.terminal for rid in run_ids)

    wait_until(ended, 120, interval_s=0.25, message="runs did not end: " + json.dumps(
        {rid: coord.store.run(rid).status.value for rid in run_ids
         if not coord.store.run(rid).status.terminal}))
    for rid in run_ids:
        assert coord.store.run(rid).status.value == "succeeded", rid
        execs = {k: int(v) for k, v in r.hgetall(f"test:exec:{rid}").items()}
        assert len(execs) == STEPS and set(execs.values()) == {1}, (rid, execs)
        assert not r.hgetall(f"test:overlap:{rid}"), rid


def test_two_api_processes_start_every_run_once(redis_binary: str) -> None:
    """Concurrent submits served by two API processes: every run answered 201 runs to
    the end, each step executed once."""
    with private_stack(redis_binary, ["w"], concurrency=2, **RECOVERY) as (server, coord,
                                                                             _), \
            api_process(server.url, workers=2) as (base, _proc):
        r = redis.Redis.from_url(server.url, decode_responses=True)
        created, failed, bad = burst(base, 40, clients=4)
        assert not bad and failed == 0 and len(set(created)) == 40
        assert_each_step_once(r, coord, created)
        # the index holds exactly these runs: no submit made a second one
        assert set(r.zrange(coord.store.keys.runs_index(), 0, -1)) == set(created)


def test_api_killed_mid_submits_loses_no_run(redis_binary: str) -> None:
    """SIGKILL the API (every process) while clients submit: each run it created,
    answered or not, runs to the end with each step executed once (a claim left
    unpublished is published by the reaper; a run left without a claim is replayed)."""
    with private_stack(redis_binary, ["w"], concurrency=2, **RECOVERY) as (server, coord,
                                                                             _), \
            api_process(server.url, workers=2) as (base, proc):
        r = redis.Redis.from_url(server.url, decode_responses=True)
        index = coord.store.keys.runs_index()
        stop = threading.Event()
        result: list[tuple[list[str], int, list[str]]] = []
        sender = threading.Thread(target=lambda: result.append(
            burst(base, 10_000, clients=4, stop=stop)))
        sender.start()
        try:
            wait_until(lambda: r.zcard(index) >= 20, 60, message="no runs were created")
            procs.kill_group(proc)  # mid-burst: some submits are cut anywhere in between
        finally:
            stop.set()
            sender.join(60)
        answered, _, bad = result[0]
        assert not bad  # refused or broken answers (a cut connection is no answer)
        made = r.zrange(index, 0, -1)
        assert set(answered) <= set(made)
        assert_each_step_once(r, coord, made)


@contextmanager
def threaded_submits(coord: Coordinator) -> Iterator[list[str]]:
    """Record the workflows of the submits that take the thread path
    (``Coordinator.submit``) while the block runs."""
    seen: list[str] = []
    real = coord.submit

    def submit(workflow: Any, *args: Any, **kwargs: Any) -> str:
        seen.append(str(workflow))
        return real(workflow, *args, **kwargs)

    coord.submit = submit  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        del coord.submit


def test_submits_on_the_event_loop_run_each_step_once(redis_binary: str) -> None:
    """The first submit of a workflow takes the thread path (it compiles and stores the
    version, and builds its message templates), as does the first in another priority
    band; every later one is started on the event loop, and answers as the thread path
    does: each run runs to the end, each step executed once."""
    with private_stack(redis_binary, ["w"], concurrency=2) as (server, coord, _), \
            ServerThread(create_api(api_settings(server.url), coordinator=coord)) as api, \
            threaded_submits(coord) as threaded:
        r = redis.Redis.from_url(server.url, decode_responses=True)
        first = httpx.post(f"{api.url}/v1/workflows/{WORKFLOW}/runs", json={},
                           headers=bearer(RW_TOKEN), timeout=30)
        assert first.status_code == 201 and threaded == [WORKFLOW]
        created, failed, bad = burst(api.url, 30, clients=4)
        assert not bad and failed == 0 and len(set(created)) == 30
        assert threaded == [WORKFLOW]  # none of the 30 went to a thread
        # the loop's answer has the thread path's shape: the same fields, every step
        loop = httpx.post(f"{api.url}/v1/workflows/{WORKFLOW}/runs", json={},
                          headers=bearer(RW_TOKEN), timeout=30).json()
        assert set(loop) == set(first.json())
        assert [s["step_id"] for s in loop["steps"]] == \
            [s["step_id"] for s in first.json()["steps"]]
        assert {s["status"] for s in loop["steps"]} <= {"pending", "queued", "running",
                                                        "succeeded"}
        # a new band's first submit builds its message templates: in a thread, once
        high = [httpx.post(f"{api.url}/v1/workflows/{WORKFLOW}/runs", json={},
                           params={"priority": "high"}, headers=bearer(RW_TOKEN),
                           timeout=30) for _ in range(3)]
        assert [h.status_code for h in high] == [201] * 3
        assert threaded == [WORKFLOW, WORKFLOW]
        assert_each_step_once(r, coord, [first.json()["run_id"], *created, loop["run_id"],
                                         *(h.json()["run_id"] for h in high)])


def test_a_submit_on_the_loop_cancelled_midway_still_publishes(redis_binary: str) -> None:
    """A submit cancelled (its client gone) between creating the run and publishing it
    publishes it all the same, at once: no run is left for the stalled-run replay (a
    minute later by default), and it runs each step once."""
    with private_stack(redis_binary, ["w"], concurrency=2) as (server, coord, _):
        r = redis.Redis.from_url(server.url, decode_responses=True)
        coord.submit(WORKFLOW, {})  # checks the schema, compiles and stores the version
        store = coord.store
        create = store.acreate_run
        run_id = "cancelled-midway"

        async def go() -> bool:
            aclient = connection.async_client(server.url, decode_responses=True)
            sub = AsyncSubmitter(coord, aclient)
            d = sub.ready(WORKFLOW)
            assert d is not None
            with anyio.CancelScope() as scope:
                async def created_then_cancelled(*args: Any, **kwargs: Any) -> None:
                    await create(*args, **kwargs)
                    scope.cancel()  # the caller goes away
                    await anyio.sleep(0)  # a checkpoint: cancelled here unless shielded

                store.acreate_run = created_then_cancelled  # type: ignore[method-assign]
                try:
                    await sub.submit(d, {}, run_id)
                finally:
                    del store.acreate_run
                await anyio.sleep(1)  # cancelled here, after the submit
            await aclient.aclose()
            return scope.cancelled_caught

        assert anyio.run(go)
        assert r.smembers(store.keys.units_published(run_id))  # published at once
        assert_each_step_once(r, coord, [run_id])


def test_submits_on_the_loop_across_a_redis_restart(redis_binary: str) -> None:
    """Redis restarts between submits on the event loop: a submit during the outage is
    a 503, the API's pool reconnects, and every run answered 201 runs to the end with
    each step executed once."""
    with private_stack(redis_binary, ["w"], concurrency=2, appendonly=True,
                       **RECOVERY) as (server, coord, _), \
            ServerThread(create_api(api_settings(server.url), coordinator=coord)) as api, \
            threaded_submits(coord) as threaded:
        r = redis.Redis.from_url(server.url, decode_responses=True)
        before, _, bad = burst(api.url, 10, clients=2)
        assert not bad and len(before) == 10
        compiled = len(threaded)  # the first submits of the workflow (1 or 2: 2 clients)
        # no step in flight across the restart: a step whose end could not be recorded
        # runs again (docs/reliability.md); what is tested here is the submit's pool
        assert_each_step_once(r, coord, before)
        server.stop()
        down = httpx.post(f"{api.url}/v1/workflows/{WORKFLOW}/runs", json={},
                          headers=bearer(RW_TOKEN), timeout=30)
        assert down.status_code == 503, down.text
        server.restart()  # the same port and data (AOF)
        wait_until(server.ping, 30, message="Redis did not return")
        after: list[str] = []

        def submitted() -> bool:
            got, _, _ = burst(api.url, 1, clients=1)
            after.extend(got)
            return bool(got)

        wait_until(submitted, 30, interval_s=0.2, message="no submit after the restart")
        more, _, bad = burst(api.url, 10, clients=2)
        assert not bad and len(more) == 10
        assert len(threaded) == compiled  # none after the restart went to a thread
        assert_each_step_once(r, coord, [*before, *after, *more])


def test_publisher_reuses_its_client_and_sends_what_kombu_sends(redis_url: str) -> None:
    """The coordinator's transport builds one Redis client per channel (kombu's builds
    one per message), and the messages it sends are kombu's Redis transport's."""
    ours = client_app(Settings(redis_url=redis_url))
    plain = client_app(Settings(redis_url=redis_url))
    plain.conf.broker_transport = None  # kombu's own, chosen by the URL
    with ours.connection_for_write() as conn:
        channel = conn.default_channel
        assert isinstance(channel, broker.Channel)
        assert channel._create_client() is channel._create_client()
    with plain.connection_for_write() as conn:
        assert not isinstance(conn.default_channel, broker.Channel)
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    queue = "test-publisher"
    r.delete(queue)
    for app in (plain, ours):
        app.send_task("step.test.count", kwargs={"run_id": "r", "step_id": "a"},
                      task_id="t-1", queue=queue)
    mine, kombus = (json.loads(m) for m in r.lrange(queue, 0, -1))  # LPUSH: newest first
    for m in (mine, kombus):
        m["properties"].pop("delivery_tag")  # a new one per message
        m["properties"].pop("reply_to")  # the app's own id (two apps here)
    assert mine == kombus
    r.delete(queue)
