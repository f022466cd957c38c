"""Step functions of the customer-order workflow (the seed article's example)."""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel

from orchestrator.core.registry import step_function
from orchestrator.runtime.context import current
from workflows.order import systems


class Order(BaseModel):
    order_id: str
    sku: str
    qty: int
    customer_email: str


class InventoryStatus(BaseModel):
    in_stock: bool
    available: int


class Reservation(BaseModel):
    reservation_id: str


class Invoice(BaseModel):
    invoice_id: str
    amount_cents: int


class Shipment(BaseModel):
    tracking_number: str


class PaymentRequest(BaseModel):
    payment_id: str
    amount_cents: int


class Release(BaseModel):
    """Units put back in stock by undoing a reservation."""

    released: int


class Notice(BaseModel):
    sent_to: str
    text: str


UNIT_PRICE_CENTS = 1999


def _notify(to: str, text: str) -> Notice:
    current().redis.rpush(systems.NOTIFICATIONS, f"{to}: {text}")
    return Notice(sent_to=to, text=text)


@step_function("order.receive")
def receive_order(order: Order) -> Order:
    """Accept the order as placed (the trigger's payload)."""
    return order


@step_function("inventory.check")
def check_inventory(sku: str, qty: int) -> InventoryStatus:
    """Ask the inventory system how many units are available."""
    r = current().redis
    if r.exists(systems.INVENTORY_DOWN):
        raise systems.InventoryDown("inventory system is not answering")
    available = int(r.hget(systems.STOCK, sku) or 0)
    return InventoryStatus(in_stock=available >= qty, available=available)


@step_function("inventory.reserve")
def reserve_item(order_id: str, sku: str, qty: int) -> Reservation:
    """Take ``qty`` units out of stock for the order, once per step run (keyed by the
    step run's idempotency key, so an attempt that runs again reserves nothing more)."""
    ctx = current()
    r = ctx.redis
    key = f"{systems.PREFIX}reservation:{ctx.idempotency_key}"
    if r.set(key, qty, nx=True):
        r.hincrby(systems.STOCK, sku, -qty)
    return Reservation(reservation_id=f"R-{order_id}")


@step_function("notify.backorder")
def notify_backorder(order_id: str, customer_email: str) -> Notice:
    """Tell the customer the item is on back-order."""
    return _notify(customer_email, f"order {order_id} is on back-order")


@step_function("inventory.unreserve")
def unreserve_item(input: dict[str, Any], output: Reservation) -> Release:
    """Undo ``reserve_item`` (its compensation): put the order's units back in stock, once
    per step run (keyed by the step run's idempotency key, so an attempt that runs again
    releases nothing more)."""
    ctx = current()
    r = ctx.redis
    qty = int(input["qty"])
    if r.set(f"{systems.PREFIX}release:{ctx.idempotency_key}", qty, nx=True):
        r.hincrby(systems.STOCK, str(input["sku"]), qty)
    return Release(released=qty)


@step_function("billing.invoice")
def generate_invoice(order_id: str, qty: int, reservation_id: str) -> Invoice:
    """Issue the invoice for a reserved order."""
    digest = hashlib.sha256(f"{order_id}:{reservation_id}".encode()).hexdigest()[:8]
    return Invoice(invoice_id=f"INV-{digest}", amount_cents=qty * UNIT_PRICE_CENTS)


@step_function("billing.void")
def void_invoice(input: dict[str, Any], output: Invoice) -> Invoice:
    """Undo ``generate_invoice`` (its compensation): void the invoice (safe to repeat)."""
    systems.void_invoice(current().redis, output.invoice_id, output.amount_cents)
    return output


@step_function("payment.request")
def request_payment(order_id: str, amount_cents: int) -> PaymentRequest:
    """Ask the payment provider to charge the order.  Its confirmation comes later, as
    the event ``payment:<order id>`` that ``await_payment`` waits for; the stand-in sends
    it at once unless payments are held (:func:`systems.hold_payments`)."""
    ctx = current()
    r = ctx.redis
    payment_id = f"PAY-{order_id}"
    r.hset(systems.PAYMENTS, order_id, amount_cents)
    if not r.exists(systems.PAYMENTS_HELD):  # the provider confirms (its webhook)
        ctx.send_event(systems.payment_event(order_id),
                       {"payment_id": payment_id, "amount_cents": amount_cents},
                       event_id=payment_id)
    return PaymentRequest(payment_id=payment_id, amount_cents=amount_cents)


@step_function("shipping.request")
def send_shipping_request(order_id: str, reservation_id: str) -> Shipment:
    """Ask the shipping service to ship, once per step run (the request carries the step
    run's idempotency key); it may fail transiently (told by the stand-in)."""
    ctx = current()
    r = ctx.redis
    if int(r.get(systems.SHIPPING_FAILS) or 0) > 0:
        r.decr(systems.SHIPPING_FAILS)
        raise systems.ShippingUnavailable("shipping service is unavailable")
    return Shipment(tracking_number=systems.ship(r, ctx.idempotency_key, f"TRK-{order_id}"))


@step_function("notify.customer")
def notify_customer(customer_email: str, order_id: str, tracking_number: str) -> Notice:
    """Send the customer the tracking number."""
    return _notify(customer_email, f"order {order_id} shipped, tracking {tracking_number}")


@step_function("accounting.record")
def update_accounting(invoice_id: str, amount_cents: int) -> int:
    """Book the invoice in the ledger; returns the ledger's balance in cents."""
    r = current().redis
    if r.hsetnx(systems.ENTRIES, invoice_id, amount_cents):
        return int(r.incrby(systems.LEDGER, amount_cents))
    return int(r.get(systems.LEDGER) or 0)


@step_function("accounting.reverse")
def reverse_accounting(input: dict[str, Any], output: int) -> int:
    """Undo ``update_accounting`` (its compensation): book a reversing entry for the
    invoice, once per invoice; returns the ledger's balance in cents."""
    r = current().redis
    invoice_id, amount_cents = str(input["invoice_id"]), int(input["amount_cents"])
    if r.hsetnx(systems.REVERSALS, invoice_id, -amount_cents):
        return int(r.incrby(systems.LEDGER, -amount_cents))
    return int(r.get(systems.LEDGER) or 0)


@step_function("notify.admin")
def notify_admin(order_id: str) -> Notice:
    """Alert an operator that the order could not be processed."""
    return _notify("admin@example.com", f"order {order_id}: inventory system down")
