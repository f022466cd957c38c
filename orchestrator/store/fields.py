"""Names of the fields the store writes into events and metrics, in one place.

The Lua scripts write these fields; the store's readers parse them here, so that the
API, the CLI and the Prometheus exporter never spell a field name of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

EVENTS_MAXLEN = 10_000
"""Approximate length cap of a run's event stream (``XADD MAXLEN ~``)."""

DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                      60.0, 300.0)
"""Upper bounds of the step-duration histogram buckets, in seconds (``+Inf`` follows)."""

# --- events (one stream per run) ---------------------------------------------------------

EVENT_KIND = "kind"
"""``run`` (the run changed status) or ``step`` (a step run did)."""
EVENT_RUN = "run"
EVENT_STEP = "step"
EVENT_STATUS = "status"
EVENT_STEP_ID = "step"
EVENT_ATTEMPT = "attempt"
EVENT_TS = "ts"


@dataclass(frozen=True)
class Event:
    """One entry of a run's event stream."""

    id: str
    kind: str
    status: str
    step: str | None
    attempt: int | None
    ts: float

    @classmethod
    def parse(cls, event_id: str, fields: dict[str, str]) -> Event:
        """Read a stream entry written by the store's scripts."""
        attempt = fields.get(EVENT_ATTEMPT)
        kind = EVENT_STEP if fields.get(EVENT_KIND) == EVENT_STEP else EVENT_RUN
        return cls(id=event_id, kind=kind, status=fields.get(EVENT_STATUS, ""),
                   step=fields.get(EVENT_STEP_ID) if kind == EVENT_STEP else None,
                   attempt=int(attempt) if attempt not in (None, "") else None,
                   ts=float(fields.get(EVENT_TS) or 0.0))


# --- metrics (one hash for the whole store) ----------------------------------------------
# Field layouts, "|"-separated:
#   runs|<workflow>|<status or "started">          runs counted by outcome
#   steps|<workflow>|<step>|<status>               final step runs by status, those with
#                                                  no duration (skipped, cancelled...)
#   dus|<workflow>|<step>                          sum of step-run durations, integer µs
#   dbucket|<workflow>|<step>|<status>|<bound>     succeeded and failed step runs per
#                                                  status and duration bucket: one
#                                                  HINCRBY counts the run and its bucket
# Older releases wrote steps|... for every final status, dsum|<workflow>|<step> (float
# seconds, HINCRBYFLOAT) and dbucket|<workflow>|<step>|<bound>: still read and added in.

METRIC_RUNS = "runs"
METRIC_STEPS = "steps"
METRIC_DURATION_SUM = "dsum"
METRIC_DURATION_US = "dus"
METRIC_DURATION_BUCKET = "dbucket"
METRIC_SEP = "|"
RUN_STARTED = "started"


def runs_metric(workflow: str, status: str) -> str:
    """The metrics field counting runs of ``workflow`` that reached ``status``."""
    return METRIC_SEP.join((METRIC_RUNS, workflow, status))


@dataclass
class Metrics:
    """The store's counters, parsed: what ``/metrics`` renders."""

    runs: dict[tuple[str, str], float]
    """(workflow, status) -> runs; status ``started`` counts every run created."""
    steps: dict[tuple[str, str, str], float]
    """(workflow, step, status) -> step runs that ended so."""
    duration_sums: dict[tuple[str, str], float]
    """(workflow, step) -> total seconds of succeeded and failed step runs."""
    duration_buckets: dict[tuple[str, str], dict[str, int]]
    """(workflow, step) -> bucket bound (``repr`` of the float, or ``+Inf``) -> count."""

    @classmethod
    def parse(cls, raw: dict[str, str]) -> Metrics:
        """Parse the metrics hash."""
        out = cls({}, {}, {}, {})
        for field, value in raw.items():
            parts = field.split(METRIC_SEP)
            if parts[0] == METRIC_RUNS and len(parts) == 3:
                out.runs[(parts[1], parts[2])] = float(value)
            elif parts[0] == METRIC_STEPS and len(parts) == 4:
                out._add(out.steps, (parts[1], parts[2], parts[3]), float(value))
            elif parts[0] == METRIC_DURATION_SUM and len(parts) == 3:
                out._add(out.duration_sums, (parts[1], parts[2]), float(value))
            elif parts[0] == METRIC_DURATION_US and len(parts) == 3:
                out._add(out.duration_sums, (parts[1], parts[2]), int(value) / 1e6)
            elif parts[0] == METRIC_DURATION_BUCKET and len(parts) in (4, 5):
                n = int(value)
                if len(parts) == 5:
                    out._add(out.steps, (parts[1], parts[2], parts[3]), float(n))
                buckets = out.duration_buckets.setdefault((parts[1], parts[2]), {})
                buckets[parts[-1]] = buckets.get(parts[-1], 0) + n
        return out

    @staticmethod
    def _add(into: dict[Any, Any], key: Any, value: float) -> None:
        into[key] = into.get(key, 0) + value
