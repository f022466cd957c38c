"""The reaper: what brings a run back when the process that was advancing it died.

Any worker runs it (:class:`Recovery`, one at a time under a Redis lock), every
``reaper_interval_s``:

* **Expired leases** (a worker was killed, or cut off from Redis): the step's message,
  still unacknowledged in the broker, goes back to the head of its queue at once, so the
  step runs again on another worker within about ``lease_s``, instead of after the
  broker's visibility timeout (an hour).  An ended step run whose message is gone
  settles; a running one with neither an owner nor a message is reported (it needs an
  operator: ``orchestrator status`` shows it running).
* **Messages no live worker holds** (a worker killed with a step's message prefetched,
  or popped and never begun: no lease names it, so no expiry finds it): every worker
  lists the step and join messages it holds, begun or prefetched, every ``lease_s / 4``
  (``Leases.hold``); a step's or join's message unacknowledged for ``lease_s`` that no
  live worker lists, and whose step run's lease is not its own, goes back to its queue.
  A copy that some worker still holds after all meets the lease.
* **Stale claims** (a unit claimed for dispatch and not published within
  ``claim_grace_s``: its claimer died in between, a coordinator included): published.
* **Due store timers**: the next attempt's message is published; so is a waiting step's
  (durable waits: its time came, or an event or a decision made its timer due) and a
  copy deferred while another delivery held its step run's lease.  Each goes to the
  head of its queue (``broker.to_head``): it was due already, and at the tail it waited
  behind the whole backlog.
* **Runs being unwound** (``compensating``): their undo run is started once none of their
  steps runs, and they end when it has ended (``Progress.compensate``, idempotent), should
  the process that was to do it have died.
* **Stalled runs** (a message lost outside any lease: kombu pops a message, then records
  it as unacknowledged in a second command, so a worker killed between the two loses
  it; or a worker popped it and lost Redis before it began, so the copy sits among the
  unacknowledged until the visibility timeout): a running run with no event for
  ``stall_s``, no live lease, no waiting timer and no message that mentions it in its
  queues has its unfinished units published again; the steps of those units that had
  ended carry the canvas on without running (their leases are reopened), the others run.
  A late unacknowledged copy is harmless: the lease lets one copy run a step.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from orchestrator.core.plan import ChordNode, TaskNode, is_join, walk
from orchestrator.core.priorities import Priority, band_queue
from orchestrator.core.states import RunStatus
from orchestrator.errors import RunDamaged, RunNotFound
from orchestrator.outages import kind_of
from orchestrator.runtime import broker
from orchestrator.runtime.definitions import Definition
from orchestrator.runtime.progress import Progress
from orchestrator.settings import Settings
from orchestrator.store.leases import Expired, Held, Leases
from orchestrator.store.records import StepRun

log = logging.getLogger(__name__)

BATCH = 100
TIMER_REARM_S = 10.0
"""A store timer a reaper took is due again this much later unless it was published and
done by then: what a timer taken by a worker that died (or whose link was cut) waits.
(30 s before: ``bench.chaos all``'s slowest re-run, 44 s, was a deferred copy's timer
taken by a worker whose link was cut that instant.)  Publishing twice is harmless: a
copy meets the step run's lease."""


@dataclass
class Reaped:
    """What one pass did (for logs and tests)."""

    restored: int = 0
    settled: int = 0
    orphaned: int = 0
    claims: int = 0
    timers: int = 0
    replayed: int = 0
    compensating: int = 0


