"""Delivering run-end callbacks: the HMAC-signed POST, and the deliverer thread.

A caller of the HTTP API may ask to be told when a run ends (``callback_url``).  The
registration is kept by :class:`orchestrator.store.callbacks.CallbackRegistry`.  When the
run ends, exactly one process claims the callback and POSTs the run's view, the body of
``GET /v1/runs/{id}``, to the URL, signed (:mod:`orchestrator.callbacks.signing`).

Delivery is tried ``callback_attempts`` times on a connection error, a timeout, a 5xx or
a 429; any other answer ends it.  Redirects are not followed.  A process that dies
between the claim and the POST loses that callback: delivery is at most once per claim,
with retries inside it.

Who delivers: :class:`CallbackDeliverer`, a thread the API process runs (workers do not
deliver callbacks), follows the event streams of every run with a pending callback (one
blocking ``XREAD`` over all of them) and delivers when a run's final status event
appears; this covers every way a run ends (finalised by a worker, or cancelled).
:func:`deliver_if_registered` is the same claim-and-deliver, callable by any process that
has just seen a run end; whichever claims first delivers.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from orchestrator.api.models import SIGNATURE_HEADER, RunOut
from orchestrator.callbacks.signing import sign
from orchestrator.settings import Settings
from orchestrator.store import StoreError
from orchestrator.store.callbacks import CallbackRegistry

if TYPE_CHECKING:
    from orchestrator.runtime.coordinator import RunView

log = logging.getLogger(__name__)

MAX_URL_CHARS = 2048
# A registration precedes its run's creation; only after this long is a registration
# whose run is not in the store taken for one whose run expired (or was never created).
VANISHED_GRACE_S = 60.0
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def check_url(url: str) -> str:
    """Return ``url`` if it can receive callbacks.

    Raises:
        ValueError: not an absolute http(s) URL with a host, longer than
            :data:`MAX_URL_CHARS`, or carrying credentials; the message names the fix.
    """
    if len(url) > MAX_URL_CHARS:
        raise ValueError(f"callback_url is longer than {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port out of range
    except ValueError as exc:
        raise ValueError(f"callback_url {url!r} does not parse: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"callback_url must be an http:// or https:// URL, not "
                         f"{parts.scheme or 'a relative one'!r}")
    if not parts.hostname:
        raise ValueError(f"callback_url {url!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("callback_url must not carry credentials (user:password@); "
                         "authenticate the callback by its signature instead")
    if any(c.isspace() for c in url):
        raise ValueError("callback_url must not contain whitespace")
    del port
    return url


def callback_body(view: RunView) -> bytes:
    """The callback's body: the run's JSON, as ``GET /v1/runs/{id}`` returns it."""
    return RunOut.from_view(view).model_dump_json().encode()


@dataclass(frozen=True)
class Delivery:
    """The outcome of one callback delivery."""

    run_id: str
    url: str
    ok: bool
    attempts: int
    status_code: int | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The outcome as JSON data (stored with the registration)."""
        return {"ok": self.ok, "attempts": self.attempts, "status_code": self.status_code,
                "error": self.error, "at": time.time()}


def deliver(view: RunView, url: str, secret: str, *, timeout_s: float = 10.0,
            attempts: int = 3, backoff_s: float = 0.5,
            client: httpx.Client | None = None) -> Delivery:
    """POST the run's view to ``url``, signed with ``secret``.

    Args:
        view: the ended run.
        url: the receiver (checked with :func:`check_url` when it was registered).
        secret: the HMAC key (``Settings.callback_secret``).
        timeout_s: timeout of one POST.
        attempts: POSTs at most; the next one follows a connection error, a timeout, a
            5xx or a 429, after ``backoff_s`` doubled each time.
        client: an httpx client to use (default: one made for this call).

    Returns:
        The outcome; ``ok`` when the receiver answered 2xx.
    """
    body = callback_body(view)
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, secret),
               "X-Orchestrator-Run-Id": view.run.run_id,
               "X-Orchestrator-Delivery": uuid.uuid4().hex,
               "User-Agent": "celery-orchestrator-callback/1"}
    own = client is None
    http = client or httpx.Client(timeout=timeout_s, follow_redirects=False)
    status: int | None = None
    error: str | None = None
    try:
        for attempt in range(1, attempts + 1):
            try:
                resp = http.post(url, content=body, headers=headers, timeout=timeout_s)
                status, error = resp.status_code, None
                if resp.is_success:
                    return Delivery(view.run.run_id, url, True, attempt, status)
                if status not in RETRY_STATUSES:
                    return Delivery(view.run.run_id, url, False, attempt, status,
                                    f"receiver answered {status}")
                error = f"receiver answered {status}"
            except httpx.HTTPError as exc:
                status, error = None, f"{type(exc).__name__}: {exc}"
            if attempt < attempts:
                # backoff between delivery attempts to a failing receiver, by design
                time.sleep(backoff_s * 2 ** (attempt - 1))
        return Delivery(view.run.run_id, url, False, attempts, status, error)
    finally:
        if own:
            http.close()


