"""``python -m bench.hosts``: I/O-bound runs on 1, 2 and 3 hosts, then a host cut off and
another host's workers killed mid-run.

Each "host" is a network namespace on a private bridge (:mod:`orchestrator.dev.hosts`):
Redis on one, the HTTP API on another, a worker (the same pool and concurrency each) on
each of three more. Runs are submitted over HTTP from this namespace. The workflow
(:mod:`bench.hosts_flows`) is ``fetch``, six calls at once, ``store``: every step waits
``IO_MS`` on a simulated remote call, so a host's pool slots, not the machine's two cores,
bound what a host can do.

1. **Throughput.** After a warm-up, ``--rounds`` rounds of: 1, 2 and 3 worker hosts
   (in alternating order, so drift cancels out; the hosts that sit a phase out stop
   consuming, they are not stopped), ``--runs-per-host`` runs per host (so every phase
   lasts about as long), all submitted at once; step runs per second = step runs / (last
   run's end - first run's creation, both as the store recorded them). The ratio to one
   host is taken per round; the report gives medians and ranges.
2. **Faults**, with the three hosts: the same load; ``--cut-at`` seconds in, once worker
   host w2 runs a step, its link is taken down (for ``3 * lease_s``, then restored); a
   second later host w3's worker is SIGKILLed with its pool (not restarted). Every run
   must succeed; no step run may have run twice at once and every side effect must
   happen once; every step the two hosts were running must run again elsewhere
   (execution is at least once; the steps count their own executions).

Exit status 1 if 3 hosts give less than 2.5 times the step runs per second of one (median
of the rounds), or a check of 1. or 2. fails. Writes its tables into docs/scaling.md
(section "Many hosts") unless ``--no-write``. Needs root and iproute2.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.hosts_flows import IO_MS, STEPS, hosts_io
from bench.stack import REPO
from orchestrator.dev.hosts import Cluster
from orchestrator.dev.netns import unavailable_reason
from orchestrator.dev.waiting import wait_until
from orchestrator.store.keys import Keys

DOC = REPO / "docs" / "scaling.md"
START, END = "<!-- hosts:start -->", "<!-- hosts:end -->"
FINAL = {"succeeded", "failed", "cancelled"}
PACKAGES = ("bench.chaos_steps", "bench.hosts_flows")
PREFIX, SUBNET = "orhb", "10.213.16.0/24"
LEASE_S = 4.0
SETTINGS = {"lease_s": LEASE_S, "reaper_interval_s": 0.5, "claim_grace_s": 5.0,
            "stall_s": 20.0}
"""Short leases, so that a cut or killed host's steps move on within seconds."""
CONCURRENCY = 8
TARGET = 2.5
KEYS = Keys()


def cluster(workers: int, prefix: str = PREFIX, subnet: str = SUBNET,
            concurrency: int = CONCURRENCY, **settings: Any) -> Cluster:
    """The bench's cluster (not started): ``workers`` worker hosts, prefork, short leases
    (:data:`SETTINGS`, overridden by ``settings``)."""
    return Cluster(workers=workers, packages=PACKAGES, prefix=prefix, subnet=subnet,
                   concurrency=concurrency, settings={**SETTINGS, **settings},
                   pythonpath=[str(REPO)], cwd=REPO)


def submit(c: Cluster, runs: int, clients: int = 4) -> list[str]:
    """Submit ``runs`` runs of ``hosts_io`` over HTTP from ``clients`` threads; their ids.

    Raises:
        httpx.HTTPStatusError: the API refused one.
    """
    local = threading.local()

    def one(_: int) -> str:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=c.api_url, timeout=30, headers={
                "Authorization": f"Bearer {c.api_token}"})
        resp = local.client.post(f"/v1/workflows/{hosts_io.name}/runs", json={})
        resp.raise_for_status()
        run_id: str = resp.json()["run_id"]
        return run_id

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, range(runs)))