class Recovery:
    """The reaper of one store (see the module docstring)."""

    def __init__(self, progress: Progress, leases: Leases, settings: Settings) -> None:
        self.progress = progress
        self.leases = leases
        self.settings = settings
        self._cursor = 0  # round robin over the running runs, a batch per pass
        self._replayed: dict[str, float] = {}  # run id -> when this reaper replayed it
        self._told: dict[str, float] = {}  # run id -> when it said why it did not
        self._servers: set[str] = set()  # the run ids of the Redis servers last seen
        self._moved_at = -float("inf")  # when this worker saw a server restart or move

    def reap_once(self) -> Reaped:
        """One pass over expired leases, unheld messages, stalled runs, stale claims, due
        timers and runs being unwound.  Each part runs on its own: one that fails
        (Redis refused a command, a record it cannot read) is logged and the others still
        run, so that no failure of one part keeps a stalled run from being replayed.

        Raises:
            StoreError: Redis cannot be reached (:func:`orchestrator.outages.kind_of`; the
                next pass tries again).
        """
        out = Reaped()
        # stalled runs before stale claims: after a restart or failover both look at runs
        # quiet for 10 s, and a claim published first would make its run look busy again
        # for another 10 s although it lost other messages too (measured: 5 of 16 cluster
        # failover trials ended 25-27 s after the kill instead of about 15)
        for name, part in (("expired leases", self._expired), ("unheld messages", self._unheld),
                           ("stalled runs", self._stalled),
                           ("stale claims", self._stale_claims), ("timers", self._timers),
                           ("runs being unwound", self._compensating)):
            try:
                part(out)
            except Exception as exc:
                if kind_of(exc) is not None:  # Redis unreachable: the pass cannot go on
                    raise
                log.exception("reaper: the pass over %s failed; the other parts go on, and "
                              "the next pass tries it again", name)
        return out

    def _expired(self, out: Reaped) -> None:
        for e in self.leases.expired(BATCH):
            self._recover(e, out)

    def _compensating(self, out: Reaped) -> None:
        status = RunStatus.COMPENSATING.value
        for run_id in self.leases.running_runs(0, BATCH, status):
            try:
                self.progress.compensate(run_id)
            except (RunNotFound, RunDamaged):
                continue
            out.compensating += 1

    def observe_servers(self) -> None:
        """Note each Redis server's ``run_id`` (the store's, and the broker's if it is
        another): a new one means it restarted or a failover replaced it.  Every worker
        calls this at every reaper tick, whether or not it holds the reaper lock, so that
        the worker that takes the lock after a restart knows of it too.

        Raises:
            StoreError: Redis cannot be reached (the next tick tries again).
        """
        ids = set(self.leases.server_ids())
        if self._servers and ids != self._servers:
            log.warning("Redis restarted or failed over: for %.0f s, runs quiet for %.0f s "
                        "are looked at (a message in flight may have been lost)",
                        self.settings.stall_s, self.settings.stall_after_restart_s)
            self._moved_at = time.monotonic()
        self._servers = ids

    def stall_threshold_s(self) -> float:
        """How long a run must be quiet to be looked at: ``stall_s``; or, for ``stall_s``
        after this worker saw a Redis server (the store's or the broker's) restart or
        be replaced by a failover (:meth:`observe_servers`), ``stall_after_restart_s``.
        Such an event can lose a message in flight (kombu pops a message, then records
        it, in two commands; a crash between the two, or one that swallows the pop's
        reply, loses it), and its run should not wait a minute for the replay."""
        stall_s = self.settings.stall_s
        if time.monotonic() - self._moved_at < stall_s:
            return min(stall_s, self.settings.stall_after_restart_s)
        return stall_s

    def _stalled(self, out: Reaped) -> None:
        threshold = self.stall_threshold_s()
        horizon = time.monotonic() - self.settings.stall_s
        self._replayed = {r: t for r, t in self._replayed.items() if t > horizon}
        self._told = {r: t for r, t in self._told.items() if t > horizon}
        runs = self.leases.running_runs(self._cursor, BATCH)
        self._cursor = 0 if len(runs) < BATCH else self._cursor + BATCH
        for run_id, quiet in self.leases.quiet_for_s(runs).items():
            if quiet < threshold:
                continue
            why = self._not_stalled(run_id)
            if why is None:
                continue  # gone, or finalized now
            if why:
                if run_id not in self._told:
                    self._told[run_id] = time.monotonic()
                    log.info("run %s is quiet for %.0f s and not replayed: %s", run_id,
                             quiet, why)
                continue
            self._replayed[run_id] = time.monotonic()
            run = self.progress.store.run(run_id)
            d = self.progress.definitions.load(run.version)
            # An unacknowledged copy without a live lease does not count: a worker that
            # popped it lost Redis before it began (its copy comes back only after the
            # visibility timeout, an hour), or holds it prefetched behind a long task.
            # The new copy is safe either way: the lease lets one copy run the step.
            out.replayed += self._replay(d, run_id, quiet, run.priority)

    def _not_stalled(self, run_id: str) -> str | None:
        """Why a quiet running run is not stalled (``""``: it is; None: it is gone, or
        every unit was done and it is finalized now)."""
        held = self.leases.live_lease(run_id)
        if held is not None:
            step = held.step_id
            rec = self.progress.store.step_runs(run_id, [step])[step]
            if rec.status.terminal:
                return self._hung(held, rec)
            return f"step {step} holds a live lease (a worker runs it and renews it)"
        timer = self.leases.timer_of(run_id)
        if timer is not None:
            return f"timer {timer} waits (a retry, a deferred copy or a durable wait)"
        store = self.progress.store
        try:
            run = store.run(run_id)
            d = self.progress.definitions.load(run.version)
        except (RunNotFound, RunDamaged):
            return None
        if run.units_remaining <= 0:  # every unit done, the final status never written
            log.warning("run %s: every unit is done; finalizing it", run_id)
            self.progress.finalize(run_id)
            return None
        queues = sorted(band_queue(q, run.priority) for q in
                        {d.queue(s.id, self.progress.default_queue) for s in d.wf.steps}
                        | {self.progress.default_queue})
        if self.leases.mentions(queues, run_id, unacked=False):
            return "a message of it waits in its queues (a backlog, not a stall)"
        last = self._replayed.get(run_id)
        if last is not None and time.monotonic() - last < self._replay_again_s():
            # its copies settle without events: give them time
            return f"replayed {time.monotonic() - last:.0f} s ago"
        return ""

    def _replay_again_s(self) -> float:
        """How long a replayed run is left to its copies before it may be replayed again:
        ``stall_s``, or twice the short threshold while a restart or failover is recent.
        (A failover can lose the replayed step run's own records too, its copy then
        dropped: measured, the run waited a minute for its second replay.)"""
        return min(self.settings.stall_s, 2 * self.stall_threshold_s())

    def _replay(self, d: Definition, run_id: str, quiet_s: float,
                priority: Priority = Priority.NORMAL) -> int:
        store = self.progress.store
        units = store.unfinished_published(run_id)
        for unit in units:
            tasks = []  # its steps and its joins: a join's copy must carry the canvas on too
            for n in walk(d.plan.unit_map[unit].canvas):
                if isinstance(n, TaskNode):
                    tasks.append(n.id)
                elif isinstance(n, ChordNode):
                    tasks.append(n.join)
            self.leases.reopen(run_id, tasks)
            log.warning("run %s made no progress for %.0f s and no message of it is left "
                        "(lost between the broker's pop and its bookkeeping, or in a Redis crash): "
                        "publishing unit %s again", run_id, quiet_s, unit)
            self.progress.publish(d, run_id, [unit], priority)
        # sources never claimed: the run's creator died between creating it and claiming
        # them (claims are atomic: a creator that was only slow publishes nothing twice)
        fresh = store.claim_sources(run_id, d.plan.sources)
        if fresh:
            log.warning("run %s made no progress for %.0f s and its first units were never "
                        "claimed (its creator died after creating it): publishing %s",
                        run_id, quiet_s, ", ".join(fresh))
            self.progress.publish(d, run_id, fresh, priority)
        return len(units) + len(fresh)

    def _hung(self, held: Held, rec: StepRun) -> str:
        """A step run ended, yet the worker that ended it still renews its lease and the
        run is quiet: its task has not returned (a process hung after recording the
        outcome, before its canvas went on; seen once in ``bench.chaos``, a pool process
        of the worker whose link had just been cut).  Its lease is taken from it and its
        message put back (:meth:`Leases.restore`, ``hung``): the holder's keeper stops
        the attempt at its next renewal (it lost its lease), and the copy settles the
        step run and carries its canvas on.  Returns why the run is not replayed."""
        run_id, step = held.run_id, held.step_id
        found = self.leases.unacked_message(held.tag)
        if found is not None:
            message, _exchange, queue = found
            e = Expired(run_id, step, held.token, held.tag, rec.status)
            if self.leases.restore(e, message, queue, hung=True):
                log.warning("step %s of run %s is %s, yet its task has not returned (a hung "
                            "process? `py-spy dump` worker %s): its lease is taken back and "
                            "its message is in queue %r again, to carry its canvas on",
                            step, run_id, rec.status.value, rec.worker or "(unknown)", queue)
                return f"step {step}'s hung task was taken over"
        return (f"step {step} is {rec.status.value}, yet a worker still renews its lease: "
                f"its task has not returned (a hung process? `py-spy dump` worker "
                f"{rec.worker or '(unknown)'})")

    def _recover(self, e: Expired, out: Reaped) -> None:
        found = self.leases.unacked_message(e.tag)
        if found is not None:
            message, _exchange, routing_key = found
            if self.leases.restore(e, message, routing_key):
                out.restored += 1
                log.warning("step %s of run %s: its worker stopped renewing the lease; its "
                            "message is back in queue %r (status %s)", e.step_id, e.run_id,
                            routing_key, e.status.value)
            return
        got = self.leases.park(e, self.settings.orphan_recheck_s, ended=self._task_done(e))
        if got == 1:
            out.settled += 1
        elif got == 3:
            log.info("step %s of run %s: its worker stopped renewing the lease; a copy of "
                     "its task waits to take it over", e.step_id, e.run_id)
        elif got == 2:
            out.orphaned += 1
            log.error("step %s of run %s is %s with no live worker and no message left to "
                      "redeliver (its task was acknowledged, or the broker lost it); look "
                      "again in %.0f s", e.step_id, e.run_id, e.status.value,
                      self.settings.orphan_recheck_s)

    def _unheld(self, out: Reaped) -> None:
        """Messages a dead worker held prefetched (or popped and never began): no lease
        names them, so no expiry finds them, and kombu restores them only after the
        visibility timeout, an hour.  Unacknowledged for ``lease_s`` with no live worker
        listing them, they go back to their queue (a copy that some worker still holds
        after all meets the lease: nothing runs twice)."""
        for tag in self.leases.unheld(self.settings.lease_s, BATCH):
            if self.leases.requeue_unacked(tag):
                out.restored += 1
                log.warning("message %s was unacknowledged and no live worker held it (its "
                            "worker died, or lost Redis, before it began it): it is back in "
                            "its queue", tag)

    def _task_done(self, e: Expired) -> bool:
        """Whether the task of an expired lease whose message is gone ended although its
        step run did not: a join's task leaves no record of its own (it ended when its
        unit did), and a map step's task ends once it expanded the map (its items carry
        the step on, and its last item ends it)."""
        store = self.progress.store
        if not is_join(e.step_id):
            rec = store.step_runs(e.run_id, [e.step_id]).get(e.step_id)
            return bool(rec is not None and rec.map and "count" in rec.map)
        try:
            d = self.progress.definitions.load(store.run(e.run_id).version)
        except (RunNotFound, RunDamaged):
            return True  # the run is gone: nothing to wait for
        unit = d.unit_of_terminal.get(e.step_id)
        return unit is None or store.unit_done(e.run_id, unit)

    def _stale_claims(self, out: Reaped) -> None:
        store = self.progress.store
        gone: list[tuple[str, str]] = []
        for run_id, unit in store.stale_claims(self.settings.claim_grace_s, BATCH):
            try:
                run = store.run(run_id)
            except (RunNotFound, KeyError, ValueError):
                gone.append((run_id, unit))
                continue
            d = self.progress.definitions.load(run.version)
            log.warning("unit %s of run %s was claimed but never published (its claimer "
                        "died); publishing it", unit, run_id)
            self.progress.publish(d, run_id, [unit], run.priority)
            out.claims += 1
        store.drop_claims(gone)

    def fire_timers(self) -> int:
        """Publish the messages of due store timers (a pass of its own, more often than
        the reaper's); returns how many."""
        out = Reaped()
        self._timers(out)
        return out.timers

    def _timers(self, out: Reaped) -> None:
        store = self.progress.store
        done: list[str] = []
        for timer_id, message in store.due_timers(TIMER_REARM_S, BATCH):
            if message is not None:
                with broker.to_head():  # due already: not behind the backlog
                    self.progress.publish_message(json.loads(message))
                out.timers += 1
            done.append(timer_id)
        store.timers_done(done)
