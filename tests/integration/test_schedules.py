"""Schedules fired by real ``orchestrator scheduler`` processes onto real workers.

* A schedule every 2 s runs for about a minute: its scheduler is SIGKILLed and two others
  start at once; it is paused and resumed, and edited, through the CLI, while they run.
  Every fire the schedule owes has exactly one run (by the fire times in the runs'
  origins), each run's step function ran once (counted in the step), and nothing fired
  while paused.
* The overlap policies with a step slower than the interval: skip, queue, cancel_previous.
* A Redis outage: the scheduler logs it once, logs once that Redis is back, and fires
  again.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from orchestrator.core.states import RunStatus
from orchestrator.dev import procs
from orchestrator.runtime.catalog import discover
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.settings import Settings
from orchestrator.store.schedules import ScheduleStore
from tests.integration.flows_schedules import EXEC_KEY, OVERLAP_KEY
from tests.support.redis_server import RedisServer
from tests.support.wait import wait_until
from tests.support.workers import TEST_PACKAGES, WorkerProcess, stop_workers, worker_env

pytestmark = pytest.mark.redis

PACKAGES = [*TEST_PACKAGES, "tests.integration.flows_schedules"]
SCHEDULER_SETTINGS = {"workflow_packages": PACKAGES, "scheduler_claim_s": "4"}
REPO = Path(__file__).resolve().parents[2]


class SchedulerProcess:
    """``orchestrator scheduler`` in a subprocess, with its log in a temp file."""

    def __init__(self, url: str, name: str) -> None:
        self.name = name
        self.log = procs.temp_log(f"scheduler-{name}-")
        self.proc = procs.spawn([sys.executable, "-m", "orchestrator.cli", "scheduler",
                                 "--name", name],
                                log=self.log, env=worker_env(url, **SCHEDULER_SETTINGS),
                                cwd=str(REPO))

    def wait_ready(self, store: ScheduleStore) -> None:
        procs.wait_ready(self.proc, lambda: self.name in store.alive(5), 30,
                         name=f"scheduler {self.name}", log=self.log)

    def kill(self) -> None:
        procs.kill_group(self.proc)

    def stop(self) -> None:
        procs.stop(self.proc, 10)

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def cli(url: str, *args: str) -> str:
    """Run ``orchestrator ARGS`` (a real process) and return its output."""
    out = subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], check=False,
                         capture_output=True, text=True, cwd=str(REPO),
                         env=worker_env(url, workflow_packages=PACKAGES), timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


@contextmanager
def stack(redis_binary: str, *, appendonly: bool = False
          ) -> Iterator[tuple[RedisServer, Coordinator, ScheduleStore]]:
    """A private Redis and one worker (prefork, 3 children) that knows the test flows."""
    with RedisServer(binary=redis_binary, appendonly=appendonly) as server:
        s = Settings(redis_url=server.url, workflow_packages=tuple(PACKAGES))
        coord = Coordinator(s, discover(s.workflow_packages))
        worker = WorkerProcess(server.url, "sched-w1", concurrency=3,
                               workflow_packages=PACKAGES)
        try:
            worker.wait_ready(coord.app)
            yield server, coord, ScheduleStore(coord.store.client, coord.store.keys)
        finally:
            worker.stop()


@contextmanager
def schedulers(url: str, store: ScheduleStore, names: Sequence[str]
               ) -> Iterator[list[SchedulerProcess]]:
    started = [SchedulerProcess(url, n) for n in names]
    try:
        for p in started:
            p.wait_ready(store)
        yield started
    finally:
        stop_workers(started)


def fired_runs(coord: Coordinator, schedule: str) -> dict[int, Any]:
    """Runs started by ``schedule``, by fire time (failing on a fire with two runs)."""
    out: dict[int, Any] = {}
    for rid in coord.store.list_runs(None, None, 0, 100_000):
        rec = coord.store.run(rid)
        if rec.origin.schedule != schedule:
            continue
        assert rec.origin.fire_time is not None
        t = int(rec.origin.fire_time)
        assert t not in out, f"fire {t} of {schedule} has two runs: {out[t].run_id}, {rid}"
        assert rid == f"sched-{schedule}-{t}"
        out[t] = rec
    return out


def wait_for_fire_after(coord: Coordinator, schedule: str, t: float, timeout_s: float = 30
                        ) -> None:
    wait_until(lambda: any(f > t for f in fired_runs(coord, schedule)), timeout_s,
               interval_s=0.2, message=f"no fire of {schedule} after {t}")


def wait_clock(store: ScheduleStore, t: float) -> None:
    """Wait until Redis' clock passes ``t``."""
    wait_until(lambda: store.now() > t, t - store.now() + 10, interval_s=0.1)


