"""Leases on step runs being executed, seen from the worker's main process and the reaper.

A delivery of a step's task takes the step run's lease when it begins
(:meth:`RunStore.begin_step`); the worker's main process renews it while the task runs
(:meth:`Leases.renew`) and releases it when the task's message is done
(:meth:`Leases.release`).  A lease that expires (worker killed, host cut off) is found by
the reaper (:meth:`Leases.expired`), which puts the step's message back at the head of
its queue (:meth:`Leases.restore`) so that another worker runs it within seconds, long
before the broker's visibility timeout.  Every expiry is judged by Redis' clock.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.core.states import StepStatus
from orchestrator.store import connection, scripts
from orchestrator.store.connection import RedisTarget, target_of
from orchestrator.store.keys import Keys
from orchestrator.store.records import StepRun
from orchestrator.store.runs import lease_member, split_member


@dataclass(frozen=True)
class Held:
    """A lease a worker holds: the step run, the token of its delivery and the broker's
    delivery tag of its message ("" when unknown)."""

    run_id: str
    step_id: str
    token: str
    tag: str = ""


@dataclass(frozen=True)
class Expired:
    """An expired lease, with what the reaper needs to recover its step run."""

    run_id: str
    step_id: str
    token: str
    tag: str
    status: StepStatus


def _glob(text: str) -> str:
    """``text`` with glob's special characters escaped (for MATCH)."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def throttle_timer_id(run_id: str, step_id: str, token: str) -> str:
    """The timer id of a step run waiting for its rate limit's budget, one per delivery
    (``token``): the reaper forgets a timer after publishing its message, by id, and the
    delivery of that message may have been held again already."""
    return f"throttle:{lease_member(run_id, step_id)}:{token}"


def defer_timer_id(run_id: str, step_id: str) -> str:
    """The timer id of a step run's deferred copy (one per step run)."""
    return f"defer:{lease_member(run_id, step_id)}"


