"""Run-end callback registrations: one URL per run, and the set of runs still pending.

A registration is stored before its run is created, so no end can be missed; exactly one
process *claims* a callback (``ZREM`` of the run from the pending set returns 1 to one
caller only) and delivers it (:mod:`orchestrator.callbacks.delivery`).
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from orchestrator.core.states import RUN_TERMINAL
from orchestrator.store.fields import EVENT_RUN, Event
from orchestrator.store.keys import Keys

FEED_MAXLEN = 1000
"""Approximate length cap of the registration feed (it only wakes the deliverers)."""


def _ends_run(ev: Event) -> bool:
    return ev.kind == EVENT_RUN and ev.status in {s.value for s in RUN_TERMINAL}


class CallbackRegistry:
    """Callback registrations in Redis: one URL per run, and the set of pending runs."""

    def __init__(self, client: redis.Redis, keys: Keys, ttl_s: int) -> None:
        """Args:
            client: a redis-py client with ``decode_responses=True``.
            keys: the key builders (``Settings.key_prefix``).
            ttl_s: how long a registration is kept (the run retention is a good value).
        """
        self._r: Any = client
        self.keys = keys
        self.ttl_s = ttl_s

    def register(self, run_id: str, url: str) -> None:
        """Register ``url`` for the end of ``run_id`` (replacing an earlier one)."""
        now = time.time()
        k = self.keys
        p = self._r.pipeline(transaction=True)
        p.set(k.callback(run_id), json.dumps({"url": url, "registered_at": now}),
              ex=self.ttl_s)
        p.zadd(k.callbacks_pending(), {run_id: now})
        p.xadd(k.callbacks_feed(), {"run_id": run_id}, maxlen=FEED_MAXLEN, approximate=True)
        p.execute()

    def unregister(self, run_id: str) -> None:
        """Forget the registration (the run was never created, or is gone)."""
        p = self._r.pipeline(transaction=True)
        p.zrem(self.keys.callbacks_pending(), run_id)
        p.delete(self.keys.callback(run_id))
        p.execute()

    def get(self, run_id: str) -> dict[str, Any] | None:
        """The registration (``url``, ``registered_at``, and ``delivery`` once tried)."""
        raw = self._r.get(self.keys.callback(run_id))
        return None if raw is None else dict(json.loads(raw))

    def pending(self, limit: int = 500) -> dict[str, float]:
        """Runs whose callback is not claimed yet, oldest registration first.

        Returns:
            run id -> registration time.
        """
        pairs = self._r.zrange(self.keys.callbacks_pending(), 0, limit - 1, withscores=True)
        return {str(rid): float(score) for rid, score in pairs}

    def claim(self, run_id: str) -> str | None:
        """Claim the run's callback for delivery; return its URL if this caller won.

        Exactly one caller gets the URL, however many processes race.
        """
        if not self._r.zrem(self.keys.callbacks_pending(), run_id):
            return None
        reg = self.get(run_id)
        return None if reg is None else str(reg["url"])

    def record(self, run_id: str, outcome: dict[str, Any]) -> None:
        """Store the outcome of a delivery with the registration (for inspection)."""
        key = self.keys.callback(run_id)
        raw = self._r.get(key)
        if raw is None:
            return
        reg = json.loads(raw)
        reg["delivery"] = outcome
        self._r.set(key, json.dumps(reg), keepttl=True)

    def feed_cursor(self) -> str:
        """The id of the newest registration in the feed (``0-0`` if none)."""
        last = self._r.xrevrange(self.keys.callbacks_feed(), count=1)
        return str(last[0][0]) if last else "0-0"

    def wait_for_ends(self, feed_id: str, cursors: dict[str, str], block_ms: int
                      ) -> tuple[str, dict[str, str], list[str]] | None:
        """Block up to ``block_ms`` on the feed and the event streams of ``cursors``' runs.

        Args:
            feed_id: the feed position read so far.
            cursors: run id -> the event-stream position read so far.

        Returns:
            None when nothing happened; else the new feed position, the runs' new
            positions, and the runs whose streams carried a final run status.
        """
        k = self.keys
        feed = k.callbacks_feed()
        stream_of = {k.events(rid): rid for rid in cursors}
        streams = {feed: feed_id, **{s: cursors[rid] for s, rid in stream_of.items()}}
        res = self._r.xread(streams, count=200, block=block_ms)
        if not res:
            return None
        moved = dict(cursors)
        ended: list[str] = []
        for stream, entries in res:
            if stream == feed:
                feed_id = entries[-1][0]
                continue
            rid = stream_of[stream]
            moved[rid] = entries[-1][0]
            if any(_ends_run(Event.parse(eid, fs)) for eid, fs in entries):
                ended.append(rid)
        return feed_id, moved, ended

    def drop_vanished(self, run_ids: list[str]) -> None:
        """Unregister the runs among ``run_ids`` that are no longer in the store."""
        if not run_ids:
            return
        p = self._r.pipeline(transaction=False)
        for rid in run_ids:
            p.exists(self.keys.run(rid))
        for rid, present in zip(run_ids, p.execute(), strict=True):
            if not present:
                self.unregister(rid)
