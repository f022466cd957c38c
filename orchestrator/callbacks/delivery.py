"""Delivering run-end callbacks: the signed POST, and the sender every worker runs.

A caller of the HTTP API may ask to be told when a run ends (``callback_url``).  The
registration is kept by :class:`orchestrator.store.callbacks.CallbackRegistry`; the script
that ends a run puts its callback in the outbox, atomically.  Every worker runs a
:class:`CallbackSender` (no API process is needed): it POSTs the run's view, the body of
``GET /v1/runs/{id}``, signed over a timestamp and the body
per the Standard Webhooks specification (:mod:`orchestrator.callbacks.signing`), and
retries with exponential backoff for up to ``callback_max_age_s`` (24 h).  Delivery is at
least once: receivers dedupe by ``webhook-id``.  Redirects are not followed, and a
callback never goes to an internal address unless the operator allows its network
(:mod:`orchestrator.callbacks.destinations`, checked again at every try).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from orchestrator.api.models import RunDetail, RunOut
from orchestrator.callbacks import signing
from orchestrator.callbacks.destinations import DestinationRefused, Network, checked
from orchestrator.errors import RunNotFound
from orchestrator.store import StoreError
from orchestrator.store.callbacks import CallbackRegistry

if TYPE_CHECKING:
    from orchestrator.runtime.coordinator import RunView

log = logging.getLogger(__name__)

MAX_URL_CHARS = 2048
MAX_BACKOFF_S = 3600.0
REARM_MARGIN_S = 20.0
"""A callback being tried is due again this long after its try's timeout (in case the
sender died mid-try)."""


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


def callback_body(view: RunView, detail: RunDetail = "full") -> bytes:
    """The callback's body: the run's JSON, as ``GET /v1/runs/{id}`` returns it to the
    caller that registered it (``detail``: ids and statuses only for a ``runs:write``
    token without ``runs:read``; tracebacks only for one with ``runs:tracebacks``), less
    the callback's own tries."""
    # json, not pydantic's encoder: a lone surrogate in a step's output (JSON allows it,
    # UTF-8 does not) is escaped, not an error
    data = RunOut.from_view(view).shaped(detail).model_dump(mode="json",
                                                            exclude={"callback"})
    return json.dumps(data, separators=(",", ":")).encode("ascii")


def backoff_s(attempt: int, rand: float) -> float:
    """Seconds before the try after ``attempt`` (1-based): 1 s doubling to an hour, with
    +-20 % jitter (``rand`` in [0, 1))."""
    return min(2.0 ** (attempt - 1), MAX_BACKOFF_S) * (0.8 + 0.4 * rand)


async def post(client: httpx.AsyncClient, url: str, body: bytes, run_id: str, secret: str,
               attempt: int, timeout_s: float, allowed: Sequence[Network] = ()
               ) -> dict[str, Any]:
    """POST one signed try of a callback; return the try's record (never raises for the
    receiver's failures: they are data).

    The host is resolved and checked here (see :mod:`.destinations`), and the POST goes
    to the checked address; a refused destination is a try with ``refused: true``.
    """
    ts = int(time.time())
    headers = {"Content-Type": "application/json",
               **signing.headers(body, secret, run_id, ts),
               "X-Orchestrator-Run-Id": run_id, "X-Orchestrator-Attempt": str(attempt),
               "User-Agent": "celery-orchestrator-callback/3"}
    started = time.time()
    parts = urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme.lower() == "https"
    port = parts.port or (443 if https else 80)
    try:
        ip = (await asyncio.to_thread(checked, host, port, allowed))[0]
    except DestinationRefused as exc:
        return {"attempt": attempt, "at": started, "ok": False, "status_code": None,
                "error": str(exc)[:300], "refused": True, "seconds": 0.0}
    # connect to the address just checked, not to a second lookup's answer
    netloc = f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
    target = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    headers["Host"] = parts.netloc.rsplit("@", 1)[-1]
    extensions = {"sni_hostname": host} if https else {}
    try:
        resp = await client.post(target, content=body, headers=headers, timeout=timeout_s,
                                 extensions=extensions)
        ok, status, error = resp.is_success, resp.status_code, None
        if not ok:
            error = f"receiver answered {status}"
    except httpx.HTTPError as exc:
        ok, status, error = False, None, f"{type(exc).__name__}: {exc}"[:300]
    return {"attempt": attempt, "at": started, "ok": ok, "status_code": status,
            "error": error, "seconds": round(time.time() - started, 3)}


