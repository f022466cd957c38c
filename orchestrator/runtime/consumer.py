"""The stream consumer service (``orchestrator triggers``): turns the entries other
services ``XADD`` to a stream trigger's stream into runs.

Each stream trigger has one consumer group; each process reads under its own consumer
name (``<host>-<pid>``), one thread per trigger.  For each entry, in order:

1. the entry becomes an :class:`~orchestrator.core.triggers.Event`: its ``event`` field
   (JSON) is the body, its ``id`` field (else the entry id) the message id, its other
   fields the headers;
2. :meth:`Intake.deliver` starts its run, at most once (the run id is a function of the
   event id) and records it;
3. only then is the entry acknowledged (``XACK``).

A process that dies between 2 and 3 leaves the entry pending; another consumer claims
it once it has been idle ``consumer_claim_idle_s`` (``XAUTOCLAIM``), delivers it again,
finds its run (``duplicate``) and acknowledges it: nothing lost, nothing doubled.  A
poison entry (no ``event`` field, not UTF-8 or not JSON, an expression that fails on it,
an input the workflow refuses) is recorded as ``invalid`` and acknowledged, never
retried.  When Redis fails, the entry is left pending and the thread backs off (up to
:data:`MAX_BACKOFF_S`), logging once when Redis goes and once when it comes back.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.core.triggers import Event, EventOutcome, StreamSource, Trigger
from orchestrator.errors import EventInvalid, OrchestratorError, StoreUnavailable
from orchestrator.outages import explain, kind_of
from orchestrator.runtime.triggers import Intake, TriggerTable
from orchestrator.store.triggers import Entry, TriggerStore

log = logging.getLogger(__name__)

READ_COUNT = 20
FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 5.0
EVENT_FIELD = b"event"
ID_FIELD = b"id"
READY_LINE = "trigger consumer ready"
"""Logged once every thread reads (the local stack waits for it)."""


def consumer_name() -> str:
    """This process's consumer name: ``<host>-<pid>`` (a restarted process is another
    consumer; what its predecessor left pending is claimed after the idle threshold)."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class _Link:
    """Whether Redis answers, shared by the threads: logs each change of state once."""

    redis_url: str
    up: bool = True
    backoff_s: float = FIRST_BACKOFF_S
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def failed(self, exc: BaseException) -> float:
        """Note a failure; return how long to wait before the next try."""
        with self._lock:
            if self.up:
                err = explain(exc, self.redis_url)
                what = err.summary if isinstance(err, StoreUnavailable) else repr(exc)
                log.warning("trigger consumer: %s; entries wait in their streams, retrying "
                            "with backoff (up to %g s)", what, MAX_BACKOFF_S)
                self.up = False
                self.backoff_s = FIRST_BACKOFF_S
            else:
                self.backoff_s = min(self.backoff_s * 2, MAX_BACKOFF_S)
            return self.backoff_s

    def ok(self) -> None:
        """Note a success (logs once when Redis is back)."""
        if self.up:
            return
        with self._lock:
            if not self.up:
                log.warning("trigger consumer: Redis answers again; reading resumes")
                self.up = True
                self.backoff_s = FIRST_BACKOFF_S


