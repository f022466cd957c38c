"""Prometheus metrics for runs, steps and queues, read from Redis at scrape time.

The counters live in one Redis hash that the run store's Lua scripts update in the same
atomic step as each transition, so every worker process, across restarts, feeds one set of
numbers and the exporter holds no state of its own.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from orchestrator.store.runs import DURATION_BUCKETS_S, RunStore

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class StoreCollector(Collector):
    """Collects ``orchestrator_*`` metrics from a :class:`RunStore` and queue lengths."""

    def __init__(self, store: RunStore, queues: Sequence[str]) -> None:
        self.store = store
        self.queues = list(queues)

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily |
                                  HistogramMetricFamily]:
        raw = self.store.r.hgetall(self.store.keys.metrics())
        runs = CounterMetricFamily("orchestrator_runs", "Runs by workflow and outcome "
                                   "(status 'started' counts every submitted run).",
                                   labels=["workflow", "status"])
        steps = CounterMetricFamily("orchestrator_steps", "Step runs that ended, by status.",
                                    labels=["workflow", "step", "status"])
        sums: dict[tuple[str, str], float] = {}
        buckets: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
        for field, value in raw.items():
            parts = field.split("|")
            if parts[0] == "runs" and len(parts) == 3:
                runs.add_metric([parts[1], parts[2]], float(value))
            elif parts[0] == "steps" and len(parts) == 4:
                steps.add_metric([parts[1], parts[2], parts[3]], float(value))
            elif parts[0] == "dsum" and len(parts) == 3:
                sums[(parts[1], parts[2])] = float(value)
            elif parts[0] == "dbucket" and len(parts) == 4:
                buckets[(parts[1], parts[2])][parts[3]] = int(value)
        yield runs
        yield steps
        hist = HistogramMetricFamily("orchestrator_step_duration_seconds",
                                     "Duration of step runs that succeeded or failed.",
                                     labels=["workflow", "step"])
        for key, counts in sorted(buckets.items()):
            cumulative: list[tuple[str, float]] = []
            total = 0
            for bound in DURATION_BUCKETS_S:
                total += counts.get(repr(bound), 0)
                cumulative.append((repr(bound), float(total)))
            total += counts.get("+Inf", 0)
            cumulative.append(("+Inf", float(total)))
            hist.add_metric(list(key), cumulative, sum_value=sums.get(key, 0.0))
        yield hist
        depth = GaugeMetricFamily("orchestrator_queue_depth",
                                  "Messages waiting in a Celery queue (LLEN).",
                                  labels=["queue"])
        if self.queues:
            p = self.store.r.pipeline(transaction=False)
            for q in self.queues:
                p.llen(q)
            for q, n in zip(self.queues, p.execute(), strict=True):
                depth.add_metric([q], float(n))
        yield depth


def render(store: RunStore, queues: Iterable[str]) -> bytes:
    """The metrics in Prometheus' text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store, list(queues)))
    return bytes(generate_latest(registry))
