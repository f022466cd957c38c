"""The store as the API's event loop sees it: asyncio reads of runs and their events,
and the API's idempotency keys.

The API blocks on event streams (``?wait``, server-sent events) without a thread per
request, so it needs an asyncio client; this class is the only one that holds it.
"""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from orchestrator.core.states import RunStatus
from orchestrator.store import scripts
from orchestrator.store.fields import Event
from orchestrator.store.keys import Keys

READ_COUNT = 200
CLIENT_NAME = "orchestrator-api"
"""Name of the API's asyncio Redis connections (``CLIENT LIST`` shows who blocks)."""


class AsyncRunReader:
    """Asyncio access to runs, events and idempotency keys.  Make it in the event loop
    that will use it (:meth:`open`), close it there (:meth:`close`)."""

    def __init__(self, redis_url: str, keys: Keys) -> None:
        self.redis_url = redis_url
        self.keys = keys
        self._r: Any = None

    def open(self) -> None:
        """Make the asyncio client."""
        self._r = aioredis.Redis.from_url(
            self.redis_url, decode_responses=True, health_check_interval=25,
            socket_keepalive=True, socket_connect_timeout=5, client_name=CLIENT_NAME)

    async def close(self) -> None:
        """Close the asyncio client."""
        if self._r is not None:
            await self._r.aclose()
            self._r = None

    @property
    def _client(self) -> Any:
        if self._r is None:
            raise RuntimeError("the reader is not open: call open() in the serving loop")
        return self._r

    async def ping(self) -> bool:
        """True when Redis answers."""
        return bool(await self._client.ping())

    async def exists(self, run_id: str) -> bool:
        """True when the run is in the store."""
        return bool(await self._client.exists(self.keys.run(run_id)))

    async def run_status(self, run_id: str) -> RunStatus | None:
        """The run's status, or None if it is not in the store."""
        raw = await self._client.hget(self.keys.run(run_id), "status")
        return None if raw is None else RunStatus(raw)

    async def events(self, run_id: str, after: str, block_ms: int | None = None
                     ) -> list[Event]:
        """Events of the run after the id ``after``; with ``block_ms``, wait that long."""
        res: Any = await self._client.xread({self.keys.events(run_id): after},
                                            count=READ_COUNT, block=block_ms)
        if not res:
            return []
        return [Event.parse(str(eid), dict(fields)) for eid, fields in res[0][1]]

    # --- idempotency keys of run submission ---------------------------------------------

    async def idempotency_set(self, idempotency_key: str, fingerprint: str, run_id: str,
                              ttl_s: int) -> dict[str, Any] | None:
        """Claim the key for ``run_id`` (``SET NX``); return None if this call claimed it,
        else the record it holds (``{"fingerprint", "run_id"}``), or ``{}`` if it expired
        in between."""
        key = self.keys.idempotency_of(idempotency_key)
        record = json.dumps({"fingerprint": fingerprint, "run_id": run_id})
        if await self._client.set(key, record, nx=True, ex=ttl_s):
            return None
        raw = await self._client.get(key)
        return {} if raw is None else dict(json.loads(raw))

    async def idempotency_keep(self, idempotency_key: str, ttl_s: int) -> None:
        """Keep the key for ``ttl_s`` more seconds."""
        await self._client.expire(self.keys.idempotency_of(idempotency_key), ttl_s)

    async def idempotency_release(self, idempotency_key: str, run_id: str) -> None:
        """Drop the key if it still stands for ``run_id``."""
        key = self.keys.idempotency_of(idempotency_key)
        await scripts.RELEASE_IDEMPOTENCY.acall(self._client, [key], [run_id])
