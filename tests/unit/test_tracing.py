"""Traces: run trace ids, the trace settings and the page's trace link (no I/O)."""

from __future__ import annotations

import pytest

from orchestrator.errors import SettingsInvalid
from orchestrator.runtime import tracing
from orchestrator.settings import Settings, load


def test_run_ids_are_deterministic_per_run_and_deployment() -> None:
    a = tracing.run_ids("r1", "orch")
    assert a == tracing.run_ids("r1", "orch")
    assert a != tracing.run_ids("r2", "orch")
    assert a != tracing.run_ids("r1", "other")  # two deployments, one tracing backend
    trace_id, span_id = a
    assert 0 < trace_id < 2**128 and 0 < span_id < 2**64
    assert tracing.trace_id_hex("r1", "orch") == f"{trace_id:032x}"
    assert tracing.traceparent("r1", "orch") == f"00-{trace_id:032x}-{span_id:016x}-01"


def test_trace_link_only_when_configured() -> None:
    off = Settings()
    assert tracing.trace_link(off, "r1") is None
    assert not tracing.configured(off)
    tid = tracing.trace_id_hex("r1", "orch")
    on = Settings(otel_endpoint="http://collector:4318")
    assert tracing.trace_link(on, "r1") == {"trace_id": tid, "url": None}
    linked = Settings(trace_url_template="https://jaeger.example/trace/{trace_id}")
    assert tracing.trace_link(linked, "r1") == {
        "trace_id": tid, "url": f"https://jaeger.example/trace/{tid}"}


def test_otlp_url() -> None:
    assert tracing.otlp_traces_url("http://c:4318") == "http://c:4318/v1/traces"
    assert tracing.otlp_traces_url("http://c:4318/") == "http://c:4318/v1/traces"
    assert tracing.otlp_traces_url("https://c/v1/traces") == "https://c/v1/traces"


@pytest.mark.parametrize("bad", ["collector:4318", "grpc://collector:4317", "http://",
                                 "http://collector:99999"])
def test_a_bad_endpoint_is_one_line(bad: str) -> None:
    with pytest.raises(SettingsInvalid) as err:
        load(environ={}, otel_endpoint=bad)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("invalid setting: ORCH_OTEL_ENDPOINT: ")
    assert "write http://collector:4318" in msg


def test_a_bad_trace_url_template() -> None:
    with pytest.raises(SettingsInvalid, match=r"ORCH_TRACE_URL_TEMPLATE: .*\{trace_id\}"):
        load(environ={}, trace_url_template="https://jaeger.example/trace/")


def test_off_by_default_costs_nothing() -> None:
    assert tracing.setup(Settings()) is False
    assert not tracing.active()
    with tracing.run_context("r1"):  # the shared no-op
        pass
    assert tracing.run_context("r1") is tracing.run_context("r2")
