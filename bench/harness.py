"""What every workload shares: the clients of both arms, waiting, and alternation.

Completion is read from Redis, never guessed: a run of ours is done when its record is
terminal (its ``ended_at`` is the finish time), a raw canvas when the result of its last
task is stored (that task returns ``time.time()``, the finish time).  The client polls
for completion, so the poll interval never enters a figure; every poll is counted so that
Redis command counts can leave the client's own polling out.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis
from celery import Celery

from bench import raw
from bench.report import Progress, Report
from bench.sizes import Sizes
from bench.stack import ORCH_QUEUE, PACKAGES, Stack
from orchestrator.core.models import WorkflowDef
from orchestrator.runtime.catalog import Catalog, discover
from orchestrator.runtime.celeryconf import client_app
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.settings import Settings
from orchestrator.store.runs import RunRecord

T = TypeVar("T")
_TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


class BenchError(RuntimeError):
    """A workload did not complete (a run failed, or did not end in time)."""


@dataclass
class Bench:
    """One benchmark session: the stack, both arms' clients, sizes and the report."""

    stack: Stack
    sizes: Sizes
    repeat: int
    report: Report
    progress: Progress
    settings: Settings = field(init=False)
    catalog: Catalog = field(init=False)
    coord: Coordinator = field(init=False)
    raw_app: Celery = field(init=False)
    r: redis.Redis = field(init=False)
    client_cmds: Counter[str] = field(default_factory=Counter)
    shared: dict[str, Any] = field(default_factory=dict)
    _workflows: dict[tuple[Any, ...], WorkflowDef] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.settings = Settings(redis_url=self.stack.url, workflow_packages=PACKAGES,
                                 default_queue=ORCH_QUEUE)
        self.catalog = discover(self.settings.workflow_packages)
        self.coord = Coordinator(self.settings, self.catalog)
        self.raw_app = client_app(Settings(redis_url=self.stack.url,
                                           default_queue=raw.RAW_QUEUE))
        self.r = self.stack.client()

    def workflow(self, key: tuple[Any, ...], build: Callable[[], WorkflowDef]) -> WorkflowDef:
        """``build()`` once per ``key`` (the same definition, so one compiled plan)."""
        wf = self._workflows.get(key)
        if wf is None:
            wf = self._workflows[key] = build()
        return wf

    def open_runs(self) -> list[str]:
        """Runs of our store not ended (queued, running, compensating).  A workload must
        leave none: a run whose messages a workload purged looks stalled to the reaper a
        minute later, which publishes its steps again into the workers' queue, where they
        ran under the next workloads (full runs of workloads 1 to 3 measured them)."""
        keys = self.coord.store.keys
        p = self.r.pipeline(transaction=False)
        for status in ("queued", "running", "compensating"):
            p.zrange(keys.runs_by_status(status), 0, -1)
        return [str(rid) for ids in p.execute() for rid in ids]

    def size(self, full: int, warm: bool, floor: int = 2) -> int:
        """``full``, or the warm-up's fraction of it."""
        return max(floor, full // self.sizes.warmup_divisor) if warm else full

    # --- waiting ---------------------------------------------------------------------------

    def wait_runs(self, run_ids: Sequence[str], timeout_s: float = 600.0,
                  interval_s: float = 0.02) -> dict[str, RunRecord]:
        """Wait until every run is terminal; return the records.

        Raises:
            BenchError: a run failed or did not end within ``timeout_s``.
        """
        keys = {rid: self.coord.store.keys.run(rid) for rid in run_ids}
        pending = list(run_ids)
        deadline = time.monotonic() + timeout_s
        while pending:
            p = self.r.pipeline(transaction=False)
            for rid in pending:
                p.hget(keys[rid], "status")
            statuses = p.execute()
            self.client_cmds["hget"] += len(pending)
            self.client_cmds["_reads"] += 1
            pending = [rid for rid, s in zip(pending, statuses, strict=True)
                       if s not in _TERMINAL]
            if pending:
                if time.monotonic() > deadline:
                    raise BenchError(f"{len(pending)} run(s) did not end in {timeout_s} s, "
                                     f"e.g. {pending[0]}")
                time.sleep(interval_s)
        out = {rid: self.coord.store.run(rid) for rid in run_ids}
        bad = [rid for rid, rec in out.items() if rec.status.value != "succeeded"]
        if bad:
            view = self.coord.view(bad[0])
            failed = [(s.step_id, s.status.value, (s.error or {}).get("message"))
                      for s in view.steps if s.status.value != "succeeded"][:5]
            raise BenchError(f"{len(bad)} run(s) did not succeed, e.g. {bad[0]}: {failed}")
        return out

    def wait_results(self, task_ids: Sequence[str], timeout_s: float = 600.0,
                     interval_s: float = 0.02) -> dict[str, Any]:
        """Wait for the stored results of ``task_ids``; return each task's result.

        Raises:
            BenchError: a task failed or no result came within ``timeout_s``.
        """
        keys = dict(zip(task_ids, raw.result_keys(self.raw_app, task_ids), strict=True))
        out: dict[str, Any] = {}
        pending = list(task_ids)
        deadline = time.monotonic() + timeout_s
        while pending:
            vals = self.r.mget([keys[t] for t in pending])
            self.client_cmds["mget"] += 1
            self.client_cmds["_reads"] += 1
            still: list[str] = []
            for tid, v in zip(pending, vals, strict=True):
                meta = json.loads(v) if v else None
                if meta is None or meta["status"] not in ("SUCCESS", "FAILURE"):
                    still.append(tid)
                elif meta["status"] == "FAILURE":
                    raise BenchError(f"raw task {tid} failed: {meta.get('result')}")
                else:
                    out[tid] = meta["result"]
            pending = still
            if pending:
                if time.monotonic() > deadline:
                    raise BenchError(f"{len(pending)} raw canvas(es) did not finish in "
                                     f"{timeout_s} s")
                time.sleep(interval_s)
        return out

    # --- alternation -----------------------------------------------------------------------

    def alternate(self, label: str, ours: Callable[[bool], T], raw_arm: Callable[[bool], T],
                  show: Callable[[T], str], rounds: int | None = None
                  ) -> tuple[list[T], list[T]]:
        """Run a discarded warm-up, then ``rounds`` rounds of ours then raw (A B A B).

        Each arm gets ``warm=True`` in the warm-up round (it runs a smaller size).
        """
        rounds = self.repeat if rounds is None else rounds
        a: list[T] = []
        b: list[T] = []
        for i in range(rounds + 1):
            warm = i == 0
            x = ours(warm)
            y = raw_arm(warm)
            tag = "warm-up (discarded)" if warm else f"round {i}/{rounds}"
            self.progress(f"{label}: {tag}: ours {show(x)} | raw {show(y)}")
            if not warm:
                a.append(x)
                b.append(y)
        return a, b
