"""Logs that name the run: runs followed through two workers' JSON logs by run id alone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.runtime.coordinator import Coordinator
from tests.integration.conftest import private_stack, statuses, wait_run
from tests.support.wait import wait_until
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.redis

RUNS = 6
FIELDS = {"time", "level", "logger", "message", "run_id", "step_id", "attempt", "task_id"}


@pytest.fixture(scope="module")
def json_workers(redis_binary: str) -> Iterator[tuple[Coordinator, list[WorkerProcess]]]:
    """Two workers logging JSON (ORCH_LOG_FORMAT=json) on a Redis of their own."""
    with private_stack(redis_binary, ["log1", "log2"], concurrency=2,
                       log_format="json") as (_server, coord, workers):
        yield coord, workers


def _json_lines(log: Path) -> list[dict[str, Any]]:
    """The JSON objects of a worker log (the banner Celery prints first is not logging)."""
    out = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_a_run_is_followed_through_two_workers_by_its_id(
        json_workers: tuple[Coordinator, list[WorkerProcess]]) -> None:
    coord, workers = json_workers
    # grandparent_condition: a, b and c succeed, d is skipped by its condition
    run_ids = [coord.submit("grandparent_condition") for _ in range(RUNS)]
    for run_id in run_ids:
        assert statuses(wait_run(coord, run_id)) == {
            "a": "succeeded", "b": "succeeded", "c": "succeeded", "d": "skipped"}

    def every_step_logged() -> bool:
        lines = [x for w in workers for x in _json_lines(w.log)]
        return all({x["step_id"] for x in lines if x["run_id"] == rid} >= set("abcd")
                   for rid in run_ids)

    wait_until(every_step_logged, 10, message="not every step of every run was logged")
    by_worker = {w.name: _json_lines(w.log) for w in workers}
    for name, lines in by_worker.items():
        assert lines, f"{name} logged no JSON line"
        for line in lines:
            assert set(line) >= FIELDS, line
    for run_id in run_ids:
        mine = [(name, x) for name, lines in by_worker.items() for x in lines
                if x["run_id"] == run_id]
        # every step, and the join tasks (their step_id is the join's id)
        steps = {x["step_id"] for _, x in mine}
        assert {s for s in steps if not s.startswith("join:")} == set("abcd"), run_id
        for _, x in mine:
            assert x["task_id"], x
            # the main process logs "received" before any attempt runs: no attempt there
            assert x["attempt"] == (None if x["logger"] == "celery.worker.strategy" else 1), x
        # the expected condition (a skipped step) is one line with no traceback
        skipped = [x for _, x in mine if x["step_id"] == "d" and "skipped" in x["message"]]
        assert skipped, f"run {run_id}: no line says d was skipped"
        assert all("exc_info" not in x and "Traceback" not in x["message"] for _, x in mine)
    # the runs' steps ran on both workers: each worker's log names some of them
    for name, lines in by_worker.items():
        assert {x["run_id"] for x in lines} & set(run_ids), f"{name} ran no step"


def test_a_step_functions_own_logger_names_the_run(
        json_workers: tuple[Coordinator, list[WorkerProcess]]) -> None:
    coord, workers = json_workers
    run_id = coord.submit("logging_flow")
    assert statuses(wait_run(coord, run_id)) == {"speak": "succeeded"}

    def spoken() -> list[dict[str, Any]]:
        return [x for w in workers for x in _json_lines(w.log)
                if x["logger"] == "tests.integration.flows" and x["run_id"] == run_id]

    wait_until(lambda: bool(spoken()), 10, message="the step's own log line is missing")
    (line,) = spoken()
    assert line["message"] == "hello from the step"
    assert line["step_id"] == "speak" and line["attempt"] == 1 and line["level"] == "INFO"


def test_a_duplicate_delivery_is_one_line_without_a_traceback(
        json_workers: tuple[Coordinator, list[WorkerProcess]]) -> None:
    coord, workers = json_workers
    run_id = coord.submit("logging_flow")
    wait_run(coord, run_id)
    version = coord.store.run(run_id).version
    # a redelivery of a step run that already ended (what a broker may do after a crash)
    coord.app.send_task("step.test.speak", kwargs={"run_id": run_id, "step_id": "speak",
                                                   "version": version}, queue="default")

    def dropped() -> list[dict[str, Any]]:
        return [x for w in workers for x in _json_lines(w.log)
                if x["run_id"] == run_id and "duplicate delivery dropped" in x["message"]]

    wait_until(lambda: bool(dropped()), 15, message="no line says the duplicate was dropped")
    (line,) = dropped()
    assert line["level"] == "INFO" and line["step_id"] == "speak", line
    assert "exc_info" not in line, line
    assert statuses(coord.view(run_id)) == {"speak": "succeeded"}
