"""What every route needs, built once per app: settings, catalog, coordinator, Redis."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis.asyncio as aioredis
from fastapi import Request

from orchestrator.callbacks.delivery import CallbackRegistry
from orchestrator.runtime.catalog import Catalog
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.settings import Settings
from orchestrator.store.keys import Keys

CLIENT_NAME = "orchestrator-api"
"""Name of the API's asyncio Redis connections (``CLIENT LIST`` shows who blocks)."""


@dataclass
class ApiContext:
    """The app's shared objects.

    ``coordinator`` is synchronous (redis-py and Celery publishing): routes call it in a
    worker thread.  ``aredis`` is the asyncio client for blocking stream reads (``wait``,
    server-sent events); it is made by the app's lifespan, in the serving event loop.
    """

    settings: Settings
    catalog: Catalog
    coordinator: Coordinator
    registry: CallbackRegistry
    _aredis: aioredis.Redis | None = field(default=None, repr=False)

    @property
    def keys(self) -> Keys:
        """The run store's key builders."""
        return self.coordinator.store.keys

    @property
    def aredis(self) -> aioredis.Redis:
        """The asyncio Redis client.

        Raises:
            RuntimeError: the app is not being served (its lifespan has not started).
        """
        if self._aredis is None:
            raise RuntimeError("the API's Redis client exists only while the app is served")
        return self._aredis

    def open(self) -> None:
        """Make the asyncio client (call in the event loop that serves the app)."""
        self._aredis = aioredis.Redis.from_url(
            self.settings.redis_url, decode_responses=True, health_check_interval=25,
            socket_keepalive=True, socket_connect_timeout=5, client_name=CLIENT_NAME)

    async def close(self) -> None:
        """Close the asyncio client."""
        if self._aredis is not None:
            await self._aredis.aclose()
            self._aredis = None


def context(request: Request) -> ApiContext:
    """Dependency: the app's :class:`ApiContext`."""
    ctx: ApiContext = request.app.state.ctx
    return ctx
