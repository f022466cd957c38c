"""Simulation before going live (pure): the path a run takes, on a virtual clock, without
calling any step function.

:func:`simulate` walks the workflow in dependency order and decides each step with the
runtime's own code: trigger rules and conditions (:func:`orchestrator.core.decisions.decide`),
retries and their backoff (``RetryPolicy.allows_retry``, ``RetryPolicy.delay_s`` without
jitter), failure handlers, the run's ending (:func:`orchestrator.core.compensation.ending`)
and compensation (the undo workflow, simulated the same way).  Step outputs are what the
caller says (``--output STEP=JSON``; none: ``null``); :class:`Faults` fail, time out or slow
steps.  Every step without a failure, time-out or slowness takes no virtual time, and
branches run in parallel (as if workers were unlimited).

The same :class:`Faults` can be injected into a real run, for tests, when the setting
``ORCH_FAULT_INJECTION`` allows it: the worker fails, slows or times out the named steps'
attempts before calling their functions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.core import compensation, decisions
from orchestrator.core.conditions import Condition
from orchestrator.core.conditions import parse as parse_condition
from orchestrator.core.models import StepDef, WorkflowDef
from orchestrator.core.states import RunStatus, StepStatus
from orchestrator.core.waits import WaitKind
from orchestrator.errors import ConditionError, OrchestratorError


class SimulationError(OrchestratorError):
    """A simulation was asked for something that cannot be simulated (an unknown step, a
    time-out on a step without a time limit); the message names the fix."""


class InjectedFault(RuntimeError):
    """The failure a :class:`Faults` ``fail`` gives an attempt (retried like any error)."""


class InjectedTimeout(RuntimeError):
    """A soft time limit reached because a :class:`Faults` ``timeout`` said so."""


@dataclass(frozen=True)
class Faults:
    """Faults to inject, by step id."""

    fail: Mapping[str, int | None] = field(default_factory=dict)
    """Fail the first N attempts of the step (None: every attempt)."""
    timeout: frozenset[str] = frozenset()
    """The step's attempts run into its time limit (a wait step: its wait times out)."""
    slow: Mapping[str, float] = field(default_factory=dict)
    """Each attempt of the step takes this many seconds."""

    def __bool__(self) -> bool:
        return bool(self.fail or self.timeout or self.slow)

    def failure(self, step_id: str, attempt: int) -> InjectedFault | None:
        """The error attempt ``attempt`` (1-based) of the step raises, if it fails."""
        if step_id not in self.fail:
            return None
        n = self.fail[step_id]
        if n is None or attempt <= n:
            return InjectedFault(f"fault injected: {step_id} fails attempt {attempt}")
        return None

    def check(self, wf: WorkflowDef) -> None:
        """Every step named is a step of ``wf``; a time-out names a step that has a time
        limit (or a wait with a ``timeout_s``).

        Raises:
            SimulationError: naming the step and the fix.
        """
        for step_id in [*self.fail, *self.timeout, *self.slow]:
            if step_id not in wf.step_map:
                raise SimulationError(f"no step {step_id!r} in workflow {wf.name!r} (steps: "
                                      f"{', '.join(wf.step_map)}); fix the step id")
        for step_id in self.timeout:
            s = wf.step_map[step_id]
            limit = s.wait.timeout_s if s.wait is not None else s.timeout_s or s.soft_timeout_s
            if not limit:
                raise SimulationError(f"step {step_id!r} has no time limit to run into; give "
                                      "it timeout_s (or its wait a timeout_s), or drop "
                                      f"--timeout {step_id}")

    def to_json(self) -> str:
        """The faults as JSON (stored with a real run they are injected into)."""
        return json.dumps({"fail": dict(self.fail), "timeout": sorted(self.timeout),
                           "slow": dict(self.slow)})

    @classmethod
    def from_json(cls, text: str) -> Faults:
        """Read :meth:`to_json`'s text."""
        d = json.loads(text)
        return cls(fail=dict(d.get("fail") or {}), timeout=frozenset(d.get("timeout") or ()),
                   slow={k: float(v) for k, v in (d.get("slow") or {}).items()})

    @classmethod
    def parse(cls, fail: Iterable[str] = (), timeout: Iterable[str] = (),
              slow: Iterable[str] = ()) -> Faults:
        """From command-line words: ``STEP`` or ``STEP:N`` (fail), ``STEP`` (timeout),
        ``STEP=SECONDS`` (slow).

        Raises:
            SimulationError: a malformed word, with the form it must have.
        """
        fails: dict[str, int | None] = {}
        for word in fail:
            step, _, n = word.partition(":")
            if not step or (n and not n.isdigit()):
                raise SimulationError(f"--fail {word!r}: write STEP or STEP:N (N attempts)")
            fails[step] = int(n) if n else None
        slows: dict[str, float] = {}
        for word in slow:
            step, _, secs = word.partition("=")
            try:
                slows[step] = float(secs)
            except ValueError:
                raise SimulationError(f"--slow {word!r}: write STEP=SECONDS") from None
        return cls(fail=fails, timeout=frozenset(timeout), slow=slows)


