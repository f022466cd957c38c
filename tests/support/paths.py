"""Files of the repository that tests read, as absolute paths (whatever the working dir)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ORDER_YAML = REPO / "workflows" / "order" / "customer_order.yaml"
"""The customer-order workflow in YAML."""
