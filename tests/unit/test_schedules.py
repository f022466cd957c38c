"""Schedules as definitions: the model's checks, the input expression, and declaring them
beside a workflow in YAML and the DSL without changing the workflow's version."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestrator.cli.main import main
from orchestrator.core.dsl import Workflow
from orchestrator.core.registry import Registry
from orchestrator.core.schedules import (
    CatchUpPolicy,
    Overlap,
    Schedule,
    fire_context,
    from_data,
    run_id,
)
from orchestrator.core.yamlio import parse_schedules, parse_yaml
from orchestrator.errors import DefinitionError, ScheduleInvalid
from orchestrator.runtime.catalog import Catalog, discover

WORKFLOW_YAML = """\
name: nightly_report
input_schema: {type: object}
steps:
  - id: a
    function: t.count
    inputs: {n: 1}
"""

SCHEDULES_YAML = """\
schedules:
  - id: report_nightly
    cron: "0 3 * * *"
    timezone: Europe/Paris
    input_expr: '{"day": fire.date, "hour": fire.hour}'
    overlap: queue
    catch_up: {policy: all, max: 5}
  - id: report_often
    every_s: 300
    input: {full: false}
"""


def test_defaults_and_run_id() -> None:
    s = from_data({"id": "x", "workflow": "w", "every_s": 60})
    assert s.overlap is Overlap.SKIP
    assert s.catch_up.policy is CatchUpPolicy.LATEST
    assert run_id("x", 1700000000) == "sched-x-1700000000"
    assert s.describe() == "every 60 s"


@pytest.mark.parametrize(("data", "needle"), [
    ({"id": "x", "workflow": "w"}, "exactly one of cron"),
    ({"id": "x", "workflow": "w", "cron": "0 3 * * *", "every_s": 5}, "exactly one of cron"),
    ({"id": "x", "workflow": "w", "cron": "0 25 * * *"}, "cron '0 25 * * *'"),
    ({"id": "x", "workflow": "w", "cron": "0 3 * * *", "timezone": "Mars/Olympus"},
     "not an IANA zone"),
    ({"id": "x", "workflow": "w", "every_s": 0}, "every_s"),
    ({"id": "x y", "workflow": "w", "every_s": 5}, "id"),
    ({"id": "x", "workflow": "w", "every_s": 5, "input_expr": "{'a': nope}"},
     "unknown variable 'nope'"),
    ({"id": "x", "workflow": "w", "every_s": 5, "input": 1, "input_expr": "1"},
     "not both"),
    ({"id": "x", "workflow": "w", "every_s": 5, "overlap": "sometimes"}, "overlap"),
    ({"id": "x", "workflow": "w", "every_s": 5, "catch_up": {"policy": "all", "max": 0}},
     "catch_up.max"),
])
def test_invalid_schedules_name_the_fix(data: dict[str, object], needle: str) -> None:
    with pytest.raises(ScheduleInvalid) as info:
        from_data(data)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_input_expr_sees_the_fire_in_the_schedule_zone() -> None:
    s = from_data({"id": "n", "workflow": "w", "cron": "30 0 * * *",
                   "timezone": "Europe/Paris",
                   "input_expr": '{"day": fire.date, "h": fire.hour, "iso": fire.iso, '
                                 '"wd": fire.weekday, "who": schedule.id, "t": fire.time}'})
    # 2026-12-01T23:30:00Z is 2026-12-02T00:30:00+01:00 in Paris (a Wednesday)
    t = int(datetime(2026, 12, 1, 23, 30, tzinfo=UTC).timestamp())
    assert s.input_for(t) == {"day": "2026-12-02", "h": 0, "iso": "2026-12-01T23:30:00Z",
                              "wd": 3, "who": "n", "t": t}
    ctx = fire_context(t, s.zone)
    assert ctx["local"] == "2026-12-02T00:30:00+01:00"
    assert ctx["timezone"] == "Europe/Paris"


def test_input_expr_failure_is_a_schedule_error() -> None:
    s = from_data({"id": "n", "workflow": "w", "every_s": 5,
                   "input_expr": '{"x": fire.nope}'})
    with pytest.raises(ScheduleInvalid, match="input_expr failed"):
        s.input_for(10)


def test_yaml_schedules_sit_beside_the_workflow_and_keep_its_version() -> None:
    plain = parse_yaml(WORKFLOW_YAML)
    with_schedules = parse_yaml(WORKFLOW_YAML + SCHEDULES_YAML)
    assert with_schedules == plain
    assert with_schedules.version == plain.version
    nightly, often = parse_schedules(WORKFLOW_YAML + SCHEDULES_YAML, "x.yaml")
    assert nightly.workflow == often.workflow == "nightly_report"
    assert nightly.overlap is Overlap.QUEUE and nightly.catch_up.max == 5
    assert often.input == {"full": False}


def test_yaml_bad_schedule_names_the_file_and_item() -> None:
    text = WORKFLOW_YAML + "schedules:\n  - id: bad\n    cron: 'not cron'\n"
    with pytest.raises(ScheduleInvalid, match=r"x.yaml: schedules.0"):
        parse_schedules(text, "x.yaml")
    with pytest.raises(ScheduleInvalid, match="must be a list"):
        parse_schedules(WORKFLOW_YAML + "schedules: {id: x}\n", "x.yaml")


def test_dsl_schedule_keeps_the_version(registry: Registry) -> None:
    wf = Workflow("nightly_report")
    wf.step("a", "t.count", n=1)
    before = wf.build(registry)
    s = wf.schedule("report_nightly", cron="0 3 * * *", timezone="Europe/Paris",
                    input_expr='{"day": fire.date}', overlap="cancel_previous",
                    catch_up={"policy": "skip"})
    assert isinstance(s, Schedule) and s.workflow == "nightly_report"
    assert wf.build(registry).version == before.version == parse_yaml(WORKFLOW_YAML).version
    with pytest.raises(ScheduleInvalid):
        wf.schedule("bad", every_s=5, overlap="never")


@pytest.fixture
def package(tmp_path: Path) -> Iterator[str]:
    """A workflow package on disk: a YAML workflow with schedules, and a DSL module."""
    pkg = tmp_path / "sched_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "report.yaml").write_text(WORKFLOW_YAML + SCHEDULES_YAML)
    (pkg / "dsl.py").write_text(textwrap.dedent("""\
        from orchestrator.core.dsl import Workflow
        _wf = Workflow("nightly_report")
        weekly = _wf.schedule("report_weekly", cron="0 6 * * MON", input={"full": True})
        """))
    sys.path.insert(0, str(tmp_path))
    try:
        yield "sched_pkg"
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith("sched_pkg")]:
            del sys.modules[name]


def test_catalog_collects_declared_schedules(package: str, registry: Registry) -> None:
    cat = discover([package], registry)
    assert sorted(cat.schedules) == ["report_nightly", "report_often", "report_weekly"]
    assert cat.schedule_sources["report_weekly"] == "sched_pkg.dsl"
    assert cat.schedule_sources["report_nightly"].endswith("report.yaml")


def test_catalog_refuses_one_id_declared_twice_differently(registry: Registry) -> None:
    cat = Catalog(registry)
    cat.add_schedule(from_data({"id": "x", "workflow": "w", "every_s": 5}), "a")
    cat.add_schedule(from_data({"id": "x", "workflow": "w", "every_s": 5}), "b")
    with pytest.raises(DefinitionError, match="declared twice"):
        cat.add_schedule(from_data({"id": "x", "workflow": "w", "every_s": 6}), "c")


@pytest.mark.parametrize(("args", "needle"), [
    (["--cron", "0 3 * *"], "cron '0 3 * *'"),
    (["--cron", "0 3 * * *", "--tz", "Paris"], "timezone 'Paris' is not an IANA zone"),
    (["--every", "5", "--input-expr", "{'x': when}"], "unknown variable 'when'"),
    ([], "exactly one of cron"),
])
def test_cli_refuses_a_bad_schedule_in_one_line_before_any_redis_call(
        args: list[str], needle: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # a Redis that is not there: the schedule is refused before any connection is tried
    monkeypatch.setenv("ORCH_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("ORCH_WORKFLOW_PACKAGES", '["workflows"]')
    try:
        main(["schedule", "add", "x", "--workflow", "etl_daily", *args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and needle in err
    assert err.count("\n") == 1 and "Traceback" not in err
