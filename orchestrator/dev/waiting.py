"""Deadline-based waiting: poll a condition instead of sleeping and hoping."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from orchestrator.errors import OrchestratorError

T = TypeVar("T")


class WaitTimeout(OrchestratorError, AssertionError):
    """A condition polled by :func:`wait_until` was not met before its deadline.

    It is also an :class:`AssertionError`, so a test that times out waiting is reported as
    a failure, like any other unmet expectation of a test.
    """


def wait_until(
    predicate: Callable[[], T],
    timeout_s: float,
    interval_s: float = 0.02,
    message: str | Callable[[], str] = "condition was not met",
) -> T:
    """Poll ``predicate`` until it returns a truthy value or ``timeout_s`` elapses.

    The predicate is always called at least once, and once more at the deadline, so a
    condition that becomes true while the last interval elapses is not missed.

    Args:
        predicate: Called with no arguments; a truthy return value ends the wait. An
            exception it raises propagates at once (catch expected errors inside it).
        timeout_s: How long to keep polling, in seconds; must be >= 0.
        interval_s: Pause between two calls, in seconds; must be > 0.
        message: What did not happen, for the failure message; a callable is evaluated only
            on timeout (useful to attach a log tail or the last observed state).

    Returns:
        The predicate's first truthy return value.

    Raises:
        WaitTimeout: If the predicate never returned a truthy value before the deadline.
            Its text is ``message`` followed by how long it waited.
        ValueError: If ``timeout_s`` is negative or ``interval_s`` is not positive.
    """
    if timeout_s < 0:
        raise ValueError(f"timeout_s must be >= 0, got {timeout_s}")
    if interval_s <= 0:
        raise ValueError(f"interval_s must be > 0, got {interval_s}")
    start = time.monotonic()
    deadline = start + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            text = message() if callable(message) else message
            raise WaitTimeout(f"{text} (waited {time.monotonic() - start:.2f}s)")
        time.sleep(min(interval_s, remaining))