class CallbackSender:
    """Delivers due callbacks from a worker, in an asyncio loop of its own thread.

    Every ``poll_s`` it takes the callbacks due now from the outbox (each re-armed while it
    is tried, so a sender that dies is covered by another) and tries each in a task of its
    own, so a slow or silent receiver delays no other delivery.  A try that fails (no
    answer within ``timeout_s``, a connection error, any answer but 2xx) is retried with
    exponential backoff (1 s doubling to an hour, +-20 %) until ``max_age_s`` after the
    run ended; a 4xx other than 408 and 429 ends it at once (the receiver refuses it).
    Every try is recorded with the registration (``GET /v1/runs/{id}`` shows them).
    """

    def __init__(self, registry: CallbackRegistry, view: Callable[[str], RunView],
                 secret: str, *, timeout_s: float = 10.0, max_age_s: float = 24 * 3600,
                 poll_s: float = 0.5, concurrency: int = 100,
                 allowed: Sequence[Network] = ()) -> None:
        """``allowed``: networks callbacks may reach although they are internal
        (``Settings.callback_allowed_networks``)."""
        self.registry = registry
        self.allowed = tuple(allowed)
        self.view = view
        self.secret = secret
        self.timeout_s = timeout_s
        self.max_age_s = max_age_s
        self.poll_s = poll_s
        self.concurrency = concurrency
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="callback-sender", daemon=True)

    def start(self) -> None:
        """Start delivering."""
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop taking callbacks; tries under way get up to ``timeout_s`` to end."""
        self._stop.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        asyncio.run(self._loop())

    async def _loop(self) -> None:
        sem = asyncio.Semaphore(self.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        # no kept-alive connections: each try connects to the address it checked
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=0)
        async with httpx.AsyncClient(follow_redirects=False, limits=limits) as client:
            while not self._stop.is_set():
                try:
                    due = await asyncio.to_thread(self.registry.due,
                                                  self.timeout_s + REARM_MARGIN_S,
                                                  self.concurrency)
                except StoreError as exc:
                    log.debug("callback outbox unreachable: %s", exc)
                    due = []
                for run_id, reg in due:
                    task = asyncio.create_task(self._deliver(client, sem, run_id, reg))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                await asyncio.sleep(self.poll_s)
            if tasks:
                await asyncio.wait(tasks, timeout=self.timeout_s)

    async def _deliver(self, client: httpx.AsyncClient, sem: asyncio.Semaphore, run_id: str,
                       reg: dict[str, Any]) -> None:
        async with sem:
            try:
                await self._try(client, run_id, reg)
            except Exception:  # one callback must not stop the others
                log.exception("callback of run %s could not be tried", run_id)

    async def _try(self, client: httpx.AsyncClient, run_id: str, reg: dict[str, Any]) -> None:
        url = str(reg["url"])
        attempt = len(reg.get("attempts") or []) + 1
        try:
            view = await asyncio.to_thread(self.view, run_id)
        except RunNotFound:
            await asyncio.to_thread(self.registry.record, run_id,
                                    {"attempt": attempt, "at": time.time(), "ok": False,
                                     "status_code": None, "error": "the run is gone"}, None)
            return
        detail = reg.get("detail")
        body = callback_body(view, detail if detail in ("status", "full", "debug") else "full")
        result = await post(client, url, body, run_id, self.secret, attempt, self.timeout_s,
                            self.allowed)
        ended = view.run.ended_at or time.time()
        status = result["status_code"]
        refused = bool(result.get("refused")) or (
            status is not None and 400 <= status < 500 and status not in (408, 429))
        retry_in: float | None = None
        if not result["ok"] and not refused and time.time() - ended < self.max_age_s:
            retry_in = backoff_s(attempt, random.random())
        await asyncio.to_thread(self.registry.record, run_id, result, retry_in)
        if result["ok"]:
            log.info("callback of run %s delivered to %s (%s, try %d)", run_id, redact(url),
                     status, attempt)
        elif retry_in is None:
            log.warning("callback of run %s to %s given up after try %d: %s", run_id,
                        redact(url), attempt, result["error"])
        else:
            log.info("callback of run %s to %s failed (try %d: %s); next in %.0f s", run_id,
                     redact(url), attempt, result["error"], retry_in)


def redact(url: str) -> str:
    """``url`` for logs: without its query string or user info (either may carry a
    secret)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    who = "…@" if "@" in parts.netloc else ""
    return f"{parts.scheme}://{who}{host}{parts.path}" + ("?…" if parts.query else "")
