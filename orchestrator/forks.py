"""Locks that a forked process finds released.

A worker's main process runs threads of its own (the lease keeper's: renewals, the
reaper, due timers, releases) while Celery's prefork pool forks pool processes from it:
at start, and again whenever one exits (a task that Celery terminated on a lost broker
connection, a time limit, ``max_tasks_per_child``).  A fork copies every lock in the state
it is in at that instant, and the thread that held it does not exist in the child: a
lock held by a keeper thread at the fork is held forever in the child, whose first task
to take it hangs (its lease, renewed by the main process, keeps it "running"; nothing
recovers it).  Seen in the Redis-restart map test: a replacement pool process forked
while the timers thread was publishing hung in ``send_task``, on the lock of kombu's
``cached_property`` (one lock per property of a class, shared by all its instances and
taken on every read), and the map waited for an item that process had ended.

Three kinds of locks are made safe here, once :func:`install` has run in the process:

* every ``functools.cached_property`` with a lock (kombu's subclass, which Celery and
  kombu use throughout; the standard library's own before Python 3.12): each gets a new
  lock in the child;
* every lock this code base shares between a worker's main process and its pool
  processes (definition and run caches, message templates, the broker channel's client):
  made with :func:`lock`, reinitialized in the child;
* the locks inside an object registered with :func:`renew_in_child` (the store's Redis
  Cluster client: redis-py's ``RedisCluster`` refreshes its topology under a lock of its
  own after a failover, in whichever thread meets it): the object's ``after_fork`` runs
  in the child, which then makes its own.  Seen in the Redis Cluster failover test:
  pool processes forked while a keeper thread refreshed the slots after the failover
  (the keeper had just stopped the attempts that could not renew their leases) hung in
  ``NodesManager.initialize`` at their first store read, their leases renewed by the
  main process, and a run waited forever.

Python's ``logging`` reinitializes its own locks at a fork, and redis-py resets a
connection pool used in a process other than the one that made it.
"""

from __future__ import annotations

import functools
import gc
import os
import threading
import weakref
from typing import Any

_locks: weakref.WeakSet[Any] = weakref.WeakSet()
_properties: weakref.WeakSet[Any] = weakref.WeakSet()
_renewed: weakref.WeakSet[Any] = weakref.WeakSet()
_installed = False


def lock() -> threading.Lock:
    """A ``threading.Lock`` that a process forked from this one finds released (once
    :func:`install` ran): for a lock that a worker's main process and its pool processes
    both take."""
    made = threading.Lock()
    _locks.add(made)
    return made


def renew_in_child(obj: Any) -> None:
    """Call ``obj.after_fork()`` in every process forked from this one (once
    :func:`install` ran): for an object whose inner locks a thread of this process may
    hold at a fork, and which can make itself again (a client made at its first use)."""
    _renewed.add(obj)


def install() -> None:
    """Reinitialize, in every child forked from now on, the locks this module knows
    (idempotent).  The cached properties are found once here (the garbage collector's
    objects: about 0.1 s), and every one made later is noted as it is made, so that a
    child's own start costs microseconds."""
    global _installed
    if _installed:
        return
    _installed = True
    for obj in gc.get_objects():
        if isinstance(obj, functools.cached_property) and hasattr(obj, "lock"):
            _properties.add(obj)
    made_by = functools.cached_property.__init__

    def noting(self: Any, *args: Any, **kwargs: Any) -> None:
        made_by(self, *args, **kwargs)
        _properties.add(self)

    functools.cached_property.__init__ = noting  # type: ignore[method-assign]
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _after_fork_in_child() -> None:
    for made in list(_locks):
        made._at_fork_reinit()
    for prop in list(_properties):
        if hasattr(prop, "lock"):
            prop.lock = threading.RLock()
    for obj in list(_renewed):
        obj.after_fork()
