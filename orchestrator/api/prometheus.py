"""Prometheus metrics for runs, steps and queues, read from Redis at scrape time.

The counters live in one Redis hash that the run store's Lua scripts update in the same
atomic step as each transition, so every worker process, across restarts, feeds one set of
numbers and the exporter holds no state of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from orchestrator.store import RunStore
from orchestrator.store.fields import DURATION_BUCKETS_S

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class StoreCollector(Collector):
    """Collects ``orchestrator_*`` metrics from a :class:`RunStore` and queue lengths."""

    def __init__(self, store: RunStore, queues: Sequence[str]) -> None:
        self.store = store
        self.queues = list(queues)

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily |
                                  HistogramMetricFamily]:
        m = self.store.metrics()
        runs = CounterMetricFamily("orchestrator_runs", "Runs by workflow and outcome "
                                   "(status 'started' counts every submitted run).",
                                   labels=["workflow", "status"])
        for (wf, status), n in m.runs.items():
            runs.add_metric([wf, status], n)
        yield runs
        steps = CounterMetricFamily("orchestrator_steps", "Step runs that ended, by status.",
                                    labels=["workflow", "step", "status"])
        for step_key, n in m.steps.items():
            steps.add_metric(list(step_key), n)
        yield steps
        hist = HistogramMetricFamily("orchestrator_step_duration_seconds",
                                     "Duration of step runs that succeeded or failed.",
                                     labels=["workflow", "step"])
        for key, counts in sorted(m.duration_buckets.items()):
            cumulative: list[tuple[str, float]] = []
            total = 0
            for bound in DURATION_BUCKETS_S:
                total += counts.get(repr(bound), 0)
                cumulative.append((repr(bound), float(total)))
            total += counts.get("+Inf", 0)
            cumulative.append(("+Inf", float(total)))
            hist.add_metric(list(key), cumulative, sum_value=m.duration_sums.get(key, 0.0))
        yield hist
        depth = GaugeMetricFamily("orchestrator_queue_depth",
                                  "Messages waiting in a Celery queue (LLEN).",
                                  labels=["queue"])
        for q, n in self.store.queue_lengths(self.queues).items():
            depth.add_metric([q], float(n))
        yield depth


def render(store: RunStore, queues: Iterable[str]) -> bytes:
    """The metrics in Prometheus' text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store, list(queues)))
    return bytes(generate_latest(registry))