class Leases:
    """Lease operations on the run store's Redis client (decoded responses), and on the
    broker's (``broker``; the store's unless ``Settings.broker_apart``), where kombu's
    queues and unacknowledged messages are."""

    def __init__(self, client: Any, keys: Keys, broker: Any = None) -> None:
        self._r = client
        self._b = client if broker is None else broker
        self.keys = keys
        self._cluster = connection.speaks_cluster(client)

    @classmethod
    def from_url(cls, url: RedisTarget | str, keys: Keys, timeout_s: float,
                 broker: RedisTarget | str | None = None) -> Leases:
        """Leases on clients of their own whose every call (connecting included) fails
        after ``timeout_s``: a lease keeper must notice a dead link within its margin.
        ``url``: one server's URL or a target (a Sentinel group: :mod:`.connection`);
        ``broker``: the broker's, if it is another Redis."""
        def connect(where: RedisTarget | str) -> Any:
            return connection.client(where, decode_responses=True, home=keys.schema(),
                                     socket_keepalive=True,
                                     socket_timeout=timeout_s,
                                     socket_connect_timeout=timeout_s)

        apart = broker is not None and target_of(broker) != target_of(url)
        return cls(connect(url), keys, connect(broker) if apart and broker else None)

    def renew(self, held: Sequence[Held], lease_s: float,
              confirmed: Collection[str] = ()) -> list[int]:
        """Renew each lease, or take it for its delivery when nobody holds it (see
        ``lua/renew_lease.lua``).

        Args:
            confirmed: tokens of deliveries an earlier renewal saw hold their lease; any
                other may still be in its task's begin, and takes over a lease nobody
                holds (expired, given back or given up), as that begin would.

        Returns:
            Per lease: 1 renewed; 3 taken (there was none: Redis lost it, or the task has
            not begun yet; or, for a delivery not confirmed, nobody held it); 2 the
            delivery is done with it (gave it up or settled it); 0 another delivery holds
            or settled it; -1 no lease and no run (the run is gone).
        """
        k = self.keys
        ms = int(lease_s * 1000)

        def fill(pipe: Any) -> None:
            for h in held:
                scripts.RENEW_LEASE.queue(
                    pipe, [k.leases(h.run_id), k.lease_index(), k.run(h.run_id)],
                    [h.step_id, h.token, lease_member(h.run_id, h.step_id), ms, h.tag,
                     "held" if h.token in confirmed else "new"])

        return [int(x) for x in scripts.execute(self._r, fill)] if held else []

    def release(self, held: Sequence[Held], how: Sequence[str]) -> None:
        """Release leases whose tasks are done with their messages.

        Args:
            how: per lease, ``done`` (the task returned normally: its step run ended and
                its canvas went on), ``back`` (its message went back to the queue: the
                next copy takes the step over) or ``check`` (it failed: settled only if
                its step run ended).
        """
        k = self.keys

        def fill(pipe: Any) -> None:
            for h, mode in zip(held, how, strict=True):
                scripts.RELEASE_LEASE.queue(
                    pipe, [k.leases(h.run_id), k.lease_index(), k.steps(h.run_id)],
                    [h.step_id, h.token, lease_member(h.run_id, h.step_id), mode])

        if held:
            scripts.execute(self._r, fill)

    def expired(self, limit: int = 100) -> list[Expired]:
        """Leases expired by Redis' clock, with their step runs' status."""
        flat = scripts.EXPIRED_LEASES(self._r, [self.keys.lease_index()], [limit])
        members = [split_member(str(m)) for m in flat[::2]]
        if not members:
            return []
        p = self._r.pipeline(transaction=False)
        for run_id, step_id in members:
            p.hget(self.keys.leases(run_id), step_id)
            p.hget(self.keys.steps(run_id), step_id)
        raw = p.execute()
        out = []
        for i, (run_id, step_id) in enumerate(members):
            token, _until, tag, _flag = _lease_fields(raw[2 * i])
            rec = StepRun.from_json(step_id, raw[2 * i + 1])
            out.append(Expired(run_id, step_id, token, tag, rec.status))
        return out

    def unacked_message(self, tag: str) -> tuple[dict[str, Any], str, str] | None:
        """The broker's unacknowledged message of delivery ``tag``: (message, exchange,
        routing key), or None if it is not unacknowledged (acked, or restored)."""
        raw = self._b.hget(self.keys.unacked(), tag) if tag else None
        if raw is None:
            return None
        message, exchange, routing_key = json.loads(raw)
        return dict(message), str(exchange), str(routing_key)

    def requeue_unacked(self, tag: str) -> bool:
        """Put the unacknowledged message of delivery ``tag`` (marked redelivered) back at
        the head of its queue, if it is still unacknowledged: a requeue the broker could
        not take when the worker sent it.  True if it was put back, False if it was not
        there (acknowledged, or restored by someone else)."""
        found = self.unacked_message(tag)
        if found is None:
            return False
        message, _exchange, queue = found
        k = self.keys
        return bool(scripts.REQUEUE_UNACKED(
            self._b, [k.unacked(), k.unacked_index(), queue],
            [tag, json.dumps(_redelivered(message))]))

    def requeue_popped(self, tag: str, message: dict[str, Any], queue: str) -> int:
        """Put back at the head of ``queue`` a message this worker popped and whose record
        as unacknowledged Redis never confirmed (``lua/requeue_popped.lua``): the record's
        copy if it went through after all, else ``message`` (marked redelivered).  A copy
        that meets a step run which ran or ended meanwhile finds its lease: nothing runs
        twice.  Returns 1 put back from the record, 2 from ``message``."""
        k = self.keys
        return int(scripts.REQUEUE_POPPED(
            self._b, [k.unacked(), k.unacked_index(), queue],
            [tag, json.dumps(_redelivered(message))]))

    def hold(self, worker: str, tags: Sequence[str], lease_s: float) -> None:
        """Record that ``worker`` holds the messages of these delivery ``tags`` (begun or
        prefetched), for ``lease_s`` (:meth:`Keys.workers_holding`)."""
        scripts.HOLD_TAGS(self._r, [self.keys.workers_holding()],
                          [worker, int(lease_s * 1000), json.dumps(sorted(tags))])

    def unhold(self, worker: str) -> None:
        """``worker`` holds nothing any more (it stops)."""
        self._r.hdel(self.keys.workers_holding(), worker)

    def unheld(self, grace_s: float, limit: int = 100) -> list[str]:
        """Delivery tags of step and join messages that are unacknowledged for more than
        ``grace_s`` (by the delivering worker's clock, as kombu records it), that no live
        worker holds, and whose step run's lease is not theirs: their worker died holding
        them prefetched, or popped them and never began them.  (A message whose lease is
        its own is the expired lease's to recover.)  Forgets workers whose record ran out
        a minute ago."""
        k = self.keys
        oldest = (k.unacked_index(), "-inf", time.time() - grace_s)
        p = self._r.pipeline(transaction=False)
        p.hgetall(k.workers_holding())
        self._queue_time(p)
        if self._b is self._r:  # one Redis: one round trip, as before the broker apart
            p.zrangebyscore(*oldest, start=0, num=limit)
        holding, (secs, micro), *got = self._with_time(p.execute(), 1)
        tags = got[0] if got else self._b.zrangebyscore(*oldest, start=0, num=limit)
        if not tags:
            return []
        now_ms = int(secs) * 1000 + int(micro) // 1000
        held: set[str] = set()
        gone = []
        for worker, record in holding.items():
            until, _, listed = str(record).partition("|")
            if int(until) > now_ms:
                held.update(json.loads(listed))
            elif int(until) < now_ms - 60_000:
                gone.append(worker)
        if gone:
            self._r.hdel(k.workers_holding(), *gone)
        candidates = [str(t) for t in tags if str(t) not in held]
        found = []
        for tag, raw in zip(candidates, self._b.hmget(k.unacked(), candidates)
                            if candidates else [], strict=True):
            ids = _leased_task(json.loads(raw)[0]) if raw is not None else None
            if ids is not None:
                found.append((tag, *ids))
        if not found:
            return []
        p = self._r.pipeline(transaction=False)
        for _tag, run_id, item in found:
            p.hget(k.leases(run_id), item)
        return [tag for (tag, _, _), lease in zip(found, p.execute(), strict=True)
                if _lease_fields(lease)[2] != tag]

    def restore(self, e: Expired, message: dict[str, Any], queue: str,
                hung: bool = False) -> bool:
        """Put ``message`` (marked redelivered) back at the head of ``queue`` if ``e``'s
        lease is unchanged and its message still unacknowledged; True if it was.

        Args:
            hung: the lease is live, but its step run ended and its task has not returned
                (the stalled-run pass found it): take it from its holder all the same,
                unless it was settled or given up meanwhile.  The holder's keeper stops
                the attempt at its next renewal; the copy settles the step run and
                carries its canvas on.
        """
        k = self.keys
        again = json.dumps(_redelivered(message))
        member = lease_member(e.run_id, e.step_id)
        how = "hung" if hung else ""
        if self._b is self._r:  # one script: the check, the put-back and the mark
            return bool(scripts.RESTORE_MESSAGE(
                self._r,
                [k.leases(e.run_id), k.lease_index(), k.unacked(), k.unacked_index(),
                 queue], [e.step_id, member, e.token, e.tag, again, how]))
        # The broker is another Redis: check the lease, put the message back, then mark
        # the lease.  Killed after the put-back, the lease is left expired (not marked):
        # the copy delivered takes an expired lease over just as a restored one.  (A hung
        # lease left unmarked stays its holder's: the copy is deferred while it renews,
        # and the stalled-run pass, which finds no unacknowledged message to put back
        # now, names the hung worker in its log.)
        if not scripts.RESTORE_LEASE(
                self._r, [k.leases(e.run_id), k.lease_index()],
                [e.step_id, member, e.token, "check", how]):
            return False
        if not scripts.REQUEUE_UNACKED(self._b, [k.unacked(), k.unacked_index(), queue],
                                       [e.tag, again]):
            return False
        scripts.RESTORE_LEASE(self._r, [k.leases(e.run_id), k.lease_index()],
                              [e.step_id, member, e.token, "mark", how])
        return True

    def park(self, e: Expired, park_s: float, ended: bool = False) -> int:
        """An expired lease whose message is gone: settle it (an ended step run), or look
        again in ``park_s`` (a running one); ``ended``: the caller knows the task ended
        (a join whose unit is complete), so it settles.  Returns 1 settled, 2 parked with no copy
        anywhere (an orphan), 3 parked while a deferred copy waits, 0 changed."""
        k = self.keys
        return int(scripts.PARK_LEASE(
            self._r, [k.leases(e.run_id), k.lease_index(), k.steps(e.run_id),
                      k.timer(defer_timer_id(e.run_id, e.step_id))],
            [e.step_id, lease_member(e.run_id, e.step_id), e.token, int(park_s * 1000),
             "1" if ended else "0"]))

    def defer_copy(self, run_id: str, step_id: str, message: dict[str, Any],
                   ttl_s: int, lease_s: float) -> None:
        """Hold a copy of a step's task (a signature's dict) until just after the step
        run's lease would expire, or, for a run from before a Redis restart, until the
        restart grace of ``lease_s`` ends, if later (see ``lua/defer_copy.lua``)."""
        timer_id = defer_timer_id(run_id, step_id)
        scripts.DEFER_COPY(self._r, [self.keys.leases(run_id), self.keys.timers(),
                                     self.keys.timer(timer_id), self.keys.run(run_id)],
                           [step_id, timer_id, json.dumps(message), ttl_s,
                            int(lease_s * 1000)])

    # --- rate limits (orchestrator.core.ratelimits) ---------------------------------------

    def draw(self, scope: str, interval_s: float) -> float:
        """Take the next start of the budget ``scope`` (``rate_limit.lua``): 0 if it may
        go now, else the seconds until the start reserved for it."""
        wait_ms = scripts.RATE_LIMIT(self._r, [self.keys.rate(scope)],
                                     [max(1, round(interval_s * 1000))])
        return int(wait_ms) / 1000

    def throttle(self, run_id: str, step_id: str, token: str, delay_s: float,
                 message: dict[str, Any], ttl_s: int) -> bool:
        """Hold a step run over its rate limit's budget: give its lease up and keep its
        task ``message`` in a store timer due in ``delay_s`` (``throttle_step.lua``);
        False if ``token`` no longer holds the lease."""
        timer_id = throttle_timer_id(run_id, step_id, token)
        k = self.keys
        res = scripts.THROTTLE_STEP(
            self._r, [k.steps(run_id), k.leases(run_id), k.lease_index(), k.timers(),
                      k.timer(timer_id)],
            [step_id, token, lease_member(run_id, step_id), timer_id,
             max(1, round(delay_s * 1000)), json.dumps(message), ttl_s])
        return int(res) == 1

    # --- stalled runs: a message lost outside any lease -----------------------------------

    def running_runs(self, start: int, count: int, status: str = "running") -> list[str]:
        """Run ids in ``status`` (default ``running``), oldest first, ``count`` from
        position ``start``."""
        ids = self._r.zrange(self.keys.runs_by_status(status), start, start + count - 1)
        return [str(i) for i in ids]

    def quiet_for_s(self, run_ids: Sequence[str]) -> dict[str, float]:
        """Seconds since each run's last event, by Redis' clock, in one round trip (runs
        without events are left out)."""
        if not run_ids:
            return {}
        p = self._r.pipeline(transaction=False)
        self._queue_time(p)
        for rid in run_ids:
            p.xrevrange(self.keys.events(rid), count=1)
        (secs, _micro), *lasts = self._with_time(p.execute(), 0)
        return {rid: max(0.0, float(secs) - int(str(last[0][0]).split("-")[0]) / 1000)
                for rid, last in zip(run_ids, lasts, strict=True) if last}

    def server_ids(self) -> list[str]:
        """The ``run_id`` of each Redis this store uses (the store's, and the broker's if it
        is another): a new one at every start of the server, another server's after a
        failover."""
        clients = (self._r,) if self._b is self._r else (self._r, self._b)
        return [str(c.info("server")["run_id"]) for c in clients]

    def _queue_time(self, p: Any) -> None:
        """Queue ``TIME`` in a pipeline of the store, unless the store is a Redis Cluster
        (its pipelines refuse a command that names no key: :meth:`_with_time`)."""
        if not self._cluster:
            p.time()

    def _with_time(self, replies: list[Any], at: int) -> list[Any]:
        """The pipeline's ``replies`` with ``TIME``'s at position ``at``: on a cluster,
        asked now of the store's node (one more round trip), after the pipeline's."""
        if self._cluster:
            replies.insert(at, self._r.time())
        return replies

    def live_lease(self, run_id: str) -> Held | None:
        """A lease of the run that a delivery holds live (its ``until`` not passed): its
        step run, token and delivery tag; or None."""
        secs, micro = self._r.time()
        now_ms = int(secs) * 1000 + int(micro) // 1000
        for step, raw in self._r.hgetall(self.keys.leases(run_id)).items():
            token, until, tag, _flag = _lease_fields(str(raw))
            if int(until or 0) > now_ms:
                return Held(run_id, str(step), token, tag)
        return None

    def timer_of(self, run_id: str) -> str | None:
        """A waiting timer (a retry, a deferred copy, a durable wait) of one of the run's
        steps, or None."""
        member = lease_member(run_id, "")
        for m, _ in self._r.zscan_iter(self.keys.timers(), match=f"*{_glob(member)}*"):
            if member in str(m):
                return str(m)
        return None

    def mentions(self, lists: Sequence[str], needle: str, chunk: int = 1000, *,
                 unacked: bool = True) -> bool:
        """True when a message in one of the queue ``lists`` (or, with ``unacked``, one
        unacknowledged) mentions ``needle`` (a run id: messages carry it in plain text in
        ``kwargsrepr``)."""
        if unacked:
            for raw in self._b.hvals(self.keys.unacked()):
                if needle in raw:
                    return True
        for name in lists:
            start = 0
            while True:
                part = self._b.lrange(name, start, start + chunk - 1)
                if any(needle in m for m in part):
                    return True
                if len(part) < chunk:
                    break
                start += chunk
        return False

    def reopen(self, run_id: str, steps: Sequence[str]) -> int:
        """Set the settled leases of ``steps`` to restored (see ``lua/replay_unit.lua``)."""
        if not steps:
            return 0
        return int(scripts.REPLAY_UNIT(self._r, [self.keys.leases(run_id)], list(steps)))

    def lock(self, owner: str, ttl_s: float) -> bool:
        """Take or keep the reaper lock for ``ttl_s``; True if ``owner`` holds it now."""
        key = self.keys.reaper_lock()
        ms = int(ttl_s * 1000)
        if self._r.set(key, owner, nx=True, px=ms):
            return True
        if self._r.get(key) == owner:
            self._r.pexpire(key, ms)
            return True
        return False


def _lease_fields(raw: str | None) -> list[str]:
    """A stored lease's ``token``, ``until``, ``tag`` and ``flag`` (``lib.lua``'s
    ``lease_of``); four empty strings for none."""
    return (raw or "|||").split("|", 3)


def _leased_task(message: dict[str, Any]) -> tuple[str, str] | None:
    """(run id, step or join id) of a step's or a join's task message (the tasks that take
    leases), or None for any other message."""
    if message.get("properties", {}).get("body_encoding") != "base64" \
            or message.get("content-type") != "application/json":
        return None
    try:
        _args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    except (KeyError, ValueError, TypeError):
        return None
    if not isinstance(kwargs, dict):
        return None
    run_id, item = kwargs.get("run_id"), kwargs.get("step_id") or kwargs.get("join_id")
    return (str(run_id), str(item)) if run_id and item else None


def _redelivered(message: dict[str, Any]) -> dict[str, Any]:
    """A copy of a kombu message marked redelivered, as kombu's own restore marks it."""
    message = dict(message)
    message.setdefault("headers", {})["redelivered"] = True
    props = message.setdefault("properties", {})
    props.setdefault("delivery_info", {})["redelivered"] = True
    return message
