"""Every Redis client the orchestrator makes: one factory for one Redis or a Sentinel group.

``ORCH_REDIS_URL`` names either one server (``redis://``, ``rediss://``, ``unix://``) or
the Sentinels of a replicated group, in the form kombu and Celery read for the broker
and the result backend::

    sentinel://[:PASSWORD@]HOST:PORT[/DB];sentinel://[:PASSWORD@]HOST:PORT;...

with the group's name in ``ORCH_REDIS_SENTINEL_MASTER`` and, if the Sentinels require a
password of their own, ``ORCH_REDIS_SENTINEL_PASSWORD``.  A password (and user) in the
URL is the *data* servers' (master and replicas); the database number comes from the
first address that names one.  A client made here for a Sentinel URL asks the Sentinels
for the current master before each new connection, and drops its connections when that
master changes (a failover), so the run store, the leases, the schedules, the triggers
and the API follow a failover as the broker does (``docs/operations.md``, High
availability with Sentinel).

Run data never bypasses this module: :meth:`RunStore.from_url`,
:meth:`Leases.from_url`, :meth:`TriggerStore.from_url` and :class:`AsyncRunReader` all
call :func:`client` or :func:`async_client`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as asentinel
import redis.sentinel
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from redis.exceptions import RedisClusterException

from orchestrator import forks
from orchestrator.errors import StoreNotCluster
from orchestrator.outages import mask_url

SENTINEL_SCHEME = "sentinel"
SENTINEL_PORT = 26379
URL_SEPARATOR = ";"
"""Between the Sentinel addresses of one URL (kombu's and Celery's separator)."""
SENTINEL_TIMEOUT_S = 2.0
"""Longest wait for one Sentinel's answer: a dead Sentinel is skipped, not waited on."""


class RedisTarget(BaseModel):
    """Where Redis is: one server's URL, or a Sentinel URL with the group's name.

    Build it from the settings (:attr:`Settings.redis_target
    <orchestrator.settings.Settings.redis_target>`); a plain URL string is accepted
    wherever a target is, and means one server.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    url: str = Field(description="redis://, rediss://, unix:// or sentinel:// URL.")
    sentinel_master: str = Field("", description="The Sentinel group's name (the "
                                 "`sentinel monitor <name>` of the Sentinels' config).")
    sentinel_password: SecretStr = Field(SecretStr(""), description="The Sentinels' "
                                         "own password (their requirepass), if any.")
    cluster: bool = Field(False, description="The URL is a node of a Redis Cluster: "
                          "clients follow the cluster's slots (``ORCH_REDIS_CLUSTER``).")

    @property
    def is_sentinel(self) -> bool:
        """True when the URL names Sentinels, not one server."""
        return is_sentinel_url(self.url)

    @property
    def masked(self) -> str:
        """The URL with every password replaced by ``***`` (for messages)."""
        return mask_url(self.url)


def is_sentinel_url(url: str) -> bool:
    """True when ``url`` is a ``sentinel://`` URL (one or more ``;``-separated addresses)."""
    return url.strip().lower().startswith(f"{SENTINEL_SCHEME}://")


def target_of(where: RedisTarget | str) -> RedisTarget:
    """``where`` as a target (a string is one server's URL)."""
    return where if isinstance(where, RedisTarget) else RedisTarget(url=where)


