"""What one process remembers of the runs it served: the fields fixed when a run was
created (workflow, version, input, origin, tenant, faults...), so that a step's first read
(``begin_step.lua``) fetches the whole run hash once per run and process, and afterwards
only the fields a step uses that change while a run runs (``status``, ``priority``:
``begin_step.lua`` names them).  A known run's other changing fields (``started_at``,
``ended_at``, ``units_remaining``, ``resumes``, ``reason``) are as first read: no step
reads them.

A run's input can be large; it was sent, decoded and parsed at every step.  The cache
is bounded by the size of the inputs it holds (their JSON) and by its number of runs,
least recently used out first.  A run id names one run for ever (ids are never reused),
so an entry is never stale in its fixed fields.  The input is kept as its JSON and parsed
anew for every step run, as when it was read from Redis: a step function that changes the
object it was given changes no other step's.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import replace

from orchestrator import forks
from orchestrator.core.priorities import stored_priority
from orchestrator.core.states import RunStatus
from orchestrator.store.records import RunRecord

MAX_RUNS = 4096
"""Runs remembered at most, per process."""
MAX_INPUT_BYTES = 32 * 1024 * 1024
"""Input JSON remembered at most, in characters, per process (a larger input is not
kept)."""


class RunCache:
    """A bounded, thread-safe map of run id to the run as first read."""

    def __init__(self, max_runs: int = MAX_RUNS, max_bytes: int = MAX_INPUT_BYTES) -> None:
        self.max_runs = max_runs
        self.max_bytes = max_bytes
        self._runs: OrderedDict[str, tuple[RunRecord, str]] = OrderedDict()
        self._bytes = 0
        self._lock = forks.lock()

    def __len__(self) -> int:
        return len(self._runs)

    def __contains__(self, run_id: str) -> bool:
        return run_id in self._runs

    def remember(self, run: RunRecord, input_json: str) -> None:
        """Keep ``run``, whose input is ``input_json`` as stored, evicting the least
        recently used runs past the bounds."""
        if len(input_json) > self.max_bytes:
            return
        with self._lock:
            old = self._runs.pop(run.run_id, None)
            if old is not None:
                self._bytes -= len(old[1])
            self._runs[run.run_id] = (run, input_json)
            self._bytes += len(input_json)
            while len(self._runs) > self.max_runs or self._bytes > self.max_bytes:
                _, (_, dropped) = self._runs.popitem(last=False)
                self._bytes -= len(dropped)

    def fresh(self, run_id: str, live: dict[str, str]) -> RunRecord | None:
        """The remembered run with ``status`` and ``priority`` as just read (``live``);
        None if the run is not remembered."""
        with self._lock:
            entry = self._runs.get(run_id)
            if entry is None:
                return None
            self._runs.move_to_end(run_id)
        run, input_json = entry
        return replace(run, status=RunStatus(live["status"]), input=json.loads(input_json),
                       priority=stored_priority(live.get("priority")))
