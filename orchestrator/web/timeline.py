"""A run's timeline, its critical path, and duration percentiles (pure, no I/O).

The Gantt chart splits each step run into its queue wait (``queued_at`` to
``started_at``: the task waited in the broker for a worker) and its execution
(``started_at`` to ``ended_at``, or to now while it runs).  The critical path is the
chain of steps that decided when the run ended: start from the step that ended last and
walk back, each time to the parent that ended last (the one the step actually waited
for).  Shortening any other step would not have ended the run sooner.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    """One step run's times (Unix seconds); None where not reached."""

    queued_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None

    def end(self, now: float) -> float | None:
        """When it ended, or ``now`` while it runs; None if it never started or ended."""
        if self.ended_at is not None:
            return self.ended_at
        return now if self.started_at is not None else None


def critical_path(parents: Mapping[str, Sequence[str]], spans: Mapping[str, Span],
                  now: float) -> list[str]:
    """The steps that decided the run's end, first to last (empty if none ran yet).

    Args:
        parents: step id -> the steps it waits for.
        spans: step id -> its times (steps without an entry never ran).
        now: the current time, the end of steps still running.
    """
    ends = {s: e for s, span in spans.items() if (e := span.end(now)) is not None}
    if not ends:
        return []
    cur = max(ends, key=lambda s: (ends[s], s))
    path = [cur]
    seen = {cur}
    while True:
        ps = [p for p in parents.get(cur, ()) if p in ends and p not in seen]
        if not ps:
            break
        cur = max(ps, key=lambda s: (ends[s], s))
        path.append(cur)
        seen.add(cur)
    path.reverse()
    return path


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0 < q <= 100) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]
