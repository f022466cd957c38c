"""What the web UI's pages show, as JSON: built from the coordinator, the catalog and
the run store (the UI's read side; pages fetch these from ``/ui/data/...``).

Every function here is synchronous (redis-py, Celery remote control): routes call them
in a worker thread.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from orchestrator.core.compensation import undo_run_id
from orchestrator.core.models import Ref, Value, WorkflowDef
from orchestrator.core.origin import OriginKind
from orchestrator.core.states import RunStatus
from orchestrator.errors import RunDamaged, RunNotFound
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.runtime.queues import queue_depths
from orchestrator.runtime.tracing import trace_link
from orchestrator.store import RunRecord
from orchestrator.web.layout import layout
from orchestrator.web.timeline import Span, critical_path, percentile

PREVIEW_CHARS = 2000
"""A step's input or output is shown up to this many characters; the rest is a download."""
SCAN_MAX = 2000
"""Most runs a filtered listing reads from the indexes to fill one page."""
STATS_RUNS = 100
"""Runs of a workflow its statistics are computed over (the most recent)."""


def preview(value: Any) -> dict[str, Any]:
    """A JSON value as pretty text cut at :data:`PREVIEW_CHARS`, with its full size."""
    text = json.dumps(value, indent=2, sort_keys=True, default=str)
    return {"text": text[:PREVIEW_CHARS], "truncated": len(text) > PREVIEW_CHARS,
            "chars": len(text)}


