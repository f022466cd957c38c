"""The daily ETL workflow in the Python DSL.

find_files -> extract (a map: one item per file found, in parallel) -> transform ->
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
    found = wf.step("find_files", fn.find_files, date=date)
    # one step run per file found (extract[0], extract[1]...); its output is the list of
    # their outputs, in file order
    staged = wf.step("extract", fn.extract_file, after=[found], date=date, rows=rows,
                     map={"over": "steps.find_files.output.files", "as": "file"}).output
    facts = wf.step("transform", fn.transform, staged=staged).output
    load = wf.step("load", fn.load, date=date, facts_key=facts.key, retry=LOAD_RETRY).output
    quality = wf.step("quality_check", fn.quality_check, facts_key=facts.key).output
    wf.step("report", fn.report, date=date, partition=load.partition,
            newly_loaded=load.newly_loaded, staged=staged,
            rows_checked=quality.rows_checked)
    return wf.build()


etl_daily = build()

# Declared beside the workflow (no part of its version): `orchestrator scheduler` syncs it
# into the store when it starts.  Every night at 03:00, Paris time, for that date.
nightly = Workflow("etl_daily").schedule(
    "etl_nightly", cron="0 3 * * *", timezone="Europe/Paris",
    input_expr='{"date": fire.date, "rows": 1000}', overlap="skip")