def wait_ended(c: Cluster, run_ids: Sequence[str], timeout_s: float) -> dict[str, str]:
    """Poll the store until every run has ended or ``timeout_s`` passed; their statuses."""
    r = c.client()
    deadline = time.monotonic() + timeout_s
    statuses: dict[str, str] = {}
    while True:
        pipe = r.pipeline(transaction=False)
        for rid in run_ids:
            pipe.hget(KEYS.run(rid), "status")
        statuses = {rid: s or "missing" for rid, s in zip(run_ids, pipe.execute(),
                                                           strict=True)}
        if all(s in FINAL for s in statuses.values()) or time.monotonic() > deadline:
            r.close()
            return statuses
        time.sleep(0.2)


def window_s(c: Cluster, run_ids: Sequence[str]) -> float:
    """Seconds from the first run's creation to the last one's end (the store's times)."""
    r = c.client()
    pipe = r.pipeline(transaction=False)
    for rid in run_ids:
        pipe.hmget(KEYS.run(rid), "created_at", "ended_at")
    rows = pipe.execute()
    r.close()
    return max(float(e) for _, e in rows) - min(float(s) for s, _ in rows)


@dataclass
class Tally:
    """What the steps counted themselves, for the step runs of some runs."""

    step_runs: int
    executions: int
    executed_twice: int
    overlaps: int
    effects_not_once: int
    effects_uncounted: int
    """Effects done (their key set) whose count was cut off: done once, not lost."""
    starts: list[tuple[str, float, int]] = field(repr=False)
    ends: dict[tuple[str, int], float] = field(repr=False)
    """(step run, pid) -> when that execution ended."""

    def in_flight(self, pids: set[int], at: float, settled: float) -> set[str]:
        """Step runs that one of ``pids`` had begun before ``at`` and not ended by
        ``settled``: a fault began at ``at`` and had taken effect by ``settled``; a step
        that ended in between is left out (it may have finished before the fault bit)."""
        return {k for k, t, pid in self.starts
                if pid in pids and t < at and self.ends.get((k, pid), settled) >= settled}

    def rerun_after(self, keys: set[str], at: float) -> list[float]:
        """For each of ``keys`` run again after ``at``: seconds from ``at`` to that start."""
        out = []
        for key in keys:
            later = [t for k, t, _ in self.starts if k == key and t > at]
            if later:
                out.append(min(later) - at)
        return out


def tally(c: Cluster, run_ids: Sequence[str]) -> Tally:
    """Read the steps' own counts (``chaos:*``) for the step runs of ``run_ids``."""
    r = c.client()
    runs = set(run_ids)
    mine: Callable[[str], bool] = lambda key: key.split(":", 1)[0] in runs  # noqa: E731
    execs = {k: int(v) for k, v in r.hgetall("chaos:exec").items() if mine(k)}
    overlaps = sum(int(v) for k, v in r.hgetall("chaos:overlap").items() if mine(k))
    effects = {k: int(v) for k, v in r.hgetall("chaos:effects").items() if mine(k)}
    starts = [(k, float(t), int(p)) for k, t, p in
              (json.loads(x) for x in r.lrange("chaos:starts", 0, -1)) if mine(k)]
    ends = {(k, int(p)): float(t) for k, t, p in
            (json.loads(x) for x in r.lrange("chaos:ends", 0, -1)) if mine(k)}
    # The effect is the step's SET NX of chaos:effect:<key>; its count is a second
    # command, which a host cut off (or killed) between the two never sends. So an effect
    # is missing if its key is, and done twice if counted twice.
    unsure = [k for k in execs if effects.get(k, 0) == 0]
    pipe = r.pipeline(transaction=False)
    for k in unsure:
        pipe.exists(f"chaos:effect:{k}")
    missing = len(unsure) - sum(pipe.execute())
    r.close()
    expected = len(run_ids) * STEPS
    not_once = missing + sum(1 for n in effects.values() if n > 1) + (expected - len(execs))
    return Tally(len(execs), sum(execs.values()), sum(1 for n in execs.values() if n > 1),
                 overlaps, not_once, len(unsure) - missing, starts, ends)


