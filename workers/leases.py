"""The worker's main process keeps its step runs' leases, and runs the reaper.

A bootstep of the worker (:class:`LeaseKeeper`) starts threads in the main process, one
per duty below, so that no Redis call that waits out its timeout delays another duty:

* every ``lease_s / 4`` it renews the lease of every step run this worker executes (the
  pool child may be stuck in user code; the main process is not).  A lease found held by
  another delivery means this worker lost it: the attempt is stopped at once (the pool
  child is killed; a ``threads`` or ``solo`` pool cannot stop one thread, so the worker
  process exits and its other step runs are recovered by their own leases);
* a watchdog that never waits on Redis stops every step run this worker executes once no
  renewal has succeeded for ``0.75 * lease_s``, checked every tick, before any lease can
  expire: an attempt cut off from Redis never overlaps the next.  Renewal is the only
  Redis call of its thread, so each try waits at most its socket timeout (``lease_s / 4``);
* it releases the leases of tasks whose messages are done (acknowledged or requeued);
* every ``reaper_interval_s``, if it holds the reaper lock, it runs one pass of
  :class:`orchestrator.runtime.recovery.Recovery`.

With ``ORCH_CALLBACK_SECRET`` set, the worker also runs a
:class:`orchestrator.callbacks.delivery.CallbackSender` (run-end callbacks).
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import threading
import time
from typing import Any

from celery import bootsteps
from celery.exceptions import WorkerShutdown
from celery.worker import state as worker_state

from orchestrator.callbacks.delivery import CallbackSender
from orchestrator.callbacks.destinations import networks
from orchestrator.errors import StoreIncompatible
from orchestrator.runtime import broker
from orchestrator.runtime.recovery import Recovery
from orchestrator.store import StoreError
from orchestrator.store.callbacks import CallbackRegistry
from orchestrator.store.leases import Held, Leases

log = logging.getLogger(__name__)

TICK_S = 0.2
# what a renewal answers (lua/renew_lease.lua)
RENEWED, TAKEN, DONE_WITH = 1, 3, 2
EXIT_SCHEMA = 6
"""The worker's exit code when the run store has a schema this release does not use."""
_releases: collections.deque[tuple[Held, str]] = collections.deque()


SETTLED = "settled"
"""A release's ``how`` for a lease the step's own script settled already
(``step_transition.lua``, which sent its chain's next task): the keeper stops renewing it
and sends Redis nothing."""


def release_later(held: Held, how: str) -> None:
    """Queue a lease's release (see :meth:`Leases.release` for ``how``, and
    :data:`SETTLED`); the keeper thread sends queued releases within one tick, batched."""
    _releases.append((held, how))


