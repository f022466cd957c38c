"""Where Redis is: one server or a Sentinel group, parsed, masked, and turned into the
clients and the Celery settings (no server needed; the failover itself is
``tests/integration/test_sentinel.py``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import redis.exceptions as rex
import redis.sentinel
from pydantic import ValidationError

from orchestrator.errors import RedisUnreachable
from orchestrator.outages import explain, mask_url
from orchestrator.runtime.celeryconf import (
    SendOnlyRedisBackend,
    SendOnlySentinelBackend,
    celery_config,
    send_only_backend_url,
)
from orchestrator.settings import Settings
from orchestrator.store import connection
from orchestrator.store.connection import RedisTarget, parse_sentinel_url

ROOT = Path(__file__).resolve().parents[2]
URL = "sentinel://:pw@s1:26380/2;sentinel://:pw@s2;sentinel://s3:26382"


def test_a_sentinel_url_gives_every_sentinel_and_the_data_servers_db_and_password() -> None:
    a = parse_sentinel_url(URL)
    assert a.sentinels == (("s1", 26380), ("s2", 26379), ("s3", 26382))
    assert (a.db, a.password, a.username) == (2, "pw", None)
    assert parse_sentinel_url("sentinel://u:p@h").username == "u"


@pytest.mark.parametrize(("url", "words"), [
    ("sentinel://s1;redis://s2", "is not a Sentinel address"),
    ("sentinel://s1/x", "the path is the database number"),
    ("sentinel://s1/1;sentinel://s2/2", "different databases"),
    ("sentinel://:a@s1;sentinel://:b@s2", "different passwords"),
    ("sentinel://s1:port", "bad port"),
])
def test_a_bad_sentinel_url_names_the_fix(url: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_sentinel_url(url)


def test_every_password_of_a_sentinel_url_is_masked() -> None:
    assert mask_url(URL) == ("sentinel://:***@s1:26380/2;sentinel://:***@s2;"
                             "sentinel://s3:26382")
    err = explain(rex.AuthenticationError("invalid password pw given"), URL)
    assert err is not None and "pw" not in str(err).replace("password", "")


def test_no_master_names_the_sentinels_in_the_fix() -> None:
    err = explain(redis.sentinel.MasterNotFoundError("No master found for 'm'"), URL)
    assert isinstance(err, RedisUnreachable)
    assert "SENTINEL get-master-addr-by-name" in str(err) and ":pw@" not in str(err)


def test_a_sentinel_url_needs_the_group_name() -> None:
    with pytest.raises(ValidationError, match="ORCH_REDIS_SENTINEL_MASTER") as info:
        Settings(redis_url=URL)
    assert ":pw@" not in str(info.value)
    s = Settings(redis_url=URL, redis_sentinel_master="mymaster",
                 redis_sentinel_password="spw")  # type: ignore[arg-type]
    assert s.redis_target.is_sentinel and s.redis_target.sentinel_master == "mymaster"
    assert not Settings(redis_url="redis://h:6379/0").redis_target.is_sentinel


def test_a_bad_sentinel_url_is_refused_by_the_settings() -> None:
    with pytest.raises(ValidationError, match="is not a Sentinel address"):
        Settings(redis_url="sentinel://s1;http://s2",
                 redis_sentinel_master="m")


def test_a_sentinel_client_asks_the_sentinels_for_the_master() -> None:
    t = RedisTarget(url=URL, sentinel_master="mymaster", sentinel_password="spw")  # type: ignore[arg-type]
    c = connection.client(t, decode_responses=True, socket_timeout=3.0)
    pool: Any = c.connection_pool
    assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
    assert pool.service_name == "mymaster"
    kw = pool.connection_kwargs
    assert (kw["db"], kw["password"], kw["socket_timeout"]) == (2, "pw", 3.0)
    sentinels = pool.sentinel_manager.sentinels
    assert [(s.connection_pool.connection_kwargs["host"],
             s.connection_pool.connection_kwargs["port"]) for s in sentinels] == [
        ("s1", 26380), ("s2", 26379), ("s3", 26382)]
    assert all(s.connection_pool.connection_kwargs["password"] == "spw" for s in sentinels)
    bounded = connection.client(t, decode_responses=True, max_connections=3, pool_wait_s=0.5)
    assert isinstance(bounded.connection_pool, redis.BlockingConnectionPool)
    assert bounded.connection_pool.max_connections == 3


def test_a_sentinel_client_without_a_group_name_is_refused() -> None:
    with pytest.raises(ValueError, match="ORCH_REDIS_SENTINEL_MASTER"):
        connection.client(URL, decode_responses=True)


def test_celery_gets_the_group_name_and_the_sentinels_password() -> None:
    s = Settings(redis_url=URL, redis_sentinel_master="mymaster",
                 redis_sentinel_password="spw")  # type: ignore[arg-type]
    conf = celery_config(s)
    assert conf["broker_url"] == URL
    for opts in (conf["broker_transport_options"], conf["result_backend_transport_options"]):
        assert opts["master_name"] == "mymaster"
        assert opts["sentinel_kwargs"]["password"] == "spw"
    assert send_only_backend_url(URL).endswith(f":{SendOnlySentinelBackend.__name__}+{URL}")
    assert send_only_backend_url("redis://h/0").endswith(
        f":{SendOnlyRedisBackend.__name__}+redis://h/0")
    plain = celery_config(Settings(redis_url="redis://h:6379/0"))
    assert "master_name" not in plain["broker_transport_options"]


def test_only_the_connection_module_makes_redis_clients() -> None:
    """Every client of the product comes from :mod:`orchestrator.store.connection`, so
    that a Sentinel URL works everywhere (dev/ runs its own servers and may connect to
    them directly)."""
    made = re.compile(r"\b(Redis|Sentinel|ConnectionPool|BlockingConnectionPool)"
                      r"(\.from_url|\.from_pool)?\(")
    offenders = []
    for path in sorted([*(ROOT / "orchestrator").rglob("*.py"),
                        *(ROOT / "workers").rglob("*.py")]):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("orchestrator/dev/") or rel == "orchestrator/store/connection.py":
            continue
        text = path.read_text(encoding="utf-8")
        offenders += [f"{rel}: {m.group(0)}" for m in made.finditer(text)]
    assert not offenders, offenders


# --- a run store on a Redis Cluster (ORCH_REDIS_CLUSTER) ---------------------------------


def test_a_cluster_store_needs_the_broker_apart_and_no_sentinels() -> None:
    with pytest.raises(ValidationError, match="set ORCH_BROKER_URL to a standalone Redis"):
        Settings(redis_url="redis://n1:7000/0", redis_cluster=True)
    with pytest.raises(ValidationError, match="a cluster fails over by itself"):
        Settings(redis_url=URL, redis_sentinel_master="m", redis_cluster=True,
                 broker_url="redis://b:6379/0")
    s = Settings(redis_url="redis://n1:7000/0", redis_cluster=True,
                 broker_url="redis://b:6379/0")
    assert s.redis_target.cluster and not s.broker_target.cluster
    # Celery's result backend (chord counters) goes with the broker, off the cluster
    assert s.backend_target == s.broker_target
    assert celery_config(s)["result_backend"] == "redis://b:6379/0"
    plain = Settings(redis_url="redis://r:6379/0", broker_url="redis://b:6379/0")
    assert plain.backend_target == plain.redis_target  # as before: with the store


@pytest.mark.parametrize(("prefix", "cluster", "expected"), [
    ("orch", False, "orch"),
    ("orch", True, "{orch}"),
    ("{orch}", True, "{orch}"),
    ("team-{a}:orch", True, "team-{a}:orch"),  # a tag already: Redis hashes what is in it
    ("odd{}", True, "{odd{}}"),  # an empty tag hashes the whole key: tag it all
    ("a{}b}", True, "{a{}b}}"),  # Redis ends a tag at the first "}": empty here too
])
def test_store_prefix_puts_every_key_of_a_cluster_store_under_one_hash_tag(
        prefix: str, cluster: bool, expected: str) -> None:
    from orchestrator.store.keys import Keys, store_prefix
    got = store_prefix(prefix, cluster)
    assert got == expected
    keys = Keys(got)
    if cluster:  # the run's keys and the shared indexes hash alike: one slot
        from redis.crc import key_slot
        slots = {key_slot(k.encode()) for k in (
            keys.run("r1"), keys.steps("r2"), keys.leases("r3"), keys.timers(),
            keys.runs_by_status("running"), keys.schema())}
        assert len(slots) == 1, slots


def test_a_cluster_client_is_made_at_its_first_use_and_named_for_the_limiter() -> None:
    t = RedisTarget(url="redis://user:s3cret@127.0.0.1:1/0", cluster=True)
    c = connection.client(t, decode_responses=True, socket_connect_timeout=0.2)
    assert connection.speaks_cluster(c)  # nothing connected yet: no error at creation
    with pytest.raises(rex.RedisClusterException, match="cannot be connected") as got:
        c.ping()
    assert explain(got.value, t.url).__class__ is RedisUnreachable
    assert connection.cluster_uri(t) == ("async+redis+cluster://user:s3cret@127.0.0.1:1",
                                         {})
    tls = RedisTarget(url="rediss://n1:7000/0", cluster=True)
    assert connection.cluster_uri(tls) == ("async+redis+cluster://n1:7000", {"ssl": True})
    assert not connection.speaks_cluster(redis.Redis())
