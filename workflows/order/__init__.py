"""The seed article's customer-order workflow, in YAML (``customer_order.yaml``) and in
the Python DSL (:mod:`workflows.order.dsl`): both produce the same model.

``demo`` is what ``orchestrator demo`` (``./scripts/run.sh``) runs: one order of an item
in stock.
"""

from typing import Any

from orchestrator.runtime.catalog import Demo
from workflows.order import systems

DEMO_ORDER: dict[str, Any] = {"order_id": "demo-1", "sku": "SKU-DEMO", "qty": 2,
                              "customer_email": "customer@example.com"}


def _stock_the_demo_item(redis: Any) -> None:
    systems.set_stock(redis, str(DEMO_ORDER["sku"]), 10)


demo = Demo("customer_order", DEMO_ORDER, _stock_the_demo_item)
