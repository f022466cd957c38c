"""Map steps in the store: the expansion of a map step into items, each item's end, and
the map step's own end with its unit (``lua/map_step.lua``, one script call each).

Where a map step ``s`` keeps its state (see :meth:`Keys.maps`): counters in the run's
maps hash (``s|count``, ``s|next``, ``s|left``, ``s|failed``, ...); each item ``s[i]`` is a
step run like any other in the steps hash (no record: pending) with its lease in the
leases hash; the item it receives is ``in:s[i]`` and its output ``s[i]`` in the outputs
hash.  The map step's output, the list of its items' outputs, is built by the script in
the call that ends the last item.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from orchestrator.core.maps import FAILURES_KEPT, item_id
from orchestrator.core.priorities import Priority, stored_priority
from orchestrator.core.states import RunStatus, StepStatus, held_sources, step_sources
from orchestrator.errors import RunNotFound
from orchestrator.store import scripts
from orchestrator.store.keys import Keys
from orchestrator.store.records import LeaseMode, StepRun
from orchestrator.store.runs import lease_member

NOT_CLOSED = -2
"""``remaining`` of a call that did not end the map step."""


@dataclass(frozen=True)
class ItemRun:
    """What a map item reads of its run (:meth:`MapStore.begin_item`)."""

    status: RunStatus
    priority: Priority
    faults: str | None
    input: Any
    """The run's input, if the item's inputs read it (else None)."""


@dataclass(frozen=True)
class Closing:
    """What a call that may end the map step reports about its unit."""

    remaining: int
    """Units of the run left after the map's (-1: the run is gone; ``NOT_CLOSED``: the
    map step did not end in this call)."""
    ready: list[str]
    """Successor units this call claimed: its caller publishes them."""
    priority: Priority

    @property
    def closed(self) -> bool:
        """Whether this call ended the map step (and completed its unit)."""
        return self.remaining != NOT_CLOSED


@dataclass(frozen=True)
class Expansion:
    """The outcome of :meth:`MapStore.expand`."""

    code: int
    """1 expanded now, 0 expanded before (a redelivery), -1 no run, -2 fenced."""
    count: int
    publish: list[int]
    """Indexes of the items to publish now (the first window; after a redelivery, those
    published before that have not ended: never began, or began and lost their task)."""
    closing: Closing


@dataclass(frozen=True)
class ItemEnd:
    """The outcome of :meth:`MapStore.item_ended`."""

    code: int
    """1 recorded, 0 refused by the transition table, -1 no run, -2 fenced."""
    handed: int
    """The next item's index to publish (a sliding window), -1 for none."""
    closing: Closing


def _closing(remaining: Any, ready: Any, priority: Any) -> Closing:
    return Closing(int(remaining), [str(u) for u in ready or []],
                   stored_priority(priority or None))