class Keeper:
    """The keeper thread's work, separate from Celery's bootstep plumbing."""

    def __init__(self, leases: Leases, recovery: Recovery, lease_s: float,
                 reaper_interval_s: float, hostname: str, pool: Any, can_kill_one: bool,
                 timer_interval_s: float | None = None) -> None:
        self.leases = leases
        self.recovery = recovery
        self.lease_s = lease_s
        self.reaper_interval_s = reaper_interval_s
        self.timer_interval_s = timer_interval_s or reaper_interval_s
        self.reaping = False  # the last reaper pass held the lock
        self.hostname = hostname
        self.pool = pool
        self.can_kill_one = can_kill_one
        self.holding: set[str] = set()  # tokens whose lease a renewal confirmed
        self.first_seen: dict[str, float] = {}  # token -> when a renewal first saw it
        self.stopped: set[str] = set()  # tokens whose attempt this keeper killed
        self.last_ok = time.monotonic()  # when the last renewal that succeeded was sent
        self.redis_ok = True
        self._stop = threading.Event()
        self._stopping = threading.Lock()
        # threads of their own: a Redis call that waits out its timeout (Redis down) must
        # never delay a renewal, and nothing may delay the deadline's check: a slow
        # release, requeue, list of held messages or reaper pass would otherwise put off
        # the stop of an attempt cut off from Redis past its lease's end
        self._threads = [threading.Thread(target=self._loop, name="lease-keeper", daemon=True),
                         threading.Thread(target=self._deadline, name="lease-deadline",
                                          daemon=True),
                         threading.Thread(target=self._releases, name="lease-releases",
                                          daemon=True),
                         threading.Thread(target=self._holding, name="holding", daemon=True),
                         threading.Thread(target=self._reaper, name="reaper", daemon=True),
                         threading.Thread(target=self._timers, name="timers", daemon=True)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)
        self._flush_releases()
        self._requeue_stranded()
        try:
            self.leases.unhold(self.hostname)
        except StoreError as exc:  # its record runs out by itself
            log.debug("could not forget the messages this worker held: %s", exc)

    def _holding(self) -> None:
        self._hold()
        while not self._stop.wait(self.lease_s / 4):
            self._hold()

    def _hold(self) -> None:
        """Record the delivery tags of every step and join message this worker holds,
        begun or prefetched, for ``lease_s``: the reaper puts back a message no live
        worker holds (:meth:`Leases.unheld`), which a worker killed with it prefetched
        leaves unacknowledged, without a lease, for the broker's visibility timeout."""
        tags = [tag for req in [*worker_state.reserved_requests, *worker_state.active_requests]
                if (held := getattr(req, "orch_held", None)) and (tag := held.tag)]
        try:
            self.leases.hold(self.hostname, tags, self.lease_s)
        except StoreError as exc:
            log.debug("could not record the messages this worker holds: %s", exc)

    def _loop(self) -> None:
        next_renew = time.monotonic()
        while not self._stop.wait(TICK_S):
            now = time.monotonic()
            if now >= next_renew:
                next_renew = now + self.lease_s / 4
                self._renew(now)

    def _releases(self) -> None:
        while not self._stop.wait(TICK_S):
            self._flush_releases()
            self._requeue_stranded()

    def _deadline(self) -> None:
        while not self._stop.wait(TICK_S):
            self.check_deadline()

    def check_deadline(self) -> None:
        """Stop every step run this worker executes once no renewal has succeeded for
        ``0.75 * lease_s``: each one, confirmed or not (a task that took its lease just
        before Redis went away was never confirmed), must end before its lease can.  A
        task its pool process accepted after the last good renewal took its lease after
        that acceptance, if at all: its deadline runs from then (a task handed out during
        a failover is not stopped the instant it arrives; it gets the same 0.75 of a
        lease as any other for Redis to come back)."""
        now = time.monotonic()
        limit = 0.75 * self.lease_s
        if now - self.last_ok <= limit:
            return
        for req, held in self._active():
            since = max(self.last_ok, float(getattr(req, "orch_accepted", 0.0) or 0.0))
            if now - since > limit:
                self._stop_attempt(req, held, "could not renew its lease in time")

    def _reaper(self) -> None:
        while not self._stop.wait(self.reaper_interval_s):
            self._reap()

    def _timers(self) -> None:
        """Due store timers (retries, waits, rate-limited starts), every
        ``timer_interval_s``, by the worker holding the reaper lock: a reserved start is
        released within that of its time, not of the reaper's interval."""
        while not self._stop.wait(self.timer_interval_s):
            if not self.reaping:
                continue
            try:
                self.recovery.fire_timers()
            except StoreError as exc:
                log.debug("timer pass skipped: %s", exc)
            except Exception:  # one bad pass must not stop the keeper
                log.exception("timer pass failed")

    def _active(self) -> list[tuple[Any, Held]]:
        out = []
        for req in list(worker_state.active_requests):
            held = getattr(req, "orch_held", None)
            if held is not None and held.token not in self.stopped:
                out.append((req, held))
        return out

    def _renew(self, sent_at: float) -> None:
        active = self._active()
        live = {h.token for _, h in active}
        self.first_seen = {t: s for t, s in self.first_seen.items() if t in live}
        with self._stopping:
            self.stopped &= {getattr(r, "orch_held", Held("", "", "")).token
                             for r in list(worker_state.active_requests)}
        for _, h in active:
            self.first_seen.setdefault(h.token, sent_at)
        if not active:
            self.last_ok = sent_at
            return
        try:
            answers = self.leases.renew([h for _, h in active], self.lease_s, self.holding)
        except StoreError as exc:
            self._unreachable(exc)
            return
        if not self.redis_ok:
            log.warning("Redis answers again; leases renewed")
        self.redis_ok = True
        self.last_ok = sent_at
        for (req, held), got in zip(active, answers, strict=True):
            if got == TAKEN and held.token in self.holding:
                log.warning("step %s of run %s: Redis had lost its lease (a restart or a "
                            "failover that lost the last writes); taken back, no other "
                            "delivery held it", held.step_id, held.run_id)
            if got in (RENEWED, TAKEN):
                self.holding.add(held.token)
                continue
            if got == DONE_WITH:  # it gave its lease up or settled it: its task returns
                continue
            # another delivery holds it (an attempt that held the lease lost it; a copy
            # that did not is BUSY or DROP and ends in ms), or the run is gone
            settled_in = sent_at - self.first_seen.get(held.token, sent_at)
            if held.token in self.holding or settled_in >= self.lease_s / 4:
                self._stop_attempt(req, held, "lost its lease to another attempt"
                                   if got == 0 else "belongs to a run that is gone")

    def _unreachable(self, exc: Exception) -> None:
        if self.redis_ok:
            log.warning("cannot renew leases (%s: %s); step runs stop %.1f s after the last "
                        "renewal unless Redis answers", type(exc).__name__, exc,
                        0.75 * self.lease_s)
        self.redis_ok = False  # the deadline thread stops the attempts in time

    def _stop_attempt(self, req: Any, held: Held, why: str) -> None:
        with self._stopping:  # the renewal and the deadline threads may both come here
            if held.token in self.stopped:
                return
            self.holding.discard(held.token)
            self.stopped.add(held.token)
        log.error("step %s of run %s %s: stopping this attempt", held.step_id, held.run_id,
                  why)
        pid = getattr(req, "worker_pid", None)
        if self.can_kill_one and pid:
            try:
                self.pool.terminate_job(pid, signal.SIGKILL)
            except Exception:  # the child may be gone already
                log.exception("could not kill pool process %s", pid)
            return
        log.critical("this pool cannot stop one attempt; exiting the worker process so "
                     "that no two attempts of step %s of run %s overlap", held.step_id,
                     held.run_id)
        os._exit(75)

    def _flush_releases(self) -> None:
        batch: list[tuple[Held, str]] = []
        while _releases and len(batch) < 500:
            batch.append(_releases.popleft())
        if not batch:
            return
        for held, _ in batch:
            self.holding.discard(held.token)
        batch = [(h, how) for h, how in batch if how != SETTLED]
        if not batch:
            return
        try:
            self.leases.release([h for h, _ in batch], [how for _, how in batch])
        except StoreError as exc:
            # not fatal: an unreleased lease expires and the reaper settles it
            log.warning("could not release %d lease(s): %s", len(batch), exc)

    def _requeue_stranded(self) -> None:
        """Requeues left to this thread (:data:`orchestrator.runtime.broker.stranded`: a
        step's first requeue, which goes to the head of its queue after its lease's
        release, flushed just before; and requeues Redis could not take when this worker
        sent them): put each message that is still unacknowledged back at the head of its
        queue, in order, once Redis answers; and so every
        message popped whose delivery Redis could not record
        (:data:`orchestrator.runtime.broker.popped`)."""
        while broker.popped:
            tag, message, queue = broker.popped[0]
            try:
                got = self.leases.requeue_popped(tag, message, queue)
                log.warning("message %s, popped while Redis went away, is back in queue %r%s",
                            tag, queue, "" if got == 2 else " (from its unacknowledged record)")
            except StoreError as exc:
                log.debug("message %s waits for Redis to go back: %s", tag, exc)
                return
            broker.popped.popleft()
        while broker.stranded:
            tag = broker.stranded[0]
            try:
                if self.leases.requeue_unacked(tag):
                    log.warning("message %s, requeued, is back at the head of its queue", tag)
            except StoreError as exc:
                log.debug("requeue of message %s waits for Redis: %s", tag, exc)
                return
            except Exception:  # a message that is not kombu's JSON: leave it to the sweep
                log.exception("could not requeue message %s; kombu's sweep brings it back "
                              "after the visibility timeout", tag)
            broker.stranded.popleft()

    def _reap(self) -> None:
        try:
            self.recovery.observe_servers()  # a restart seen here counts if the lock moves
            self.reaping = bool(self.leases.lock(self.hostname, 3 * self.reaper_interval_s))
            if self.reaping:
                self.recovery.reap_once()
        except StoreError as exc:
            log.debug("reaper pass skipped: %s", exc)
        except Exception:  # one bad pass must not stop the keeper
            log.exception("reaper pass failed")


