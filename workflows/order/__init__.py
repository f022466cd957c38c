"""The seed article's customer-order workflow, in YAML (``customer_order.yaml``) and in
the Python DSL (:mod:`workflows.order.dsl`): both produce the same model."""