class MapStore:
    """The map steps of one store's runs."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._r = client
        self.keys = keys

    def _keys(self, run_id: str) -> list[str]:
        k = self.keys
        return [k.run(run_id), k.steps(run_id), k.outputs(run_id), k.events(run_id),
                k.metrics(), k.leases(run_id), k.maps(run_id), k.counters(run_id),
                k.units_done(run_id), k.units_claimed(run_id), k.claims()]

    def begin_item(self, run_id: str, item: str, step_id: str, reads: Sequence[str],
                   read_input: bool, running_patch: dict[str, Any], token: str, tag: str,
                   lease_s: float) -> tuple[ItemRun, dict[str, StepRun], dict[str, Any],
                                            LeaseMode]:
        """:meth:`RunStore.begin_step` for a map item, always on the fast path (an item
        has no parent to wait for): one round trip for the item's lease, its record and
        its map step's, the outputs it reads, and its move to ``running`` if the run is
        running.  Of the run it reads only what an item needs (not a large input, unless
        ``read_input``).

        Raises:
            RunNotFound: the run is not in the store.
        """
        k = self.keys
        ids = [step_id, item]
        raw_run, vals, out_vals, mode = scripts.BEGIN_ITEM(
            self._r,
            [k.run(run_id), k.steps(run_id), k.outputs(run_id), k.events(run_id), k.metrics(),
             k.leases(run_id), k.lease_index()],
            [item, "1", _sources(StepStatus.RUNNING), json.dumps(running_patch), time.time(),
             0, len(ids), len(reads), token, int(lease_s * 1000), tag,
             lease_member(run_id, item), *ids, *reads, "1" if read_input else "0"])
        status, priority, faults, data = (list(raw_run) + [None] * 4)[:4]
        if not status:
            raise RunNotFound(f"run {run_id!r} is not in the store")
        run = ItemRun(RunStatus(status), stored_priority(priority or None), faults or None,
                      json.loads(data) if read_input and data else None)
        recs = {s: StepRun.from_json(s, v) for s, v in zip(ids, vals, strict=True)}
        outs = {s: json.loads(v) for s, v in zip(reads, out_vals or [], strict=False)
                if v is not None}
        return run, recs, outs, LeaseMode(int(mode))

    def expand(self, run_id: str, step_id: str, token: str, workflow: str, unit: str,
               successors: Sequence[str], window: int, tolerated: int,
               items: Sequence[str]) -> Expansion:
        """Expand a map step into its items, once, by the holder of its lease: store each
        item (JSON text) and the map's counters, hand back the first window to publish.
        An empty list ends the map step (``succeeded``, output ``[]``) and completes its
        unit here.  Expanded before (a redelivered expansion, or the stalled-run pass
        publishing the map's unit again), nothing changes: the items published before
        that have not ended are handed back again (a copy of one that still runs meets
        its lease).

        Args:
            window: ``max_parallel`` (0: every item at once).
            tolerated: item failures the map step tolerates (-1: any).
        """
        code, count, publish, *closing = scripts.MAP_STEP(
            self._r, self._keys(run_id),
            ["expand", step_id, token, time.time(), workflow, unit, run_id, window,
             tolerated, _sources(StepStatus.SUCCEEDED), _sources(StepStatus.FAILED),
             len(successors), *successors, *items])
        return Expansion(int(code), int(count), [int(i) for i in publish],
                         _closing(*closing))

    def item_ended(self, run_id: str, item: str, step_id: str, token: str,
                   status: StepStatus, patch: dict[str, Any], output: Any, has_output: bool,
                   workflow: str, unit: str, successors: Sequence[str],
                   failure: dict[str, Any] | None = None) -> ItemEnd:
        """Record an item's final ``status`` (fenced by its lease) with ``patch`` and its
        output; count it for its map step; hand back the next item to publish (under
        ``max_parallel``); and if it is the last item, end the map step and complete its
        unit (claiming the successors for the caller to publish).

        Args:
            failure: the item's error (index, type, message) for the map's record.
        """
        code, handed, *closing = scripts.MAP_STEP(
            self._r, self._keys(run_id),
            ["item", item, step_id, token, status.value, _sources(status, held=bool(token)),
             json.dumps(patch), json.dumps(output) if has_output else "", time.time(),
             workflow, unit, run_id, FAILURES_KEPT,
             json.dumps(failure) if failure is not None else "",
             _sources(StepStatus.SUCCEEDED), _sources(StepStatus.FAILED),
             len(successors), *successors])
        return ItemEnd(int(code), int(handed), _closing(*closing))

    def counts(self, run_id: str, step_id: str) -> tuple[int, dict[StepStatus, int]]:
        """(items, items by status) of a map step (0 and {} before it expanded); counted
        in the store, nothing per item crosses the wire."""
        count, *flat = scripts.MAP_STEP(self._r, self._keys(run_id), ["counts", step_id])
        by = {StepStatus(str(s)): int(n) for s, n in zip(flat[::2], flat[1::2], strict=True)}
        return int(count), by

    def items(self, run_id: str, step_id: str, start: int = 0, stop: int | None = None
              ) -> tuple[list[StepRun], dict[str, Any]]:
        """Records (``pending`` without one) and outputs of items ``start`` to ``stop``
        (exclusive; None: the last) of a map step."""
        count, _ = self.counts_only(run_id, step_id)
        end = count if stop is None else min(stop, count)
        ids = [item_id(step_id, i) for i in range(max(start, 0), end)]
        if not ids:
            return [], {}
        pipe = self._r.pipeline(transaction=False)
        pipe.hmget(self.keys.steps(run_id), ids)
        pipe.hmget(self.keys.outputs(run_id), ids)
        recs, outs = pipe.execute()
        return ([StepRun.from_json(i, v) for i, v in zip(ids, recs, strict=True)],
                {i: json.loads(v) for i, v in zip(ids, outs, strict=True) if v is not None})

    def counts_only(self, run_id: str, step_id: str) -> tuple[int, int]:
        """(items, items published so far) of a map step."""
        f = self._r.hmget(self.keys.maps(run_id), [f"{step_id}|count", f"{step_id}|next"])
        return int(f[0] or 0), int(f[1] or 0)


def _sources(status: StepStatus, held: bool = False) -> str:
    """The states ``status`` may be entered from (by a lease holder: ``held``)."""
    return ",".join(sorted(s.value for s in (held_sources if held else step_sources)(status)))
