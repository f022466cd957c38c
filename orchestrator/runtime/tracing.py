"""Traces: one OpenTelemetry trace per run, its steps' task spans under a run span.

Off by default.  With ``ORCH_OTEL_ENDPOINT`` empty (and no exporter given to
:func:`use_exporter`) nothing here imports OpenTelemetry, no signal is connected and
:func:`run_context` is a shared no-op: tracing costs a function call per publish.

When it is on (:func:`setup` in publishers, :func:`setup_worker` in workers):

* **One trace per run, known in advance.**  The run's trace id and its run span's span
  id are derived from the run id (and the store's key prefix, so that two deployments
  sharing a tracing backend do not mix their runs): :func:`run_ids`.  Any process can
  name a run's trace without reading the store, and the web UI links to it.
* **Every unit of a run is published in the run's context** (:func:`run_context`, used
  by ``Progress.publish`` and the reaper's timers): its current span is the run span
  (remote, sampled), so the instrumentation's ``apply_async/<task>`` producer span is the
  run span's child and the message's ``traceparent`` header says so.  Messages the
  reaper puts back in their queue keep their headers, so they stay in the trace.
* **Task spans** come from the maintained ``opentelemetry-instrumentation-celery``,
  instrumented in each process (a prefork child again on ``worker_process_init``, with a
  tracer provider of its own: its resource names its pid).  A step's span is renamed
  ``step <id>`` (a join's ``join <id>``) and gets ``orch.run_id``, ``orch.step_id``,
  ``orch.attempt``, ``orch.version`` and ``orch.worker``.  A step message that carries no
  ``traceparent`` (its publisher ran without tracing, or an older release) gets the run
  span as its parent all the same.
* **The run span** (``run <workflow>``; run id, workflow, version and final status;
  from ``created_at`` to ``ended_at``) is emitted by the process that ends the run
  (``Progress.finalize``, ``Coordinator.cancel``), with the derived ids: it has no live
  object while the run goes on, so a run that moves across many workers needs no
  shared span state.
* **Export** is OTLP over HTTP through a batch span processor, off the step's thread.
  An exporter failure is logged once (and its recovery once), never raised: a step or a
  run never fails because of its traces.

Trace context travels in message headers only: the task arguments stay what they were,
so workers of the previous release share the pool (they ignore the headers).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, cast

from orchestrator import forks
from orchestrator.runtime.celeryconf import JOIN_TASK

if TYPE_CHECKING:  # imported for real only when tracing is on
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
    from opentelemetry.trace import SpanContext

    from orchestrator.settings import Settings
    from orchestrator.store import RunRecord

log = logging.getLogger(__name__)

SCOPE = "orchestrator"
"""Instrumentation scope of the run spans."""
STEP_TASK_PREFIX = "step."

ExporterFactory = Callable[[], "SpanExporter"]

_factory: ExporterFactory | None = None
_active: _Tracing | None = None
_lock = forks.lock()
_NOOP: AbstractContextManager[None] = contextlib.nullcontext()


# --- ids (pure: no OpenTelemetry import) ---------------------------------------------------

def run_ids(run_id: str, key_prefix: str) -> tuple[int, int]:
    """The trace id (128 bits) and the run span's span id (64 bits) of a run: the first
    24 bytes of SHA-256 over the key prefix and the run id (never 0)."""
    digest = hashlib.sha256(f"orchestrator-run\0{key_prefix}\0{run_id}".encode()).digest()
    return (int.from_bytes(digest[:16], "big") or 1, int.from_bytes(digest[16:24], "big") or 1)


def trace_id_hex(run_id: str, key_prefix: str) -> str:
    """A run's trace id as 32 lowercase hex digits (as tracing UIs show it)."""
    return f"{run_ids(run_id, key_prefix)[0]:032x}"


def traceparent(run_id: str, key_prefix: str) -> str:
    """The W3C ``traceparent`` of a run's run span (sampled)."""
    trace_id, span_id = run_ids(run_id, key_prefix)
    return f"00-{trace_id:032x}-{span_id:016x}-01"


def configured(settings: Settings) -> bool:
    """Whether traces are exported: an OTLP endpoint is set, or an exporter was given to
    :func:`use_exporter` in this process (or before it forked)."""
    return bool(settings.otel_endpoint) or _factory is not None


def trace_link(settings: Settings, run_id: str) -> dict[str, str | None] | None:
    """What the run page and the API show of a run's trace: ``{"trace_id", "url"}``
    (``url`` from ``ORCH_TRACE_URL_TEMPLATE``, or None); None when neither an endpoint
    nor a template is set (no trace to show)."""
    if not (settings.otel_endpoint or settings.trace_url_template):
        return None
    tid = trace_id_hex(run_id, settings.key_prefix)
    url = settings.trace_url_template.replace("{trace_id}", tid) or None
    return {"trace_id": tid, "url": url}


# --- the process's tracing ------------------------------------------------------------------

