"""The broker transport of a publisher: kombu's Redis transport, with one Redis client per
channel instead of one per message.

kombu's Redis channel builds a new ``redis.Redis`` object for every message it sends
(``conn_or_acquire`` without a client), and for every event it publishes.  With redis-py 8
that object costs about half a millisecond of CPU (it fills a table of some 170 response
callbacks), so a submit, which sends one message and one ``task-sent`` event, spent
about a millisecond building clients.  This channel keeps the first one it builds: a
``redis.Redis`` on the channel's connection pool is thread-safe, and the pool, its
connections and their options (timeouts, keepalive, health checks) are kombu's as before.

Only the coordinator's app (:func:`orchestrator.runtime.celeryconf.client_app`) uses it,
and only on a plain ``redis://`` or ``rediss://`` broker; a Sentinel broker keeps kombu's
own transport.  Messages are byte for byte what kombu's Redis transport sends.
"""

from __future__ import annotations

import threading
from typing import Any

from kombu.transport import redis as kombu_redis

TRANSPORT = f"{__name__}:Transport"
"""The transport's path, for Celery's ``broker_transport`` setting."""


class Channel(kombu_redis.Channel):
    """kombu's Redis channel that reuses its synchronous client."""

    _sync_client: tuple[Any, Any] | None = None
    """(the pool it was built on, the client)."""
    _sync_lock = threading.Lock()

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # the consuming side's client (BRPOP, pub/sub): kombu's own
            return super()._create_client(asynchronous=True)  # type: ignore[no-untyped-call]
        pool = self.pool
        held = self._sync_client
        if held is None or held[0] is not pool:  # first use, or kombu made a new pool
            with self._sync_lock:
                held = self._sync_client
                if held is None or held[0] is not pool:
                    made = super()._create_client(False)  # type: ignore[no-untyped-call]
                    held = self._sync_client = (pool, made)
        return held[1]


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`Channel`."""

    Channel = Channel
