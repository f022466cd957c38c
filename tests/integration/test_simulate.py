"""Simulation against reality: the order workflow's in-stock, out-of-stock,
inventory-down and shipping-down paths, simulated (no step function called) and run on
real workers with the same input and the same faults (injected by the workers, with
``fault_injection`` on).  Given the step outputs the real run recorded, the simulation
takes the same path and ends every step, and the run, in the same status."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.core.compensation import undo_run_id
from orchestrator.core.simulate import Faults, simulate
from orchestrator.errors import SettingsInvalid
from orchestrator.runtime.coordinator import Coordinator, RunView
from tests.integration.conftest import private_stack, statuses, wait_run
from workflows.order import systems

pytestmark = pytest.mark.redis

SAMPLES = Path(__file__).parents[2] / "workflows" / "order" / "samples"
ORDER = json.loads((SAMPLES / "order.json").read_text())


@pytest.fixture(scope="module")
def faulty(redis_binary: str) -> Iterator[Coordinator]:
    """A Redis and a worker of their own, with fault injection on."""
    with private_stack(redis_binary, ["sim"], concurrency=4,
                       fault_injection=True) as (_, coord, _workers):
        yield coord


def ran(view: RunView) -> set[str]:
    return {s.step_id for s in view.steps if s.attempt}


@pytest.mark.parametrize(("case", "stock", "faults"), [
    ("in_stock", 5, Faults()),
    ("out_of_stock", 1, Faults()),
    ("inventory_down", 5, Faults.parse(fail=["check_inventory"])),
    ("shipping_down", 5, Faults.parse(fail=["send_shipping_request"])),
])
def test_the_simulated_path_is_the_real_one(faulty: Coordinator, case: str, stock: int,
                                            faults: Faults) -> None:
    coord = faulty
    systems.set_stock(coord.store.client, ORDER["sku"], stock)
    run_id = coord.submit("customer_order", {**ORDER, "order_id": case},
                          faults=faults or None)
    real = wait_run(coord, run_id, 90)
    sim = simulate(coord.catalog.get("customer_order"), {**ORDER, "order_id": case},
                   real.outputs, faults)
    assert sim.statuses() == statuses(real), (case, sim.lines())
    assert sim.status is real.run.status, (case, sim.lines())
    assert set(sim.path()) == ran(real), (case, sim.lines())
    attempts = {s.step_id: s.attempt for s in real.steps}
    assert {s.step_id: s.attempts for s in sim.steps} == attempts
    if sim.undo:  # the compensations too
        undo = coord.view(undo_run_id(run_id))
        assert {s.step_id: s.status.value for s in sim.undo} == statuses(undo)
    decided: dict[str, Any] = {s.step_id: s.decision for s in real.steps}
    assert {s.step_id: s.decision for s in sim.steps} == decided


def test_faults_need_the_setting(coord: Coordinator) -> None:
    with pytest.raises(SettingsInvalid, match="ORCH_FAULT_INJECTION"):
        coord.submit("customer_order", ORDER, faults=Faults.parse(fail=["check_inventory"]))
