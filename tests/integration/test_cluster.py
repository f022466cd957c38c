"""A Redis Cluster is refused, clearly and before anything is written.

The run store's scripts touch a run's keys and the shared indexes together (keys of many
slots) and kombu's Redis transport does not follow ``MOVED``, so this release does not
run on a Redis Cluster (docs/scaling.md, "Redis Cluster").  Pointed at a node of a real
three-master cluster (started by the test, :mod:`tests.support.cluster`), every tool says
so in one line naming the setting to change: the CLI exits 6, a worker stops with exit
code 6 before taking a task, the API does not start, and ``doctor`` reports it; no key is
written on any node.  Before this check, the CLI printed a ``MovedError`` traceback on
two nodes of three and went on, on the third, until a command touched another slot.
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
