"""The ``orchestrator`` command line: validate, plan and graph (no broker needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli.main import cli, main
from orchestrator.core.plan import Plan
from tests.support.paths import ORDER_YAML

INVALID = """
name: broken_order
steps:
  - id: check
    function: inventory.check
    inputs:
      sku: {from: input.sku}
      qty: "lots"
  - id: ship
    function: shipping.nowhere
    after: [check, ghost]
  - id: loop_a
    function: notify.admin
    inputs: {order_id: x}
    after: [loop_b]
  - id: loop_b
    function: notify.admin
    inputs: {order_id: y}
    after: [loop_a]
"""


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``main`` like the console script; return (exit code, stdout, stderr)."""
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(autouse=True)
def _workflow_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_WORKFLOW_PACKAGES", '["workflows"]')


def test_validate_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["validate", "customer_order"], capsys)
    assert code == 0
    assert out.startswith("ok: workflow 'customer_order' version ")
    assert "11 step(s)" in out


def test_validate_by_yaml_path(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["validate", str(ORDER_YAML)], capsys)
    assert code == 0
    assert "ok: workflow 'customer_order'" in out


def test_name_and_path_give_the_same_version(capsys: pytest.CaptureFixture[str]) -> None:
    _, by_name, _ = run(["validate", "customer_order"], capsys)
    _, by_path, _ = run(["validate", str(ORDER_YAML)], capsys)
    assert by_name == by_path


def test_invalid_yaml_exits_1_and_prints_every_problem(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(INVALID)
    code, out, err = run(["validate", str(path)], capsys)
    assert code == 1
    assert out == ""
    assert "workflow 'broken_order' has 4 problem(s)" in err
    for words in ("[type_mismatch]", "'qty'", "[unknown_function]", "'shipping.nowhere'",
                  "[unknown_step]", "'ghost'", "[cycle]", "loop_a -> loop_b -> loop_a"):
        assert words in err
    assert err.count("Fix: ") == 4


def test_bad_field_in_yaml_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("name: typo\nsteps:\n  - id: a\n    function: notify.admin\n    retires: 2\n")
    code, _, err = run(["validate", str(path)], capsys)
    assert code == 1
    assert "[bad_field]" in err and "steps.0.retires" in err


def test_unknown_name_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["validate", "no_such_workflow"], capsys)
    assert code == 2
    assert "no workflow named 'no_such_workflow'" in err
    assert "customer_order" in err  # lists the known ones


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["validate", str(tmp_path / "missing.yaml")], capsys)
    assert code == 2
    assert "cannot read workflow file" in err


def test_plan_prints_the_canvas_tree(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["plan", "customer_order"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("plan of 'customer_order' (version ")
    assert "1 unit(s), 0 counter edge(s)" in lines[0]
    assert "unit u0  (starts with the run)" in lines
    assert "  chain" in lines
    assert "    chord -> join:1" in lines
    assert any(line.strip(" |") == "reserve_item" for line in lines)


def test_plan_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["plan", str(ORDER_YAML), "--json"], capsys)
    assert code == 0
    plan = Plan.model_validate(json.loads(out))
    assert plan.workflow == "customer_order"
    assert len(plan.units) == 1


def test_graph_mermaid(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["graph", "customer_order"], capsys)
    assert code == 0
    assert out.startswith("flowchart TD\n")
    assert "  receive_order --> check_inventory" in out
    assert "  check_inventory -. on failure .-> notify_admin" in out
    assert 'reserve_item["reserve_item<br/>when steps.check_inventory.output.in_stock"]' in out


def test_graph_dot(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["graph", "customer_order", "--format", "dot"], capsys)
    assert code == 0
    assert out.startswith('digraph "customer_order" {')
    assert '  "await_payment" -> "update_accounting";' in out
    assert '"check_inventory" -> "notify_admin" [style=dashed, label="on failure"];' in out
    assert out.rstrip().endswith("}")


def test_click_runner_sees_the_same_commands() -> None:
    result = CliRunner().invoke(cli, ["graph", "customer_order", "--format", "mermaid"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("flowchart TD")
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in ("validate", "plan", "graph"):
        assert command in result.output


def test_bad_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["graph", "customer_order", "--format", "png"], capsys)
    assert code == 2
    assert "png" in err


@pytest.mark.parametrize(("content", "words"), [
    ("a: &a [1,1,1,1,1,1,1,1,1,1]\n" + "".join(
        f"{c}: &{c} [{','.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcde", "bcdef",
                                                                    strict=True))
     + "name: bomb\nsteps: [{id: x, function: t.noop, inputs: {v: *f}}]\n",
     "an alias bomb?"),
    (None, "more than the 1,048,576 a workflow file may have"),
    ("name: caf\xe9\nsteps: []\n".encode("latin-1"), "not UTF-8 text (byte 0xe9"),
])
def test_a_hostile_file_is_one_line_before_any_package_is_imported(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        content: str | bytes | None, words: str) -> None:
    """An alias bomb, a 50 MB file, a file that is not UTF-8: one line, exit 2, and the
    file is refused before the workflow packages are imported (here, one that does not
    exist: its import error would be the message otherwise)."""
    monkeypatch.setenv("ORCH_WORKFLOW_PACKAGES", '["no_such_package_here"]')
    path = tmp_path / "hostile.yaml"
    if content is None:
        with path.open("wb") as fh:
            fh.truncate(50 * 1024 * 1024)  # sparse: nothing to read
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    code, out, err = run(["validate", str(path)], capsys)
    assert (code, out) == (2, "")
    assert words in err and len(err.strip().splitlines()) == 1, err
