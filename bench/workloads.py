"""Workloads 1-4: latency per hop, fan-out throughput, many small runs, random DAGs.

Each workload runs its two arms alternately (:meth:`Bench.alternate`) and adds its rows
to the report.  Times are wall-clock from just before the submission (ours:
``Coordinator.submit``; raw: ``apply_async``) to the finish time recorded in Redis.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from bench import flows, raw
from bench.harness import Bench, BenchError
from bench.report import Row, median, percentile, ratios, spread, verdict
from bench.stack import (
    ORCH_QUEUE,
    command_counts,
    command_usec,
    reads_processed,
    reset_stats,
    server_cpu_usec,
    settle,
    used_memory,
)
from orchestrator.core.dag import Graph
from orchestrator.dev.waiting import wait_until

# --- 1. linear workflow: ms per hop ---------------------------------------------------------


def _linear_ours(b: Bench, n: int) -> float:
    wf = b.workflow(("linear", n), lambda: flows.linear(n))
    t0 = time.time()
    rid = b.coord.submit(wf)
    run = b.wait_runs([rid])[rid]
    assert run.ended_at is not None
    return (run.ended_at - t0) * 1000 / n


def _linear_raw(b: Bench, n: int) -> float:
    t0 = time.time()
    res = raw.linear(b.raw_app, n).apply_async()
    end = b.wait_results([res.id])[res.id]
    return (float(end) - t0) * 1000 / n


def linear(b: Bench, label: str = "1. linear") -> tuple[list[float], list[float]]:
    """Workload 1: a line of no-op steps against a raw ``chain``."""
    n = b.sizes.linear_steps
    return b.alternate(label, lambda w: _linear_ours(b, b.size(n, w)),
                       lambda w: _linear_raw(b, b.size(n, w)), lambda x: f"{x:.2f} ms/hop")


def linear_rows(b: Bench, ours: list[float], rawv: list[float], what: str) -> Row:
    rs = ratios(ours, rawv)
    return Row(f"{what}: {b.sizes.linear_steps} no-op steps vs raw `chain`, ms per hop",
               spread(ours), spread(rawv), spread(rs), "≤ 1.05", verdict(median(rs) <= 1.05))


def run_linear(b: Bench) -> None:
    ours, rawv = linear(b)
    b.report.add(linear_rows(b, ours, rawv, "1. linear workflow"))
    b.report.notes.append(
        "1: ms per hop = (finish - submit) / steps; ours finishes at the run's `ended_at`, "
        "raw at the stamp returned by the chain's last task.  Ours compiles the line into "
        f"units of ≤ {b.settings.max_unit_tasks} tasks joined by a dependency counter.")
    command_rows(b)
    aof_rows(b)


# --- Redis commands per step (around workload 1) --------------------------------------------


@dataclass
class Commands:
    per_step: dict[str, float]
    reads_per_step: float
    usec_per_step: float
    cpu_per_step: float

    @property
    def total(self) -> float:
        return sum(self.per_step.values())

    def top(self, k: int = 7) -> str:
        items = sorted(self.per_step.items(), key=lambda kv: -kv[1])[:k]
        return ", ".join(f"{c} {v:.1f}" for c, v in items)


def _profile(b: Bench, arm: Callable[[], object], steps: int) -> Commands:
    """Commands Redis served while ``arm`` ran, minus the client's polling and the idle
    background (measured over an equally long idle window right after)."""
    settle(b.r, [])
    before = Counter(b.client_cmds)
    reset_stats(b.r)
    cpu0 = server_cpu_usec(b.r)
    t0 = time.monotonic()
    arm()
    window = time.monotonic() - t0
    cpu = server_cpu_usec(b.r) - cpu0
    counts = Counter(command_counts(b.r))
    reads = reads_processed(b.r)
    usec = command_usec(b.r)
    polled = Counter(b.client_cmds)
    polled.subtract(before)
    reset_stats(b.r)
    cpu0 = server_cpu_usec(b.r)
    time.sleep(window)  # the idle window: background traffic (pings, BRPOP timeouts)
    idle_cpu = server_cpu_usec(b.r) - cpu0
    idle = Counter(command_counts(b.r))
    idle_reads = reads_processed(b.r)
    idle_usec = command_usec(b.r)
    for c in ("info", "config|resetstat", "config"):
        counts.pop(c, None)
        idle.pop(c, None)
    counts.subtract(idle)
    for c, n in polled.items():
        if not c.startswith("_"):
            counts[c] -= n
    net_reads = reads - idle_reads - polled["_reads"] - 2  # our INFO and RESETSTAT
    per = {c: max(0.0, n / steps) for c, n in counts.items() if n > 0}
    return Commands(per, max(0.0, net_reads / steps), max(0.0, (usec - idle_usec) / steps),
                    max(0.0, (cpu - idle_cpu) / steps))


def command_rows(b: Bench) -> None:
    """Commands, reads and server time per step, in ``b.repeat`` rounds of ours then raw:
    medians, and for server time the median of the per-round ratios with its spread."""
    n = b.sizes.linear_steps
    rounds = [(_profile(b, lambda: _linear_ours(b, n), n),
               _profile(b, lambda: _linear_raw(b, n), n)) for _ in range(max(1, b.repeat))]
    total = (median([r[0].total for r in rounds]), median([r[1].total for r in rounds]))
    # the command mix shown is the round whose count is nearest the median
    ours = min((r[0] for r in rounds), key=lambda c: abs(c.total - total[0]))
    rawc = min((r[1] for r in rounds), key=lambda c: abs(c.total - total[1]))
    reads = (median([r[0].reads_per_step for r in rounds]),
             median([r[1].reads_per_step for r in rounds]))
    cpu = ([r[0].cpu_per_step for r in rounds], [r[1].cpu_per_step for r in rounds])
    usec = (median([r[0].usec_per_step for r in rounds]),
            median([r[1].usec_per_step for r in rounds]))
    b.progress(f"commands per step: ours {total[0]:.1f} ({ours.top()}) | "
               f"raw {total[1]:.1f} ({rawc.top()}); server CPU µs per step: ours "
               f"{spread(cpu[0], '{:.0f}')} | raw {spread(cpu[1], '{:.0f}')}")
    b.report.add(Row("1. Redis commands per step (linear workflow)", f"{total[0]:.1f}",
                     f"{total[1]:.1f}", f"{total[0] / total[1]:.2f}"))
    b.report.add(Row("1. Redis reads (≈ round trips) per step (linear workflow)",
                     f"{reads[0]:.1f}", f"{reads[1]:.1f}",
                     f"{reads[0] / max(reads[1], 1e-9):.2f}"))
    b.report.add(Row("1. Redis server CPU per step, µs (main thread; linear workflow)",
                     spread(cpu[0], "{:.0f}"), spread(cpu[1], "{:.0f}"),
                     spread(ratios(*cpu)), "≤ 1.1", verdict(median(ratios(*cpu)) <= 1.1)))
    b.report.add(Row("1. Redis commandstats usec per step (scripts' commands counted twice)",
                     f"{usec[0]:.0f}", f"{usec[1]:.0f}", f"{usec[0] / max(usec[1], 1e-9):.2f}"))
    b.report.notes.append(
        f"1, commands: {len(rounds)} rounds of ours then raw; in each, `CONFIG RESETSTAT` "
        "then `INFO commandstats` around one run of each arm, minus the client's "
        "completion polls and minus an idle window as long as the run (BRPOP timeouts, "
        "pidbox).  Counts and reads are medians.  Reads are `total_reads_processed`: one "
        "per request or pipeline Redis read, so about one per round trip.  Server CPU is "
        "the Redis main thread's user + system CPU (`INFO cpu`) over the run, minus the "
        "idle window's: the server's whole cost, each command once; its ratio is the "
        "median of the per-round ratios.  The commandstats row sums `usec` over the "
        "commands, which counts a command a Lua script calls twice (on its own line and "
        "inside the script's EVALSHA): it overstates ours, whose step boundaries are "
        f"scripts, and not raw Celery's.  Per step, ours: {ours.top(10)}; raw: "
        f"{rawc.top(10)}.")


def aof_rows(b: Bench) -> None:
    """Workload 1 again with the durable setting: AOF, fsync every second."""
    b.r.config_set("appendfsync", "everysec")
    b.r.config_set("appendonly", "yes")
    try:
        def rewritten() -> bool:
            info = b.r.info("persistence")
            return bool(info["aof_enabled"]) and not info["aof_rewrite_in_progress"] \
                and not info.get("aof_rewrite_scheduled")
        wait_until(rewritten, 30.0, interval_s=0.05, message="AOF rewrite did not finish")
        ours, rawv = linear(b, "1. linear, AOF everysec")
        b.report.add(linear_rows(b, ours, rawv, "1. linear workflow, AOF everysec"))
    finally:
        b.r.config_set("appendonly", "no")


# --- 2. fan-out / fan-in: steps per second ----------------------------------------------------


def _fan_ours(b: Bench, n: int) -> tuple[float, float]:
    """(steps/s, ms from the last branch's end to the fan-in step's start)."""
    wf = b.workflow(("fan", n), lambda: flows.fan_out_in(n))
    t0 = time.time()
    rid = b.coord.submit(wf)
    run = b.wait_runs([rid], interval_s=0.1)[rid]
    assert run.ended_at is not None
    steps = {s.step_id: s for s in b.coord.view(rid).steps}
    fan_in = steps.pop("fan_in").started_at
    last = max(s.ended_at or 0.0 for s in steps.values())
    return n / (run.ended_at - t0), ((fan_in or last) - last) * 1000


def _fan_raw(b: Bench, n: int) -> tuple[float, float]:
    """(steps/s, ms from the last header task's end to the join's start)."""
    b.r.delete(raw.JOIN_GAPS)
    t0 = time.time()
    res = raw.fan_out_in(b.raw_app, n).apply_async()
    end = b.wait_results([res.id], interval_s=0.1)[res.id]
    gap = b.r.lpop(raw.JOIN_GAPS)
    return n / (float(end) - t0), float(str(gap)) if gap is not None else float("nan")


def run_fan(b: Bench) -> None:
    """Workload 2: n independent steps then one fan-in step, against a raw ``chord``."""
    n = b.sizes.fan_steps
    ours_x, raw_x = b.alternate(
        "2. fan-out/fan-in", lambda w: _fan_ours(b, b.size(n, w)),
        lambda w: _fan_raw(b, b.size(n, w)),
        lambda x: f"{x[0]:.0f} steps/s, join {x[1]:.1f} ms after the last branch")
    ours, rawv = [x[0] for x in ours_x], [x[0] for x in raw_x]
    rs = ratios(ours, rawv)
    b.report.add(Row(f"2. fan-out/fan-in: {n} no-op steps + fan-in vs raw `chord` + join, "
                     "steps/s", spread(ours, "{:.0f}"), spread(rawv, "{:.0f}"), spread(rs),
                     "≥ 1.0", verdict(median(rs) >= 1.0)))
    gaps, raw_gaps = [x[1] for x in ours_x], [x[1] for x in raw_x]
    b.report.add(Row("2. fan-in: ms from the last branch's end to the fan-in step's start "
                     "(raw: the join's)", spread(gaps, "{:.1f}"), spread(raw_gaps, "{:.1f}"),
                     spread(ratios(gaps, raw_gaps)), "≤ 10 ms",
                     verdict(median(gaps) <= 10)))
    b.report.notes.append(
        "2: steps/s = steps / (finish - submit), so it includes the client publishing "
        "every header message.  Ours runs n + 1 tasks (the steps, each a one-task unit "
        "since n is above the compiler's `MAX_CHORD_WIDTH`, joined by the fan-in step's "
        "counter: no chord); raw runs n + 1 (the steps, the join).  The fan-in delay: ours from "
        "the latest `ended_at` of a branch's step run to the fan-in step run's "
        "`started_at`; raw from the latest end stamp a header task returned to the "
        "join's first line.")


# --- 3. many small concurrent runs --------------------------------------------------------------


@dataclass
class Batch:
    runs_per_s: float
    latencies_s: list[float]
    mem_per_run: float


def _batch_ours(b: Bench, k: int) -> Batch:
    wf = b.workflow(("order",), flows.order_shape)
    settle(b.r, [])
    mem0 = used_memory(b.r)
    subs: dict[str, float] = {}
    for _ in range(k):
        t = time.time()
        subs[b.coord.submit(wf)] = t
    runs = b.wait_runs(list(subs), interval_s=0.25)
    settle(b.r, [ORCH_QUEUE])
    mem1 = used_memory(b.r)
    ends = {rid: float(rec.ended_at or 0.0) for rid, rec in runs.items()}
    first = min(subs.values())
    return Batch(k / (max(ends.values()) - first), [ends[r] - subs[r] for r in subs],
                 (mem1 - mem0) / k)


def _batch_raw(b: Bench, k: int) -> Batch:
    settle(b.r, [])
    mem0 = used_memory(b.r)
    subs: dict[str, float] = {}
    for _ in range(k):
        t = time.time()
        subs[raw.order_shape(b.raw_app).apply_async().id] = t
    ends = b.wait_results(list(subs), interval_s=0.25)
    settle(b.r, [raw.RAW_QUEUE])
    mem1 = used_memory(b.r)
    first = min(subs.values())
    return Batch(k / (max(float(e) for e in ends.values()) - first),
                 [float(ends[t]) - subs[t] for t in subs], (mem1 - mem0) / k)


def batches(b: Bench, k: int, label: str, rounds: int | None = None
            ) -> tuple[list[Batch], list[Batch]]:
    def show(x: Batch) -> str:
        return (f"{x.runs_per_s:.1f} runs/s, p50 {percentile(x.latencies_s, 0.5):.2f} s, "
                f"p99 {percentile(x.latencies_s, 0.99):.2f} s, {x.mem_per_run:.0f} B/run")
    return b.alternate(label, lambda w: _batch_ours(b, b.size(k, w)),
                       lambda w: _batch_raw(b, b.size(k, w)), show, rounds)


def run_concurrent(b: Bench) -> None:
    """Workload 3: k order-shaped runs submitted at once."""
    k = b.sizes.concurrent_runs
    ours, rawv = batches(b, k, "3. concurrent runs")
    b.shared["batches"] = (ours, rawv)
    tput_o = [x.runs_per_s for x in ours]
    tput_r = [x.runs_per_s for x in rawv]
    b.report.add(Row(f"3. {k} concurrent order-shaped runs (9 steps), runs/s",
                     spread(tput_o), spread(tput_r), spread(ratios(tput_o, tput_r))))
    for q, name in ((0.5, "p50"), (0.99, "p99")):
        lo = [percentile(x.latencies_s, q) for x in ours]
        lr = [percentile(x.latencies_s, q) for x in rawv]
        b.report.add(Row(f"3. same, {name} submit-to-finish latency, s", spread(lo),
                         spread(lr), spread(ratios(lo, lr))))
    b.report.notes.append(
        "3: all runs are submitted back to back from one client, then awaited; runs/s = "
        "runs / (last finish - first submit); latency = a run's finish - its own submit. "
        "With one FIFO queue every run advances one hop per pass over the queue, so all "
        "runs finish close together and p50 ≈ p99.  "
        "The shape is customer_order.yaml's dependency graph with no-op steps (no "
        "conditions, so all 9 steps run); raw is the same canvas by hand (chain → chord "
        "with a nested chord, 11 tasks with the joins).")


# --- 4. random non-series-parallel DAGs -----------------------------------------------------------


@dataclass
class DagRun:
    makespan_s: float
    critical_s: float

    @property
    def ratio(self) -> float:
        return self.makespan_s / self.critical_s


def _dag(b: Bench, warm: bool, rnd: list[int]) -> flows.RandomDag:
    lo, hi = b.sizes.dag_sleep_ms
    n = b.size(b.sizes.dag_steps, warm, floor=8)
    return flows.random_dag(n, seed=1000 + rnd[0], sleep_range_ms=(lo, hi))


def _dag_ours(b: Bench, dag: flows.RandomDag) -> DagRun:
    wf = dag.workflow()
    t0 = time.time()
    rid = b.coord.submit(wf)
    run = b.wait_runs([rid])[rid]
    steps = b.coord.store.step_runs(rid)
    dur = {s: r.duration_s or 0.0 for s, r in steps.items()}
    cp = Graph.from_deps(wf.dependencies()).critical_path(dur)
    assert run.ended_at is not None
    return DagRun(run.ended_at - t0, cp)


def _dag_raw(b: Bench, dag: flows.RandomDag) -> DagRun:
    tag = uuid.uuid4().hex
    t0 = time.time()
    res = raw.level_by_level(b.raw_app, dag.levels(), dag.sleep_ms, tag).apply_async()
    end = float(b.wait_results([res.id])[res.id])
    stamps = raw.read_stamps(b.r, tag)
    if len(stamps) != len(dag.parents):
        raise BenchError(f"raw DAG {tag}: {len(stamps)} of {len(dag.parents)} tasks ran")
    dur = {s: e - st for s, (st, e) in stamps.items()}
    cp = Graph.from_deps(dag.parents).critical_path(dur)
    return DagRun(end - t0, cp)


def run_dags(b: Bench) -> None:
    """Workload 4: makespan over the critical path of measured durations."""
    rnd = [0]
    dags: dict[int, flows.RandomDag] = {}

    def ours(warm: bool) -> DagRun:
        dags[rnd[0]] = _dag(b, warm, rnd)
        return _dag_ours(b, dags[rnd[0]])

    def rawarm(warm: bool) -> DagRun:
        out = _dag_raw(b, dags[rnd[0]])
        rnd[0] += 1
        return out

    o, r = b.alternate("4. random DAGs", ours, rawarm,
                       lambda x: f"makespan {x.makespan_s:.2f} s / CP {x.critical_s:.2f} s "
                       f"= {x.ratio:.3f}")
    ro = [x.ratio for x in o]
    rr = [x.ratio for x in r]
    n = b.sizes.dag_steps
    lo, hi = b.sizes.dag_sleep_ms
    b.report.add(Row(f"4. random non-SP DAG, {n} steps, sleeps {lo}-{hi} ms, threads "
                     f"-c {b.sizes.dag_threads}: makespan / critical path",
                     spread(ro, "{:.3f}"), spread(rr, "{:.3f}") + " (level-by-level)",
                     spread(ratios([x.makespan_s for x in o], [x.makespan_s for x in r])),
                     "ours ≤ 1.10", verdict(median(ro) <= 1.10)))
    levels = [len(d.levels()) for k, d in sorted(dags.items()) if k > 0]
    b.report.notes.append(
        "4: one random DAG per round (seeded; each step takes 1-3 parents among the 8 "
        "declared before it, ~10 % are sources; redrawn until it contains an \"N\"), the "
        "same DAG for both arms.  Critical path = longest path of the durations measured "
        "in that run (ours: `StepRun.started_at/ended_at`; raw: stamps each task "
        "records).  Makespan = finish - submit.  The ratio column is ours/raw makespan.  "
        f"Levels per DAG: {levels}.")
