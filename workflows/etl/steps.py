"""Step functions of the daily ETL workflow.

Each step stages its rows in Redis and returns only the key and the counts; the next
step reads the rows back by key.
"""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel

from orchestrator.core.registry import step_function
from orchestrator.errors import FailPermanently
from orchestrator.runtime.context import current
from workflows.etl import systems
from workflows.etl.systems import Source


class Staged(BaseModel):
    """Rows of one source, staged in Redis."""

    source: Source
    key: str
    rows: int


class Facts(BaseModel):
    """The joined fact rows, staged in Redis."""

    key: str
    rows: int
    dropped: int
    """Orders left out because their customer or product is unknown."""
    amount_cents: int


class Load(BaseModel):
    """The warehouse partition of one date."""

    date: str
    partition: str
    rows: int
    newly_loaded: bool
    """False when the partition was already loaded (by an earlier run for the date)."""


class Quality(BaseModel):
    """A passed quality check."""

    rows_checked: int


class Report(BaseModel):
    """What the run extracted and what the warehouse holds for the date."""

    date: str
    extracted: dict[str, int]
    rows_loaded: int
    amount_cents: int
    amount_cents_by_region: dict[str, int]
    newly_loaded: bool
    rows_checked: int


class QualityCheckFailed(FailPermanently):
    """The staged facts break a data-quality rule; retrying cannot fix them."""


class SourceFile(BaseModel):
    """One export file a source system dropped for a date."""

    source: Source
    name: str


class Found(BaseModel):
    """The export files found for a date."""

    files: list[SourceFile]


@step_function("etl.find_files")
def find_files(date: str) -> Found:
    """List the export files the source systems dropped for ``date``."""
    return Found(files=[SourceFile.model_validate(f) for f in systems.files(date)])


@step_function("etl.extract_file")
def extract_file(file: SourceFile, date: str, rows: int) -> Staged:
    """Pull one export file's rows and stage them under a key of this run (one item of
    the map over the files found: ``extract[0]``, ``extract[1]``…)."""
    return extract(file.source, date, rows)


def by_source(staged: list[Staged | None]) -> dict[str, Staged]:
    """The staged extracts by source.

    Raises:
        ValueError: a source's extract is missing (a wiring mistake, or a file not found).
    """
    out = {s.source: s for s in staged if s is not None}
    missing = [s for s in systems.SOURCES if s not in out]
    if missing:
        raise ValueError(f"no extract of {', '.join(missing)}; the files found must "
                         "cover every source")
    return out


@step_function("etl.extract")
def extract(source: Source, date: str, rows: int) -> Staged:
    """Pull ``date``'s rows from ``source`` and stage them under a key of this run."""
    ctx = current()
    bad = systems.bad_rows(ctx.redis, date) if source == "orders" else 0
    data = systems.generate(source, date, rows, bad_rows=bad)
    key = systems.staging_key(ctx.run_id, source)
    systems.stage(ctx.redis, key, data)
    return Staged(source=source, key=key, rows=len(data))


@step_function("etl.transform")
def transform(staged: list[Staged | None]) -> Facts:
    """Join orders with their customer's region and product's price into fact rows.

    Args:
        staged: the extracts of the files found (the map's output, in file order).

    Raises:
        ValueError: a source's extract is missing.
    """
    got = by_source(staged)
    orders, customers, products = got["orders"], got["customers"], got["products"]
    ctx = current()
    region = {c["customer_id"]: c["region"] for c in systems.read(ctx.redis, customers.key)}
    price = {p["product_id"]: p["price_cents"] for p in systems.read(ctx.redis, products.key)}
    facts = []
    for o in systems.read(ctx.redis, orders.key):
        if o["customer_id"] not in region or o["product_id"] not in price:
            continue
        facts.append({**o, "region": region[o["customer_id"]],
                      "amount_cents": o["qty"] * price[o["product_id"]]})
    key = systems.staging_key(ctx.run_id, "facts")
    systems.stage(ctx.redis, key, facts)
    return Facts(key=key, rows=len(facts), dropped=orders.rows - len(facts),
                 amount_cents=sum(f["amount_cents"] for f in facts))


@step_function("etl.load")
def load(date: str, facts_key: str) -> Load:
    """Load the facts into ``date``'s warehouse partition, once: a re-run loads nothing."""
    r = current().redis
    newly = systems.load_once(r, facts_key, date)
    key = systems.partition_key(date)
    return Load(date=date, partition=key, rows=int(r.llen(key)), newly_loaded=newly)


@step_function("etl.quality_check")
def quality_check(facts_key: str) -> Quality:
    """Check the staged facts: no negative amounts.

    Raises:
        QualityCheckFailed: naming how many rows break the rule, and the first ones.
    """
    facts = systems.read(current().redis, facts_key)
    negative = [f["order_id"] for f in facts if f["amount_cents"] < 0]
    if negative:
        raise QualityCheckFailed(
            f"{len(negative)} of {len(facts)} rows have a negative amount, e.g. "
            f"{', '.join(negative[:3])}; fix the source data and re-run")
    return Quality(rows_checked=len(facts))


@step_function("etl.report")
def report(date: str, partition: str, newly_loaded: bool, staged: list[Staged | None],
           rows_checked: int) -> Report:
    """Count and total what the warehouse holds for ``date``."""
    extracted = {s: x.rows for s, x in by_source(staged).items()}
    r = current().redis
    facts = systems.read(r, partition)
    by_region: Counter[str] = Counter()
    for f in facts:
        by_region[f["region"]] += f["amount_cents"]
    return Report(date=date,
                  extracted=extracted,
                  rows_loaded=len(facts), amount_cents=sum(by_region.values()),
                  amount_cents_by_region=dict(sorted(by_region.items())),
                  newly_loaded=newly_loaded, rows_checked=rows_checked)
