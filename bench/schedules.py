"""``python -m bench.schedules``: how late the scheduler fires, and whether it doubles.

On a private ``redis-server``, with ``--schedulers`` real ``orchestrator scheduler``
processes (default 2, both active: they share the due schedules and must never start a
fire twice), and no worker (the measure is the scheduler's: from a fire's time to its run
existing in the store; runs stay queued):

1. **spread**: 1,000 interval schedules of 60 s, anchored on every second of the minute
   (about 17 due each second), for ``--minutes``: fire lag p50 / p99 / max, where the lag
   is the run's ``created_at`` minus its fire time (from the run's origin);
2. **burst**: 1,000 schedules all due on the same second: the time from that second until
   the last run was created, and the lag percentiles;
3. **duplicates**: runs per fire (by origin) above one, and fires with no run.

The figures are printed, not asserted (``tests/integration/test_bench_schedules.py``
runs a small size and checks only correctness).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from orchestrator.core import fires
from orchestrator.core.schedules import Schedule
from orchestrator.dev import procs
from orchestrator.dev.localredis import RedisServer
from orchestrator.dev.waiting import wait_until
from orchestrator.store import RunStore
from orchestrator.store.schedules import ScheduleStore

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ["bench.schedule_flows"]
WORKFLOW = "bench_tick"


@dataclass(frozen=True)
class Figures:
    """One scenario's result."""

    name: str
    fires: int
    runs: int
    lag_p50_s: float
    lag_p99_s: float
    lag_max_s: float
    duplicates: int
    missing: int

    def line(self) -> str:
        return (f"{self.name:<7} fires {self.fires:>5}  runs {self.runs:>5}  lag p50 "
                f"{self.lag_p50_s * 1000:7.1f} ms  p99 {self.lag_p99_s * 1000:7.1f} ms  max "
                f"{self.lag_max_s * 1000:7.1f} ms  duplicates {self.duplicates}  missing "
                f"{self.missing}")


def _env(url: str, threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env["ORCH_REDIS_URL"] = url
    env["ORCH_WORKFLOW_PACKAGES"] = json.dumps(PACKAGES)
    env["ORCH_SCHEDULER_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def _percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def measure(runs: RunStore, name: str, expected: dict[tuple[str, int], None]) -> Figures:
    """Lag and duplicates of the runs of ``expected`` fires (schedule id, fire time)."""
    per_fire: Counter[tuple[str, int]] = Counter()
    lags: list[float] = []
    for rid in runs.list_runs(WORKFLOW, None, 0, 10 ** 7):
        rec = runs.run(rid)
        origin = rec.origin
        if origin.schedule is None or origin.fire_time is None:
            continue
        key = (origin.schedule, int(origin.fire_time))
        if key not in expected:
            continue
        per_fire[key] += 1
        lags.append(rec.created_at - origin.fire_time)
    return Figures(name, len(expected), sum(per_fire.values()),
                   statistics.median(lags) if lags else float("nan"),
                   _percentile(lags, 0.99), max(lags, default=float("nan")),
                   sum(n - 1 for n in per_fire.values() if n > 1),
                   sum(1 for k in expected if per_fire[k] == 0))


def run(count: int, minutes: float, schedulers: int, threads: int) -> list[Figures]:
    """Both scenarios on a private stack; returns their figures."""
    out: list[Figures] = []
    with RedisServer() as server:
        runs = RunStore.from_url(server.url, "orch", 7 * 24 * 3600)
        store = ScheduleStore(runs.client, runs.keys)
        procs_: list[tuple[object, Path]] = []
        try:
            for i in range(schedulers):
                log = procs.temp_log(f"bench-scheduler-{i}-")
                p = procs.spawn([sys.executable, "-m", "orchestrator.cli", "scheduler",
                                 "--name", f"bench-{i}", "--log-level", "WARNING"],
                                log=log, env=_env(server.url, threads), cwd=str(REPO))
                procs_.append((p, log))
            wait_until(lambda: len(store.alive(5)) >= schedulers, 60, interval_s=0.2,
                       message="the schedulers did not start")

            # 1. spread: every second of the minute has count/60 schedules
            now = store.now()
            start = int(now) + 3
            specs = [Schedule(id=f"spread{i}", workflow=WORKFLOW, every_s=60,
                              anchor=(start + i % 60) % 60, overlap="allow")
                     for i in range(count)]
            for spec in specs:
                store.put(spec, "api", fires.next_fire(spec, start - 1))
            end = start + int(minutes * 60)
            expected = {(s.id, t): None for s in specs
                        for t in fires.upcoming(s, start - 1, int(minutes) + 2) if t < end}
            time.sleep(max(0.0, end - store.now() + 2))
            for spec in specs:
                store.set_paused(spec.id, True, None)
            out.append(measure(runs, "spread", expected))

            # 2. burst: every schedule due on the same second
            t0 = int(store.now()) + 5
            burst = [Schedule(id=f"burst{i}", workflow=WORKFLOW, every_s=86400,
                              anchor=t0 % 86400, overlap="allow") for i in range(count)]
            for spec in burst:
                store.put(spec, "api", t0)
            expected = {(s.id, t0): None for s in burst}
            wait_until(lambda: _burst_done(runs, t0, count), 120, interval_s=0.2,
                       message="the burst was not fired within 120 s")
            out.append(measure(runs, "burst", expected))
        finally:
            for p, _log in procs_:
                procs.stop(p, 10)  # type: ignore[arg-type]
        for _p, log in procs_:
            text = log.read_text(errors="replace")
            if "Traceback" in text:
                print(f"scheduler log {log} has a traceback:\n{procs.log_tail(log)}")
    return out


def _burst_done(runs: RunStore, t0: int, count: int) -> bool:
    ids = runs.list_runs(WORKFLOW, None, 0, 10 ** 7)
    return sum(1 for r in ids if r.endswith(f"-{t0}") and r.startswith("sched-burst")) \
        >= count


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.schedules", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=1000, help="schedules per scenario")
    ap.add_argument("--minutes", type=float, default=2.0, help="length of the spread run")
    ap.add_argument("--schedulers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=8, help="ORCH_SCHEDULER_THREADS")
    args = ap.parse_args(argv)
    print(f"schedules bench: {args.count} schedules, {args.schedulers} scheduler(s), "
          f"{args.threads} threads each, {os.cpu_count()} CPU(s)")
    figures = run(args.count, args.minutes, args.schedulers, args.threads)
    for f in figures:
        print(f.line())
    burst = figures[-1]
    print(f"burst: every fire's run started within {burst.lag_max_s:.2f} s of the second "
          "all were due")
    bad = sum(f.duplicates + f.missing for f in figures)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
