"""Workload sizes: the full benchmark, ``--quick`` and ``--smoke``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    """How big each workload is, and how many alternating rounds it gets."""

    name: str
    linear_steps: int = 200
    fan_steps: int = 2_000
    concurrent_runs: int = 200
    dag_steps: int = 60
    dag_sleep_ms: tuple[int, int] = (20, 200)
    dag_threads: int = 32
    compile_steps: tuple[int, int] = (1_000, 10_000)
    memory_runs: int = 200
    rss_steps: int = 100_000
    rss_budget_s: float = 600.0
    """Stop the RSS workload after this long even if ``rss_steps`` is not reached."""
    warmup_divisor: int = 10
    """The discarded warm-up round runs each workload at this fraction of its size."""
    prefork_concurrency: int = 2
    map_items: int = 10_000
    """Items of workload 7's map step (and tasks of raw's chord)."""
    map_size_items: tuple[int, int] = (1_000, 10_000)
    """Workload 7's largest message is measured at these two item counts."""
    peer_linear_steps: int = 20
    """Steps of workload 1's line in the rounds with a peer (``--peers``): celery-dyrygent
    takes at least one tick (1-2 s) per hop, so its line is shorter than ours vs raw's."""


FULL = Sizes("full")
QUICK = Sizes("quick", linear_steps=50, fan_steps=200, concurrent_runs=30, dag_steps=20,
              dag_sleep_ms=(10, 60), compile_steps=(200, 2_000), memory_runs=30,
              rss_steps=3_000, rss_budget_s=30.0, warmup_divisor=5, map_items=1_000,
              peer_linear_steps=10)
SMOKE = Sizes("smoke", linear_steps=10, fan_steps=20, concurrent_runs=5, dag_steps=10,
              dag_sleep_ms=(5, 20), dag_threads=8, compile_steps=(50, 200), memory_runs=5,
              map_items=50, map_size_items=(50, 200),
              rss_steps=100, rss_budget_s=20.0, warmup_divisor=5, peer_linear_steps=3)

PRESETS = {s.name: s for s in (FULL, QUICK, SMOKE)}
