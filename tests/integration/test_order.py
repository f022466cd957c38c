"""The seed article's customer-order workflow, end to end on real workers.  When the run
fails after the reservation, it is unwound by its steps' compensations: the tests read the
stand-in systems (stock, voided invoices, ledger), each changed exactly once."""

from __future__ import annotations

import redis

from orchestrator.core.compensation import undo_run_id
from orchestrator.runtime.coordinator import Coordinator
from tests.integration.conftest import statuses, wait_run
from tests.support.waits import fast_forward, wait_waiting
from workflows.order import systems

ORDER = {"order_id": "o-1", "sku": "SKU-1", "qty": 2, "customer_email": "ann@example.com"}


def test_in_stock_ships_and_books(coord: Coordinator, r: redis.Redis) -> None:
    systems.set_stock(r, "SKU-1", 5)
    view = wait_run(coord, coord.submit("customer_order", ORDER))
    assert view.run.status.value == "succeeded"
    st = statuses(view)
    assert st["reserve_item"] == "succeeded"
    assert st["notify_backorder"] == "skipped"
    assert st["notify_admin"] == "skipped"
    assert st["notify_customer"] == st["update_accounting"] == "succeeded"
    assert view.outputs["send_shipping_request"] == {"tracking_number": "TRK-o-1"}
    assert int(r.hget(systems.STOCK, "SKU-1") or 0) == 3
    assert "ann@example.com: order o-1 shipped, tracking TRK-o-1" in systems.notifications(r)


def test_out_of_stock_notifies_back_order(coord: Coordinator, r: redis.Redis) -> None:
    systems.set_stock(r, "SKU-2", 1)
    view = wait_run(coord, coord.submit("customer_order", {**ORDER, "order_id": "o-2",
                                                           "sku": "SKU-2"}))
    st = statuses(view)
    assert view.run.status.value == "succeeded"
    assert st["notify_backorder"] == "succeeded"
    assert st["reserve_item"] == "skipped"
    skipped = {s.step_id: s.reason for s in view.steps}
    assert "condition is false" in str(skipped["reserve_item"])
    for later in ("generate_invoice", "send_shipping_request", "notify_customer",
                  "update_accounting"):
        assert st[later] == "skipped"


def test_inventory_down_notifies_admin(coord: Coordinator, r: redis.Redis) -> None:
    systems.set_inventory_down(r)
    try:
        view = wait_run(coord, coord.submit("customer_order", {**ORDER, "order_id": "o-3"}))
    finally:
        systems.set_inventory_down(r, False)
    st = statuses(view)
    assert view.run.status.value == "failed"
    assert st["check_inventory"] == "failed"
    assert view.steps[1].attempt == 3  # retried per its policy first
    assert st["notify_admin"] == "succeeded"
    assert "admin@example.com: order o-3: inventory system down" in systems.notifications(r)


def test_shipping_fails_twice_then_ships(coord: Coordinator, r: redis.Redis) -> None:
    systems.set_stock(r, "SKU-4", 5)
    systems.fail_shipping(r, 2)
    view = wait_run(coord, coord.submit("customer_order", {**ORDER, "order_id": "o-4",
                                                           "sku": "SKU-4"}))
    ship = next(s for s in view.steps if s.step_id == "send_shipping_request")
    assert ship.status.value == "succeeded" and ship.attempt == 3
    assert view.run.status.value == "succeeded"


def test_shipping_waits_for_the_payment_event(coord: Coordinator, r: redis.Redis) -> None:
    systems.set_stock(r, "SKU-5", 5)
    systems.hold_payments(r)  # the provider confirms later: the run waits for it
    try:
        run_id = coord.submit("customer_order", {**ORDER, "order_id": "o-5", "sku": "SKU-5"})
        wait_waiting(coord, run_id, "await_payment")
        st = statuses(coord.view(run_id))
        assert st["send_shipping_request"] == st["update_accounting"] == "pending"
        coord.send_event(systems.payment_event("o-5"), {"payment_id": "PAY-o-5"}, by="test")
        view = wait_run(coord, run_id)
    finally:
        systems.hold_payments(r, False)
    assert view.run.status.value == "succeeded", statuses(view)
    assert view.outputs["await_payment"] == {"payment_id": "PAY-o-5"}
    assert int(r.hget(systems.STOCK, "SKU-5") or 0) == 3
    assert not coord.store.exists(undo_run_id(run_id))  # nothing is undone


