"""Fair sharing between API tokens (issue #15): what one token may hold and how fast it
may call, so that one caller cannot starve another.

* **Request rate** per token, across every API process: a moving window kept in Redis by
  the ``limits`` package (``Settings.api_rate_per_token``, keys under
  :meth:`Keys.rate_limits <orchestrator.store.keys.Keys.rate_limits>`), checked by the
  :class:`Admission` middleware before the route: past it, 429 ``rate_limited``.
* **Open streams** (server-sent events) and **waiting submits** (``?wait``) per token
  (``Settings.api_max_streams_per_token``, ``api_max_waits_per_token``): one more is a
  429 ``too_many_streams`` / ``too_many_waits``; the waiting submit is refused before
  any run is created.
* **All streams and waits** of the process together: at most
  ``Settings.api_stream_connections``, the size of the blocking Redis pool
  (:class:`~orchestrator.store.reader.AsyncRunReader`), so a blocking read never waits for
  a connection; one more is a 503 ``server_busy``.

Every refusal is a :class:`~orchestrator.errors.Throttled` (the one error shape, with
``Retry-After``).  ``/healthz`` and ``/readyz`` are never limited, and ``/readyz`` pings
on connections of its own.

The stream and wait counters are **per API process**, in memory: a crash loses them with
the streams they counted (nothing to leak or to expire), and with N API processes behind
a balancer a token may hold N times its limit.  A slot is released when its stream's
response ends for any reason (the run ended, the client went away, an error) and when its
waiting submit answers.  A token is known by a digest of its secret (:func:`token_key`),
never by the secret itself.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import Request
from fastapi.responses import StreamingResponse
from limits import RateLimitItem, parse
from limits.aio.storage import RedisClusterStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from starlette.types import ASGIApp, Receive, Scope, Send

from orchestrator.api.failures import orchestrator_error, store_unavailable
from orchestrator.api.models import API_PREFIX
from orchestrator.errors import StoreUnavailable, Throttled
from orchestrator.outages import explain, mask_url
from orchestrator.settings import Settings
from orchestrator.store import AsyncRunReader, StoreError
from orchestrator.store.connection import cluster_uri

log = logging.getLogger(__name__)

Kind = Literal["stream", "wait"]

PROBES = frozenset({"/healthz", "/readyz"})
"""Paths never limited (and never on the shared pools)."""
HELD_RETRY_S = (5, 15)
"""``Retry-After`` of a refused stream or wait, drawn from this range: such slots free as
runs end, and clients refused together (a burst) should not all come back together."""
RATE_NAMESPACE = "api"


def _held_retry_s() -> int:
    return random.randint(*HELD_RETRY_S)


def token_key(secret: str) -> str:
    """A token's name in counters and rate-limit keys: 32 hex characters of the SHA-256
    of its secret (the secret itself is never stored or logged)."""
    return hashlib.sha256(secret.encode()).hexdigest()[:32]


def bearer_secret(headers: Any) -> str | None:
    """The bearer token of a request's raw ASGI headers, or None."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, secret = value.decode("latin-1").partition(" ")
            secret = secret.strip()
            return secret if scheme.lower() == "bearer" and secret else None
    return None


class Slot:
    """One stream or wait held by a token; :meth:`release` (idempotent) gives it back."""

    def __init__(self, quotas: Quotas, kind: Kind, key: str) -> None:
        self._quotas = quotas
        self.kind = kind
        self.key = key
        self._held = True

    def release(self) -> None:
        """Give the slot back (again: nothing)."""
        if self._held:
            self._held = False
            self._quotas._release(self)


