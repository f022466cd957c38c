"""The daily ETL workflow in the Python DSL.

extract_orders, extract_customers, extract_products (in parallel) -> transform ->
load and quality_check (in parallel) -> report.
"""

from __future__ import annotations

from orchestrator.core.dsl import Workflow
from orchestrator.core.models import RetryPolicy, WorkflowDef
from workflows.etl import steps as fn

SCHEMA = {
    "type": "object",
    "required": ["date", "rows"],
    "additionalProperties": False,
    "properties": {
        "date": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
        "rows": {"type": "integer", "minimum": 1, "maximum": 100_000},
    },
}

# Retry a load through a Redis blip; staged data that is gone will not come back.
LOAD_RETRY = RetryPolicy(max_attempts=3, initial_backoff_s=0.2, max_backoff_s=1.0,
                         non_retryable=("workflows.etl.systems.StagedDataMissing",))


def build() -> WorkflowDef:
    """Build and validate the workflow."""
    wf = Workflow("etl_daily", input_schema=SCHEMA,
                  description="Extract a day of orders, customers and products, join them, "
                  "load the warehouse once per date, check quality and report.")
    date, rows = wf.input.date, wf.input.rows
    orders, customers, products = (
        wf.step(f"extract_{source}", fn.extract, source=source, date=date, rows=rows)
        for source in ("orders", "customers", "products"))
    facts = wf.step("transform", fn.transform, orders=orders.output,
                    customers=customers.output, products=products.output).output
    load = wf.step("load", fn.load, date=date, facts_key=facts.key, retry=LOAD_RETRY).output
    quality = wf.step("quality_check", fn.quality_check, facts_key=facts.key).output
    wf.step("report", fn.report, date=date, partition=load.partition,
            newly_loaded=load.newly_loaded, orders=orders.output.rows,
            customers=customers.output.rows, products=products.output.rows,
            rows_checked=quality.rows_checked)
    return wf.build()


etl_daily = build()

# Declared beside the workflow (no part of its version): `orchestrator scheduler` syncs it
# into the store when it starts.  Every night at 03:00, Paris time, for that date.
nightly = Workflow("etl_daily").schedule(
    "etl_nightly", cron="0 3 * * *", timezone="Europe/Paris",
    input_expr='{"date": fire.date, "rows": 1000}', overlap="skip")