def test_no_payment_in_time_releases_the_reservation(coord: Coordinator,
                                                     r: redis.Redis) -> None:
    systems.set_stock(r, "SKU-6", 5)
    systems.hold_payments(r)
    balance_before = systems.ledger(r)[0]
    try:
        run_id = coord.submit("customer_order", {**ORDER, "order_id": "o-6", "sku": "SKU-6"})
        wait_waiting(coord, run_id, "await_payment")
        assert int(r.hget(systems.STOCK, "SKU-6") or 0) == 3  # reserved
        fast_forward(coord, run_id, "await_payment")  # a day later, virtually
        view = wait_run(coord, run_id)
    finally:
        systems.hold_payments(r, False)
    st = statuses(view)
    assert view.run.status.value == "compensated", st
    assert st["await_payment"] == "failed"
    assert st["reserve_item"] == st["generate_invoice"] == "compensated", st
    assert st["send_shipping_request"] == st["update_accounting"] == "skipped"
    assert int(r.hget(systems.STOCK, "SKU-6") or 0) == 5  # released, once
    invoice = view.outputs["generate_invoice"]
    assert systems.voided(r)[invoice["invoice_id"]] == invoice["amount_cents"]
    balance, entries, reversals = systems.ledger(r)
    assert balance == balance_before  # nothing was booked, nothing reversed
    assert invoice["invoice_id"] not in entries and invoice["invoice_id"] not in reversals
    undo = coord.view(undo_run_id(run_id))
    assert statuses(undo) == {"reserve_item": "succeeded", "generate_invoice": "succeeded"}
    assert undo.outputs["reserve_item"] == {"released": 2}


def test_shipping_failing_for_good_unwinds_the_order(coord: Coordinator,
                                                     r: redis.Redis) -> None:
    systems.set_stock(r, "SKU-7", 5)
    systems.fail_shipping(r, 99)
    balance_before = systems.ledger(r)[0]
    try:
        run_id = coord.submit("customer_order", {**ORDER, "order_id": "o-7", "sku": "SKU-7"})
        view = wait_run(coord, run_id, 60)
    finally:
        systems.fail_shipping(r, 0)
    st = statuses(view)
    assert view.run.status.value == "compensated", st
    ship = next(s for s in view.steps if s.step_id == "send_shipping_request")
    assert ship.status.value == "failed" and ship.attempt == 4  # its retries first
    assert st["notify_customer"] == "skipped"
    assert st["request_payment"] == st["await_payment"] == "succeeded"  # no compensation
    for undone in ("reserve_item", "generate_invoice", "update_accounting"):
        assert st[undone] == "compensated", st
    # the stand-in systems are back where they were, each undone exactly once
    assert int(r.hget(systems.STOCK, "SKU-7") or 0) == 5
    invoice = view.outputs["generate_invoice"]
    invoice_id, amount = invoice["invoice_id"], invoice["amount_cents"]
    assert systems.voided(r)[invoice_id] == amount
    balance, entries, reversals = systems.ledger(r)
    assert entries[invoice_id] == amount and reversals[invoice_id] == -amount
    assert balance == balance_before
    assert not any("o-7 shipped" in n for n in systems.notifications(r))
    undo = coord.view(undo_run_id(run_id))
    assert undo.run.workflow == "customer_order.undo" and undo.run.compensates == run_id
    assert statuses(undo) == {"reserve_item": "succeeded", "generate_invoice": "succeeded",
                              "update_accounting": "succeeded"}
    assert undo.outputs["update_accounting"] == balance_before


def test_an_order_failed_on_inventory_is_resumed_once_inventory_is_back(
        coord: Coordinator, r: redis.Redis) -> None:
    """docs/recovery.md's resume example: the inventory system was down, the order failed
    at check_inventory; once it answers, the order is resumed (the failed step and all
    downstream of it run again), receive_order's output is reused, and the order ships."""
    systems.set_stock(r, "SKU-7", 5)
    systems.set_inventory_down(r)
    try:
        old = coord.submit("customer_order", {**ORDER, "order_id": "o-7", "sku": "SKU-7"})
        assert wait_run(coord, old).run.status.value == "failed"
    finally:
        systems.set_inventory_down(r, False)
    new, _ = coord.resume(old)
    view = wait_run(coord, new)
    assert view.run.status.value == "succeeded", statuses(view)
    assert view.run.resumed_from == old and list(coord.store.run(old).resumes) == [new]
    receive = next(s for s in view.steps if s.step_id == "receive_order")
    assert receive.status.value == "succeeded" and f"reused from run {old}" in str(
        receive.reason), receive
    assert int(r.hget(systems.STOCK, "SKU-7") or 0) == 3