@dataclass
class Phase:
    """One batch of runs and what came of it."""

    name: str
    hosts: int
    runs: int
    statuses: dict[str, str]
    seconds: float
    tally: Tally
    faults: list[str] = field(default_factory=list)
    by_host: dict[int, int] = field(default_factory=dict)
    """Step executions per worker host (by the pids its worker had when the phase began)."""
    hit: list[int] = field(default_factory=list)
    rerun_s: list[float] = field(default_factory=list)

    @property
    def succeeded(self) -> int:
        return sum(1 for s in self.statuses.values() if s == "succeeded")

    @property
    def steps_per_s(self) -> float:
        return self.runs * STEPS / self.seconds

    @property
    def ok(self) -> bool:
        """Every run succeeded, nothing ran twice at once, every side effect once; with no
        fault, no step ran twice at all; with faults, each hit a running step, and every
        step hit ran again."""
        t = self.tally
        return (self.succeeded == self.runs and t.overlaps == 0 and t.effects_not_once == 0
                and (bool(self.faults) or t.executed_twice == 0)
                and all(self.hit) and len(self.rerun_s) == sum(self.hit))


def run_batch(c: Cluster, name: str, hosts: int, runs: int, timeout_s: float,
              during: Callable[[float], list[str]] | None = None) -> Phase:
    """Submit ``runs`` runs, run ``during(started)`` (the faults) meanwhile, wait for the
    runs to end, and read what they did."""
    pids = {i: c.worker_pids(i) for i in range(1, c.worker_count + 1)}
    started = time.time()
    run_ids: list[str] = []
    faults: list[str] = []
    injector = None
    if during is not None:
        injector = threading.Thread(target=lambda: faults.extend(during(started)),
                                    daemon=True)
        injector.start()
    run_ids = submit(c, runs)
    statuses = wait_ended(c, run_ids, timeout_s)
    if injector is not None:
        injector.join(timeout_s)
    ended = [rid for rid, s in statuses.items() if s in FINAL]
    seconds = window_s(c, ended) if ended else float("nan")
    t = tally(c, run_ids)
    by_host = {i: sum(1 for _k, _t, pid in t.starts if pid in ps) for i, ps in pids.items()}
    return Phase(name, hosts, runs, statuses, seconds, t, faults, by_host=by_host)


def busy(c: Cluster, pids: set[int], within_s: float | None = None) -> int:
    """How many step runs ``pids`` are running now (begun, not ended, by the steps' count);
    with ``within_s``, only those begun in the last ``within_s`` seconds (they have most of
    their call still to go, so a fault now lands while they run)."""
    r = c.client()
    since = time.time() - within_s if within_s is not None else 0.0
    starts = {(k, p) for k, t, p in (json.loads(x) for x in r.lrange("chaos:starts", 0, -1))
              if p in pids and t >= since}
    ends = {(k, p) for k, _t, p in (json.loads(x) for x in r.lrange("chaos:ends", 0, -1))
            if p in pids}
    r.close()
    return len(starts - ends)


