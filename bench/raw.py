"""The raw Celery peer: the same workloads written by hand as plain Celery canvases.

The app uses the orchestrator's own :func:`orchestrator.runtime.celeryconf.celery_config` (JSON,
late acks, prefetch 1, events on, Redis broker and results), so the only difference
between the two arms is the orchestrator's work per step.  Its tasks live on their own
queue, ``RAW_QUEUE``, so the two arms' workers never take each other's tasks.

Tasks (immutable signatures everywhere, as the orchestrator's compiler emits):

- ``raw.noop()`` returns ``time.time()``, so the last task of a canvas stamps its end.
- ``raw.sleep(ms, tag, node)`` sleeps and appends ``{node, start, end}`` to the list
  ``bench:raw:<tag>``, so a run's critical path comes from measured durations.
- ``raw.join(results)`` is a chord body; it returns ``time.time()``.  Given its header's
  end stamps, it also appends how long after the last of them it began (ms) to the list
  ``bench:raw:join_gaps`` (:data:`JOIN_GAPS`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from celery import Celery, chain, chord
from celery.canvas import Signature

from orchestrator.runtime.celeryconf import celery_config
from orchestrator.settings import Settings

RAW_QUEUE = "bench_raw"
NOOP = "raw.noop"
SLEEP = "raw.sleep"
JOIN = "raw.join"
JOIN_GAPS = "bench:raw:join_gaps"
"""List: for each join whose header returned end stamps, ms from the last to its start."""


def stamps_key(tag: str) -> str:
    """The list where ``raw.sleep`` tasks of the canvas ``tag`` record their times."""
    return f"bench:raw:{tag}"


def create_app(settings: Settings) -> Celery:
    """The raw peer's worker app: the orchestrator's Celery settings, three tasks."""
    app = Celery("bench_raw", set_as_current=False)
    app.conf.update(celery_config(settings))
    app.conf.task_default_queue = RAW_QUEUE

    @app.task(name=NOOP)  # type: ignore[untyped-decorator]
    def raw_noop() -> float:
        return time.time()

    @app.task(name=SLEEP)  # type: ignore[untyped-decorator]
    def raw_sleep(ms: int, tag: str, node: str) -> float:
        start = time.time()
        time.sleep(ms / 1000)
        end = time.time()
        app.backend.client.rpush(stamps_key(tag), json.dumps(
            {"node": node, "start": start, "end": end}))
        return end

    @app.task(name=JOIN)  # type: ignore[untyped-decorator]
    def raw_join(results: Any = None) -> float:
        now = time.time()
        if isinstance(results, list) and results and all(
                isinstance(r, float) for r in results):
            app.backend.client.rpush(JOIN_GAPS, (now - max(results)) * 1000)
        return now

    return app


# --- canvases, built by task name (the client needs no task code) ------------------------


def _noop(app: Celery, queue: str = RAW_QUEUE) -> Signature:
    return app.signature(NOOP, immutable=True, queue=queue)


def _join(app: Celery, queue: str = RAW_QUEUE) -> Signature:
    return app.signature(JOIN, queue=queue)


def linear(app: Celery, n: int, queue: str = RAW_QUEUE) -> Signature:
    """``chain`` of ``n`` no-op tasks."""
    return chain(*(_noop(app, queue) for _ in range(n)), app=app)


def fan_out_in(app: Celery, n: int) -> Signature:
    """``chord`` of ``n`` no-op tasks whose body is a join."""
    return chord([_noop(app) for _ in range(n)], _join(app), app=app)


def order_shape(app: Celery) -> Signature:
    """The order workflow's 9-step DAG by hand, in chord normal form.

    receive -> check -> (reserve -> invoice -> ((shipping -> customer) | accounting)
    | backorder | admin) -> join.
    """
    n = _noop
    inner = chord([chain(n(app), n(app), app=app), n(app)], _join(app), app=app)
    branch = chain(n(app), n(app), inner, app=app)
    outer = chord([branch, n(app), n(app)], _join(app), app=app)
    return chain(n(app), n(app), outer, app=app)


def level_by_level(app: Celery, levels: Sequence[Sequence[str]],
                   sleep_ms: Mapping[str, int], tag: str, queue: str = RAW_QUEUE
                   ) -> Signature:
    """A DAG forced into a chain of chords, one per level (its series-parallel form).

    A level of one step is a plain task; wider levels are a chord closed by a join.
    """
    parts: list[Signature] = []
    for level in levels:
        sigs = [app.signature(SLEEP, args=(sleep_ms[s], tag, s), immutable=True,
                              queue=queue) for s in level]
        parts.append(sigs[0] if len(sigs) == 1 else chord(sigs, _join(app, queue), app=app))
    return chain(*parts, app=app) if len(parts) > 1 else parts[0]


def read_stamps(client: Any, tag: str) -> dict[str, tuple[float, float]]:
    """``{node: (start, end)}`` recorded by the ``raw.sleep`` tasks of ``tag``."""
    out: dict[str, tuple[float, float]] = {}
    for raw in client.lrange(stamps_key(tag), 0, -1):
        d = json.loads(raw)
        out[d["node"]] = (float(d["start"]), float(d["end"]))
    return out


def result_keys(app: Celery, task_ids: Iterable[str]) -> list[str]:
    """The result-backend keys of ``task_ids``."""
    return [app.backend.get_key_for_task(t).decode() for t in task_ids]
