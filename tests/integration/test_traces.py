"""Traces: one OpenTelemetry trace per run, its steps' spans under the run span, across
two real prefork workers (issue #14), exported in memory and over OTLP/HTTP; and
nothing at all when tracing is not configured."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from orchestrator.runtime import tracing
from orchestrator.runtime.catalog import discover
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.settings import Settings
from tests.integration.conftest import statuses, wait_run
from tests.integration.flows_traces import FAN
from tests.support.redis_server import RedisServer
from tests.support.wait import wait_until
from tests.support.workers import TEST_PACKAGES, WorkerProcess, stop_workers

pytestmark = pytest.mark.redis

PACKAGES = [*TEST_PACKAGES, "tests.integration.flows_traces"]
STEPS = {"src", "sink", *(f"leaf{i}" for i in range(FAN))}
FAST_BATCH = {"OTEL_BSP_SCHEDULE_DELAY": "100"}  # the SDK's own variable: export in 0.1 s


def _spans(directory: Path) -> list[dict[str, Any]]:
    """The spans the workers have written so far: complete lines only (a worker may be
    in the middle of writing the last one)."""
    out = []
    for f in sorted(directory.glob("spans-*.jsonl")):
        complete = f.read_text().split("\n")[:-1]
        out += [json.loads(line) for line in complete if line.strip()]
    return out


def _hex(v: str | None) -> str | None:
    return None if v is None else v.removeprefix("0x")


class _Collector:
    """A minimal OTLP/HTTP receiver: keeps every ExportTraceServiceRequest it gets."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        got = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                req = ExportTraceServiceRequest()
                req.ParseFromString(body)
                got.append(req)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def spans(self) -> list[Any]:
        return [s for r in list(self.requests) for rs in r.resource_spans
                for ss in rs.scope_spans for s in ss.spans]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def in_process_spans() -> Iterator[InMemorySpanExporter]:
    """This (the coordinator's) process traces into memory; undone afterwards."""
    memory = InMemorySpanExporter()
    tracing.use_exporter(lambda: memory)
    try:
        yield memory
    finally:
        tracing.shutdown()
        tracing.use_exporter(None)


def test_one_trace_per_run_across_two_prefork_workers(
        redis_binary: str, tmp_path: Path, in_process_spans: InMemorySpanExporter) -> None:
    with RedisServer(binary=redis_binary) as server:
        s = Settings(redis_url=server.url, workflow_packages=tuple(PACKAGES))
        coord = Coordinator(s, discover(s.workflow_packages))
        assert tracing.active()
        env = {"ORCH_TEST_SPANS_DIR": str(tmp_path), **FAST_BATCH}
        workers = [WorkerProcess(server.url, n, concurrency=2, pool="prefork",
                                 app="tests.support.traced_worker", env=env,
                                 workflow_packages=PACKAGES) for n in ("tr1", "tr2")]
        try:
            for w in workers:
                w.wait_ready(coord.app)
            runs = [coord.submit("trace_fanout", {}) for _ in range(2)]
            views = [wait_run(coord, r) for r in runs]
            assert all(v.run.status.value == "succeeded" for v in views), \
                [statuses(v) for v in views]

            def complete() -> bool:
                got = _spans(tmp_path)
                return all(
                    any(x["name"] == "run trace_fanout"
                        and x["attributes"].get("orch.run_id") == r for x in got)
                    and {x["attributes"].get("orch.step_id") for x in got
                         if x["attributes"].get("orch.run_id") == r} >= STEPS
                    for r in runs)
            wait_until(complete, 20, message=f"spans missing: {_spans(tmp_path)[:5]}")
        finally:
            stop_workers(workers)
        tracing.shutdown()  # flushes this process's producer spans into memory
        worker_spans = _spans(tmp_path)
        local = [json.loads(x.to_json()) for x in in_process_spans.get_finished_spans()]

    every = worker_spans + local
    by_id = {_hex(x["context"]["span_id"]): x for x in every}
    trace_ids = []
    across: list[dict[str, Any]] = []
    for run_id, view in zip(runs, views, strict=True):
        tid = tracing.trace_id_hex(run_id, s.key_prefix)
        trace_ids.append(tid)
        run_span = [x for x in worker_spans if x["name"] == "run trace_fanout"
                    and x["attributes"]["orch.run_id"] == run_id]
        assert len(run_span) == 1, run_span
        root = run_span[0]
        assert _hex(root["context"]["trace_id"]) == tid
        assert root["parent_id"] is None
        assert root["attributes"] == {"orch.run_id": run_id, "orch.workflow": "trace_fanout",
                                      "orch.version": view.run.version,
                                      "orch.status": "succeeded"}
        root_id = _hex(root["context"]["span_id"])

        mine = [x for x in worker_spans if x["attributes"].get("orch.run_id") == run_id]
        step_spans = [x for x in mine if x["name"].startswith("step ")]
        # every step exactly once (no retries here), named for it, in the run's trace
        assert sorted(x["attributes"]["orch.step_id"] for x in step_spans) == sorted(STEPS)
        assert {x["name"] for x in step_spans} == {f"step {sid}" for sid in STEPS}
        assert {_hex(x["context"]["trace_id"]) for x in mine} == {tid}
        assert any(x["name"].startswith("join ") for x in mine)  # the fan-out's chord
        for x in step_spans:  # each a descendant of the run span, through its publish
            seen, cur = [], _hex(x["parent_id"])
            while cur is not None and cur != root_id and cur in by_id:
                seen.append(by_id[cur]["name"])
                cur = _hex(by_id[cur]["parent_id"])
            assert cur == root_id, (x["name"], seen, cur)
        across += step_spans
        # the coordinator's own publish of the first unit is the run span's child
        first = [x for x in local if _hex(x["context"]["trace_id"]) == tid]
        assert first and all(_hex(x["parent_id"]) == root_id for x in first)
    # the runs' steps ran on both workers and in more than one process, each in its run's
    # trace (checked above); which worker takes which step is the broker's choice, so a
    # run may have all its steps on one worker (a busy CI machine saw it): both runs count
    assert {x["attributes"]["orch.worker"] for x in across} == {"tr1@test", "tr2@test"}
    assert len({x["resource"]["attributes"]["process.pid"] for x in across}) >= 2
    assert trace_ids[0] != trace_ids[1]
    # nothing of these runs outside their traces
    assert {_hex(x["context"]["trace_id"]) for x in worker_spans
            if x["attributes"].get("orch.run_id")} == set(trace_ids)


