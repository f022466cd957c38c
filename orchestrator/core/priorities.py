"""Run priorities that hold on Redis: bands of queues, and the order workers read them.

Celery's message priorities on Redis (``priority_steps``) are unreliable for us: a
priority is only honoured at fetch time, per list, and a chain's next task does not
inherit it.  Instead every task of a run goes to the queue of its step **with the band
of the run's priority**:

==========  ==================  ============================================
priority    queue of a step     e.g. (step queue ``default``)
==========  ==================  ============================================
``high``    ``<queue>.high``    ``default.high``
``normal``  ``<queue>``         ``default`` (the default: the names of old)
``low``     ``<queue>.low``     ``default.low``
==========  ==================  ============================================

A worker consumes every band of each of its queues (``workers/app.py``), and its
channel reads them through :class:`BandCycle` (kombu's ``queue_order_strategy``, see
:mod:`orchestrator.runtime.celeryconf`): before each ``BRPOP`` it orders its queues so
that one band goes first, chosen by smooth weighted round robin over
:data:`BAND_WEIGHTS`, then the others from high to low.  ``BRPOP`` pops from the first
non-empty list, so with every band backlogged a worker takes 8 high, 4 normal and 1 low
task of every 13, a band with nothing waiting gives its turn to the next one, and no band
starves.  With prefetch 1 and late acks a worker holds no backlog of its own, so a
high-priority task waits at most for a free slot.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Priority(StrEnum):
    """A run's priority: the band of queues its tasks go to."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        """0 for the highest band."""
        return _RANK[self]


_RANK = {Priority.HIGH: 0, Priority.NORMAL: 1, Priority.LOW: 2}

BAND_WEIGHTS: dict[Priority, int] = {Priority.HIGH: 8, Priority.NORMAL: 4, Priority.LOW: 1}
"""Share of a worker's fetches each band gets while every band has tasks waiting."""

_SUFFIX = {Priority.HIGH: ".high", Priority.LOW: ".low"}


def band_queue(queue: str, priority: Priority = Priority.NORMAL) -> str:
    """The queue of ``priority``'s band of ``queue`` (``normal``: ``queue`` itself)."""
    return queue + _SUFFIX.get(priority, "")


def band_queues(queue: str) -> tuple[str, ...]:
    """Every band of ``queue``, highest first: what a worker of ``queue`` consumes."""
    return tuple(band_queue(queue, p) for p in Priority)


def band_of(queue: str) -> tuple[str, Priority]:
    """``(base queue, band)`` of a queue name: ``default.high`` -> ``(default, high)``.

    A queue whose name does not end in a band suffix is the normal band of itself.
    """
    for priority, suffix in _SUFFIX.items():
        if queue.endswith(suffix) and len(queue) > len(suffix):
            return queue[:-len(suffix)], priority
    return queue, Priority.NORMAL


def parse_priority(value: str | None) -> Priority:
    """A priority from a caller's text (None or empty: ``normal``).

    Raises:
        ValueError: not one of ``high``, ``normal``, ``low`` (the message names them).
    """
    if not value:
        return Priority.NORMAL
    try:
        return Priority(value.strip().lower())
    except ValueError:
        raise ValueError(f"priority {value!r} is not one of "
                         f"{', '.join(p.value for p in Priority)}") from None


def stored_priority(value: str | None) -> Priority:
    """A priority read from the store, leniently: none, or one this release does not know
    (written by a newer one), is ``normal``."""
    try:
        return Priority(value or Priority.NORMAL)
    except ValueError:
        return Priority.NORMAL


class BandCycle:
    """kombu's queue cycle for a channel that consumes bands (``queue_order_strategy``).

    kombu calls :meth:`update` with the consumed queues, :meth:`consume` before each
    ``BRPOP`` (whose keys follow the returned order) and :meth:`rotate` with the queue a
    message came from.  Queues of one band take turns (round robin, as kombu's default);
    the band that goes first takes turns by smooth weighted round robin (nginx's), so
    each band's share of fetches under a full backlog follows :data:`BAND_WEIGHTS`.
    """

    def __init__(self, it: Iterable[str] | None = None,
                 weights: dict[Priority, int] | None = None) -> None:
        self.items: list[str] = list(it or ())
        self.weights = dict(weights or BAND_WEIGHTS)
        self._current = {p: 0 for p in Priority}
        self.turn = self._next_turn()

    def update(self, it: Iterable[str]) -> None:
        """The queues consumed now (kombu passes its active queues)."""
        self.items[:] = list(it)

    def consume(self, n: int) -> list[str]:
        """The first ``n`` queues in fetch order: the band whose turn it is, then the
        others from high to low; round-robin order within a band."""
        def key(q: str) -> tuple[int, int]:
            band = band_of(q)[1]
            return (0 if band is self.turn else 1, band.rank)
        return sorted(self.items[:n], key=key)  # stable: keeps the round-robin order

    def rotate(self, last_used: str) -> str:
        """A message came from ``last_used``: it goes to the end of its band's turns, and
        the next band's turn comes."""
        if last_used in self.items:
            self.items.append(self.items.pop(self.items.index(last_used)))
        self.turn = self._next_turn()
        return last_used

    def _next_turn(self) -> Priority:
        total = sum(self.weights.values())
        for p in Priority:
            self._current[p] += self.weights[p]
        best = max(Priority, key=lambda p: (self._current[p], -p.rank))
        self._current[best] -= total
        return best
