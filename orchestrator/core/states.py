"""Run and step-run states, and the one table of allowed transitions."""

from __future__ import annotations

from enum import StrEnum
from functools import cache


class RunStatus(StrEnum):
    """Where a run is."""

    QUEUED = "queued"
    """Its workflow's concurrency limit for its key was full when it was submitted: it
    waits, in arrival order, for a slot (:mod:`orchestrator.core.concurrency`); nothing
    of it runs yet."""
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    COMPENSATING = "compensating"
    """The run failed (or was cancelled with compensation): its succeeded steps are being
    undone by its undo run (:mod:`orchestrator.core.compensation`)."""
    COMPENSATED = "compensated"
    """It failed (or was cancelled), and every compensation succeeded."""
    COMPENSATION_FAILED = "compensation_failed"
    """It failed (or was cancelled), and a compensation failed for good."""

    @property
    def terminal(self) -> bool:
        return self in RUN_TERMINAL


class StepStatus(StrEnum):
    """Where a step run is.  ``pending`` is the state of a step with no record yet."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    WAITING = "waiting"
    """A wait step (sleep, wait_until, wait_for_event, approval) is parked: its timer and
    its next message are held in the store; no worker slot, no unacknowledged message."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    COMPENSATING = "compensating"
    """It succeeded; its run is undoing it (its compensation may not have started yet)."""
    COMPENSATED = "compensated"
    """It succeeded, and its compensation succeeded."""
    COMPENSATION_FAILED = "compensation_failed"
    """It succeeded, and its compensation failed for good."""

    @property
    def terminal(self) -> bool:
        return self in STEP_TERMINAL


RUN_TERMINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED,
                          RunStatus.COMPENSATED, RunStatus.COMPENSATION_FAILED})
STEP_TERMINAL = frozenset({StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED,
                           StepStatus.CANCELLED, StepStatus.COMPENSATING,
                           StepStatus.COMPENSATED, StepStatus.COMPENSATION_FAILED})
"""Steps that have ended (a step being compensated has ended: its run is undoing it)."""

_S = StepStatus
STEP_TRANSITIONS: dict[StepStatus, frozenset[StepStatus]] = {
    _S.PENDING: frozenset({_S.QUEUED, _S.RUNNING, _S.WAITING, _S.SKIPPED, _S.CANCELLED,
                           _S.FAILED}),
    _S.QUEUED: frozenset({_S.RUNNING, _S.WAITING, _S.SKIPPED, _S.CANCELLED, _S.FAILED}),
    # running -> running: a worker died mid-step and the broker redelivered it;
    # running -> waiting: a sub-workflow step started its child run and parks
    _S.RUNNING: frozenset({_S.RUNNING, _S.SUCCEEDED, _S.FAILED, _S.RETRYING, _S.SKIPPED,
                           _S.CANCELLED, _S.WAITING}),
    _S.RETRYING: frozenset({_S.RUNNING, _S.CANCELLED, _S.FAILED, _S.SKIPPED}),
    # waiting -> waiting: a delivery came before the wait was over and parked it again;
    # waiting -> succeeded / failed: the wait ended (event, approval, timer; a timeout or
    # a rejection); waiting -> cancelled: its run was cancelled; waiting -> retrying: a
    # sub-workflow step's child run failed and its retry policy starts another
    _S.WAITING: frozenset({_S.WAITING, _S.SUCCEEDED, _S.FAILED, _S.CANCELLED,
                           _S.RETRYING}),
    # succeeded -> compensating: its run unwinds; then its compensation's outcome
    _S.SUCCEEDED: frozenset({_S.COMPENSATING}),
    _S.FAILED: frozenset(),
    _S.SKIPPED: frozenset(),
    _S.CANCELLED: frozenset(),
    _S.COMPENSATING: frozenset({_S.COMPENSATED, _S.COMPENSATION_FAILED}),
    _S.COMPENSATED: frozenset(),
    _S.COMPENSATION_FAILED: frozenset(),
}

_R = RunStatus
RUN_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    # queued -> running: a slot of its concurrency key passed to it; -> cancelled: cancelled
    # while it waited
    _R.QUEUED: frozenset({_R.RUNNING, _R.CANCELLED}),
    _R.RUNNING: frozenset({_R.SUCCEEDED, _R.FAILED, _R.CANCELLED, _R.COMPENSATING}),
    _R.SUCCEEDED: frozenset(),
    _R.FAILED: frozenset(),
    _R.CANCELLED: frozenset(),
    _R.COMPENSATING: frozenset({_R.COMPENSATED, _R.COMPENSATION_FAILED}),
    _R.COMPENSATED: frozenset(),
    _R.COMPENSATION_FAILED: frozenset(),
}


@cache
def step_sources(target: StepStatus) -> frozenset[StepStatus]:
    """The states from which a step run may move to ``target``."""
    return frozenset(s for s, to in STEP_TRANSITIONS.items() if target in to)


@cache
def held_sources(target: StepStatus) -> frozenset[StepStatus]:
    """The states from which the holder of a step run's lease may move it to ``target``:
    :func:`step_sources`, and, when ``target`` follows ``running``, every state
    ``running`` is entered from.  Redis may have lost the holder's move to ``running`` (a
    restart from a snapshot, a failover that lost the last writes) while its attempt ran
    on: its keeper took its lost lease back, which proves that no other attempt holds the
    step run, so its outcome is recorded over the older record (which may say ``queued``,
    ``retrying`` or nothing) instead of being refused and the step run again."""
    sources = step_sources(target)
    if StepStatus.RUNNING in sources:
        sources |= step_sources(StepStatus.RUNNING)
    return sources


def run_sources(target: RunStatus) -> frozenset[RunStatus]:
    """The states from which a run may move to ``target``."""
    return frozenset(s for s, to in RUN_TRANSITIONS.items() if target in to)
