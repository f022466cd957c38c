"""Fire times and the scheduler's decisions, as pure functions (no broker)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from orchestrator.core import fires
from orchestrator.core.fires import Action, overlap_action, plan
from orchestrator.core.schedules import CatchUp, CatchUpPolicy, Overlap, Schedule

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def at(zone: ZoneInfo, *parts: int, fold: int = 0) -> int:
    return int(datetime(*parts, tzinfo=zone, fold=fold).timestamp())  # type: ignore[misc]


def local(t: int, zone: ZoneInfo = PARIS) -> str:
    return datetime.fromtimestamp(t, zone).isoformat()


def cron(expr: str, tz: str = "Europe/Paris") -> Schedule:
    return Schedule(id="s", workflow="w", cron=expr, timezone=tz)


def every(seconds: int, anchor: int = 0, **kw: object) -> Schedule:
    return Schedule(id="s", workflow="w", every_s=seconds, anchor=anchor, **kw)  # type: ignore[arg-type]


# --- cron across daylight-saving changes --------------------------------------------------

def test_fixed_time_in_spring_gap_fires_once_after_the_gap() -> None:
    # Europe/Paris, 2026-03-29: 02:00 -> 03:00; 02:30 does not exist that day
    s = cron("30 2 * * *")
    got = [local(t) for t in fires.upcoming(s, at(PARIS, 2026, 3, 27, 12), 4)]
    assert got == ["2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00",
                   "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"]


def test_fixed_time_in_autumn_overlap_fires_once() -> None:
    # Europe/Paris, 2026-10-25: 03:00 -> 02:00; 02:30 happens twice, fires at the first
    s = cron("30 2 * * *")
    got = [local(t) for t in fires.upcoming(s, at(PARIS, 2026, 10, 23, 12), 4)]
    assert got == ["2026-10-24T02:30:00+02:00", "2026-10-25T02:30:00+02:00",
                   "2026-10-26T02:30:00+01:00", "2026-10-27T02:30:00+01:00"]
    # 25 hours between the fires either side of the change, 24 h otherwise
    ts = fires.upcoming(s, at(PARIS, 2026, 10, 23, 12), 4)
    assert [b - a for a, b in itertools.pairwise(ts)] == [24 * 3600, 25 * 3600, 24 * 3600]


def test_frequent_job_runs_in_real_time_across_both_changes() -> None:
    s = cron("*/30 * * * *")
    spring = fires.upcoming(s, at(PARIS, 2026, 3, 29, 1), 4)
    assert [local(t) for t in spring] == ["2026-03-29T01:30:00+01:00",
                                          "2026-03-29T03:00:00+02:00",
                                          "2026-03-29T03:30:00+02:00",
                                          "2026-03-29T04:00:00+02:00"]
    autumn = fires.upcoming(s, at(PARIS, 2026, 10, 25, 1), 6)
    # every 30 real minutes, through both passes of 02:xx
    assert [b - a for a, b in itertools.pairwise(autumn)] == [1800] * 5
    assert local(autumn[3]) == "2026-10-25T02:00:00+01:00"


def test_other_zone_and_utc() -> None:
    s = cron("0 9 * * MON-FRI", "America/New_York")
    # 2026-03-08 is New York's change; Friday 6th then Monday 9th at 09:00 local
    got = [local(t, NEW_YORK) for t in fires.upcoming(s, at(NEW_YORK, 2026, 3, 6, 0), 2)]
    assert got == ["2026-03-06T09:00:00-05:00", "2026-03-09T09:00:00-04:00"]
    u = cron("0 0 1 * *", "UTC")
    assert fires.next_fire(u, at(ZoneInfo("UTC"), 2026, 1, 15)) == \
        int(datetime(2026, 2, 1, tzinfo=UTC).timestamp())


def test_fires_are_strictly_increasing_and_reverse_matches_forward() -> None:
    for s in (cron("*/15 * * * *"), cron("30 2 * * *"), cron("0 * * * *", "Australia/Lord_Howe")):
        start = at(PARIS, 2026, 10, 24, 0)
        fwd = fires.upcoming(s, start, 200)
        assert all(b > a for a, b in itertools.pairwise(fwd))
        back = list(itertools.islice(fires.at_or_before(s, fwd[-1]), len(fwd)))
        assert back == fwd[::-1]


def test_next_fire_is_strictly_after() -> None:
    s = every(10, anchor=5)
    assert fires.next_fire(s, 15) == 25
    assert fires.next_fire(s, 14.9) == 15
    assert fires.next_fire(s, 0) == 5
    assert fires.upcoming(s, 100, 3) == [105, 115, 125]
    assert list(itertools.islice(fires.at_or_before(s, 105), 3)) == [105, 95, 85]
    assert list(fires.at_or_before(s, 20)) == [15, 5]


# --- catch-up ------------------------------------------------------------------------------

def test_on_time_fires_always_run() -> None:
    s = every(2)
    p = plan(s, next_due=100, now=106.3, grace_s=60)
    assert p.fires == (100, 102, 104, 106)
    assert p.missed == 0
    assert p.next == 108


@pytest.mark.parametrize(("policy", "want", "missed"), [
    (CatchUp(policy=CatchUpPolicy.SKIP), (), 50),
    # the latest fire is on time: it is the one that runs
    (CatchUp(policy=CatchUpPolicy.LATEST), (), 50),
    (CatchUp(policy=CatchUpPolicy.ALL, max=3), (1094, 1096, 1098), 47),
    (CatchUp(policy=CatchUpPolicy.ALL, max=100), tuple(range(1000, 1100, 2)), 0),
])
def test_catch_up_after_downtime(policy: CatchUp, want: tuple[int, ...], missed: int) -> None:
    # down from 1000 to 1159: fires 1000..1098 are older than the 60 s grace
    s = every(2)
    p = plan(s, next_due=1000, now=1159.5, grace_s=60, catch_up=policy)
    on_time = tuple(range(1100, 1160, 2))
    assert p.fires == tuple(sorted(want + on_time))
    assert p.missed == missed
    assert p.next == 1160


def test_latest_runs_the_latest_missed_only_when_no_fire_is_on_time() -> None:
    s = every(3600)
    p = plan(s, next_due=3600, now=5 * 3600 + 1800, grace_s=60,
             catch_up=CatchUp(policy=CatchUpPolicy.LATEST))
    assert p.fires == (5 * 3600,)
    assert p.late == (5 * 3600,)
    assert p.missed == 4


def test_nothing_due() -> None:
    p = plan(every(60), next_due=120, now=119.9, grace_s=60)
    assert p.fires == ()
    assert p.next == 120


def test_missed_count_is_capped() -> None:
    p = plan(every(1), next_due=0, now=10 ** 6, grace_s=1,
             catch_up=CatchUp(policy=CatchUpPolicy.SKIP))
    assert p.missed == fires.MISSED_COUNT_CAP
    assert p.fires == (10 ** 6 - 1, 10 ** 6)


# --- overlap -------------------------------------------------------------------------------

@pytest.mark.parametrize(("policy", "running", "action"), [
    (Overlap.ALLOW, True, Action.START),
    (Overlap.SKIP, True, Action.SKIP),
    (Overlap.CANCEL_PREVIOUS, True, Action.CANCEL_AND_START),
    (Overlap.QUEUE, True, Action.WAIT),
    *[(p, False, Action.START) for p in Overlap],
])
def test_overlap_action(policy: Overlap, running: bool, action: Action) -> None:
    assert overlap_action(policy, running) is action
