"""A process forked while another thread holds a lock (a worker's keeper thread, as
Celery's prefork pool forks a pool process) finds the lock released: kombu's
``cached_property`` locks and the locks made with :func:`orchestrator.forks.lock`."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from celery.app.amqp import AMQP
from kombu.utils.objects import cached_property

from orchestrator import forks


@contextmanager
def _held_by_a_thread(take: Callable[[], object], give: Callable[[], object]) -> Iterator[None]:
    """A thread takes a lock and holds it until the block ends."""
    taken, done = threading.Event(), threading.Event()

    def hold() -> None:
        take()
        taken.set()
        done.wait(10)
        give()

    t = threading.Thread(target=hold)
    t.start()
    assert taken.wait(10)
    try:
        yield
    finally:
        done.set()
        t.join(10)


def _child_can_take(acquire: Callable[[float], bool]) -> bool:
    """Fork; the child tries the lock for a second and exits 0 if it got it."""
    pid = os.fork()
    if pid == 0:  # the child: no thread holds anything here
        os._exit(0 if acquire(1.0) else 1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def test_a_cached_property_lock_held_at_the_fork_is_free_in_the_child() -> None:
    forks.install()
    prop = AMQP.__dict__["send_task_message"]  # the lock the hung pool process waited on
    with _held_by_a_thread(prop.lock.acquire, prop.lock.release):
        assert _child_can_take(lambda t: bool(prop.lock.acquire(timeout=t)))


def test_a_cached_property_made_after_install_is_covered_too() -> None:
    """A class defined later (a module imported lazily) is noted as it is made."""
    forks.install()

    class Later:
        @cached_property
        def value(self) -> int:
            return 1

    prop = Later.__dict__["value"]
    with _held_by_a_thread(prop.lock.acquire, prop.lock.release):
        assert _child_can_take(lambda t: bool(prop.lock.acquire(timeout=t)))


def test_a_lock_made_by_forks_held_at_the_fork_is_free_in_the_child() -> None:
    forks.install()
    made = forks.lock()
    with _held_by_a_thread(made.acquire, made.release):
        assert _child_can_take(lambda t: made.acquire(timeout=t))


def test_without_it_the_child_waits_forever() -> None:
    """The hazard itself: a plain lock held by a thread at the fork stays held."""
    plain = threading.Lock()
    with _held_by_a_thread(plain.acquire, plain.release):
        assert not _child_can_take(lambda t: plain.acquire(timeout=t))