class Quotas:
    """The limits of one API process: slots of streams and waits per token (in memory),
    and the request rate per token (in Redis, shared by every process).

    Use it from the serving event loop only: the counters take no lock.
    """

    def __init__(self, settings: Settings) -> None:
        self.max_held: dict[Kind, int] = {"stream": settings.api_max_streams_per_token,
                                          "wait": settings.api_max_waits_per_token}
        self.capacity = settings.api_stream_connections
        self.rate: RateLimitItem | None = (parse(settings.api_rate_per_token)
                                           if settings.api_rate_per_token else None)
        self._settings = settings
        self._held: dict[tuple[Kind, str], int] = {}
        self._total = 0
        self._limiter: MovingWindowRateLimiter | None = None

    # --- streams and waits --------------------------------------------------------------

    def held(self, kind: Kind, key: str) -> int:
        """How many ``kind`` slots the token ``key`` holds now."""
        return self._held.get((kind, key), 0)

    @property
    def total(self) -> int:
        """Streams and waits held now, every token together."""
        return self._total

    def hold(self, kind: Kind, key: str) -> Slot:
        """Take a ``kind`` slot for the token ``key``.

        Raises:
            Throttled: 429 ``too_many_streams`` / ``too_many_waits`` when the token holds
                its limit; 503 ``server_busy`` when the process holds
                ``api_stream_connections`` streams and waits.
        """
        self.check_free(kind, key)
        self._held[(kind, key)] = self.held(kind, key) + 1
        self._total += 1
        return Slot(self, kind, key)

    def check_free(self, kind: Kind, key: str) -> None:
        """Raise what :meth:`hold` would raise now, taking nothing.

        Raises:
            Throttled: see :meth:`hold`.
        """
        limit = self.max_held[kind]
        if self.held(kind, key) >= limit:
            setting = ("ORCH_API_MAX_STREAMS_PER_TOKEN" if kind == "stream"
                       else "ORCH_API_MAX_WAITS_PER_TOKEN")
            what = "event streams open" if kind == "stream" else "submits waiting (?wait)"
            raise Throttled(429, f"too_many_{kind}s",
                            f"this token already has {limit} {what} on this server",
                            f"Close one first, or retry later (the limit is the server's "
                            f"{setting}); poll GET /v1/runs/{{id}} instead of holding "
                            "many.", _held_retry_s())
        if self._total >= self.capacity:
            raise Throttled(503, "server_busy",
                            f"the server holds {self.capacity} streams and waits, its most",
                            "Retry later; or ask the operator to raise "
                            "ORCH_API_STREAM_CONNECTIONS or to run more API processes.",
                            _held_retry_s())

    def _release(self, slot: Slot) -> None:
        left = self.held(slot.kind, slot.key) - 1
        if left > 0:
            self._held[(slot.kind, slot.key)] = left
        else:
            self._held.pop((slot.kind, slot.key), None)
        self._total -= 1

    # --- request rate ---------------------------------------------------------------------

    def open(self, reader: AsyncRunReader) -> None:
        """Make the rate limiter on the reader's pool of short commands (call it after
        ``reader.open()``, in the serving loop)."""
        if self.rate is None:
            return
        storage: RedisStorage | RedisClusterStorage
        if reader.target.cluster:  # a cluster client of the limiter's own, same node
            uri, tls = cluster_uri(reader.target)
            storage = RedisClusterStorage(uri, implementation="redispy",
                                          key_prefix=reader.keys.rate_limits(),
                                          **reader.socket_options(), **tls)
        else:
            # The URI only picks redis-py's asyncio client; the connections are the
            # reader's bounded pool (one server or a Sentinel group's master).
            storage = RedisStorage("async+redis://", implementation="redispy",
                                   key_prefix=reader.keys.rate_limits(),
                                   connection_pool=reader.short_pool)
        self._limiter = MovingWindowRateLimiter(storage)

    async def check_rate(self, key: str) -> None:
        """Count one request of the token ``key``.

        Raises:
            Throttled: 429 ``rate_limited`` past ``api_rate_per_token``, with the seconds
                until the window has room again.
            StoreError: Redis did not answer (the caller answers 503).
        """
        if self._limiter is None or self.rate is None:
            return
        if await self._limiter.hit(self.rate, RATE_NAMESPACE, key):
            return
        stats = await self._limiter.get_window_stats(self.rate, RATE_NAMESPACE, key)
        wait_s = math.ceil(stats.reset_time - time.time())
        raise Throttled(429, "rate_limited",
                        f"this token made more than {self._settings.api_rate_per_token} "
                        "requests", "Wait Retry-After seconds, then slow down (the limit "
                        "is the server's ORCH_API_RATE_PER_TOKEN, per token).", wait_s)


def quotas_of(request: Request) -> Quotas:
    """The app's :class:`Quotas`."""
    quotas: Quotas = request.app.state.quotas
    return quotas


def hold(request: Request, kind: Kind) -> Slot:
    """Take a ``kind`` slot for the request's bearer token (call it after the route's
    auth dependency accepted the token).

    Raises:
        Throttled: see :meth:`Quotas.hold`.
    """
    secret = bearer_secret(request.scope.get("headers", ()))
    return quotas_of(request).hold(kind, token_key(secret or ""))


def _asks_stream(scope: Scope) -> bool:
    """Whether the request is ``GET /v1/runs/{run_id}/events``."""
    path: str = scope["path"]
    return (scope["method"] == "GET" and path.startswith(f"{API_PREFIX}/runs/")
            and path.endswith("/events") and path.count("/") == 4)


class HeldStream(StreamingResponse):
    """A streaming response that gives its :class:`Slot` back when it ends, however it
    ends (the stream finished, the client disconnected, the server stopped, an error)."""

    def __init__(self, slot: Slot, content: AsyncIterator[bytes], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slot.release()


class Admission:
    """ASGI middleware, before any route runs: a request that carries a known bearer
    token is refused at once if it asks for an event stream while the token holds its
    limit of them (no store read, no rate count: a client that keeps asking costs
    little), else counted against the token's rate (:meth:`Quotas.check_rate`) and
    answered 429 past it.  (The stream route takes its slot itself; this only refuses
    early what it would refuse.)

    Requests without a token or with an unknown one pass (their route answers 401), as do
    ``/healthz`` and ``/readyz``.  If Redis does not answer, the request gets the 503 of a
    Redis failure (limits are not skipped when they cannot be counted).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["app"].state if scope["type"] == "http" else None
        quotas: Quotas | None = getattr(state, "quotas", None)
        if quotas is None or scope["path"] in PROBES:
            await self.app(scope, receive, send)
            return
        secret = bearer_secret(scope.get("headers", ()))
        if secret is None or state is None or state.tokens.find(secret) is None:
            await self.app(scope, receive, send)
            return
        key = token_key(secret)
        try:
            if _asks_stream(scope):
                quotas.check_free("stream", key)
            await quotas.check_rate(key)
        except Throttled as exc:
            await orchestrator_error(exc)(scope, receive, send)
            return
        except StoreError as exc:
            settings = state.ctx.settings
            err = explain(exc, settings.redis_url, settings.redis_timeout_s) or \
                StoreUnavailable(mask_url(settings.redis_url),
                                 " ".join(str(exc).split()) or type(exc).__name__)
            log.warning("rate limit not checked: %s", err.summary)
            await store_unavailable(err)(scope, receive, send)
            return
        await self.app(scope, receive, send)
