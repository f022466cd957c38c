"""The Redis side of event triggers: each trigger's capped list of handled events, and
its consumer group on a stream (read, claim, acknowledge).

A stream trigger has one consumer group (``Keys.trigger_group``), created at the start of
the stream (``0``): entries added before the consumer service first ran are read too.
Each consumer process reads under its own name; an entry it read and did not acknowledge
(it died) stays pending until another consumer claims it with ``XAUTOCLAIM``.  Entries are
read as bytes and handed out as such: a producer's bytes that are not UTF-8 are a poison
entry to record and acknowledge, not a read that fails forever.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import ResponseError

from orchestrator.core.triggers import EventRecord
from orchestrator.store import connection
from orchestrator.store.connection import RedisTarget, target_of
from orchestrator.store.keys import Keys, store_prefix

log = logging.getLogger(__name__)

SOCKET_TIMEOUT_S = 15.0
"""Longest wait for one command; a blocking read asks for far less (``block_s``)."""


@dataclass(frozen=True)
class Entry:
    """One stream entry: its id and its fields, as the producer wrote them (bytes)."""

    entry_id: str
    fields: dict[bytes, bytes]


class TriggerStore:
    """Event records and consumer groups in Redis.  Thread-safe as redis-py's client is."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        # a bytes client (decode_responses=False): stream fields may be any bytes
        self._r: Any = client
        self.keys = keys

    @classmethod
    def from_url(cls, url: RedisTarget | str, prefix: str,
                 timeout_s: float = SOCKET_TIMEOUT_S) -> TriggerStore:
        """Connect to ``url`` (bytes replies): one server's URL, or a target (a Sentinel
        group: :mod:`.connection`).

        Args:
            timeout_s: how long one command may wait (connecting included); keep it above
                the consumer's ``block_s``.
        """
        keys = Keys(store_prefix(prefix, target_of(url).cluster))
        client = connection.client(url, decode_responses=False, health_check_interval=25,
                                   socket_keepalive=True, socket_timeout=timeout_s,
                                   socket_connect_timeout=min(timeout_s, 5.0),
                                   home=keys.schema())
        return cls(client, keys)

    def close(self) -> None:
        """Close the client's connections."""
        self._r.close()

    # --- event records -------------------------------------------------------------------

    def record(self, rec: EventRecord, kept: int) -> None:
        """Add ``rec`` to its trigger's list, keeping the newest ``kept`` (one round trip)."""
        key = self.keys.trigger_events(rec.trigger)
        p = self._r.pipeline(transaction=True)
        p.lpush(key, rec.model_dump_json(exclude_none=True))
        p.ltrim(key, 0, kept - 1)
        p.execute()

    def events(self, trigger: str, limit: int = 50, offset: int = 0) -> list[EventRecord]:
        """The trigger's handled events, newest first (a record that does not parse is
        left out)."""
        raw = self._r.lrange(self.keys.trigger_events(trigger), offset, offset + limit - 1)
        out = []
        for item in raw:
            try:
                out.append(EventRecord.model_validate_json(item))
            except ValueError:
                log.warning("skipping an unreadable event record of trigger %r", trigger)
        return out

    # --- consumer groups -----------------------------------------------------------------

    def ensure_group(self, trigger: str, stream: str) -> bool:
        """Create the trigger's consumer group at the start of ``stream`` (and the stream,
        if absent).  Returns True if it was created now, False if it existed."""
        try:
            self._r.xgroup_create(self.keys.event_stream(stream),
                                  self.keys.trigger_group(trigger), id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return False
            raise
        return True

    def read(self, trigger: str, stream: str, consumer: str, count: int, block_s: float,
             new: bool = True) -> list[Entry]:
        """Read entries for ``consumer``: new ones (``>``, blocking up to ``block_s``), or,
        with ``new=False``, those already delivered to it and not acknowledged.

        A group (or stream) that vanished (Redis restarted empty, or a ``DEL``) is
        created again and the read returns nothing this time.
        """
        try:
            reply = self._r.xreadgroup(
                self.keys.trigger_group(trigger), consumer,
                {self.keys.event_stream(stream): ">" if new else "0"}, count=count,
                block=max(1, int(block_s * 1000)) if new else None)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.ensure_group(trigger, stream)
            return []
        out = []
        for _name, entries in reply or []:
            for entry_id, fields in entries:
                out.append(Entry(_text(entry_id), dict(fields or {})))
        return out

    def claim(self, trigger: str, stream: str, consumer: str, min_idle_s: float,
              count: int) -> list[Entry]:
        """Claim for ``consumer`` up to ``count`` entries pending (delivered, not
        acknowledged) for at least ``min_idle_s`` with any consumer of the group: those
        of a consumer that died.  Entries deleted from the stream meanwhile are dropped
        from the pending list by Redis and not returned."""
        try:
            reply = self._r.xautoclaim(
                self.keys.event_stream(stream), self.keys.trigger_group(trigger), consumer,
                max(1, int(min_idle_s * 1000)), start_id="0-0", count=count)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.ensure_group(trigger, stream)
            return []
        entries = reply[1] if len(reply) > 1 else []
        return [Entry(_text(eid), dict(fields or {})) for eid, fields in entries
                if fields is not None]

    def ack(self, trigger: str, stream: str, entry_id: str) -> None:
        """Acknowledge an entry: it leaves the group's pending list."""
        self._r.xack(self.keys.event_stream(stream), self.keys.trigger_group(trigger),
                     entry_id)

    def pending(self, trigger: str, stream: str) -> int:
        """How many entries of the group are delivered and not acknowledged."""
        try:
            info = self._r.xpending(self.keys.event_stream(stream),
                                    self.keys.trigger_group(trigger))
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                return 0
            raise
        return int(info.get("pending", 0))

    def lag(self, trigger: str, stream: str) -> int | None:
        """Entries of the stream not yet delivered to the group (None: unknown)."""
        try:
            groups = self._r.xinfo_groups(self.keys.event_stream(stream))
        except ResponseError:
            return None
        name = self.keys.trigger_group(trigger).encode()
        for g in groups:
            if g.get("name") in (name, name.decode()):
                lag = g.get("lag")
                return int(lag) if lag is not None else None
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
