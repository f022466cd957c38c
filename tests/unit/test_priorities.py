"""Priority bands: queue names, and the order a worker reads its queues in."""

from __future__ import annotations

from collections import Counter

import pytest

from orchestrator.core.priorities import (
    BAND_WEIGHTS,
    BandCycle,
    Priority,
    band_of,
    band_queue,
    band_queues,
    parse_priority,
    stored_priority,
)

QUEUES = ["default", "default.high", "default.low", "gpu", "gpu.high", "gpu.low"]


def test_normal_keeps_the_queue_name_and_the_other_bands_add_a_suffix() -> None:
    assert band_queue("default") == "default"
    assert band_queue("default", Priority.HIGH) == "default.high"
    assert band_queue("etl.heavy", Priority.LOW) == "etl.heavy.low"
    assert band_queues("gpu") == ("gpu.high", "gpu", "gpu.low")
    assert band_of("etl.heavy.low") == ("etl.heavy", Priority.LOW)
    assert band_of("etl.heavy") == ("etl.heavy", Priority.NORMAL)
    assert band_of(".high") == (".high", Priority.NORMAL)


def test_parse_priority_names_the_choices() -> None:
    assert parse_priority(None) is Priority.NORMAL
    assert parse_priority(" HIGH ") is Priority.HIGH
    with pytest.raises(ValueError, match="high, normal, low"):
        parse_priority("urgent")
    # read from the store leniently: a run of a newer release's band is normal here
    assert stored_priority("low") is Priority.LOW
    assert stored_priority(None) is stored_priority("urgent") is Priority.NORMAL


def _drain(cycle: BandCycle, backlog: dict[str, int], fetches: int) -> Counter[str]:
    """What BRPOP would pop: the first queue in the cycle's order that has a message."""
    got: Counter[str] = Counter()
    for _ in range(fetches):
        ready = [q for q in cycle.consume(len(cycle.items)) if backlog.get(q, 0) > 0]
        if not ready:
            break
        backlog[ready[0]] -= 1
        got[ready[0]] += 1
        cycle.rotate(ready[0])
    return got


def test_with_every_band_backlogged_each_gets_its_weighted_share() -> None:
    total = sum(BAND_WEIGHTS.values())
    got = _drain(BandCycle(QUEUES), {q: 10_000 for q in QUEUES}, 100 * total)
    by_band = Counter[Priority]()
    for q, n in got.items():
        by_band[band_of(q)[1]] += n
    assert by_band == {p: 100 * w for p, w in BAND_WEIGHTS.items()}
    # queues of one band take turns
    assert got["default.high"] == got["gpu.high"]
    assert got["default.low"] == got["gpu.low"]


def test_a_lone_high_message_goes_first_unless_the_low_band_has_its_turn() -> None:
    cycle = BandCycle(QUEUES)
    firsts = []
    for _ in range(sum(BAND_WEIGHTS.values())):
        order = cycle.consume(len(QUEUES))
        firsts.append(next(q for q in order if q in ("default.high", "default.low")))
        cycle.rotate("default.low")  # the low backlog keeps the worker busy
    assert firsts.count("default.high") == len(firsts) - BAND_WEIGHTS[Priority.LOW]


def test_an_idle_band_gives_its_turn_away_and_the_low_band_never_starves() -> None:
    backlog = {"default.high": 10_000, "default.low": 10_000}
    got = _drain(BandCycle(QUEUES), backlog, 1_300)
    assert got["default.low"] == 100  # its 1 in 13
    assert got["default.high"] == 1_200  # its own 8 and normal's 4


def test_update_takes_the_channels_queues() -> None:
    cycle = BandCycle()
    cycle.update(["b", "a.low", "a.high", "a"])
    assert cycle.consume(4)[0] == "a.high"  # the first turn is high's
    assert set(cycle.consume(4)) == {"a", "b", "a.low", "a.high"}
