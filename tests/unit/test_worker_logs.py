"""Worker log lines that name the run (the formatters and the filter, without a worker)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from orchestrator.runtime import context
from workers.logs import JsonFormatter, RunFilter, RunTextFormatter, apply_format


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    logger = logging.getLogger("tests.unit.worker_logs")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)


def _in_step(logger: logging.Logger, message: str, **extra: object) -> None:
    token = context.set_current(context.StepContext("run-1", "charge", 2, None))
    try:
        logger.info(message, extra=extra or None)
    finally:
        context.reset(token)


def test_json_lines_carry_the_step_run(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    apply_format(logger, "json")
    _in_step(logger, "charging")
    logger.info("outside any step")
    first, second = (json.loads(x) for x in stream.getvalue().splitlines())
    assert first["run_id"] == "run-1" and first["step_id"] == "charge"
    assert first["attempt"] == 2 and first["level"] == "INFO"
    assert first["logger"] == "tests.unit.worker_logs" and first["time"].endswith("Z")
    assert second["run_id"] is None and second["attempt"] is None


def test_json_keeps_a_traceback_on_one_line(
        captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    apply_format(logger, "json")
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    (line,) = stream.getvalue().splitlines()
    assert "ValueError: boom" in json.loads(line)["exc_info"]


def test_text_lines_keep_their_format_and_name_the_run(
        captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    apply_format(logger, "text")
    apply_format(logger, "text")  # idempotent: one filter, one suffix
    _in_step(logger, "charging")
    logger.info("outside")
    assert stream.getvalue().splitlines() == [
        "INFO charging [run=run-1 step=charge attempt=2]", "INFO outside"]
    handler = logger.handlers[0]
    assert sum(isinstance(f, RunFilter) for f in handler.filters) == 1
    assert isinstance(handler.formatter, RunTextFormatter)


def test_a_callers_own_extra_wins(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    apply_format(logger, "json")
    _in_step(logger, "mine", run_id="other-run")
    assert json.loads(stream.getvalue())["run_id"] == "other-run"


def test_celery_received_lines_name_the_run() -> None:
    record = logging.LogRecord("celery.worker.strategy", logging.INFO, __file__, 1,
                               "Task %(name)s[%(id)s] received", None, None)
    record.data = {"id": "t-1", "name": "step.x",
                   "kwargs": "{'run_id': 'run-9', 'step_id': 's', 'version': 'v'}"}
    assert RunFilter().filter(record)
    out = json.loads(JsonFormatter().format(record))
    assert (out["run_id"], out["step_id"], out["task_id"], out["attempt"]) == (
        "run-9", "s", "t-1", None)
    assert context.peek() is None