def test_every_2s_survives_a_kill_two_schedulers_a_pause_and_an_edit(
        redis_binary: str) -> None:
    with stack(redis_binary) as (server, coord, store):
        url = server.url
        logs: list[SchedulerProcess] = []
        with schedulers(url, store, ["a"]) as (a,):
            logs.append(a)
            cli(url, "schedule", "add", "tick", "--workflow", "sched_tick", "--every", "2",
                "--overlap", "allow", "--input-expr", '{"fire": fire.time}')
            # about 30 s of fires before the kill: a minute of fires in all
            wait_until(lambda: len(fired_runs(coord, "tick")) >= 15, 60, interval_s=0.2)
            a.kill()  # SIGKILL, mid-way
            killed_at = store.now()
            wait_clock(store, killed_at + 3)  # fires fall due while no scheduler runs
        with schedulers(url, store, ["b", "c"]) as both:  # two at once
            logs += both
            wait_for_fire_after(coord, "tick", killed_at + 6)

            pausing_at = store.now()  # the pause lands between these two readings
            cli(url, "schedule", "pause", "tick")
            paused_at = store.now()
            wait_clock(store, paused_at + 5)
            resuming_at = store.now()  # and the resume between these two
            cli(url, "schedule", "resume", "tick")
            resumed_at = store.now()
            wait_for_fire_after(coord, "tick", resumed_at + 4)

            cli(url, "schedule", "add", "tick", "--replace", "--workflow", "sched_tick",
                "--every", "2", "--overlap", "allow",
                "--input-expr", '{"fire": fire.time, "v": 2}')
            edited_at = store.now()
            wait_for_fire_after(coord, "tick", edited_at + 5)
            shown = json.loads(cli(url, "schedule", "show", "tick", "--json"))

        runs = fired_runs(coord, "tick")
        for rec in runs.values():
            wait_until(lambda r=rec: coord.store.run(r.run_id).status.terminal, 30)
        first, last = min(runs), max(runs)

        # every fire the schedule owes has its run; none while paused
        for t in range(first, last + 1, 2):
            if paused_at < t <= resuming_at:
                assert t not in runs, f"fire {t} ran while the schedule was paused"
            elif not (pausing_at - 1 < t <= paused_at or resuming_at < t <= resumed_at):
                # (a fire racing the pause or the resume may go either way)
                assert t in runs, f"fire {t} was missed (kill at {killed_at:.1f})"
        assert all(t % 2 == 0 for t in runs), "fire times off the schedule"
        assert any(killed_at < t < killed_at + 3 for t in runs), \
            "the fires due while no scheduler ran were not caught up"

        # each run ran its step once, and succeeded; the edit took effect
        executions = coord.store.client.hgetall(EXEC_KEY)
        for t, rec in runs.items():
            assert executions.get(rec.run_id) == "1", (rec.run_id, executions.get(rec.run_id))
            assert coord.store.run(rec.run_id).status is RunStatus.SUCCEEDED
            if t > edited_at:
                assert rec.input == {"fire": t, "v": 2}
            elif t < edited_at - 1:
                assert rec.input == {"fire": t}
        assert len(executions) == len(runs)
        assert shown["started"] >= 1 and shown["paused"] is False

        lags = sorted(rec.created_at - t for t, rec in runs.items())
        print(f"\n{len(runs)} fires from {first} to {last}; lag p50 "
              f"{lags[len(lags) // 2] * 1000:.0f} ms, max {lags[-1] * 1000:.0f} ms "
              "(the max spans the kill)")
        for p in logs:
            assert "Traceback" not in p.text(), p.text()[-3000:]


