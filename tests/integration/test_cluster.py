"""A Redis Cluster is refused, clearly and before anything is written, unless the run
store is told it is one.

Without ``ORCH_REDIS_CLUSTER`` the store's keys spread over many slots (a script touching
a run's keys and the shared indexes together would fail at random), and kombu's Redis
transport does not follow ``MOVED``, so a cluster node is refused (docs/scaling.md, "Redis
Cluster").  Pointed at a node of a real three-master cluster (started by the test,
:mod:`tests.support.cluster`), every tool says so in one line naming the setting to
change: the CLI exits 6, a worker stops with exit code 6 before taking a task, the API
does not start, and ``doctor`` reports it; no key is written on any node.  Before this
check, the CLI printed a ``MovedError`` traceback on two nodes of three and went on, on
the third, until a command touched another slot.  The other way round, too: with
``ORCH_REDIS_CLUSTER`` set on a standalone server, or with the broker left on the
cluster, the tools refuse in one line.  The store *on* a cluster is
``tests/integration/on_cluster/``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from orchestrator.api.app import create_api
from orchestrator.cli.main import cli, main
from orchestrator.errors import StoreIsCluster
from orchestrator.runtime.catalog import Catalog
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.settings import Settings
from tests.support.api import api_settings
from tests.support.cluster import RedisCluster
from tests.support.workers import TEST_PACKAGES, WorkerProcess

pytestmark = pytest.mark.redis

EXIT_SCHEMA = 6


@pytest.fixture(scope="module")
def cluster(redis_binary: str) -> Iterator[RedisCluster]:
    with RedisCluster(redis_binary) as c:
        yield c


def _keys(cluster: RedisCluster) -> list[int]:
    """Keys on each node."""
    out = []
    for node in cluster.nodes:
        with node.client() as c:
            out.append(int(c.dbsize()))
    return out


def test_the_cli_and_doctor_refuse_every_node_in_one_line(
        cluster: RedisCluster, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ORCH_WORKFLOW_PACKAGES", "workflows")
    for url in cluster.urls:  # one of them owns the schema key's slot: no MOVED there
        monkeypatch.setenv("ORCH_REDIS_URL", url)
        for argv in (["runs"], ["status", "0123456789abcdef"],
                     ["run", "customer_order", "--no-preflight", "--no-follow",
                      "--input", "{}"]):
            with pytest.raises(SystemExit) as exit_info:
                main(argv)
            err = capsys.readouterr().err
            where = f"orchestrator {' '.join(argv)} at {url}"
            assert exit_info.value.code == EXIT_SCHEMA, f"{where}: {err}"
            assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
            assert err.startswith(f"error: Redis at {url} is a Redis Cluster node"), err
            assert "Fix: point ORCH_REDIS_URL at a standalone Redis" in err, err
        res = CliRunner().invoke(cli, ["doctor", "--json", "--timeout", "1"],
                                 env={"ORCH_REDIS_URL": url,
                                      "ORCH_WORKFLOW_PACKAGES": "workflows"})
        found = {f["check"]: f for f in json.loads(res.output)["findings"]}
        assert res.exit_code == 1 and not found["cluster"]["ok"], res.output
        assert "ORCH_REDIS_URL" in found["cluster"]["fix"], found["cluster"]
        assert "schema" not in found, res.output  # not read: it would answer MOVED
    assert _keys(cluster) == [0, 0, 0]  # nothing written anywhere


def test_a_worker_stops_before_taking_a_task_and_the_api_does_not_start(
        cluster: RedisCluster) -> None:
    url = cluster.urls[0]
    worker = WorkerProcess(url, "oncluster", concurrency=1)
    try:
        assert worker.proc.wait(60) == EXIT_SCHEMA, worker.tail()
        assert "is a Redis Cluster node" in worker.tail(), worker.tail()
    finally:
        worker.stop()
    app = create_api(api_settings(url))
    with pytest.raises(StoreIsCluster, match="Fix: point ORCH_REDIS_URL"), TestClient(app):
        pass
    assert sum(_keys(cluster)) == 0, "no run data on any node"


def test_a_broker_apart_on_a_cluster_node_is_refused_by_its_own_setting(
        cluster: RedisCluster, redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, broker_url=cluster.urls[1],
                        workflow_packages=tuple(TEST_PACKAGES))
    coord = Coordinator(settings, Catalog())
    with pytest.raises(StoreIsCluster, match=r"Fix: point ORCH_BROKER_URL at a standalone"):
        coord.store.check_schema()
    assert coord.store.schema() is None, "the store (standalone) was left unwritten"
    assert sum(_keys(cluster)) == 0


def test_the_cluster_setting_on_a_standalone_redis_or_without_a_broker_is_refused(
        cluster: RedisCluster, redis_url: str, redis_binary: str,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ORCH_WORKFLOW_PACKAGES", "workflows")
    monkeypatch.setenv("ORCH_REDIS_CLUSTER", "true")
    monkeypatch.setenv("ORCH_REDIS_URL", redis_url)  # a standalone server
    monkeypatch.setenv("ORCH_BROKER_URL", cluster.urls[0].replace("/0", "/0"))
    cases = [
        # the store's Redis is no cluster: exit 6, the fix names the setting
        ({"ORCH_BROKER_URL": redis_url.rsplit("/", 1)[0] + "/1"}, EXIT_SCHEMA,
         f"error: ORCH_REDIS_CLUSTER is set, but Redis at {redis_url} is not a Redis "
         "Cluster node"),
        # the broker would be on the cluster: a settings error, before any connection
        ({"ORCH_REDIS_URL": cluster.urls[0], "ORCH_BROKER_URL": ""}, 2,
         "error: invalid setting: settings: ORCH_REDIS_CLUSTER is set but the broker "
         "would be on the cluster too"),
        # no node answers: exit 3, unreachable, as for one server
        ({"ORCH_REDIS_URL": "redis://127.0.0.1:1/0",
          "ORCH_BROKER_URL": redis_url}, 3,
         "error: Redis at redis://127.0.0.1:1/0 is unreachable"),
    ]
    for env, code, start in cases:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(SystemExit) as exit_info:
            main(["runs"])
        err = capsys.readouterr().err
        assert exit_info.value.code == code, (env, err)
        assert err.startswith(start) and len(err.strip().splitlines()) == 1, (env, err)
    assert _keys(cluster) == [0, 0, 0]
    worker = WorkerProcess(redis_url, "notcluster", concurrency=1, redis_cluster=True,
                           broker_url=redis_url.rsplit("/", 1)[0] + "/1")
    try:
        assert worker.proc.wait(60) == EXIT_SCHEMA, worker.tail()
        assert "is not a Redis Cluster node" in worker.tail(), worker.tail()
    finally:
        worker.stop()
