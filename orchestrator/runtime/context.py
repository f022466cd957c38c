"""What a running step function may know about its step run.

The step wrapper sets the context before calling the step function; step functions read
it with :func:`current` (for the run id, the attempt, or a Redis client for the systems
they talk to).
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import OrchestratorError


@dataclass(frozen=True)
class StepContext:
    """The step run being executed."""

    run_id: str
    step_id: str
    attempt: int
    redis: Any
    """A ``redis.Redis`` client on the orchestrator's Redis (decoded responses)."""
    events: Callable[[str, Any, str | None], Any] | None = None
    """Sends an event to the steps that wait for its key (see :meth:`send_event`)."""

    def send_event(self, key: str, data: Any, event_id: str | None = None) -> None:
        """Send an event for ``key``: the wait steps waiting for it (in any run) resume
        with ``data`` as their output, and one that starts waiting later still gets it.
        Give ``event_id`` (e.g. from :attr:`idempotency_key`) so that an attempt that runs
        again sends one event, not two.

        Raises:
            OrchestratorError: no event sender here (a step run outside a worker).
        """
        if self.events is None:
            raise OrchestratorError("this step run cannot send events; run it on a worker")
        self.events(key, data, event_id)

    @property
    def idempotency_key(self) -> str:
        """A key for the external calls of this step run, the same for every attempt and
        every redelivery of it: pass it to payment, shipping or other services (an
        ``Idempotency-Key`` header, a ``SET NX``), so that an attempt that runs again
        after a crash (execution is at least once) has its side effect once."""
        return f"{self.run_id}:{self.step_id}"


_current: ContextVar[StepContext | None] = ContextVar("orchestrator_step", default=None)


def current() -> StepContext:
    """Return the context of the step run executing now.

    Raises:
        OrchestratorError: called outside a step run.
    """
    ctx = _current.get()
    if ctx is None:
        raise OrchestratorError("no step is running here; current() works inside a step")
    return ctx


def peek() -> StepContext | None:
    """The context of the step run executing now, or None outside a step run (for code
    that runs either way, such as a log filter)."""
    return _current.get()


def set_current(ctx: StepContext | None) -> Any:
    """Set the context (the step wrapper's job); returns a token for :func:`reset`."""
    return _current.set(ctx)


def reset(token: Any) -> None:
    """Restore the context that was current before :func:`set_current`."""
    _current.reset(token)
