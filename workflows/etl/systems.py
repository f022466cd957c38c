"""Deterministic stand-ins for the systems the ETL workflow talks to, kept in Redis.

The three source systems (orders, customers, products) generate the same rows for the
same date and size, so a run is reproducible.  Staged data lives under per-run keys that
expire; the warehouse holds one write-once partition per date.  Tests steer the orders
source with :func:`send_bad_rows` (refunds with a negative quantity).
"""

from __future__ import annotations

import json
import random
from typing import Any, Literal

PREFIX = "demo:etl:"
LOADS = PREFIX + "warehouse:loads"
"""Hash: date -> how many times its partition was loaded (1 unless something is wrong)."""
BAD_ROWS = PREFIX + "bad_rows"
"""Hash: date -> how many of that date's orders the orders source sends with qty < 0."""
STAGING_TTL_S = 24 * 3600
REGIONS = ("north", "south", "east", "west")

Source = Literal["orders", "customers", "products"]

# Copy the staged facts into the date's partition unless the partition exists; the copy,
# the removal of the staging TTL and the load count change together or not at all.
_LOAD_ONCE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if redis.call('COPY', KEYS[1], KEYS[2]) == 0 then return -1 end
redis.call('PERSIST', KEYS[2])
redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
return 1
"""


class StagedDataMissing(LookupError):
    """A staging key is gone (expired, or never written)."""


def staging_key(run_id: str, name: str) -> str:
    """List key of one staged data set of one run (``orders``, ``facts``…)."""
    return f"{PREFIX}staging:{run_id}:{name}"


def partition_key(date: str) -> str:
    """List key of the warehouse partition of ``date`` (one JSON fact per item)."""
    return f"{PREFIX}warehouse:{date}"


SOURCES: tuple[Source, ...] = ("orders", "customers", "products")


def files(date: str) -> list[dict[str, str]]:
    """The export files the source systems dropped for ``date``, one per source, in a
    fixed order: ``{"source": "orders", "name": "orders-2026-11-22.jsonl"}``."""
    return [{"source": s, "name": f"{s}-{date}.jsonl"} for s in SOURCES]


def sizes(rows: int) -> dict[Source, int]:
    """How many rows each source holds for a run of ``rows`` orders."""
    return {"orders": rows, "customers": max(1, rows // 5), "products": max(1, rows // 10)}


def generate(source: Source, date: str, rows: int, bad_rows: int = 0) -> list[dict[str, Any]]:
    """The rows ``source`` returns for ``date``: the same every time for the same arguments.

    Args:
        source: which source system.
        date: the business date, also the random seed.
        rows: the number of orders; the other sources scale with it (see :func:`sizes`).
        bad_rows: how many orders (the first ones) carry a negative quantity.
    """
    n = sizes(rows)
    rng = random.Random(f"{date}:{source}")
    if source == "customers":
        return [{"customer_id": f"C{i:04d}", "region": rng.choice(REGIONS)}
                for i in range(n["customers"])]
    if source == "products":
        return [{"product_id": f"P{i:03d}", "price_cents": rng.randint(199, 9999)}
                for i in range(n["products"])]
    orders = []
    for i in range(n["orders"]):
        qty = rng.randint(1, 5)
        orders.append({
            "order_id": f"{date}-{i:05d}",
            "customer_id": f"C{rng.randrange(n['customers']):04d}",
            "product_id": f"P{rng.randrange(n['products']):03d}",
            "qty": -qty if i < bad_rows else qty,
        })
    return orders


def stage(redis: Any, key: str, rows: list[dict[str, Any]]) -> None:
    """Replace the list at ``key`` with ``rows`` (as JSON), expiring after a day."""
    pipe = redis.pipeline(transaction=True)
    pipe.delete(key)
    if rows:
        pipe.rpush(key, *(json.dumps(row, sort_keys=True) for row in rows))
    pipe.expire(key, STAGING_TTL_S)
    pipe.execute()


def read(redis: Any, key: str) -> list[dict[str, Any]]:
    """Every row of the list at ``key``.

    Raises:
        StagedDataMissing: the key does not exist.
    """
    items = redis.lrange(key, 0, -1)
    if not items and not redis.exists(key):
        raise StagedDataMissing(f"no data at {key!r}: expired or never staged")
    return [json.loads(item) for item in items]


def load_once(redis: Any, facts_key: str, date: str) -> bool:
    """Copy the staged facts into ``date``'s partition unless it is already loaded.

    Returns:
        True if this call loaded the partition, False if it already existed.

    Raises:
        StagedDataMissing: the partition is not loaded and ``facts_key`` is gone.
    """
    loaded = int(redis.eval(_LOAD_ONCE, 3, facts_key, partition_key(date), LOADS, date))
    if loaded < 0:
        raise StagedDataMissing(f"no data at {facts_key!r}: expired or never staged")
    return loaded == 1


def send_bad_rows(redis: Any, date: str, count: int) -> None:
    """Make the orders source send ``count`` orders of ``date`` with a negative quantity."""
    redis.hset(BAD_ROWS, date, count)


def bad_rows(redis: Any, date: str) -> int:
    """How many bad orders the orders source sends for ``date``."""
    return int(redis.hget(BAD_ROWS, date) or 0)


def load_count(redis: Any, date: str) -> int:
    """How many times ``date``'s partition was loaded."""
    return int(redis.hget(LOADS, date) or 0)


def partition(redis: Any, date: str) -> list[dict[str, Any]]:
    """Every fact in ``date``'s partition (empty if it is not loaded)."""
    return [json.loads(item) for item in redis.lrange(partition_key(date), 0, -1)]
