"""Test-only ``-A`` module: ``workers.main`` with its spans in an in-memory exporter.

``celery -A tests.support.traced_worker worker`` (``WorkerProcess(app=...)``) gives every
process of the worker (its main process and each prefork child) OpenTelemetry's
``InMemorySpanExporter``, and also writes each exported span as one JSON line to
``$ORCH_TEST_SPANS_DIR/spans-<pid>.jsonl`` (one file per process), which the test reads.
Never used outside the tests; production exports over OTLP (``ORCH_OTEL_ENDPOINT``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from orchestrator.runtime import tracing

SPANS_DIR = "ORCH_TEST_SPANS_DIR"


class FileSpans(SpanExporter):
    """Keeps spans in memory and appends them, as JSON lines, to this process's file."""

    def __init__(self, directory: str) -> None:
        self.memory = InMemorySpanExporter()
        self.directory = directory

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.memory.export(spans)
        path = os.path.join(self.directory, f"spans-{os.getpid()}.jsonl")
        with open(path, "a", encoding="utf-8") as f:
            for s in spans:
                f.write(json.dumps(json.loads(s.to_json())) + "\n")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.memory.shutdown()


_dir = os.environ[SPANS_DIR]
tracing.use_exporter(lambda: FileSpans(_dir))

from workers.main import app  # noqa: E402  (after the exporter: create_app reads it)

__all__ = ["app"]
