"""celery-dyrygent as a peer arm of workloads 1 and 2 (``python -m bench --peers dyrygent``).

celery-dyrygent (PyPI ``celery-dyrygent``, OVH) runs a DAG of Celery signatures with one
"workflow processor" task: each tick it reads the result of every running task from the
result backend, publishes the tasks whose parents all succeeded, then retries itself with
the whole workflow (every node's signature) as its argument.  Nothing else moves a
workflow forward, so a hop costs at least one tick.

Its tick interval is its retry policy, ``('random', min_s, max_s)``:

- ``dyrygent``: what ``Workflow()`` sets, ``random 10-30 s``, cut to 2 s after a tick
  that published something (``get_retry_countdown``).  The README names no other setting.
- ``dyrygent-1s``: ``set_retry_policy('random', 1, 1)``, the shortest it accepts (its
  countdown is ``random.randint``, so whole seconds; ``min`` must be > 0).

The arm has its own worker (``bench.dyrygent_main``: the orchestrator's Celery settings,
the same pool and concurrency as the other arms) on its own queue, ``DYR_QUEUE``; its
tasks return ``time.time()`` like raw Celery's, so a workflow's finish is the stamp of its
last task.  A round also waits for the processor's own last tick (its result is
``SUCCESS``) so that no tick of one round runs during the next arm's measurement.

Patched for Celery 5.7 (and only here): ``Workflow.add_celery_canvas`` looks canvases up by
exact type, ``{celery.canvas._chain: ...}``, and Celery 5's ``chain(...)`` is an instance of
the subclass ``celery.canvas.chain``, which raises ``KeyError``; lines are therefore built as
``celery.canvas._chain``, the class it expects.  Nothing else needed changing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from celery import Celery, chord
from celery.canvas import Signature, _chain

from bench.harness import Bench, BenchError
from bench.report import Row, median, ratios, spread, verdict
from bench.stack import Stack, Worker
from bench.workloads import _fan_ours, _fan_raw, _linear_ours, _linear_raw
from orchestrator.runtime.celeryconf import celery_config, client_app
from orchestrator.settings import Settings

DYR_QUEUE = "bench_dyrygent"
NOOP = "dyr.noop"
JOIN = "dyr.join"


@dataclass(frozen=True)
class Policy:
    """A tick policy of celery-dyrygent: ``Workflow.set_retry_policy('random', lo, hi)``."""

    key: str
    label: str
    tick_min_s: int
    tick_max_s: int


DEFAULT = Policy("dyrygent", "celery-dyrygent (its default ticks: 10-30 s, 2 s after a "
                 "tick that published)", 10, 30)
FAST = Policy("dyrygent-1s", "celery-dyrygent (1 s ticks, its shortest)", 1, 1)
PEERS = {p.key: p for p in (DEFAULT, FAST)}


def parse_peers(items: list[str]) -> list[Policy]:
    """``--peers`` values (repeatable or comma-separated) as policies, in the given order.

    Raises:
        SystemExit: a name is not one of :data:`PEERS`.
    """
    names = [x.strip() for item in items for x in item.split(",") if x.strip()]
    bad = [n for n in names if n not in PEERS]
    if bad:
        raise SystemExit(f"unknown peer(s) {bad}; choose among {sorted(PEERS)}")
    return [PEERS[n] for n in dict.fromkeys(names)]


def create_app(settings: Settings) -> Celery:
    """The peer's worker app: the orchestrator's Celery settings, two no-op tasks and
    celery-dyrygent's workflow processor (registered as its README says)."""
    from celery_dyrygent.tasks import register_workflow_processor

    app = Celery("bench_dyrygent", set_as_current=False)
    app.conf.update(celery_config(settings))
    app.conf.task_default_queue = DYR_QUEUE

    @app.task(name=NOOP)  # type: ignore[untyped-decorator]
    def dyr_noop() -> float:
        return time.time()

    @app.task(name=JOIN)  # type: ignore[untyped-decorator]
    def dyr_join() -> float:
        return time.time()

    register_workflow_processor(app)
    return app