def fault_phase(c: Cluster, runs: int, timeout_s: float, *, cut_host: int = 2,
                kill_host: int | None = 3, cut_at_s: float = 3.0,
                cut_s: float = 3 * LEASE_S, progress: Callable[[str], None] = print
                ) -> Phase:
    """Submit ``runs`` runs; ``cut_at_s`` in, once ``cut_host`` is running a step, cut it
    off for ``cut_s``; a second later SIGKILL ``kill_host``'s worker (None: no kill).

    The phase's :attr:`Phase.hit` holds, per fault, the step runs the host was running;
    :attr:`Phase.rerun_s` the seconds from the fault to each one's next start.
    """
    events: list[tuple[float, float, set[int]]] = []  # began, in effect, pids hit

    def faults(started: float) -> list[str]:
        done: list[str] = []
        time.sleep(max(0.0, started + cut_at_s - time.time()))
        pids = c.worker_pids(cut_host)
        # a step begun less than half a call ago: the cut lands mid-call, not as the host's
        # steps end (then the host could take no new one before the link is down)
        wait_until(lambda: busy(c, pids, IO_MS / 2000), 60, interval_s=0.02,
                   message=f"w{cut_host} never ran a step")
        at = time.time()
        c.cut(cut_host)
        events.append((at, time.time(), pids))
        progress(f"  cut w{cut_host} off at {at - started:.1f} s")
        if kill_host is not None:
            time.sleep(1.0)
            pids = c.worker_pids(kill_host)
            at = time.time()
            c.kill_worker(kill_host)
            events.append((at, time.time(), pids))
            progress(f"  SIGKILLed w{kill_host}'s worker at {at - started:.1f} s")
            done.append(f"w{kill_host}'s worker SIGKILLed")
        time.sleep(max(0.0, events[0][0] + cut_s - time.time()))
        c.restore(cut_host)
        progress(f"  w{cut_host} back after {cut_s:.0f} s")
        return [f"w{cut_host} cut off for {cut_s:.0f} s", *done]

    phase = run_batch(c, "faults", c.worker_count, runs, timeout_s, during=faults)
    for at, settled, pids in events:
        hit = phase.tally.in_flight(pids, at, settled)
        phase.hit.append(len(hit))
        phase.rerun_s += phase.tally.rerun_after(hit, at)
        for key in sorted(hit):  # say why, for whoever reads the output
            if not phase.tally.rerun_after({key}, at):
                seen = [(round(t - at, 3), pid, phase.tally.ends.get((k, pid)))
                        for k, t, pid in phase.tally.starts if k == key]
                progress(f"  {key} was running at the fault and never ran again: {seen}")
    return phase


SCALING_HEADER = (
    "| worker hosts | runs a round | step runs a round | step runs/s, median | min-max | "
    "x 1 host, median of rounds | min-max | runs not succeeded | step runs executed more "
    "than once | concurrent duplicates | side effects not exactly once |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|")
FAULTS_HEADER = (
    "| runs | succeeded | step runs | running on the cut host / the killed host at the "
    "fault | ran again | step runs executed more than once | concurrent duplicates | side "
    "effects not exactly once | fault to re-run p50, s | max, s | faults |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|")


def scaling_rows(rounds: Sequence[dict[int, Phase]]) -> list[str]:
    """One row per host count: medians and ranges over the rounds, ratios per round."""
    rows = []
    for hosts in sorted(rounds[0]):
        phases = [r[hosts] for r in rounds]
        rates = [p.steps_per_s for p in phases]
        ratios = [r[hosts].steps_per_s / r[1].steps_per_s for r in rounds]
        rows.append(
            f"| {hosts} | {phases[0].runs} | {phases[0].runs * STEPS} | "
            f"{statistics.median(rates):.1f} | {min(rates):.1f}-{max(rates):.1f} | "
            f"{statistics.median(ratios):.2f} | {min(ratios):.2f}-{max(ratios):.2f} | "
            f"{sum(p.runs - p.succeeded for p in phases)} | "
            f"{sum(p.tally.executed_twice for p in phases)} | "
            f"{sum(p.tally.overlaps for p in phases)} | "
            f"{sum(p.tally.effects_not_once for p in phases)} |")
    return rows


def faults_row(p: Phase) -> str:
    t = p.tally
    p50 = f"{statistics.median(p.rerun_s):.1f}" if p.rerun_s else "—"
    mx = f"{max(p.rerun_s):.1f}" if p.rerun_s else "—"
    notes = ([f"{t.effects_uncounted} effects done whose count the fault cut off"]
             if t.effects_uncounted else [])
    return (f"| {p.runs} | {p.succeeded} | {t.step_runs} | "
            f"{' / '.join(str(n) for n in p.hit)} | {len(p.rerun_s)} | {t.executed_twice} | "
            f"{t.overlaps} | {t.effects_not_once} | {p50} | {mx} | "
            f"{'; '.join(p.faults + notes)} |")