def use_exporter(factory: ExporterFactory | None) -> None:
    """Export this process's spans (and those of processes it forks later) with the
    exporter ``factory`` makes (one per process) instead of OTLP; it turns tracing on
    without an endpoint.  For tests (an in-memory exporter) and embedding; None undoes it.
    """
    global _factory
    _factory = factory


def setup(settings: Settings) -> bool:
    """Turn tracing on in this process if it is configured (idempotent): a tracer
    provider with a batch span processor, and the Celery instrumentation (task spans,
    and ``traceparent`` on every message published).

    Returns:
        Whether tracing is on.  Never raises for an exporter problem: that shows at the
        first export, logged once.
    """
    global _active
    if not configured(settings):
        return False
    with _lock:
        if _active is None or _active.pid != os.getpid():
            if _active is not None:  # inherited across a fork: its threads are the parent's
                _active.close(flush=False)
            _active = _Tracing(settings, _factory)
        return True


def setup_worker(settings: Settings) -> None:
    """Trace a worker: set up in its main process (the reaper and time limits publish
    there) on ``worker_init``, and again in each prefork child on
    ``worker_process_init`` (a provider per process: batch threads do not survive a fork,
    and each child's resource names its pid); flush at shutdown.  No-op when off."""
    if not configured(settings):
        return
    from celery import signals

    def _start(**_: Any) -> None:
        setup(settings)

    def _stop(**_: Any) -> None:
        shutdown()

    signals.worker_init.connect(_start, weak=False)
    signals.worker_process_init.connect(_start, weak=False)
    signals.worker_process_shutdown.connect(_stop, weak=False)
    signals.worker_shutdown.connect(_stop, weak=False)


def shutdown() -> None:
    """Flush and stop this process's tracing (the instrumentation is removed)."""
    global _active
    with _lock:
        if _active is not None:
            _active.close(flush=_active.pid == os.getpid())
            _active = None


def active() -> bool:
    """Whether this process traces."""
    return _active is not None


def run_context(run_id: str | None) -> AbstractContextManager[None]:
    """A context in which the run span is the current span: what is published inside
    it is the run span's child.  A no-op when tracing is off (or no run id)."""
    t = _active
    if t is None or not run_id:
        return _NOOP
    return t.run_context(run_id)


def run_ended(run: RunRecord) -> None:
    """Emit a run's run span (its final status, from creation to end); a no-op when
    tracing is off.  Call it once, from the process whose transition ended the run."""
    t = _active
    if t is not None:
        t.run_ended(run)


class _Tracing:
    """This process's provider, processor and instrumentation."""

    def __init__(self, settings: Settings, factory: ExporterFactory | None) -> None:
        from opentelemetry.instrumentation.celery import CeleryInstrumentor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        from orchestrator import release

        self.pid = os.getpid()
        self.key_prefix = settings.key_prefix
        exporter = factory() if factory is not None else _otlp(settings.otel_endpoint)
        self.exporter = _Guarded(exporter, settings.otel_endpoint or type(exporter).__name__)
        self.resource = Resource.create({
            "service.name": settings.otel_service_name,
            "service.version": release.current(),
            "service.instance.id": f"{socket.gethostname()}:{self.pid}",
            "process.pid": self.pid,
        })
        # duck-typed (export, shutdown, force_flush): no SDK class at import time
        self.processor = BatchSpanProcessor(cast("SpanExporter", self.exporter))
        self.provider: TracerProvider = TracerProvider(resource=self.resource)
        self.provider.add_span_processor(self.processor)
        self.instrumentor = CeleryInstrumentor()  # type: ignore[no-untyped-call]
        _connect(self)

    def close(self, flush: bool) -> None:
        _disconnect(self)
        try:
            if flush:
                self.provider.force_flush(5000)
            self.provider.shutdown()
        except Exception:  # traces never fail the process
            log.exception("traces: shutting the exporter down failed")

    def span_context(self, run_id: str, remote: bool) -> SpanContext:
        from opentelemetry.trace import SpanContext, TraceFlags

        trace_id, span_id = run_ids(run_id, self.key_prefix)
        return SpanContext(trace_id, span_id, is_remote=remote,
                           trace_flags=TraceFlags(TraceFlags.SAMPLED))

    @contextlib.contextmanager
    def run_context(self, run_id: str) -> Iterator[None]:
        from opentelemetry import context, trace

        span = trace.NonRecordingSpan(self.span_context(run_id, remote=True))
        token = context.attach(trace.set_span_in_context(span))
        try:
            yield
        finally:
            context.detach(token)

    def run_ended(self, run: RunRecord) -> None:
        try:
            from opentelemetry.sdk.trace import ReadableSpan
            from opentelemetry.sdk.util.instrumentation import InstrumentationScope
            from opentelemetry.trace import SpanKind, Status, StatusCode

            status = run.status.value
            ended = run.ended_at if run.ended_at is not None else run.created_at
            span = ReadableSpan(
                name=f"run {run.workflow}",
                context=self.span_context(run.run_id, remote=False),
                parent=None, resource=self.resource, kind=SpanKind.INTERNAL,
                attributes={"orch.run_id": run.run_id, "orch.workflow": run.workflow,
                            "orch.version": run.version, "orch.status": status},
                status=Status(StatusCode.ERROR, f"run {status}") if status == "failed"
                else Status(StatusCode.OK),
                start_time=int(run.created_at * 1e9), end_time=int(ended * 1e9),
                instrumentation_scope=InstrumentationScope(SCOPE))
            self.processor.on_end(span)
        except Exception:  # traces never fail a run
            log.exception("traces: the run span of run %s was not emitted", run.run_id)