def client(redis_url: str) -> Celery:
    """The submitting side: a send-only app whose default queue is :data:`DYR_QUEUE`, with
    the processor registered (``Workflow.freeze`` builds its signature from it)."""
    from celery_dyrygent.tasks import register_workflow_processor

    app = client_app(Settings(redis_url=redis_url, default_queue=DYR_QUEUE))
    register_workflow_processor(app)
    return app


def _noop(app: Celery) -> Signature:
    return app.signature(NOOP, immutable=True, queue=DYR_QUEUE)


def linear(app: Celery, n: int) -> Signature:
    """A line of ``n`` no-op tasks (as ``_chain``: see the module's note)."""
    return _chain(*(_noop(app) for _ in range(n)), app=app)


def fan_out_in(app: Celery, n: int) -> Signature:
    """``n`` no-op tasks, then a join that depends on all of them."""
    return chord([_noop(app) for _ in range(n)],
                 app.signature(JOIN, immutable=True, queue=DYR_QUEUE), app=app)


@dataclass(frozen=True)
class Submitted:
    """A workflow handed to celery-dyrygent."""

    workflow_id: str
    """The processor task's id (kept across its retries): its result is ``SUCCESS`` after
    the tick that found the workflow finished."""
    last_id: str
    """The task whose result stamps the workflow's finish."""
    task_ids: tuple[str, ...]


def submit(canvas: Signature, policy: Policy) -> Submitted:
    """Turn ``canvas`` into a dyrygent workflow with ``policy`` and publish its processor."""
    from celery_dyrygent.workflows import Workflow

    wf = Workflow()
    wf.set_retry_policy("random", policy.tick_min_s, policy.tick_max_s)
    last = wf.add_celery_canvas(canvas)
    if len(last) != 1:
        raise BenchError(f"expected one last task, got {len(last)}")
    wf.apply_async()
    return Submitted(str(wf.id), str(last[0].id), tuple(wf.nodes))


def run_workflow(b: Bench, canvas: Callable[[], Signature], policy: Policy
                 ) -> tuple[float, float]:
    """Submit and wait; return ``(submit time, finish stamp)``.

    Raises:
        BenchError: the workflow did not finish, or a task of it did not succeed.
    """
    t0 = time.time()
    sub = submit(canvas(), policy)
    end = float(b.wait_results([sub.last_id], interval_s=0.05)[sub.last_id])
    b.wait_results([sub.workflow_id], interval_s=0.1)
    # every task ran and succeeded (read after the clock stopped; raises on a failure)
    b.wait_results(list(sub.task_ids), timeout_s=5.0)
    return t0, end


# --- the worker ---------------------------------------------------------------------------


@contextmanager
def worker(stack: Stack, pool: str, concurrency: int, app: Celery) -> Iterator[Worker]:
    """The peer's worker, with the same pool and concurrency as the other arms'."""
    w = Worker("dyrygent", pool, concurrency, stack.url, module="bench.dyrygent_main",
               queue=DYR_QUEUE)
    stack.workers.append(w)
    try:
        w.start()
        w.wait_ready(app)
        yield w
    finally:
        w.stop()
        stack.workers.remove(w)


# --- rounds of three or more arms -----------------------------------------------------------


def _rounds(b: Bench, label: str, arms: dict[str, Callable[[bool], float]],
            show: Callable[[float], str]) -> dict[str, list[float]]:
    """A discarded warm-up, then ``b.repeat`` rounds running every arm once, in order."""
    out: dict[str, list[float]] = {k: [] for k in arms}
    for i in range(b.repeat + 1):
        warm = i == 0
        got = {k: fn(warm) for k, fn in arms.items()}
        tag = "warm-up (discarded)" if warm else f"round {i}/{b.repeat}"
        b.progress(f"{label}: {tag}: " + " | ".join(f"{k} {show(v)}" for k, v in got.items()))
        if not warm:
            for k, v in got.items():
                out[k].append(v)
    return out