def write_doc(table: str, note: str) -> None:
    """Replace the generated part of docs/scaling.md's "Many hosts" section."""
    text = DOC.read_text(encoding="utf-8")
    body = f"{START}\n{note}\n\n{table}\n{END}"
    if START in text:
        a, b = text.index(START), text.index(END) + len(END)
        text = text[:a] + body + text[b:]
    else:
        text = text.rstrip() + "\n\n## Many hosts (`python -m bench.hosts`)\n\n" + body + "\n"
    DOC.write_text(text, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the phases; print the table; exit 1 if a target is missed (see the module)."""
    p = argparse.ArgumentParser(prog="python -m bench.hosts", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs-per-host", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cut-at", type=float, default=3.0, help="seconds into the fault phase")
    p.add_argument("--no-write", action="store_true", help="do not update the doc")
    args = p.parse_args(argv)
    reason = unavailable_reason()
    if reason is not None:
        print(f"python -m bench.hosts: {reason}", file=sys.stderr)
        return 2
    rounds: list[dict[int, Phase]] = []
    with cluster(3) as c:
        c.start_workers()
        run_batch(c, "warm-up", 3, 6, 120)
        for rnd in range(args.rounds):
            got: dict[int, Phase] = {}
            for hosts in (1, 2, 3) if rnd % 2 == 0 else (3, 2, 1):  # drift cancels out
                for i in (1, 2, 3):
                    c.consume(i, i <= hosts)
                got[hosts] = phase = run_batch(c, f"{hosts} hosts", hosts,
                                               args.runs_per_host * hosts, 300)
                print(f"round {rnd + 1}, {hosts} worker host(s): {phase.steps_per_s:.1f} "
                      f"step runs/s ({phase.succeeded}/{phase.runs} runs succeeded, "
                      f"{phase.seconds:.1f} s; step executions per host "
                      f"{phase.by_host})")
            rounds.append(got)
        for i in (1, 2, 3):
            c.consume(i, True)
        print("faults:")
        faults = fault_phase(c, args.runs_per_host * 3, 300, cut_at_s=args.cut_at)
    scaling = SCALING_HEADER + "\n" + "\n".join(scaling_rows(rounds))
    fault_table = FAULTS_HEADER + "\n" + faults_row(faults)
    print(scaling, fault_table, sep="\n\n")
    ratios = [r[3].steps_per_s / r[1].steps_per_s for r in rounds]
    ratio = statistics.median(ratios)
    ok = (ratio >= TARGET and faults.ok
          and all(p.ok for r in rounds for p in r.values()))
    print(f"3 hosts / 1 host: {ratio:.2f}x, median of {len(ratios)} rounds (target >= "
          f"{TARGET}x); {'ok' if ok else 'TARGET MISSED'}")
    if not args.no_write:
        write_doc(f"{scaling}\n\nFaults, with three worker hosts:\n\n{fault_table}",
                  f"Generated by `python -m bench.hosts` on "
                  f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: one worker per "
                  f"host, prefork `-c {CONCURRENCY}`; workflow `hosts_io` ({STEPS} steps "
                  f"of {IO_MS} ms each); {args.runs_per_host} runs per worker host, "
                  f"submitted over HTTP at once; {args.rounds} rounds, host counts in "
                  "alternating order; `ORCH_LEASE_S="
                  f"{LEASE_S:g}`, `ORCH_REAPER_INTERVAL_S="
                  f"{SETTINGS['reaper_interval_s']:g}`. Three hosts give "
                  f"**{ratio:.2f}x** the step runs per second of one.")
    return 0 if ok else 1

if __name__ == "__main__":
    sys.exit(main())
