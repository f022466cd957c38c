"""The store as the API's event loop sees it: asyncio reads of runs and their events,
and the API's idempotency keys.

The API blocks on event streams (``?wait``, server-sent events) without a thread per
request, so it needs an asyncio client; this class is the only one that holds it.

Its connections are in three bounded pools, so that no kind of request can take another's
(issue #15, fair sharing): *blocking* reads (``XREAD BLOCK`` of a stream or a ``?wait``,
``Settings.api_stream_connections``), *short* commands (run status, idempotency keys,
``Settings.api_redis_connections``) and the *probe* of ``/readyz`` (two connections of
its own).  A request that finds its pool empty waits up to ``pool_wait_s`` (5 s) for a
connection (a burst queues rather than fails), then fails as Redis unreachable would
(``ConnectionError``: a 503).  The API never holds more blocking reads than the pool has
connections (:mod:`orchestrator.api.quotas` refuses the next stream or wait first).
"""

from __future__ import annotations

import json
from typing import Any

from orchestrator.core.states import RunStatus
from orchestrator.core.tenants import DEFAULT_TENANT
from orchestrator.store import connection, scripts
from orchestrator.store.connection import RedisTarget, target_of
from orchestrator.store.fields import Event
from orchestrator.store.keys import Keys

READ_COUNT = 200
CLIENT_NAME = "orchestrator-api"
"""Name of the API's asyncio Redis connections (``CLIENT LIST`` shows who blocks)."""
PROBE_CONNECTIONS = 2
"""Connections of ``/readyz``'s own pool."""
MAX_BLOCK_MS = 60_000
"""Longest ``XREAD BLOCK`` of one call (callers loop for longer waits)."""
SHORT_TIMEOUT_S = 5.0
"""Socket timeout of a short command (explicit: redis-py's default changed across
versions, from none to 5 s)."""
BLOCKING_TIMEOUT_S = MAX_BLOCK_MS / 1000 + 10
"""Socket timeout of a blocking read: above its longest block, so only a Redis that
stopped answering times it out."""


