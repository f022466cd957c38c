"""What every route needs, built once per app: settings, catalog, coordinator, Redis."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from orchestrator.runtime.catalog import Catalog
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.runtime.submitter import AsyncSubmitter
from orchestrator.settings import Settings
from orchestrator.store import AsyncRunReader, CallbackRegistry


@dataclass
class ApiContext:
    """The app's shared objects.

    ``coordinator`` is synchronous (redis-py and Celery publishing): routes call it in a
    worker thread.  ``reader`` is the store's asyncio side, for blocking stream reads
    (``wait``, server-sent events) and idempotency keys; it is opened by the app's
    lifespan, in the serving event loop.  :attr:`submitter` starts the common run on
    the loop, on the reader's client.
    """

    settings: Settings
    catalog: Catalog
    coordinator: Coordinator
    registry: CallbackRegistry
    reader: AsyncRunReader

    @property
    def submitter(self) -> AsyncSubmitter:
        """The event loop's submit path, on the reader's client (the reader is open)."""
        return AsyncSubmitter(self.coordinator, self.reader.client)


async def context(request: Request) -> ApiContext:
    """Dependency: the app's :class:`ApiContext`."""
    ctx: ApiContext = request.app.state.ctx
    return ctx