def deliver_if_registered(registry: CallbackRegistry, view: Callable[[str], RunView],
                          run_id: str, settings: Settings) -> Delivery | None:
    """Claim and deliver the run's callback, if it has one and nobody claimed it.

    Call it once the run is in a final status.

    Returns:
        The delivery's outcome, or None when there was nothing to deliver here.
    """
    url = registry.claim(run_id)
    if url is None:
        return None
    result = deliver(view(run_id), url, settings.callback_secret.get_secret_value(),
                     timeout_s=settings.callback_timeout_s,
                     attempts=settings.callback_attempts)
    registry.record(run_id, result.as_json())
    if result.ok:
        log.info("callback of run %s delivered to %s (%s)", run_id, url, result.status_code)
    else:
        log.warning("callback of run %s to %s failed after %d attempt(s): %s", run_id, url,
                    result.attempts, result.error)
    return result


class CallbackDeliverer:
    """A thread that delivers the callbacks of runs as they end.

    It reads the pending set, then blocks on one ``XREAD`` over the registration feed and
    the event stream of every pending run; a run's final status event triggers
    :func:`deliver_if_registered` on a small thread pool, so a slow receiver delays no
    other delivery.  Runs that vanished from the store (retention) are dropped.
    """

    def __init__(self, registry: CallbackRegistry, view: Callable[[str], RunView],
                 settings: Settings, *, block_ms: int = 1000, max_watched: int = 500,
                 pool_size: int = 4) -> None:
        """Args:
            registry: where the registrations are.
            view: returns a run's view (``Coordinator.view``).
            settings: the secret, timeout and attempts of deliveries.
            block_ms: longest blocking read; also how soon :meth:`stop` takes effect.
            max_watched: most runs followed at once (the oldest registrations first).
            pool_size: concurrent deliveries.
        """
        self.registry = registry
        self.view = view
        self.settings = settings
        self.block_ms = block_ms
        self.max_watched = max_watched
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(pool_size, thread_name_prefix="callback")
        self._thread = threading.Thread(target=self._loop, name="callback-deliverer",
                                        daemon=True)

    def start(self) -> None:
        """Start following runs."""
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop following and wait for deliveries under way (up to their own timeouts)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self._pool.shutdown(wait=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
            except StoreError as exc:
                log.warning("callback deliverer lost Redis (%s); retrying", exc)
                self._stop.wait(1.0)

    def _follow(self) -> None:
        feed_id = self.registry.feed_cursor()
        cursors: dict[str, str] = {}
        while not self._stop.is_set():
            pending = self.registry.pending(self.max_watched)
            cursors = {rid: cursors.get(rid, "0-0") for rid in pending}
            got = self.registry.wait_for_ends(feed_id, cursors, self.block_ms)
            if got is None:
                cutoff = time.time() - VANISHED_GRACE_S
                self.registry.drop_vanished([rid for rid, at in pending.items()
                                             if at < cutoff])
                continue
            feed_id, cursors, ended = got
            for rid in ended:
                self._pool.submit(self._deliver, rid)

    def _deliver(self, run_id: str) -> None:
        try:
            deliver_if_registered(self.registry, self.view, run_id, self.settings)
        except Exception:  # one failed delivery must not stop the others
            log.exception("callback of run %s could not be delivered", run_id)
