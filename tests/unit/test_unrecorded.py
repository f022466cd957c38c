"""Which task failures keep their message (``workers.step.unrecorded``): Redis unreachable
or timing out before a step run's outcome was recorded is requeued; anything else fails as
Celery would (its message acknowledged)."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
import redis
from celery.exceptions import Reject, Retry

from workers.step import _fail, requeue_when_unrecorded, unrecorded


@pytest.mark.parametrize("exc", [
    redis.ConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused."),
    redis.TimeoutError("Timeout reading from socket"),
    redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"),
])
def test_redis_gone_is_unrecorded_also_after_pickling(exc: Exception) -> None:
    assert unrecorded(exc)
    # the worker's main process sees the pool child's exception through pickle
    assert unrecorded(pickle.loads(pickle.dumps(exc)))


@pytest.mark.parametrize("exc", [
    ValueError("a step's own bug"),
    redis.AuthenticationError("invalid username-password pair"),  # no retry mends it
    Retry(exc=redis.ConnectionError("refused"), when=1.0),  # its retry was recorded
    Reject("no", requeue=False),
])
def test_other_failures_are_not(exc: Exception) -> None:
    assert not unrecorded(exc)


class _Refusing:
    """Stands in for the run protocol: recording the failure works."""

    def failed(self, *args: Any) -> bool:
        return True


class _Task:
    class request:  # the shape of Celery's task.request
        chain = None
        chord = None


def test_a_step_functions_own_redis_error_recorded_as_its_failure_is_not() -> None:
    """A step function that raised ConnectionError and whose policy failed it: the
    failure is recorded, then raised for Celery, marked so that it is acknowledged."""
    exc = redis.ConnectionError("the step's own Redis")
    with pytest.raises(redis.ConnectionError) as raised:
        _fail(_Task(), _Refusing(), None, "r", "s", exc, "token")  # type: ignore[arg-type]
    assert not unrecorded(raised.value)
    assert not unrecorded(pickle.loads(pickle.dumps(raised.value)))


def test_the_task_body_turns_redis_gone_into_a_requeue() -> None:
    def body(task: Any, run_id: str, step_id: str, version: str) -> dict[str, Any]:
        raise redis.ConnectionError("Error 111 connecting. Connection refused.")

    with pytest.raises(Reject) as rejected:
        requeue_when_unrecorded(body)(None, "run-1", "load", "v1")
    assert rejected.value.requeue is True

    def buggy(task: Any, run_id: str, step_id: str, version: str) -> dict[str, Any]:
        raise KeyError("x")

    with pytest.raises(KeyError):
        requeue_when_unrecorded(buggy)(None, "run-1", "load", "v1")