def _dig(value: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    return value


def step_input(wf: WorkflowDef, step_id: str, run_input: Any,
               outputs: dict[str, Any]) -> dict[str, Any]:
    """A step's input as its function received it (before type coercion): each input
    resolved from the run input, a parent's output or a literal."""
    step = wf.step_map[step_id]
    out: dict[str, Any] = {}
    for name, src in step.inputs.items():
        if isinstance(src, Value):
            out[name] = src.value
        elif isinstance(src, Ref):
            base = run_input if src.step is None else outputs.get(src.step)
            out[name] = _dig(base, src.path)
    return out


def graph(wf: WorkflowDef) -> dict[str, object]:
    """The workflow's laid-out graph (cached per version)."""
    deps = wf.dependencies()
    parents = tuple((s.id, tuple(p for p in deps.get(s.id, ()) if p in wf.step_map))
                    for s in wf.steps)
    return layout(wf.version, parents).to_json()


def flower_task(flower_url: str, task_id: str | None) -> str | None:
    """Flower's page of a task, or None without a Flower URL or a task id."""
    return f"{flower_url}/task/{task_id}" if flower_url and task_id else None


def run_detail(coord: Coordinator, run_id: str, flower_url: str,
               tracebacks: bool = False) -> dict[str, Any]:
    """Everything the run page shows: the run, each step (times, attempts, worker,
    reason, error and, with ``tracebacks``, its traceback, input and output previews,
    Flower link), the graph, the critical path, and the run's trace (id and link; None
    when traces are off).

    Raises:
        RunNotFound, RunDamaged: as :meth:`Coordinator.view`.
    """
    view = coord.view(run_id)
    run = view.run
    wf = coord.definitions.load(run.version).wf
    now = time.time()
    deps = wf.dependencies()
    steps = []
    for rec in view.steps:
        sd = wf.step_map[rec.step_id]
        has_output = rec.step_id in view.outputs
        started = rec.started_at is not None
        steps.append({
            "id": rec.step_id, "function": sd.function, "status": rec.status.value,
            "attempt": rec.attempt, "max_attempts": sd.retry.max_attempts,
            "queued_at": rec.queued_at, "started_at": rec.started_at,
            "ended_at": rec.ended_at, "worker": rec.worker, "task_id": rec.task_id,
            "reason": rec.reason, "retry_at": rec.retry_at,
            "error": rec.error if tracebacks or not rec.error else
            {k: v for k, v in rec.error.items() if k != "traceback"},
            "when": sd.when, "trigger_rule": sd.trigger_rule.value,
            "parents": list(deps.get(rec.step_id, ())),
            "wait": rec.wait, "resolution": {k: v for k, v in (rec.resolution or {}).items()
                                             if k != "data"} or None,
            "decision": rec.decision,
            "input": preview(step_input(wf, rec.step_id, run.input, view.outputs))
            if started and sd.inputs else None,
            "output": preview(view.outputs[rec.step_id]) if has_output else None,
            "flower": flower_task(flower_url, rec.task_id),
        })
    spans = {s.step_id: Span(s.queued_at, s.started_at, s.ended_at) for s in view.steps
             if s.started_at is not None}
    return {"run": run_summary(run), "input": preview(run.input), "steps": steps,
            "graph": graph(wf), "critical": critical_path(deps, spans, now), "now": now,
            "flower": bool(flower_url), "trace": trace_link(coord.settings, run_id),
            "lineage": lineage(run)}


UNWOUND = frozenset({RunStatus.COMPENSATING, RunStatus.COMPENSATED,
                     RunStatus.COMPENSATION_FAILED})
"""Run statuses that mean the run has an undo run (``<run id>.undo``)."""


def lineage(run: RunRecord) -> dict[str, Any]:
    """The runs this one is linked to: the run it resumes and those that resume it, the
    run it undoes (an undo run) and its own undo run (once it is unwound)."""
    return {"resumed_from": run.resumed_from, "resumes": list(run.resumes),
            "compensates": run.compensates,
            "undo_run": undo_run_id(run.run_id) if run.status in UNWOUND else None}


def run_summary(run: RunRecord) -> dict[str, Any]:
    """A run's row in a listing."""
    return {"run_id": run.run_id, "workflow": run.workflow, "version": run.version,
            "status": run.status.value, "created_at": run.created_at,
            "started_at": run.started_at, "ended_at": run.ended_at,
            "duration_s": run.ended_at - run.created_at if run.ended_at else None,
            "origin": run.origin.kind.value, "origin_text": run.origin.describe()}


def _records(coord: Coordinator, workflow: str | None, status: RunStatus | None,
             tenant: str | None = None) -> Iterator[RunRecord]:
    """Runs of ``tenant`` (None: every tenant's) newest first from the indexes, at most
    :data:`SCAN_MAX` index entries read."""
    store = coord.store
    offset, page = 0, 200
    while offset < SCAN_MAX:
        ids, read = store.page_runs(workflow, status, offset, page, tenant)
        for rid in ids:
            try:
                yield store.run(rid)
            except (RunNotFound, RunDamaged):
                continue
        if read < page:
            return
        offset += page


def list_runs(coord: Coordinator, *, workflow: str | None = None,
              status: RunStatus | None = None, origin: OriginKind | None = None,
              since: float | None = None, limit: int = 50, tenant: str | None = None
              ) -> dict[str, Any]:
    """Runs of ``tenant`` (None: every tenant's) newest first, filtered by workflow,
    status, origin (what started them) and creation time (``since``, Unix seconds); at
    most ``limit``, from the newest :data:`SCAN_MAX`."""
    runs: list[dict[str, Any]] = []
    for rec in _records(coord, workflow, status, tenant):
        if since is not None and rec.created_at < since:
            break  # newest first: the rest are older still
        if origin is not None and rec.origin.kind is not origin:
            continue
        runs.append(run_summary(rec))
        if len(runs) >= limit:
            break
    return {"runs": runs, "now": time.time()}


def workflow_stats(coord: Coordinator, name: str, tenant: str | None = None
                   ) -> dict[str, Any]:
    """A workflow's recent runs of ``tenant`` (None: every tenant's; the newest
    :data:`STATS_RUNS`): the success rate of the ended ones and their duration p50 and
    p95."""
    recent = [run_summary(r) for _, r in zip(range(STATS_RUNS),
                                              _records(coord, name, None, tenant),
                                              strict=False)]
    ended = [r for r in recent if r["ended_at"] is not None]
    ok = [r for r in ended if r["status"] == RunStatus.SUCCEEDED.value]
    durations = [r["duration_s"] for r in ended if r["duration_s"] is not None]
    return {"recent": recent[:20], "runs": len(recent), "ended": len(ended),
            "success_rate": len(ok) / len(ended) if ended else None,
            "p50_s": percentile(durations, 50), "p95_s": percentile(durations, 95)}


def workflow_detail(coord: Coordinator, name: str, tenant: str | None = None
                    ) -> dict[str, Any]:
    """A workflow page: its version, description, input schema, steps, graph, and the
    statistics of its recent runs of ``tenant`` (None: every tenant's).

    Raises:
        WorkflowNotFound: no such workflow in the catalog.
    """
    wf = coord.catalog.get(name)
    deps = wf.dependencies()
    return {"name": wf.name, "version": wf.version, "description": wf.description,
            "input_schema": wf.input_schema,
            "steps": [{"id": s.id, "function": s.function, "parents": list(deps[s.id]),
                       "when": s.when, "trigger_rule": s.trigger_rule.value,
                       "queue": s.queue, "max_attempts": s.retry.max_attempts}
                      for s in wf.steps],
            "graph": graph(wf), "stats": workflow_stats(coord, name, tenant)}


def workflows(coord: Coordinator, tenant: str | None = None) -> dict[str, Any]:
    """Every cataloged workflow with the statistics of its recent runs of ``tenant``
    (None: every tenant's)."""
    out = []
    for name, wf in sorted(coord.catalog.workflows.items()):
        stats = workflow_stats(coord, name, tenant)
        stats.pop("recent")
        out.append({"name": name, "version": wf.version, "description": wf.description,
                    "steps": len(wf.steps), **stats})
    return {"workflows": out}


def workers(coord: Coordinator, flower_url: str, timeout_s: float = 1.0) -> dict[str, Any]:
    """Queues (waiting tasks, consumers) and live workers (the queues they consume, the
    tasks they registered), with Flower links.

    Raises:
        DispatchError: the broker cannot be reached.
    """
    depths = queue_depths(coord.app, timeout_s=timeout_s)
    registered, active = coord.workers(timeout_s)
    names = sorted(set(registered) | set(active))
    return {
        "queues": [{"name": d.name, "depth": d.depth, "consumers": list(d.consumers),
                    "default": d.default} for d in depths],
        "workers": [{"name": w, "queues": sorted(str(q["name"]) for q in active.get(w, [])),
                     "tasks": len(registered.get(w, [])),
                     "flower": f"{flower_url}/worker/{w}" if flower_url else None}
                    for w in names],
        "flower": flower_url or None, "now": time.time()}