@dataclass(frozen=True)
class SimStep:
    """One step's simulated step run."""

    step_id: str
    status: StepStatus
    attempts: int
    start_s: float
    end_s: float
    note: str = ""
    decision: dict[str, Any] | None = None


@dataclass(frozen=True)
class Simulation:
    """The path a run takes: its steps (in workflow order), its compensations and its
    final status."""

    workflow: str
    version: str
    status: RunStatus
    steps: tuple[SimStep, ...]
    undo: tuple[SimStep, ...] = ()

    def statuses(self) -> dict[str, str]:
        """Each step's final status (after compensation)."""
        return {s.step_id: s.status.value for s in self.steps}

    def path(self) -> list[str]:
        """The steps that ran (succeeded or failed), by start time."""
        ran = [s for s in self.steps if s.attempts > 0]
        return [s.step_id for s in sorted(ran, key=lambda s: (s.start_s, s.end_s))]

    def lines(self) -> list[str]:
        """The simulation as text: the timeline, the compensations, the path, the end."""
        out = [f"simulated {self.workflow} (version {self.version}) on a virtual clock: "
               "no step function was called"]
        out += _table(self.steps)
        if self.undo:
            out.append("compensations (the undo run), newest work undone first:")
            out += _table(self.undo)
        out.append("path: " + " -> ".join(self.path()))
        out.append(f"run: {self.status.value}")
        return out


def simulate(wf: WorkflowDef, run_input: Any, outputs: Mapping[str, Any] | None = None,
             faults: Faults | None = None, start_s: float = 0.0) -> Simulation:
    """Simulate a run of ``wf`` with ``run_input``.

    Args:
        wf: a validated workflow.
        run_input: the run's input.
        outputs: what each step returns (steps not named return ``null``).
        faults: failures, time-outs and slowness to inject.
        start_s: the virtual time the run starts at.

    Raises:
        SimulationError: ``faults`` or ``outputs`` name a step ``wf`` does not have, or a
            time-out a step without a time limit.
    """
    outputs = dict(outputs or {})
    faults = faults or Faults()
    faults.check(wf)
    for step_id in outputs:
        if step_id not in wf.step_map:
            raise SimulationError(f"--output names no step of {wf.name!r}: {step_id!r}")
    deps = wf.dependencies()
    handles = wf.handlers_of()
    conditions = {s.id: parse_condition(s.when) for s in wf.steps if s.when}
    statuses: dict[str, StepStatus] = {}
    produced: dict[str, Any] = {}
    done: dict[str, SimStep] = {}
    for step_id in _order(deps):
        step = wf.step_map[step_id]
        ready = max((done[p].end_s for p in deps[step_id]), default=start_s)
        sim = _step(step, deps[step_id], statuses, handles.get(step_id, ()),
                    conditions.get(step_id), run_input, produced, outputs, faults, ready)
        done[step_id] = sim
        statuses[step_id] = sim.status
        if sim.status is StepStatus.SUCCEEDED:
            produced[step_id] = outputs.get(step_id)
    steps = [done[s.id] for s in wf.steps]
    status = compensation.ending(wf, statuses)
    if status is not RunStatus.COMPENSATING:
        return Simulation(wf.name, wf.version, status, tuple(steps))
    ids = compensation.compensable(wf, statuses)
    undo_wf = compensation.undo_workflow(wf, ids)
    undo = simulate(undo_wf, compensation.undo_input(wf, ids, run_input, produced),
                    outputs=dict.fromkeys(ids), start_s=max(s.end_s for s in steps))
    marks, status = compensation.outcome({s.step_id: s.status for s in undo.steps})
    steps = [SimStep(s.step_id, marks[s.step_id], s.attempts, s.start_s, s.end_s,
                     "undone" if marks[s.step_id] is StepStatus.COMPENSATED
                     else "its compensation failed", s.decision)
             if s.step_id in marks else s for s in steps]
    return Simulation(wf.name, wf.version, status, tuple(steps), undo.steps)


