"""The customer-order workflow in the Python DSL; equal to ``customer_order.yaml``."""

from __future__ import annotations

from orchestrator.core.dsl import Workflow
from orchestrator.core.models import RetryPolicy, WorkflowDef
from workflows.order import steps as fn

SCHEMA = {
    "type": "object",
    "required": ["order_id", "sku", "qty", "customer_email"],
    "properties": {
        "order_id": {"type": "string"},
        "sku": {"type": "string"},
        "qty": {"type": "integer", "minimum": 1},
        "customer_email": {"type": "string"},
    },
}


def build() -> WorkflowDef:
    """Build and validate the workflow."""
    wf = Workflow("customer_order", input_schema=SCHEMA,
                  description="Process a customer's order from receipt to shipping and "
                  "accounting.")
    order = wf.step("receive_order", fn.receive_order, order=wf.input).output
    check = wf.step("check_inventory", fn.check_inventory, sku=order.sku, qty=order.qty,
                    retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.2,
                                      max_backoff_s=1.0), timeout_s=30.0)
    reserve = wf.step("reserve_item", fn.reserve_item, when=check.output.in_stock,
                      after=[check], compensate=fn.unreserve_item, order_id=order.order_id,
                      sku=order.sku, qty=order.qty)
    wf.step("notify_backorder", fn.notify_backorder, when=~check.output.in_stock,
            after=[check], order_id=order.order_id, customer_email=order.customer_email)
    invoice = wf.step("generate_invoice", fn.generate_invoice, compensate=fn.void_invoice,
                      order_id=order.order_id, qty=order.qty,
                      reservation_id=reserve.output.reservation_id)
    pay = wf.step("request_payment", fn.request_payment, order_id=order.order_id,
                  amount_cents=invoice.output.amount_cents)
    paid = wf.wait("await_payment", event='"payment:" + input.order_id', timeout_s=86400.0,
                   after=[pay])
    ship = wf.step("send_shipping_request", fn.send_shipping_request,
                   order_id=order.order_id, reservation_id=reserve.output.reservation_id,
                   after=[invoice, paid], retry=RetryPolicy(max_attempts=4, initial_backoff_s=0.2,
                                                      max_backoff_s=2.0))
    wf.step("notify_customer", fn.notify_customer, customer_email=order.customer_email,
            order_id=order.order_id, tracking_number=ship.output.tracking_number)
    wf.step("update_accounting", fn.update_accounting, after=[paid],
            compensate=fn.reverse_accounting, invoice_id=invoice.output.invoice_id,
            amount_cents=invoice.output.amount_cents)
    wf.step("notify_admin", fn.notify_admin, handles=[check], order_id=wf.input.order_id)
    return wf.build()


customer_order = build()