def _otlp(endpoint: str) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # we log an export failure once ourselves (_Guarded); the exporter logs every batch
    logging.getLogger("opentelemetry.exporter").setLevel(logging.CRITICAL)
    return OTLPSpanExporter(endpoint=otlp_traces_url(endpoint))


def otlp_traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of an endpoint: a base URL gets ``/v1/traces``."""
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1/traces") else base + "/v1/traces"


class _Guarded:
    """An exporter that never raises and logs a failure once (and a recovery once)."""

    def __init__(self, inner: SpanExporter, where: str) -> None:
        self.inner = inner
        self.where = where
        self.failing = False

    def export(self, spans: Any) -> SpanExportResult:
        from opentelemetry.sdk.trace.export import SpanExportResult

        why = ""
        try:
            result = self.inner.export(spans)
        except Exception as exc:
            result, why = SpanExportResult.FAILURE, f": {type(exc).__name__}: {exc}"
        if result is SpanExportResult.SUCCESS:
            if self.failing:
                log.warning("traces: exporting to %s again", self.where)
            self.failing = False
        elif not self.failing:
            self.failing = True
            log.warning("traces: cannot export spans to %s%s; spans are dropped until it "
                        "answers (runs go on)", self.where, why)
        return result

    def shutdown(self) -> None:
        with contextlib.suppress(Exception):
            self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        try:
            return bool(self.inner.force_flush(timeout_millis))
        except Exception:
            return False


# --- the Celery signals ---------------------------------------------------------------------

def _orch_task(task: Any, kwargs: Any) -> tuple[str, str, str] | None:
    """(run id, kind, step or join id) of a step or join task; None for other tasks."""
    name = getattr(task, "name", "") or ""
    if not (name.startswith(STEP_TASK_PREFIX) or name == JOIN_TASK):
        return None
    kw = kwargs or {}
    item = kw.get("step_id") or kw.get("join_id")
    run_id = kw.get("run_id")
    if not (isinstance(run_id, str) and isinstance(item, str)):
        return None
    return run_id, "step" if "step_id" in kw else "join", item


def _before_prerun(task: Any = None, kwargs: Any = None, **_: Any) -> None:
    """Before the instrumentation's span starts: a step message without a
    ``traceparent`` gets its run's (the run span is its parent)."""
    t, found = _active, _orch_task(task, kwargs)
    if t is None or found is None:
        return
    req = task.request
    if not getattr(req, "traceparent", None):
        req.traceparent = traceparent(found[0], t.key_prefix)


def _after_prerun(task: Any = None, kwargs: Any = None, **_: Any) -> None:
    """After the instrumentation started the task's span: name it for the step."""
    found = _orch_task(task, kwargs)
    if found is None:
        return
    from opentelemetry import trace

    span = trace.get_current_span()
    if not span.is_recording():
        return
    run_id, kind, item = found
    span.update_name(f"{kind} {item}")
    span.set_attribute("orch.run_id", run_id)
    span.set_attribute(f"orch.{kind}_id", item)
    span.set_attribute("orch.attempt", int(getattr(task.request, "retries", 0) or 0) + 1)
    hostname = getattr(task.request, "hostname", None)
    if isinstance(hostname, str):
        span.set_attribute("orch.worker", hostname)  # the worker's node name
    version = (kwargs or {}).get("version")
    if isinstance(version, str):
        span.set_attribute("orch.version", version)


def _connect(t: _Tracing) -> None:
    """Our handler first, the instrumentation's, then ours again: Celery calls a
    signal's receivers in the order they were connected."""
    from celery import signals

    signals.task_prerun.connect(_before_prerun, weak=False, dispatch_uid="orch-trace-pre")
    t.instrumentor.instrument(tracer_provider=t.provider)
    signals.task_prerun.connect(_after_prerun, weak=False, dispatch_uid="orch-trace-post")


def _disconnect(t: _Tracing) -> None:
    from celery import signals

    signals.task_prerun.disconnect(_before_prerun, dispatch_uid="orch-trace-pre")
    signals.task_prerun.disconnect(_after_prerun, dispatch_uid="orch-trace-post")
    with contextlib.suppress(Exception):
        t.instrumentor.uninstrument()
