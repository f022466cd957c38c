"""The run store on a real three-master Redis Cluster (``ORCH_REDIS_CLUSTER``).

Every module here runs a standalone suite's tests again with ``redis_url`` overridden: a
target with ``cluster`` set on one node of a cluster that this package starts
(:mod:`tests.support.cluster`), so the store speaks Cluster and puts every key under one
hash tag (``{t}`` for the prefix ``t``).  A script that touched a key outside that slot
would fail with ``CROSSSLOT`` or ``MOVED``; one that declared no key would go to a node
that does not serve the slot.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orchestrator.store.connection import RedisTarget
from tests.support.cluster import RedisCluster


@pytest.fixture(scope="package")
def cluster(redis_binary: str) -> Iterator[RedisCluster]:
    with RedisCluster(redis_binary) as c:
        yield c


@pytest.fixture
def redis_url(cluster: RedisCluster) -> RedisTarget:
    """The cluster, emptied, as the store's target (overrides the standalone URL)."""
    for node in cluster.nodes:
        with node.client() as c:
            c.flushall()
    return RedisTarget(url=cluster.urls[0], cluster=True)