class AsyncRunReader:
    """Asyncio access to runs, events and idempotency keys.  Make it in the event loop
    that will use it (:meth:`open`), close it there (:meth:`close`)."""

    def __init__(self, redis_url: RedisTarget | str, keys: Keys, *,
                 connections: int = 20, stream_connections: int = 100,
                 pool_wait_s: float = 5.0, short_timeout_s: float = SHORT_TIMEOUT_S) -> None:
        """``redis_url``: one server's URL, or a target (``Settings.redis_target``: also a
        Sentinel group, see :mod:`.connection`).  ``connections`` and
        ``stream_connections``: the sizes of the short and the blocking pools;
        ``pool_wait_s``: the longest wait for a free connection; ``short_timeout_s``: the
        socket timeout of a short command (the API passes ``Settings.redis_timeout_s``: a
        caller waits on it)."""
        self.target = target_of(redis_url)
        self.redis_url = self.target.url
        self.keys = keys
        self.connections = connections
        self.stream_connections = stream_connections
        self.pool_wait_s = pool_wait_s
        self.short_timeout_s = short_timeout_s
        self._r: Any = None
        self._blocking: Any = None
        self._probe: Any = None

    def open(self) -> None:
        """Make the asyncio clients (their pools connect on first use)."""
        self._r = self._bounded(self.connections, self.short_timeout_s)
        self._blocking = self._bounded(self.stream_connections, BLOCKING_TIMEOUT_S)
        self._probe = self._bounded(PROBE_CONNECTIONS, self.short_timeout_s)

    def socket_options(self, socket_timeout_s: float | None = None) -> dict[str, Any]:
        """The options of a connection of short commands (or of ``socket_timeout_s``)."""
        timeout_s = self.short_timeout_s if socket_timeout_s is None else socket_timeout_s
        return {"health_check_interval": 25, "socket_keepalive": True,
                "socket_connect_timeout": min(5.0, timeout_s), "socket_timeout": timeout_s}

    def _bounded(self, size: int, socket_timeout_s: float) -> Any:
        wait_s = self.pool_wait_s
        options: dict[str, Any] = {"decode_responses": True, "client_name": CLIENT_NAME,
                                   **self.socket_options(socket_timeout_s)}
        # a blocking pool, on one server or on a Sentinel group's master alike
        return connection.async_client(self.target, max_connections=size,
                                       pool_wait_s=wait_s, **options)

    async def close(self) -> None:
        """Close the asyncio clients and their pools."""
        for name in ("_r", "_blocking", "_probe"):
            client = getattr(self, name)
            setattr(self, name, None)
            if client is not None:
                await client.aclose()

    @property
    def short_pool(self) -> Any:
        """The pool of short commands (the API's rate limiter shares it)."""
        return self._client.connection_pool

    @property
    def client(self) -> Any:
        """The asyncio client of short commands (open: else RuntimeError)."""
        return self._client

    @property
    def _client(self) -> Any:
        if self._r is None:
            raise RuntimeError("the reader is not open: call open() in the serving loop")
        return self._r

    async def ping(self) -> bool:
        """True when Redis answers, on the probe's own connections (never queued behind
        streams or waits)."""
        if self._probe is None:
            raise RuntimeError("the reader is not open: call open() in the serving loop")
        return bool(await self._probe.ping())

    async def exists(self, run_id: str) -> bool:
        """True when the run is in the store."""
        return bool(await self._client.exists(self.keys.run(run_id)))

    async def run_status(self, run_id: str) -> RunStatus | None:
        """The run's status, or None if it is not in the store."""
        raw = await self._client.hget(self.keys.run(run_id), "status")
        return None if raw is None else RunStatus(raw)

    async def events(self, run_id: str, after: str, block_ms: int | None = None
                     ) -> list[Event]:
        """Events of the run after the id ``after``; with ``block_ms``, wait that long (at
        most :data:`MAX_BLOCK_MS`; on a connection of the blocking pool)."""
        client = self._client if block_ms is None else self._blocking
        if client is None:
            raise RuntimeError("the reader is not open: call open() in the serving loop")
        block = None if block_ms is None else min(block_ms, MAX_BLOCK_MS)
        res: Any = await client.xread({self.keys.events(run_id): after},
                                      count=READ_COUNT, block=block)
        if not res:
            return []
        return [Event.parse(str(eid), dict(fields)) for eid, fields in res[0][1]]

    # --- idempotency keys of run submission ---------------------------------------------

    async def idempotency_set(self, idempotency_key: str, fingerprint: str, run_id: str,
                              ttl_s: int, tenant: str = DEFAULT_TENANT
                              ) -> dict[str, Any] | None:
        """Claim ``tenant``'s key for ``run_id`` (``SET NX``); return None if this call
        claimed it, else the record it holds (``{"fingerprint", "run_id"}``), or ``{}``
        if it expired in between."""
        key = self.keys.idempotency_of(idempotency_key, tenant)
        record = json.dumps({"fingerprint": fingerprint, "run_id": run_id})
        if await self._client.set(key, record, nx=True, ex=ttl_s):
            return None
        raw = await self._client.get(key)
        return {} if raw is None else dict(json.loads(raw))

    async def idempotency_keep(self, idempotency_key: str, ttl_s: int,
                               tenant: str = DEFAULT_TENANT) -> None:
        """Keep the key for ``ttl_s`` more seconds."""
        await self._client.expire(self.keys.idempotency_of(idempotency_key, tenant), ttl_s)

    async def idempotency_release(self, idempotency_key: str, run_id: str,
                                  tenant: str = DEFAULT_TENANT) -> None:
        """Drop the key if it still stands for ``run_id``."""
        key = self.keys.idempotency_of(idempotency_key, tenant)
        await scripts.RELEASE_IDEMPOTENCY.acall(self._client, [key], [run_id])