def _check_schema(store: Any) -> None:
    """Stop the worker (exit code 6) before it takes any task when the run store has a
    schema this release does not use, or is a Redis Cluster; wait for Redis if it cannot
    be reached yet."""
    waiting = False
    while True:
        try:
            store.check_schema()
            if waiting:
                log.info("Redis answers again: the run store's schema is this release's")
            return
        except StoreIncompatible as exc:
            log.error("%s", exc)
            raise WorkerShutdown(EXIT_SCHEMA) from None
        except StoreError as exc:
            if not waiting:
                log.warning("cannot check the run store's schema yet (%s: %s); retrying "
                            "until Redis answers", type(exc).__name__, exc)
                waiting = True
            time.sleep(1.0)


class LeaseKeeper(bootsteps.StartStopStep):
    """Worker bootstep that runs the :class:`Keeper` thread in the main process."""

    requires = ("celery.worker.components:Pool",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.keeper: Keeper | None = None
        self.sender: CallbackSender | None = None

    def start(self, worker: Any) -> None:
        from workers import step as step_mod

        p = step_mod.progress()
        s = step_mod.settings()
        _check_schema(p.store)
        leases = Leases.from_url(s.redis_target, p.store.keys, timeout_s=s.lease_s / 4,
                                 broker=s.broker_target)
        pool_cls = type(worker.pool).__module__
        self.keeper = Keeper(leases, Recovery(p, leases, s), s.lease_s, s.reaper_interval_s,
                             worker.hostname, worker.pool,
                             can_kill_one="prefork" in pool_cls,
                             timer_interval_s=s.timer_interval_s)
        self.keeper.start()
        secret = s.callback_secret.get_secret_value()
        if secret:
            coord = step_mod.coordinator()
            registry = CallbackRegistry(p.store.client, p.store.keys, s.run_retention_s)
            self.sender = CallbackSender(registry, coord.view, secret,
                                         timeout_s=s.callback_timeout_s,
                                         max_age_s=s.callback_max_age_s,
                                         allowed=networks(s.callback_allowed_networks))
            self.sender.start()

    def stop(self, worker: Any) -> None:
        if self.sender is not None:
            self.sender.stop()
        if self.keeper is not None:
            self.keeper.stop()
