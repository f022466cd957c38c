"""The transition table, and what a lease holder may move a step run from."""

from __future__ import annotations

from orchestrator.core.states import StepStatus, held_sources, step_sources

S = StepStatus


def test_a_holder_may_end_a_step_run_whose_move_to_running_was_lost() -> None:
    """Redis may lose a holder's move to running: its outcome is recorded over the older
    record (queued, retrying, or none), which the table alone would refuse."""
    for target in (S.SUCCEEDED, S.RETRYING):
        assert S.QUEUED not in step_sources(target)
        assert held_sources(target) == step_sources(target) | {S.PENDING, S.QUEUED,
                                                               S.RETRYING}
    assert held_sources(S.WAITING) == step_sources(S.WAITING) | {S.RETRYING}


def test_a_holder_moves_nothing_out_of_a_final_status_it_did_not_reach() -> None:
    """A step run that ended (or was cancelled with its run) stays as it is: holding a
    lease never reopens it, nor compensates what did not succeed."""
    for target in S:
        assert held_sources(target) >= step_sources(target)
        for done in (S.SUCCEEDED, S.FAILED, S.SKIPPED, S.CANCELLED, S.COMPENSATED,
                     S.COMPENSATION_FAILED):
            assert (done in held_sources(target)) == (done in step_sources(target)), (
                done, target)
    assert held_sources(S.COMPENSATING) == {S.SUCCEEDED}