def test_otlp_http_export_and_an_exporter_that_is_down(redis_binary: str) -> None:
    """Spans reach an OTLP/HTTP collector; with the collector gone, runs still succeed
    and the worker says so once."""
    collector = _Collector()
    try:
        with RedisServer(binary=redis_binary) as server:
            s = Settings(redis_url=server.url, workflow_packages=tuple(PACKAGES))
            coord = Coordinator(s, discover(s.workflow_packages))  # not traced: no endpoint
            assert not tracing.active()
            w = WorkerProcess(server.url, "otlp", concurrency=2, env=FAST_BATCH,
                              workflow_packages=PACKAGES, otel_endpoint=collector.url,
                              otel_service_name="orch-test")
            try:
                w.wait_ready(coord.app)
                run_id = coord.submit("trace_fanout", {})
                assert wait_run(coord, run_id).run.status.value == "succeeded"
                tid = bytes.fromhex(tracing.trace_id_hex(run_id, s.key_prefix))

                def exported() -> bool:
                    names = {x.name for x in collector.spans() if x.trace_id == tid}
                    return "run trace_fanout" in names and \
                        {f"step {sid}" for sid in STEPS} <= names
                wait_until(exported, 20, message="spans not exported over OTLP")
                assert collector.requests[0].resource_spans[0].resource.attributes
                collector.close()
                again = coord.submit("trace_fanout", {})
                assert wait_run(coord, again).run.status.value == "succeeded"
                wait_until(lambda: "traces: cannot export spans" in w.tail(400), 30,
                           message="no export failure logged")
                third = coord.submit("trace_fanout", {})
                assert wait_run(coord, third).run.status.value == "succeeded"
            finally:
                w.stop()
            log = w.tail(2000)
            assert "Traceback" not in log, log
            # once per process (main and two children), not once per batch
            assert 1 <= log.count("traces: cannot export spans") <= 3, log
    finally:
        collector.close()


def test_untraced_by_default(redis_binary: str, tmp_path: Path) -> None:
    """No ORCH_OTEL_ENDPOINT: nothing exported (not even to the SDK's own
    OTEL_EXPORTER_OTLP_ENDPOINT), no traceparent on messages, runs succeed."""
    collector = _Collector()
    try:
        with RedisServer(binary=redis_binary) as server:
            s = Settings(redis_url=server.url, workflow_packages=tuple(PACKAGES))
            coord = Coordinator(s, discover(s.workflow_packages))
            assert not tracing.active()
            env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, **FAST_BATCH}
            w = WorkerProcess(server.url, "plain", concurrency=2, env=env,
                              workflow_packages=PACKAGES)
            try:
                w.wait_ready(coord.app)
                run_id = coord.submit("trace_fanout", {})
                view = wait_run(coord, run_id)
                assert view.run.status.value == "succeeded", statuses(view)
                # a message published now carries no trace context
                sig = coord.app.signature("test.nothing", queue="untraced-probe")
                with coord.app.connection_for_write() as conn:
                    sig.apply_async(connection=conn)
                raw = server.client().lrange("untraced-probe", 0, -1)
                assert raw and all("traceparent" not in json.loads(m)["headers"]
                                   for m in raw)
            finally:
                w.stop()
        assert collector.requests == []
        assert "traces:" not in w.tail(2000)
    finally:
        collector.close()
