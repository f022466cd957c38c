"""What a failure to use Redis means: the kind, the masked URL, the one line."""

from __future__ import annotations

import pytest
import redis.exceptions as rex
from kombu.exceptions import OperationalError

from orchestrator.errors import (
    DispatchError,
    RedisAuthFailed,
    RedisTimedOut,
    RedisUnreachable,
    StoreUnavailable,
)
from orchestrator.outages import explain, explain_either, kind_of, mask_url


@pytest.mark.parametrize(("url", "masked"), [
    ("redis://:secret@db:6380/2", "redis://:***@db:6380/2"),
    ("redis://user:secret@db/0", "redis://user:***@db/0"),
    ("rediss://:s@[::1]:6379/0", "rediss://:***@[::1]:6379/0"),
    ("redis://db:6379/0", "redis://db:6379/0"),
    ("unix:///run/redis.sock", "unix:///run/redis.sock"),
])
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def _wrapped(inner: BaseException, outer: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except BaseException as exc:
        return exc


@pytest.mark.parametrize(("exc", "kind"), [
    (rex.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused."),
     RedisUnreachable),
    (rex.AuthenticationError("invalid username-password pair"), RedisAuthFailed),
    (rex.AuthenticationError("Authentication required."), RedisAuthFailed),
    (rex.ResponseError("NOAUTH Authentication required."), RedisAuthFailed),
    (rex.TimeoutError("Timeout reading from socket"), RedisTimedOut),
    (_wrapped(rex.ConnectionError("refused"), OperationalError("refused")), RedisUnreachable),
    (_wrapped(rex.TimeoutError("Timeout connecting to server"),
              DispatchError("cannot read queue depths")), RedisTimedOut),
    # a Redis Cluster (ORCH_REDIS_CLUSTER): no node answers, or the slot's node is down
    (rex.RedisClusterException("Redis Cluster cannot be connected. Please provide at "
                               "least one reachable node: Error 111 connecting"),
     RedisUnreachable),
    (rex.ClusterDownError("CLUSTERDOWN The cluster is down"), RedisUnreachable),
])
def test_kinds(exc: BaseException, kind: type[StoreUnavailable]) -> None:
    assert kind_of(exc) is kind


@pytest.mark.parametrize("exc", [
    ValueError("Timeout"), OSError("cannot read workflow file"),
    _wrapped(FileNotFoundError("x.yaml"), DispatchError("no worker")),
    # a standalone server told to be a cluster: StoreNotCluster's to say, not an outage
    rex.RedisClusterException("Redis Cluster cannot be connected. Please provide at least "
                              "one reachable node: Cluster mode is not enabled on this node"),
])
def test_not_redis_failures(exc: BaseException) -> None:
    assert kind_of(exc) is None
    assert explain(exc, "redis://db/0") is None


def test_the_line_names_the_masked_url_and_the_fix() -> None:
    url = "redis://:hunter2@db:6379/0"
    err = explain(rex.ConnectionError("Error 111 connecting to db:6379 (hunter2)."), url)
    assert isinstance(err, RedisUnreachable)
    assert str(err) == (
        "Redis at redis://:***@db:6379/0 is unreachable (Error 111 connecting to db:6379 "
        "(***)). Fix: start Redis there (`orchestrator up` starts a local one), or point "
        "ORCH_REDIS_URL at a running server.")
    timeout = explain(rex.TimeoutError("Timeout reading from socket"), url, 1.0)
    assert isinstance(timeout, RedisTimedOut)
    assert timeout.summary == ("Redis at redis://:***@db:6379/0 did not answer within 1 s "
                               "(Timeout reading from socket)")
    auth = explain(rex.AuthenticationError("WRONGPASS invalid"), url)
    assert auth is not None and auth.code == "redis_auth_failed"
    assert "redis://:PASSWORD@host:port/db" in auth.fix


def test_with_the_broker_apart_the_line_names_the_server_that_failed() -> None:
    store, broker = "redis://:s1@store:6379/0", "redis://:s2@queues:6380/0"
    on_broker = rex.ConnectionError("Error 111 connecting to queues:6380. Connection refused.")
    err = explain_either(on_broker, store, broker)
    assert isinstance(err, RedisUnreachable)
    assert err.url == "redis://:***@queues:6380/0" and "ORCH_BROKER_URL" in err.fix
    # a publish's failure comes up through kombu, whatever its words
    err = explain_either(_wrapped(rex.TimeoutError("Timeout"), OperationalError("t/o")),
                         store, broker, 1.0)
    assert isinstance(err, RedisTimedOut) and err.url.endswith("@queues:6380/0")
    on_store = rex.ConnectionError("Error 111 connecting to store:6379. Connection refused.")
    err = explain_either(on_store, store, broker)
    assert err is not None and err.url.endswith("@store:6379/0")
    assert "ORCH_REDIS_URL" in err.fix and "ORCH_BROKER_URL" not in err.fix
    # no broker apart: always the store's
    err = explain_either(_wrapped(on_broker, OperationalError("x")), store, "")
    assert err is not None and err.url.endswith("@store:6379/0")
    sentinel = explain_either(on_broker, store, "sentinel://queues:6380/0")
    assert sentinel is not None and "ORCH_BROKER_SENTINEL_MASTER" in sentinel.fix
