"""Worker logs that name the run: every record carries ``run_id``, ``step_id``,
``attempt`` and ``task_id``.

:func:`install` hooks Celery's logging set-up: once the worker's handlers exist, each
gets :class:`RunFilter`, which adds those fields to every record it handles, whichever
logger made it (ours, Celery's, or a step function's own ``logging.getLogger(__name__)``,
which propagates to the root logger's handlers).  The fields come from the step run being
executed (the :class:`~orchestrator.runtime.context.StepContext` while the step function
runs, else the Celery task being executed: a step's or a join's message names its run);
outside a task they are empty.  (A filter, not a record factory: a caller's own
``extra={"run_id": ...}`` wins instead of clashing.)  Each handler also gets the formatter
of ``ORCH_LOG_FORMAT``: ``text`` adds ``[run=… step=… attempt=…]`` to Celery's lines,
``json`` writes one JSON object a line, so that one run can be followed through the logs
of every worker by its id alone::

    jq -c 'select(.run_id == "RUN_ID")' worker-*.log
"""

from __future__ import annotations

import ast
import json
import logging
import time
from typing import Any, Literal

from celery import signals
from celery._state import get_current_task

from orchestrator.runtime import context

LogFormat = Literal["text", "json"]
RUN_FIELDS = ("run_id", "step_id", "attempt", "task_id")
"""The fields every record carries ("" or None outside a step run)."""

_format: LogFormat = "text"


def _from_celery_data(data: Any) -> dict[str, Any]:
    """Run fields from the ``data`` Celery attaches to its task lines in the worker's main
    process ("Task ... received"), where no task is executing: the id, and the kwargs'
    repr (a step's message names its run)."""
    if not isinstance(data, dict) or not data.get("id"):
        return {}
    kw: Any = data.get("kwargs")
    if isinstance(kw, str):
        try:
            kw = ast.literal_eval(kw)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            kw = None
    out: dict[str, Any] = {"task_id": str(data["id"])}
    if isinstance(kw, dict) and kw.get("run_id"):
        out["run_id"] = str(kw["run_id"])
        out["step_id"] = str(kw.get("step_id") or kw.get("join_id") or "")
    return out


def run_fields(data: Any = None) -> dict[str, Any]:
    """The run fields of the code running now: the step run's, the Celery task's, or
    (outside both) those of Celery's log ``data`` if given, else empty ones."""
    out: dict[str, Any] = {"run_id": "", "step_id": "", "attempt": None, "task_id": ""}
    out.update(_from_celery_data(data))
    task = get_current_task()
    req = getattr(task, "request", None) if task is not None else None
    if req is not None and getattr(req, "id", None):
        kw = req.kwargs or {}
        out["task_id"] = str(req.id)
        out["run_id"] = str(kw.get("run_id") or "")
        out["step_id"] = str(kw.get("step_id") or kw.get("join_id") or "")
        out["attempt"] = int(req.retries or 0) + 1 if out["run_id"] else None
    ctx = context.peek()
    if ctx is not None:
        out.update(run_id=ctx.run_id, step_id=ctx.step_id, attempt=ctx.attempt)
    return out


class RunFilter(logging.Filter):
    """Adds the run fields (:func:`run_fields`) to each record it sees; drops none."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_orch_run_fields", False):
            return True  # seen by another handler already
        try:
            fields = run_fields(getattr(record, "data", None))
        except Exception:  # a log call must never fail because of its decoration
            fields = {"run_id": "", "step_id": "", "attempt": None, "task_id": ""}
        for name, value in fields.items():
            if name == "task_id" and hasattr(record, name):
                continue  # Celery's task formatter may have set it
            if not getattr(record, name, None):
                setattr(record, name, value)
        record._orch_run_fields = True
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, ``run_id``, ``step_id``, ``attempt``, ``task_id``, and ``exc_info`` (the
    traceback text) when the record has one."""

    def format(self, record: logging.LogRecord) -> str:
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, Any] = {
            "time": f"{created}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for name in RUN_FIELDS:
            out[name] = getattr(record, name, None) or None
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc_info"] = record.exc_text
        return json.dumps(out, default=str)


class RunTextFormatter(logging.Formatter):
    """Celery's own text line (its formatter, kept), with ``[run=… step=… attempt=…]``
    appended when the record belongs to a step run."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter(logging.BASIC_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = self.inner.format(record)
        run_id = getattr(record, "run_id", "")
        if not run_id:
            return line
        attempt = getattr(record, "attempt", None)
        tail = f" attempt={attempt}" if attempt else ""  # none before an attempt runs
        return f"{line} [run={run_id} step={getattr(record, 'step_id', '')}{tail}]"


def apply_format(logger: logging.Logger, fmt: LogFormat | None = None) -> None:
    """Give each handler of ``logger`` the formatter of ``fmt`` (default: the one
    :func:`install` was given)."""
    fmt = fmt or _format
    for handler in logger.handlers:
        if not any(isinstance(f, RunFilter) for f in handler.filters):
            handler.addFilter(RunFilter())
        current = handler.formatter
        if isinstance(current, JsonFormatter | RunTextFormatter):
            current = current.inner if isinstance(current, RunTextFormatter) else None
        handler.setFormatter(JsonFormatter() if fmt == "json" else RunTextFormatter(current))


def _after_setup(logger: logging.Logger | None = None, **_: Any) -> None:
    if logger is not None:
        apply_format(logger)


def install(fmt: LogFormat = "text") -> None:
    """Once Celery has set up the worker's logging, give its handlers the run fields and
    the formatter of ``fmt`` (idempotent)."""
    global _format
    _format = fmt
    signals.after_setup_logger.connect(_after_setup, weak=False,
                                       dispatch_uid="orchestrator.logs.root")
    signals.after_setup_task_logger.connect(_after_setup, weak=False,
                                            dispatch_uid="orchestrator.logs.task")
