"""Simulation, pure: the virtual clock, retries and their backoff, time limits, waits,
handlers, compensation, and the command line."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from orchestrator.core.simulate import Faults, SimulationError, simulate
from orchestrator.core.yamlio import from_data


def flow(**over: Any) -> Any:
    steps: list[dict[str, Any]] = [
        {"id": "a", "function": "f"},
        {"id": "b", "function": "f", "after": ["a"], "on_failure": ["h"],
         "retry": {"max_attempts": 3, "initial_backoff_s": 1.0, "multiplier": 2.0,
                   "jitter": 0.5}, "timeout_s": 10.0},
        {"id": "c", "function": "f", "after": ["b"], "when": "steps.a.output.go"},
        {"id": "h", "function": "f"},
        {"id": "w", "wait": {"kind": "event", "key": '"k"', "timeout_s": 60.0},
         "after": ["a"]},
    ]
    for s in steps:
        s.update(over.get(s["id"], {}))
    return from_data({"name": "sim", "steps": steps})


def test_a_clean_run_takes_no_virtual_time() -> None:
    sim = simulate(flow(), {}, {"a": {"go": True}})
    assert sim.status.value == "succeeded"
    assert sim.statuses() == {"a": "succeeded", "b": "succeeded", "c": "succeeded",
                              "h": "skipped", "w": "succeeded"}
    assert max(s.end_s for s in sim.steps) == 0.0
    c = next(s for s in sim.steps if s.step_id == "c")
    assert c.decision is not None and c.decision["values"]["steps.a.output"] == {"go": True}


def test_retries_follow_the_backoff_without_jitter() -> None:
    sim = simulate(flow(), {}, {"a": {"go": True}}, Faults.parse(fail=["b:2"], slow=["b=0.5"]))
    b = next(s for s in sim.steps if s.step_id == "b")
    # three attempts of 0.5 s, with 1 s and 2 s between them
    assert (b.status.value, b.attempts, b.end_s) == ("succeeded", 3, 0.5 * 3 + 1.0 + 2.0)
    assert sim.status.value == "succeeded"


def test_a_step_that_fails_for_good_takes_the_failure_path() -> None:
    sim = simulate(flow(), {}, {"a": {"go": True}}, Faults.parse(fail=["b"]))
    st = sim.statuses()
    assert (st["b"], st["h"], st["c"], sim.status.value) == (
        "failed", "succeeded", "skipped", "failed")
    assert sim.path() == ["a", "w", "b", "h"]


def test_a_hard_time_limit_fails_without_retry_and_a_wait_times_out() -> None:
    sim = simulate(flow(), {}, {"a": {"go": True}}, Faults.parse(timeout=["b", "w"]))
    b = next(s for s in sim.steps if s.step_id == "b")
    assert (b.status.value, b.attempts, b.end_s) == ("failed", 1, 10.0)
    w = next(s for s in sim.steps if s.step_id == "w")
    assert (w.status.value, w.end_s) == ("failed", 60.0)


def test_a_failed_run_is_unwound_by_its_compensations() -> None:
    wf = flow(a={"compensate": "undo"}, b={"compensate": "undo"})
    sim = simulate(wf, {}, {"a": {"go": True}}, Faults.parse(fail=["c"], slow=["c=3"]))
    assert sim.status.value == "compensated"
    assert sim.statuses()["a"] == sim.statuses()["b"] == "compensated"
    assert [s.step_id for s in sim.undo] == ["a", "b"]
    assert all(s.start_s == 3.0 for s in sim.undo)  # when the run's last step ended


@pytest.mark.parametrize(("faults", "text"), [
    ({"fail": ["nope"]}, "no step 'nope'"),
    ({"timeout": ["a"]}, "has no time limit"),
])
def test_faults_must_name_real_steps(faults: dict[str, Any], text: str) -> None:
    with pytest.raises(SimulationError, match=text):
        simulate(flow(), {}, {}, Faults.parse(**faults))


@pytest.mark.parametrize(("kw", "text"), [
    ({"fail": ["b:x"]}, "STEP:N"), ({"slow": ["b"]}, "STEP=SECONDS")])
def test_malformed_fault_words_are_refused(kw: dict[str, Any], text: str) -> None:
    with pytest.raises(SimulationError, match=text):
        Faults.parse(**kw)


def test_faults_round_trip_as_json() -> None:
    f = Faults.parse(fail=["a:2", "b"], timeout=["w"], slow=["c=1.5"])
    assert Faults.from_json(f.to_json()) == f


def test_the_command_prints_the_order_workflows_paths() -> None:
    from orchestrator.cli.main import cli

    runner = CliRunner()
    base = ["simulate", "customer_order", "--input", "@workflows/order/samples/order.json"]
    out = runner.invoke(cli, [*base, "--outputs", "@workflows/order/samples/in_stock.json"])
    assert out.exit_code == 0, out.output
    assert "run: succeeded" in out.output and "send_shipping_request" in out.output
    out = runner.invoke(cli, [*base, "--outputs", "@workflows/order/samples/out_of_stock.json"])
    assert "path: receive_order -> check_inventory -> notify_backorder" in out.output
    out = runner.invoke(cli, [*base, "--fail", "check_inventory", "--json"])
    data = json.loads(out.output)
    assert data["path"] == ["receive_order", "check_inventory", "notify_admin"]
    assert data["status"] == "failed"
    out = runner.invoke(cli, [*base, "--outputs", "@workflows/order/samples/in_stock.json",
                              "--fail", "send_shipping_request"])
    assert "run: compensated" in out.output and "compensations (the undo run)" in out.output
