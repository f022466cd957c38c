"""Runs on real workers with the run store on a three-master Redis Cluster
(``ORCH_REDIS_CLUSTER``) and the broker on a standalone Redis (``ORCH_BROKER_URL``): each
step counts its executions itself (through ``ctx.redis``, a cluster client, apart from
the run's records).

Every key of the store carries the hash tag ``{orch}``, so it lives on the one node that
serves that slot, and each script touches that node alone; Celery's result backend (its
chord counters) goes with the broker.  The tests check where the keys land, that every
step runs exactly once in healthy operation, and that a SIGKILLed worker's step runs
again within seconds and never twice at once (the lease's put-back in two steps, as with
the broker apart on a standalone store).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest
import redis

from orchestrator.api.app import create_api
from orchestrator.api.server import ServerThread
from orchestrator.errors import StoreUnavailable
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
from tests.support.api import RW_TOKEN, api_settings, bearer
from tests.support.cluster import RedisCluster
from tests.support.redis_server import RedisServer
from tests.support.wait import wait_until
from tests.support.workers import WorkerProcess, stop_workers

pytestmark = pytest.mark.redis

DURABLE = ("--appendfsync", "always")


@dataclass
class OnCluster(Counted):
    cluster: RedisCluster
    broker: RedisServer
    coord: Coordinator
    workers: list[WorkerProcess]
    r: redis.RedisCluster

    def keys_by_node(self) -> list[set[str]]:
        out = []
        for node in self.cluster.nodes:
            with node.client() as c:
                out.append({k.decode() for k in c.keys("*")})
        return out


@contextmanager
def running(cluster: RedisCluster, redis_binary: str) -> Iterator[OnCluster]:
    """Two workers (3 pool processes each) and a coordinator on ``cluster``, the broker
    on a standalone Redis of their own (AOF, every write synced, like the cluster's when
    it is durable)."""
    with RedisServer(binary=redis_binary, appendonly=True, extra_args=DURABLE) as broker:
        over = {"broker_url": broker.url, "redis_cluster": True, "lease_s": 3.0}
        s = make_settings(cluster.urls[0], **over)
        coord = Coordinator(s, discover(s.workflow_packages))
        workers = [WorkerProcess(cluster.urls[i], f"c{i}", concurrency=3, **over)
                   for i in (1, 2)]  # each worker given another node: all find the slot
        r = redis.RedisCluster.from_url(cluster.urls[0], decode_responses=True)
        try:
            for w in workers:
                w.wait_ready(coord.app)
            yield OnCluster(cluster, broker, coord, workers, r)
        except BaseException:
            for w in workers:
                print(f"--- worker {w.name}, last lines:\n{w.tail(40)}")
            raise
        finally:
            r.close()
            stop_workers(workers)


@pytest.fixture
def on_cluster(cluster: RedisCluster, redis_url: object,
               redis_binary: str) -> Iterator[OnCluster]:
    """``redis_url`` (the package's fixture) empties the cluster first."""
    with running(cluster, redis_binary) as it:
        yield it


def test_runs_complete_with_every_store_key_on_one_node_and_each_step_once(
        on_cluster: OnCluster) -> None:
    coord = on_cluster.coord
    assert coord.store.cluster and coord.store.keys.prefix == "{orch}"
    runs = [coord.submit(zigzag_11) for _ in range(10)]
    runs += [coord.submit(random_nsp_60) for _ in range(3)]
    for rid in runs:
        view = wait_run(coord, rid, timeout_s=120)
        assert view.run.status.value == "succeeded", statuses(view)
        assert on_cluster.executions(rid) == {s.step_id: 1 for s in view.steps}, rid
        assert on_cluster.overlaps(rid) == {}
    by_node = on_cluster.keys_by_node()
    store_nodes = [i for i, keys in enumerate(by_node) if any(k.startswith("{orch}:")
                                                             for k in keys)]
    assert len(store_nodes) == 1, by_node  # one slot, one node
    home = by_node[store_nodes[0]]
    assert any(k.startswith("{orch}:run:") for k in home)
    assert not [k for keys in by_node for k in keys if k.startswith("orch:")]
    # no queue, no kombu bookkeeping and no Celery result on the cluster: on the broker
    assert not [k for keys in by_node for k in keys
                if k in {"default", "unacked", "unacked_index"}
                or k.startswith(("_kombu", "celery-task-meta", "chord-unlock"))], by_node
    assert b"_kombu.binding.default" in set(on_cluster.broker.client().keys("*"))
    # the keepers' passes (leases, reaper, timers) ran all along without an error: a
    # pipeline with a command that names no key fails on a cluster, pass after pass
    errors = [line for w in on_cluster.workers for line in w.tail(20000).splitlines()
              if "ERROR/" in line]
    assert errors == [], errors[:5]
    checks = {f.check: f for f in redis_findings(coord)}
    assert checks["cluster"].ok and "one slot" in checks["cluster"].message, checks
    assert checks["schema"].ok and checks["broker redis"].ok, checks


def test_a_killed_workers_step_runs_once_more_and_never_twice_at_once(
        on_cluster: OnCluster) -> None:
    coord = on_cluster.coord
    run_id = coord.submit(long_count)
    victim, killed_at = kill_while_running(coord, run_id, "long", on_cluster.workers,
                                           on_cluster.r)  # type: ignore[arg-type]
    view = wait_run(coord, run_id, timeout_s=90)
    assert view.run.status.value == "succeeded", statuses(view)
    rec = next(s for s in view.steps if s.step_id == "long")
    assert rec.worker != victim.name and rec.started_at is not None
    again_s = rec.started_at - killed_at
    print(f"step ran again {again_s:.1f} s after SIGKILL (lease {coord.settings.lease_s} s)")
    assert again_s <= 30
    assert on_cluster.executions(run_id) == {"long": 2, "after_long": 1}
    assert on_cluster.overlaps(run_id) == {}


def test_the_api_submits_waits_lists_and_streams_on_the_cluster(
        on_cluster: OnCluster) -> None:
    """The API's asyncio clients (short, blocking and probe pools), its idempotency keys
    and its per-token rate limit all on the cluster's store node."""
    settings = api_settings(on_cluster.cluster.urls[2], redis_cluster=True,
                            broker_url=on_cluster.broker.url)
    with ServerThread(create_api(settings)) as api, \
            httpx.Client(base_url=api.url, headers=bearer(RW_TOKEN), timeout=30) as http:
        assert http.get("/readyz").status_code == 200
        key = {"Idempotency-Key": "cluster-once"}
        first = http.post("/v1/workflows/zigzag_11/runs", params={"wait": 60}, headers=key)
        assert first.status_code == 200, first.text
        assert first.json()["status"] == "succeeded"
        rid = first.json()["run_id"]
        again = http.post("/v1/workflows/zigzag_11/runs", headers=key)
        assert again.json()["run_id"] == rid, again.text
        ids = [http.post("/v1/workflows/zigzag_11/runs").json()["run_id"] for _ in range(4)]
        for other in ids:
            assert wait_run(on_cluster.coord, other).run.status.value == "succeeded"
        listed = http.get("/v1/runs", params={"workflow": "zigzag_11", "limit": 10}).json()
        assert {rid, *ids} <= {run["run_id"] for run in listed["runs"]}, listed
        events = http.get(f"/v1/runs/{rid}/events").text
        assert "succeeded" in events
        assert on_cluster.executions(rid) == {s: 1 for s in on_cluster.executions(rid)}
    by_node = on_cluster.keys_by_node()
    ours = [{k for k in keys if k.startswith("{orch}:")} for keys in by_node]
    home = next(keys for keys in ours if keys)
    assert [keys for keys in ours if keys] == [home], "the store's keys on one node"
    assert any(k.startswith("{orch}:ratelimit") for k in home), home
    assert any(k.startswith("{orch}:idem") for k in home), home


def _under_way(it: OnCluster) -> tuple[list[str], RedisServer]:
    """Eight runs submitted and some 20 of their steps run; and the node that serves the
    store's slot."""
    runs = [it.coord.submit(zigzag_11) for _ in range(8)]
    wait_until(lambda: sum(len(it.executions(r)) for r in runs) >= 20, 60,
               interval_s=0.05, message="the steps never got going")
    home = it.r.get_node_from_key(it.coord.store.keys.schema())
    return runs, next(n for n in it.cluster.nodes if n.port == home.port)


def test_the_store_node_crashing_mid_run_loses_no_run(redis_binary: str) -> None:
    """SIGKILL the node that serves the store's slot while steps run, bring it back from
    its AOF (it rejoins from its nodes.conf): while it is down the cluster answers
    ``CLUSTERDOWN`` (no replica holds its slots), which the workers wait out as an
    unreachable Redis.  Every run succeeds, every step ran, none twice at once."""
    with RedisCluster(redis_binary, durable=True) as cluster, \
            running(cluster, redis_binary) as it:
        coord = it.coord
        runs, node = _under_way(it)
        node.kill()
        time.sleep(1.0)
        node.restart()
        cluster.wait_ok()
        again = all_succeed_once_at_a_time(coord, runs, it.workers, it.executions,
                                           it.overlaps, it.r)
        print(f"store node crash: {len(runs)} runs succeeded; {again} step executions "
              "repeated")


def test_the_store_master_failing_over_to_its_replica_loses_no_run(
        redis_binary: str) -> None:
    """Three masters with a replica each: SIGKILL the master of the store's slot while
    steps run and leave it dead.  The cluster takes it for failed after 2 s and promotes
    its replica; the clients follow the ``MOVED`` replies, the leases' clock and the
    restart watch go to the promoted node (its ``run_id`` is new: the short stall
    threshold).  Every run succeeds, every step ran, none twice at once."""
    with RedisCluster(redis_binary, replicas=1) as cluster, \
            running(cluster, redis_binary) as it:
        coord = it.coord
        runs, master = _under_way(it)
        home = it.r.get_node_from_key(coord.store.keys.schema())
        master.kill()
        killed_at = time.time()

        def promoted() -> bool:  # until then the slot has no master: every command fails
            try:
                return coord.store.run(runs[0]) is not None
            except (redis.RedisError, StoreUnavailable):
                return False

        wait_until(promoted, 60, interval_s=0.2, message="no replica was promoted")
        again = all_succeed_once_at_a_time(coord, runs, it.workers, it.executions,
                                           it.overlaps, it.r)
        promoted = coord.store.client.get_node_from_key(  # type: ignore[attr-defined]
            coord.store.keys.schema())
        assert promoted.port != home.port
        print(f"store master failed over to {promoted.port}: {len(runs)} runs succeeded "
              f"{time.time() - killed_at:.1f} s after the kill; {again} step executions "
              "repeated; how the workers recovered:")
        last = max(runs, key=lambda rid: float(coord.store.run(rid).ended_at or 0))
        print("\n".join(line for w in it.workers for line in w.tail(20000).splitlines()
                        if last in line or "restarted or failed over" in line))