class SentinelAddresses(BaseModel):
    """A Sentinel URL, parsed: the Sentinels and what the data servers need."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    sentinels: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = None


def parse_sentinel_url(url: str) -> SentinelAddresses:
    """The Sentinels of ``sentinel://h1:26379;sentinel://h2:26379/0`` and the data
    servers' database, user and password (from the first address that names them).

    Raises:
        ValueError: an address is not a ``sentinel://host[:port][/db]`` URL, has a bad
            port or database, or two addresses name different databases or passwords;
            the message names the fix.
    """
    hosts: list[tuple[str, int]] = []
    dbs: set[int] = set()
    passwords: set[str] = set()
    username: str | None = None
    for chunk in (c.strip() for c in url.split(URL_SEPARATOR)):
        if not chunk:
            continue
        parts = _split(chunk)
        if parts.scheme != SENTINEL_SCHEME or not parts.hostname:
            raise ValueError(f"{mask_url(chunk)} is not a Sentinel address; write "
                             f"sentinel://host:{SENTINEL_PORT} (one per Sentinel, "
                             f"separated by {URL_SEPARATOR!r})")
        try:
            port = parts.port or SENTINEL_PORT
        except ValueError:
            raise ValueError(f"{mask_url(chunk)} has a bad port; write "
                             f"sentinel://host:{SENTINEL_PORT}") from None
        path = parts.path.strip("/")
        if path:
            if not path.isdigit():
                raise ValueError(f"{mask_url(chunk)}: the path is the database number "
                                 f"(sentinel://host:{SENTINEL_PORT}/0), not {path!r}")
            dbs.add(int(path))
        if parts.password is not None:
            passwords.add(unquote(parts.password))
        if parts.username and username is None:
            username = unquote(parts.username)
        hosts.append((parts.hostname, port))
    if not hosts:
        raise ValueError(f"no Sentinel address; write sentinel://h1:{SENTINEL_PORT};"
                         f"sentinel://h2:{SENTINEL_PORT}/0")
    if len(dbs) > 1:
        raise ValueError(f"the Sentinel addresses name different databases {sorted(dbs)}; "
                         "name one, on the first address")
    if len(passwords) > 1:
        raise ValueError("the Sentinel addresses carry different passwords; the URL's "
                         "password is the data servers' (master and replicas): give one")
    return SentinelAddresses(sentinels=tuple(hosts), db=next(iter(dbs), 0),
                             username=username, password=next(iter(passwords), None))


def _split(chunk: str) -> SplitResult:
    try:
        return urlsplit(chunk)
    except ValueError as exc:
        raise ValueError(f"not a URL ({exc}); write sentinel://host:{SENTINEL_PORT}"
                         ) from None


def _sentinel_kwargs(t: RedisTarget, options: dict[str, Any]) -> dict[str, Any]:
    """Connection options for the Sentinels themselves: short timeouts, their password."""
    timeout = min(float(options.get("socket_timeout") or SENTINEL_TIMEOUT_S),
                  SENTINEL_TIMEOUT_S)
    kw: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout,
                          "socket_keepalive": True}
    secret = t.sentinel_password.get_secret_value()
    if secret:
        kw["password"] = secret
    return kw


def _master_kwargs(addr: SentinelAddresses, options: dict[str, Any]) -> dict[str, Any]:
    kw = dict(options)
    kw.setdefault("db", addr.db)
    if addr.password is not None:
        kw.setdefault("password", addr.password)
    if addr.username is not None:
        kw.setdefault("username", addr.username)
    return kw


def _require_master(t: RedisTarget) -> str:
    if not t.sentinel_master:
        raise ValueError(f"{t.masked} names Sentinels: set ORCH_REDIS_SENTINEL_MASTER to "
                         "the group's name (the `sentinel monitor <name>` of their config)")
    return t.sentinel_master


class _BlockingSentinelPool(redis.sentinel.SentinelConnectionPool,
                            redis.BlockingConnectionPool):
    """The Sentinel group's master, at most ``max_connections`` connections, a caller
    waiting up to ``timeout`` seconds for a free one (redis-py has no such pool)."""


class _AsyncBlockingSentinelPool(asentinel.SentinelConnectionPool,
                                 aioredis.BlockingConnectionPool):
    """The asyncio twin of :class:`_BlockingSentinelPool`."""


def client(where: RedisTarget | str, *, decode_responses: bool,
           pool_wait_s: float | None = None, home: str | None = None,
           **options: Any) -> redis.Redis:
    """A redis-py client on the server, or on the Sentinel group's current master.

    Args:
        where: a target, or one server's URL.
        decode_responses: str replies (True) or bytes (False).
        pool_wait_s: with ``max_connections``, a bounded pool: a caller that finds every
            connection in use waits up to this long, then gets ``ConnectionError`` (None:
            redis-py's plain pool, which refuses the connection past the bound at once).
        home: on a Redis Cluster, a key of the store: commands that name no key
            (``TIME``, ``INFO``, ``PING``, ``CONFIG GET``) go to the node that serves its
            slot, the store's node (else to any node).  Unused elsewhere.
        **options: connection and pool options of redis-py (``socket_timeout``,
            ``socket_connect_timeout``, ``socket_keepalive``, ``health_check_interval``,
            ``client_name``, ``max_connections``...), the same for both kinds.

    Returns:
        A client whose connections, for a Sentinel target, go to the master the
        Sentinels name at connect time (after a failover, the new one).

    Raises:
        ValueError: a Sentinel URL without a group name, or a bad Sentinel URL.
    """
    t = target_of(where)
    if t.cluster:  # redis-py's pools per node: no bounded wait (``pool_wait_s`` unused)
        def make() -> Any:
            try:  # it asks a node for the cluster's slots at once
                return redis.RedisCluster.from_url(t.url, decode_responses=decode_responses,
                                                   **options)
            except RedisClusterException as exc:
                raise _not_cluster(t, exc) from None  # not an outage: nothing to look in

        lazy: redis.Redis = LazyCluster(make, home)  # type: ignore[assignment]
        return lazy
    if pool_wait_s is not None:
        options["timeout"] = pool_wait_s
    if not t.is_sentinel:
        if pool_wait_s is None:
            return redis.Redis.from_url(t.url, decode_responses=decode_responses, **options)
        pool = redis.BlockingConnectionPool.from_url(
            t.url, decode_responses=decode_responses, **options)
        return redis.Redis.from_pool(pool)
    master = _require_master(t)
    addr = parse_sentinel_url(t.url)
    group = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
        list(addr.sentinels), sentinel_kwargs=_sentinel_kwargs(t, options))
    pool_class = (redis.sentinel.SentinelConnectionPool if pool_wait_s is None
                  else _BlockingSentinelPool)
    master_client: redis.Redis = group.master_for(  # type: ignore[no-untyped-call,unused-ignore]
        master, redis_class=redis.Redis, connection_pool_class=pool_class,
        decode_responses=decode_responses, **_master_kwargs(addr, options))
    return master_client


def async_client(where: RedisTarget | str, *, decode_responses: bool,
                 pool_wait_s: float | None = None, **options: Any) -> aioredis.Redis:
    """The asyncio twin of :func:`client` (the API's event loop): same arguments.

    Raises:
        ValueError: a Sentinel URL without a group name, or a bad Sentinel URL.
    """
    t = target_of(where)
    if t.cluster:
        cluster: aioredis.Redis = aioredis.RedisCluster.from_url(  # type: ignore[assignment]
            t.url, decode_responses=decode_responses, **options)
        return cluster
    if pool_wait_s is not None:
        options["timeout"] = pool_wait_s
    if not t.is_sentinel:
        if pool_wait_s is None:
            return aioredis.Redis.from_url(t.url, decode_responses=decode_responses,
                                           **options)
        pool = aioredis.BlockingConnectionPool.from_url(
            t.url, decode_responses=decode_responses, **options)
        return aioredis.Redis.from_pool(pool)
    master = _require_master(t)
    addr = parse_sentinel_url(t.url)
    group = asentinel.Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
        list(addr.sentinels), sentinel_kwargs=_sentinel_kwargs(t, options))
    pool_class = (asentinel.SentinelConnectionPool if pool_wait_s is None
                  else _AsyncBlockingSentinelPool)
    master_client: aioredis.Redis = group.master_for(
        master, redis_class=aioredis.Redis, connection_pool_class=pool_class,
        decode_responses=decode_responses, **_master_kwargs(addr, options))
    return master_client


KEYLESS = frozenset({"time", "info", "ping", "config_get"})
"""The client methods whose command names no key (a cluster client sends it to its
default node) and that the store uses: :class:`LazyCluster` sends them to the store's."""


_forsaken: list[Any] = []
"""Cluster clients a forked process inherited and does not use (:meth:`LazyCluster.
after_fork`): kept, so that no finalizer of theirs runs in it."""


class LazyCluster:
    """A redis-py ``RedisCluster`` made at its first use, as a plain client connects at
    its first command: a process starts while the cluster is down, and the first command
    raises what a standalone server's would (unreachable, or :class:`StoreNotCluster`),
    and again at each use until the cluster answers.  Every attribute is the client's.

    With ``home`` (a key of the store), a command of :data:`KEYLESS` goes to the node that
    serves that key's slot now, after a failover the promoted replica, not to whichever
    node redis-py picked as its default: the leases' clock and the restart watch are the
    store's node's."""

    def __init__(self, make: Callable[[], Any], home: str | None = None) -> None:
        self._make = make
        self._home = home
        self._made: Any = None
        self._lock = forks.lock()
        forks.renew_in_child(self)

    def after_fork(self) -> None:
        """In a forked process: make a client of its own at the next use.  The parent's
        is never used here (a parent thread may have held one of its locks at the fork,
        its topology refresh's after a failover), nor closed (closing takes them): it is
        kept, unreferenced by anything that runs."""
        if self._made is not None:
            _forsaken.append(self._made)
            self._made = None

    def _client(self) -> Any:
        made = self._made
        if made is None:
            with self._lock:
                if self._made is None:
                    self._made = self._make()
                made = self._made
        return made

    def __getattr__(self, name: str) -> Any:
        made = self._client()
        if self._home is not None and name in KEYLESS:
            node = made.get_node_from_key(self._home)  # the slots as the client knows them
            if made.get_default_node() is not node:
                made.set_default_node(node)
        return getattr(made, name)


def speaks_cluster(client: Any) -> bool:
    """Whether ``client`` is a Redis Cluster client: its pipelines refuse the commands
    that name no key (``TIME``, ``INFO``), which go on their own."""
    return isinstance(client, LazyCluster | redis.RedisCluster | aioredis.RedisCluster)


def _not_cluster(t: RedisTarget, exc: RedisClusterException) -> Exception:
    """What a cluster client's failure to start means: :class:`StoreNotCluster` when the
    server is a standalone one, else ``exc`` (an unreachable cluster: see
    :mod:`orchestrator.outages`)."""
    if "cluster mode is not enabled" in str(exc).lower():
        return StoreNotCluster(t.masked)
    return exc


def cluster_uri(where: RedisTarget | str) -> tuple[str, dict[str, Any]]:
    """The ``limits`` library's URI of a Redis Cluster target (its rate limiter makes its
    own cluster client from it), ``async+redis+cluster://[user:password@]host:port``, and
    the client options the URI cannot say (TLS for a ``rediss://`` URL)."""
    parts = urlsplit(target_of(where).url)
    auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    options: dict[str, Any] = {"ssl": True} if parts.scheme == "rediss" else {}
    return f"async+redis+cluster://{auth}{parts.hostname}:{parts.port or 6379}", options


def celery_transport_options(where: RedisTarget | str) -> dict[str, Any]:
    """What kombu's broker and Celery's result backend need besides the URL: for a
    Sentinel target the group's name and the Sentinels' connection options; else none."""
    t = target_of(where)
    if not t.is_sentinel:
        return {}
    kw = _sentinel_kwargs(t, {})
    kw.pop("socket_keepalive", None)
    return {"master_name": _require_master(t), "sentinel_kwargs": kw}