@pytest.mark.parametrize("overlap", ["skip", "queue", "cancel_previous"])
def test_overlap_policies(redis_binary: str, overlap: str) -> None:
    """Every 1 s, a run takes 2.5 s: what each policy does with the fires in between."""
    with stack(redis_binary) as (server, coord, store), \
            schedulers(server.url, store, ["s1"]) as (s1,):
        cli(server.url, "schedule", "add", "slow", "--workflow", "sched_slow", "--every", "1",
            "--overlap", overlap, "--input-expr", '{"fire": fire.time, "pause_s": 2.5}')
        wait_until(lambda: len(fired_runs(coord, "slow")) >= 3, 40, interval_s=0.2)
        cli(server.url, "schedule", "pause", "slow")
        runs = fired_runs(coord, "slow")
        for rec in runs.values():
            wait_until(lambda r=rec: coord.store.run(r.run_id).status.terminal, 30)
        final = {t: coord.store.run(r.run_id).status for t, r in sorted(runs.items())}
        state = store.get("slow")
        overlaps = int(coord.store.client.get(OVERLAP_KEY) or 0)
        if overlap == "skip":
            assert overlaps == 0
            assert set(final.values()) == {RunStatus.SUCCEEDED}
            assert state.skipped >= 2
            # consecutive runs' fires are at least a run's length apart
            ts = sorted(final)
            assert all(b - a >= 2 for a, b in itertools.pairwise(ts))
        elif overlap == "queue":
            assert overlaps == 0
            assert set(final.values()) == {RunStatus.SUCCEEDED}
            ts = sorted(final)
            assert ts == list(range(ts[0], ts[0] + len(ts))), "queued fires kept order"
            assert state.skipped == 0
        else:
            statuses = [final[t] for t in sorted(final)]
            assert RunStatus.CANCELLED in statuses[:-1]
            assert all(s is RunStatus.CANCELLED for s in statuses[:-2])
        assert "Traceback" not in s1.text()


def test_scheduler_rides_out_a_redis_outage(redis_binary: str) -> None:
    with stack(redis_binary, appendonly=True) as (server, coord, store), \
            schedulers(server.url, store, ["o1"]) as (o1,):
        cli(server.url, "schedule", "add", "tock", "--workflow", "sched_tick", "--every", "1",
            "--overlap", "allow", "--input-expr", '{"fire": fire.time}')
        wait_until(lambda: len(fired_runs(coord, "tock")) >= 2, 30, interval_s=0.2)
        server.stop()
        wait_until(lambda: "is unreachable" in o1.text(), 30, interval_s=0.2,
                   message=lambda: o1.text()[-2000:])
        wait_until(lambda: o1.text().count("retrying until it answers") >= 1, 5)
        server.restart()
        wait_until(lambda: "answers again" in o1.text(), 30, interval_s=0.2,
                   message=lambda: o1.text()[-2000:])
        back = store.now()
        wait_for_fire_after(coord, "tock", back + 1)
        text = o1.text()
        assert text.count("retrying until it answers") == 1, text[-3000:]
        assert text.count("answers again") == 1
        assert "Traceback" not in text
        runs = fired_runs(coord, "tock")
        first, last = min(runs), max(runs)
        # the outage was shorter than the grace: every fire ran, late ones included
        assert sorted(runs) == list(range(first, last + 1))