def run_peers(b: Bench, peers: list[Policy], workloads: list[int]) -> None:
    """Workloads 1 (linear, ``sizes.peer_linear_steps``) and 2 (fan-out/fan-in) with ours,
    raw Celery and each dyrygent policy in every round.  Needs the prefork workers of the
    other two arms running; starts the peer's own."""
    dyr = client(b.stack.url)
    c = b.sizes.prefork_concurrency
    with worker(b.stack, "prefork", c, b.coord.app):
        if 1 in workloads:
            n = b.sizes.peer_linear_steps

            def hop(p: Policy) -> Callable[[bool], float]:
                def arm(w: bool) -> float:
                    k = b.size(n, w)
                    t0, end = run_workflow(b, lambda: linear(dyr, k), p)
                    return (end - t0) * 1000 / k
                return arm

            arms = {"ours": lambda w: _linear_ours(b, b.size(n, w)),
                    "raw": lambda w: _linear_raw(b, b.size(n, w)),
                    **{p.key: hop(p) for p in peers}}
            got = _rounds(b, "1. linear, peers", arms, lambda x: f"{x:.1f} ms/hop")
            for p in peers:
                rs = ratios(got["ours"], got[p.key])
                b.report.add(Row(
                    f"1. linear workflow vs {p.label}: {n} no-op steps, ms per hop",
                    spread(got["ours"]), spread(got[p.key]) + " (celery-dyrygent)",
                    spread(rs)))
            _note(b, "1", got, peers, "ms per hop", lower_better=True)
        if 2 in workloads:
            n = b.sizes.fan_steps

            def fan(p: Policy) -> Callable[[bool], float]:
                def arm(w: bool) -> float:
                    k = b.size(n, w)
                    t0, end = run_workflow(b, lambda: fan_out_in(dyr, k), p)
                    return k / (end - t0)
                return arm

            arms = {"ours": lambda w: _fan_ours(b, b.size(n, w))[0],
                    "raw": lambda w: _fan_raw(b, b.size(n, w))[0],
                    **{p.key: fan(p) for p in peers}}
            got = _rounds(b, "2. fan-out/fan-in, peers", arms, lambda x: f"{x:.0f} steps/s")
            for p in peers:
                rs = ratios(got["ours"], got[p.key])
                b.report.add(Row(
                    f"2. fan-out/fan-in vs {p.label}: {n} no-op steps + join, steps/s",
                    spread(got["ours"], "{:.0f}"),
                    spread(got[p.key], "{:.0f}") + " (celery-dyrygent)", spread(rs),
                    "≥ 1.0", verdict(median(rs) >= 1.0)))
            _note(b, "2", got, peers, "steps/s", lower_better=False)


def _note(b: Bench, n: str, got: dict[str, list[float]], peers: list[Policy], unit: str,
          lower_better: bool) -> None:
    fmt = "{:.1f}" if lower_better else "{:.0f}"
    parts = [f"ours {spread(got['ours'], fmt)}", f"raw Celery {spread(got['raw'], fmt)}"]
    parts += [f"{p.key} {spread(got[p.key], fmt)}" for p in peers]
    vs_raw = [f"ours/raw {spread(ratios(got['ours'], got['raw']))}"]
    vs_raw += [f"{p.key}/raw {spread(ratios(got[p.key], got['raw']))}" for p in peers]
    b.report.notes.append(
        f"{n}, celery-dyrygent {_version()}: ours, raw Celery and the peer ran back to back "
        f"in each round on the same Redis, each on its own prefork -c "
        f"{b.sizes.prefork_concurrency} worker; {unit}: " + ", ".join(parts) + "; ratios "
        "per round: " + ", ".join(vs_raw) + ".  The peer's figure ends at its last task's "
        "stamp, like raw Celery's (its processor notices the end one tick later).  Its "
        "tick reads every running task's result (a few GETs each) and re-publishes the "
        "whole workflow as its own argument.")


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("celery-dyrygent")
    except metadata.PackageNotFoundError:
        return "absent"


def available() -> str | None:
    """``None`` when celery-dyrygent can be imported; else what to install."""
    try:
        import celery_dyrygent  # noqa: F401
    except ImportError:
        return ("celery-dyrygent is not installed: pip install -e '.[bench]' (or "
                "pip install celery-dyrygent)")
    return None