def _step(step: StepDef, parents: Sequence[str], statuses: Mapping[str, StepStatus],
          handles: Sequence[str], condition: Condition | None, run_input: Any,
          produced: Mapping[str, Any], outputs: Mapping[str, Any], faults: Faults,
          ready: float) -> SimStep:
    """One step's step run, decided and run as the runtime would."""
    try:
        d = decisions.decide(step, parents, statuses, handles, condition, run_input, produced)
    except ConditionError as exc:
        return SimStep(step.id, StepStatus.FAILED, 0, ready, ready, str(exc))
    trail = d.to_record() if d.notable else None
    if not d.runs:
        return SimStep(step.id, StepStatus.SKIPPED, 0, ready, ready, d.reason or "", trail)
    if step.wait is not None:
        return _wait(step, faults, ready, trail)
    t, attempt = ready, 1
    while True:
        t += faults.slow.get(step.id, 0.0)
        err: BaseException | None = faults.failure(step.id, attempt)
        hard = False
        if step.id in faults.timeout:
            hard = step.timeout_s is not None
            t += (step.timeout_s or step.soft_timeout_s or 0.0) - faults.slow.get(step.id, 0.0)
            err = InjectedTimeout(f"{'hard' if hard else 'soft'} time limit exceeded")
        if err is None:
            return SimStep(step.id, StepStatus.SUCCEEDED, attempt, ready, t,
                           "" if step.id in outputs else "output: null (no --output)", trail)
        # a hard limit kills the attempt: the runtime fails the step run without retry
        if hard or not step.retry.allows_retry(err, attempt):
            return SimStep(step.id, StepStatus.FAILED, attempt, ready, t, str(err), trail)
        t += step.retry.delay_s(attempt)
        attempt += 1


def _wait(step: StepDef, faults: Faults, ready: float,
          trail: dict[str, Any] | None) -> SimStep:
    """A wait step: it times out (``timeout``), is rejected (``fail``), or ends at once
    (an event or approval) or after its sleep."""
    w = step.wait
    assert w is not None
    if step.id in faults.timeout:
        return SimStep(step.id, StepStatus.FAILED, 1, ready, ready + (w.timeout_s or 0.0),
                       "wait timed out", trail)
    if faults.failure(step.id, 1) is not None:
        return SimStep(step.id, StepStatus.FAILED, 1, ready, ready, "rejected", trail)
    took = w.duration_s if w.kind is WaitKind.SLEEP and w.duration_s else 0.0
    return SimStep(step.id, StepStatus.SUCCEEDED, 1, ready, ready + took,
                   f"{w.kind.value} wait ended", trail)


def _order(deps: Mapping[str, Sequence[str]]) -> list[str]:
    """Kahn's order, stable in declaration order (the workflow is validated: no cycle)."""
    children: dict[str, list[str]] = {s: [] for s in deps}
    indeg = {s: 0 for s in deps}
    for s, ps in deps.items():
        for p in ps:
            if p in children:
                children[p].append(s)
                indeg[s] += 1
    ready = [s for s in deps if indeg[s] == 0]
    out: list[str] = []
    while ready:
        s = ready.pop(0)
        out.append(s)
        for c in children[s]:
            indeg[c] -= 1
            if indeg[c] == 0:
                ready.append(c)
    return out


def _table(steps: Iterable[SimStep]) -> list[str]:
    rows = [("START", "END", "STEP", "STATUS", "ATTEMPTS", "NOTE")]
    for s in sorted(steps, key=lambda s: (s.start_s, s.end_s)):
        rows.append((f"{s.start_s:.3f}s", f"{s.end_s:.3f}s", s.step_id, s.status.value,
                     str(s.attempts or "-"), s.note))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=True))
            + "  " + r[5] for r in rows]
