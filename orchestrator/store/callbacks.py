"""Run-end callbacks in the store: one registration per run, and the outbox.

A registration is stored before its run is created (:meth:`CallbackRegistry.register`),
so no end can be missed.  The script that ends a run puts the run in the outbox, due at
once, in the same atomic step (``lua/run_transition.lua``).  Any worker takes due
callbacks (:meth:`CallbackRegistry.due`, which re-arms them, so a deliverer that dies is
covered) and records each try (:meth:`CallbackRegistry.record`): delivered, retried
later, or given up.  Delivery itself is :mod:`orchestrator.callbacks.delivery`.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from orchestrator.store import scripts
from orchestrator.store.keys import Keys

MAX_ATTEMPTS_KEPT = 20
"""How many tries a registration keeps (the latest)."""


class CallbackRegistry:
    """Callback registrations and the outbox, on one Redis client (decoded responses)."""

    def __init__(self, client: redis.Redis, keys: Keys, ttl_s: int) -> None:
        """Args:
            client: a redis-py client with ``decode_responses=True``.
            keys: the key builders (``Settings.key_prefix``).
            ttl_s: how long a registration is kept (the run retention is a good value).
        """
        self._r: Any = client
        self.keys = keys
        self.ttl_s = ttl_s

    def register(self, run_id: str, url: str, detail: str = "full") -> None:
        """Register ``url`` for the end of ``run_id`` (replacing an earlier one); the
        body shows the run with ``detail`` (``RunOut.shaped``: what the registering
        caller may see of it)."""
        now = time.time()
        k = self.keys
        p = self._r.pipeline(transaction=True)
        p.set(k.callback(run_id), json.dumps({"url": url, "registered_at": now,
                                              "attempts": [], "detail": detail}),
              ex=self.ttl_s)
        p.zadd(k.callbacks_pending(), {run_id: now})
        p.execute()

    def unregister(self, run_id: str) -> None:
        """Forget the registration (the run was never created)."""
        p = self._r.pipeline(transaction=True)
        p.zrem(self.keys.callbacks_pending(), run_id)
        p.zrem(self.keys.callbacks_outbox(), run_id)
        p.delete(self.keys.callback(run_id))
        p.execute()

    def get(self, run_id: str) -> dict[str, Any] | None:
        """The registration: ``url``, ``registered_at``, ``attempts`` (the latest tries),
        ``delivery`` (the last try), ``done`` once delivered or given up."""
        raw = self._r.get(self.keys.callback(run_id))
        return None if raw is None else dict(json.loads(raw))

    def pending(self, limit: int = 500) -> dict[str, float]:
        """Runs whose callback is registered and not yet delivered or given up.

        Returns:
            run id -> registration time.
        """
        pairs = self._r.zrange(self.keys.callbacks_pending(), 0, limit - 1, withscores=True)
        return {str(rid): float(score) for rid, score in pairs}

    def due(self, rearm_s: float, limit: int = 100) -> list[tuple[str, dict[str, Any]]]:
        """Callbacks due now, each re-armed ``rearm_s`` later until :meth:`record`.

        Returns:
            (run id, registration) of each; a run whose registration expired is dropped.
        """
        k = self.keys
        flat = scripts.DUE(self._r, [k.callbacks_outbox()],
                                     [int(rearm_s * 1000), limit, *k.callback_parts()])
        out: list[tuple[str, dict[str, Any]]] = []
        gone: list[str] = []
        for i in range(0, len(flat), 2):
            if flat[i + 1]:
                out.append((str(flat[i]), dict(json.loads(flat[i + 1]))))
            else:
                gone.append(str(flat[i]))
        if gone:
            self._r.zrem(k.callbacks_outbox(), *gone)
        return out

    def record(self, run_id: str, attempt: dict[str, Any], retry_in_s: float | None) -> None:
        """Record a try; retry it in ``retry_in_s`` seconds, or (None) end the callback:
        delivered, or given up."""
        k = self.keys
        key = k.callback(run_id)
        raw = self._r.get(key)
        p = self._r.pipeline(transaction=True)
        if raw is not None:
            reg = json.loads(raw)
            kept = (reg.get("attempts") or [])[-(MAX_ATTEMPTS_KEPT - 1):]
            reg["attempts"] = [*kept, attempt]
            reg["delivery"] = attempt
            reg["done"] = retry_in_s is None
            p.set(key, json.dumps(reg), keepttl=True)
        if retry_in_s is None or raw is None:
            p.zrem(k.callbacks_outbox(), run_id)
            p.zrem(k.callbacks_pending(), run_id)
        else:
            p.zadd(k.callbacks_outbox(), {run_id: (time.time() + retry_in_s) * 1000})
        p.execute()
