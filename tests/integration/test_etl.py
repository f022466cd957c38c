"""The daily ETL workflow, end to end on real workers."""

from __future__ import annotations

import redis

from orchestrator.runtime.coordinator import Coordinator
from tests.integration.conftest import statuses, wait_run
from workflows.etl import systems


def _expected_amount_cents(date: str, rows: int) -> int:
    """The day's total, computed straight from the source stand-ins."""
    price = {p["product_id"]: p["price_cents"] for p in systems.generate("products", date, rows)}
    return sum(o["qty"] * price[o["product_id"]] for o in systems.generate("orders", date, rows))


def test_runs_to_completion_and_loads_each_date_once(coord: Coordinator,
                                                     r: redis.Redis) -> None:
    day = {"date": "2026-11-22", "rows": 50}
    first = wait_run(coord, coord.submit("etl_daily", day))
    assert first.run.status.value == "succeeded", statuses(first)
    assert set(statuses(first).values()) == {"succeeded"}
    out = first.outputs
    # the map over the files found: one item per file, in file order
    assert [x["source"] for x in out["extract"]] == ["orders", "customers", "products"]
    assert [x["rows"] for x in out["extract"]] == [50, 10, 5]
    assert first.items == {"extract": {"succeeded": 3}}
    items, item_outs = coord.items(first.run.run_id, "extract")
    assert [i.step_id for i in items] == ["extract[0]", "extract[1]", "extract[2]"]
    assert all(i.status.value == "succeeded" and i.attempt == 1 for i in items)
    assert [item_outs[i.step_id] for i in items] == out["extract"]
    assert out["transform"]["rows"] == 50 and out["transform"]["dropped"] == 0
    assert out["load"] == {"date": "2026-11-22", "partition": systems.partition_key(
        "2026-11-22"), "rows": 50, "newly_loaded": True}
    assert out["quality_check"] == {"rows_checked": 50}
    total = _expected_amount_cents("2026-11-22", 50)
    report = out["report"]
    assert report["extracted"] == {"orders": 50, "customers": 10, "products": 5}
    assert report["rows_loaded"] == 50 and report["amount_cents"] == total
    assert sum(report["amount_cents_by_region"].values()) == total
    # steps passed keys and counts, not rows
    assert all(len(str(v)) < 400 for v in out.values())

    second = wait_run(coord, coord.submit("etl_daily", day))
    assert second.run.status.value == "succeeded", statuses(second)
    assert second.outputs["load"]["newly_loaded"] is False
    assert second.outputs["report"] == {**report, "newly_loaded": False}
    assert systems.load_count(r, "2026-11-22") == 1
    assert len(systems.partition(r, "2026-11-22")) == 50


def test_negative_amounts_fail_the_quality_check(coord: Coordinator, r: redis.Redis) -> None:
    systems.send_bad_rows(r, "2026-11-23", 3)
    view = wait_run(coord, coord.submit("etl_daily", {"date": "2026-11-23", "rows": 20}))
    st = statuses(view)
    assert view.run.status.value == "failed"
    assert st["quality_check"] == "failed" and st["report"] == "skipped"
    assert st["load"] == "succeeded"  # load runs beside the check, not after it
    check = next(s for s in view.steps if s.step_id == "quality_check")
    assert check.attempt == 1 and check.error is not None
    assert "3 of 20 rows have a negative amount" in check.error["message"]