class StreamConsumer:
    """Reads every stream trigger of a table until :meth:`stop`."""

    def __init__(self, table: TriggerTable, intake: Intake, store: TriggerStore,
                 redis_url: str, *, claim_idle_s: float, block_s: float,
                 name: str | None = None, crash_before_ack: bool = False) -> None:
        """Args:
            table: the triggers (only the stream ones are read).
            intake: starts and records the runs.
            store: the consumer groups.
            redis_url: for messages about outages (password masked).
            claim_idle_s: claim other consumers' entries pending at least this long.
            block_s: longest blocking read (also how often to look for entries to claim).
            name: the consumer name; default :func:`consumer_name`.
            crash_before_ack: fault injection (tests only): SIGKILL this process after a
                run is started and before its entry is acknowledged.
        """
        self.table = table
        self.intake = intake
        self.store = store
        self.name = name or consumer_name()
        self.claim_idle_s = claim_idle_s
        self.block_s = block_s
        self.crash_before_ack = crash_before_ack
        self._link = _Link(redis_url)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> list[str]:
        """Start one reading thread per stream trigger; return the triggers' names."""
        streams = self.table.streams()
        for trig, src in streams:
            t = threading.Thread(target=self._loop, args=(trig, src),
                                 name=f"trigger-{trig.name}", daemon=True)
            t.start()
            self._threads.append(t)
        names = [t.name for t, _ in streams]
        log.info("%s: consumer %s reading %s", READY_LINE, self.name,
                 ", ".join(f"{t.name} <- {s.stream}" for t, s in streams) or "no stream "
                 "trigger (nothing to do)")
        return names

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop reading: each thread ends after its current read (at most ``block_s``)."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout_s)

    def wait(self, heartbeat: Path | None = None) -> None:
        """Block until :meth:`stop` is called (from a signal handler, say).

        Args:
            heartbeat: a file touched every ``block_s`` while Redis answers (what a
                container's health check reads); None: none.
        """
        while not self._stop.wait(self.block_s):
            if heartbeat is not None and self._link.up:
                heartbeat.touch()

    def _loop(self, trig: Trigger, src: StreamSource) -> None:
        grouped = False
        own_first = True
        while not self._stop.is_set():
            try:
                if not grouped:
                    self.store.ensure_group(trig.name, src.stream)
                    grouped = True
                entries: Sequence[Entry] = ()
                if own_first:  # what this name read before and did not acknowledge
                    entries = self.store.read(trig.name, src.stream, self.name, READ_COUNT,
                                              self.block_s, new=False)
                    own_first = bool(entries)
                if not entries:
                    entries = self.store.claim(trig.name, src.stream, self.name,
                                               self.claim_idle_s, READ_COUNT)
                if not entries:
                    entries = self.store.read(trig.name, src.stream, self.name, READ_COUNT,
                                              self.block_s)
                for entry in entries:
                    if self._stop.is_set():
                        break  # unacknowledged: claimed later, by us or another consumer
                    self._handle(trig, src, entry)
                self._link.ok()
            except Exception as exc:
                if kind_of(exc) is None and not isinstance(exc, StoreUnavailable):
                    log.exception("trigger %s: unexpected error; retrying", trig.name)
                own_first = True  # once Redis is back, what this name holds comes first
                self._stop.wait(self._link.failed(exc))

    def _handle(self, trig: Trigger, src: StreamSource, entry: Entry) -> None:
        """Deliver one entry, then acknowledge it.  Raises on a Redis failure (the entry
        stays pending and is delivered again)."""
        try:
            event = to_event(entry)
        except EventInvalid as exc:
            self.intake.reject(trig.name, "stream", str(exc), entry.entry_id,
                               EventOutcome.INVALID)
        else:
            try:
                rec = self.intake.deliver(trig, event, "stream")
            except OrchestratorError as exc:
                if isinstance(exc, StoreUnavailable) or kind_of(exc) is not None:
                    raise
                # e.g. the workflow left the catalog: retrying cannot help
                self.intake.reject(trig.name, "stream", str(exc), entry.entry_id,
                                   EventOutcome.INVALID)
            else:
                if self.crash_before_ack and rec.outcome is EventOutcome.ACCEPTED:
                    log.warning("fault injection: killing the consumer before XACK of %s",
                                entry.entry_id)
                    os.kill(os.getpid(), signal.SIGKILL)
        self.store.ack(trig.name, src.stream, entry.entry_id)


def to_event(entry: Entry) -> Event:
    """The event of a stream entry.

    Raises:
        EventInvalid: no ``event`` field, or one that is not UTF-8 JSON.
    """
    raw = entry.fields.get(EVENT_FIELD)
    if raw is None:
        raise EventInvalid(f"stream entry {entry.entry_id} has no 'event' field; XADD "
                           "<stream> * event '<json>' [id <event id>]")
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise EventInvalid(f"stream entry {entry.entry_id}: the event field is not JSON "
                           f"({exc})") from None
    headers = {k.decode("utf-8", "replace"): v.decode("utf-8", "replace")
               for k, v in entry.fields.items() if k != EVENT_FIELD}
    given = entry.fields.get(ID_FIELD)
    message_id = given.decode("utf-8", "replace") if given else entry.entry_id
    return Event(body=body, headers=headers, message_id=message_id)
