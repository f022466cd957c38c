"""Deterministic stand-ins for the systems the order workflow talks to, kept in Redis.

Tests and the demo steer them: stock levels, an inventory system that is down, a
shipping service that fails its next N calls.
"""

from __future__ import annotations

from typing import Any

PREFIX = "demo:order:"
STOCK = PREFIX + "stock"
INVENTORY_DOWN = PREFIX + "inventory_down"
SHIPPING_FAILS = PREFIX + "shipping_fails"
NOTIFICATIONS = PREFIX + "notifications"
LEDGER = PREFIX + "ledger"
"""String: the ledger's balance in cents."""
ENTRIES = LEDGER + ":entries"
"""Hash: invoice id -> amount (cents) booked for it."""
REVERSALS = LEDGER + ":reversals"
"""Hash: invoice id -> amount (cents, negative) of its reversing entry."""
VOIDED = PREFIX + "voided"
"""Hash: invoice id -> amount (cents) of the voided invoice."""
SHIPMENTS = PREFIX + "shipments"
"""Hash: idempotency key of a shipping request -> its tracking number."""
PAYMENTS = PREFIX + "payments"
"""Hash: order id -> amount (cents) of the payment requested for it."""
PAYMENTS_HELD = PREFIX + "payments_held"
"""Set when the payment provider stand-in does not confirm payments by itself (a test
sends the confirmation, or lets the wait time out)."""


class InventoryDown(ConnectionError):
    """The inventory system does not answer."""


class ShippingUnavailable(ConnectionError):
    """The shipping service refused the request (transient)."""


def set_stock(redis: Any, sku: str, qty: int) -> None:
    """Put ``qty`` units of ``sku`` in stock."""
    redis.hset(STOCK, sku, qty)


def set_inventory_down(redis: Any, down: bool = True) -> None:
    """Make the inventory system fail every call (or answer again)."""
    if down:
        redis.set(INVENTORY_DOWN, 1)
    else:
        redis.delete(INVENTORY_DOWN)


def fail_shipping(redis: Any, times: int) -> None:
    """Make the shipping service fail its next ``times`` calls."""
    redis.set(SHIPPING_FAILS, times)


def ship(redis: Any, idempotency_key: str, tracking_number: str) -> str:
    """Ship once per ``idempotency_key`` (as a real shipping API keyed by the header
    would); returns the tracking number of the first request with that key."""
    redis.hsetnx(SHIPMENTS, idempotency_key, tracking_number)
    return str(redis.hget(SHIPMENTS, idempotency_key))


def void_invoice(redis: Any, invoice_id: str, amount_cents: int) -> bool:
    """Mark the invoice void (as the billing system would); safe to repeat.

    Returns:
        Whether this call voided it (``False``: it was void already).
    """
    return bool(redis.hsetnx(VOIDED, invoice_id, amount_cents))


def voided(redis: Any) -> dict[str, int]:
    """The voided invoices: invoice id -> amount in cents."""
    return {str(k): int(v) for k, v in redis.hgetall(VOIDED).items()}


def ledger(redis: Any) -> tuple[int, dict[str, int], dict[str, int]]:
    """The ledger: its balance, its entries and its reversing entries (invoice id ->
    cents)."""
    return (int(redis.get(LEDGER) or 0),
            {str(k): int(v) for k, v in redis.hgetall(ENTRIES).items()},
            {str(k): int(v) for k, v in redis.hgetall(REVERSALS).items()})


def notifications(redis: Any) -> list[str]:
    """Every notification sent so far, oldest first."""
    return [str(x) for x in redis.lrange(NOTIFICATIONS, 0, -1)]


def hold_payments(redis: Any, held: bool = True) -> None:
    """Make the payment provider stop confirming payments by itself (or confirm again)."""
    if held:
        redis.set(PAYMENTS_HELD, 1)
    else:
        redis.delete(PAYMENTS_HELD)


def payment_event(order_id: str) -> str:
    """The event key of an order's payment confirmation (the workflow waits for it)."""
    return f"payment:{order_id}"
