"""The broker transports: a publisher's (kombu's Redis transport, with one Redis client per
channel instead of one per message) and a worker's (kombu's, with acknowledgements that
survive a reconnect).

kombu's Redis channel builds a new ``redis.Redis`` object for every message it sends
(``conn_or_acquire`` without a client), and for every event it publishes.  With redis-py 8
that object costs about half a millisecond of CPU (it fills a table of some 170 response
callbacks), so a submit, which sends one message and one ``task-sent`` event, spent
about a millisecond building clients.  This channel keeps the first one it builds: a
``redis.Redis`` on the channel's connection pool is thread-safe, and the pool, its
connections and their options (timeouts, keepalive, health checks) are kombu's as before.

The coordinator's app (:func:`orchestrator.runtime.celeryconf.client_app`) and the
workers use it, on a plain ``redis://`` or ``rediss://`` broker; on a Sentinel broker
both keep kombu's own clients.  Messages are byte for byte what kombu's Redis transport sends.
Under :func:`to_head` (a store timer's message, due already) they go to the end of the
queue workers pop next, on a worker's transports and the publisher's alike.

A worker's transport (:data:`WORKER_TRANSPORT`, :data:`WORKER_SENTINEL_TRANSPORT`) differs
from kombu's in one place.  When Redis restarts under a worker, kombu reconnects on a new
connection and closes the old one, whose channels lose their client; a task that ends
afterwards acknowledges its message on the old channel, kombu's QoS then builds a Redis
client from a connection that is gone (``AttributeError: 'NoneType' object has no attribute
'hostname'``), and the worker exits with "Unrecoverable error" (seen in about one
Redis-restart test in three, often both workers at once; celery/kombu#970 is the same
shape on shutdown).  :class:`GuardedQoS` drops such an acknowledgement (and the restore of
the old channel's unacknowledged messages) with a warning instead: the message stays in
kombu's unacked index in Redis, kombu's own sweep (``unacked_restore_interval``) puts it
back in its queue after the visibility timeout, and the step's task finds the step run
already ended and does nothing (its lease fences a second execution).  Nothing is lost
and nothing runs twice; the worker stays up.  A *requeue* on such a channel (a task
Celery cancelled on the lost connection, or one that could not record its outcome) is
not left to the visibility timeout: its tag goes to :data:`stranded`, and the worker's
lease keeper puts the message back in its queue as soon as Redis answers.  A step's first
requeue goes the same way when Redis answers, to the head of its queue (:data:`at_head`).

Acknowledgements without transactions.  kombu records a delivery (``ZADD`` in the
unacked index, ``HSET`` of the message in the unacked hash) and acknowledges it (``ZREM``,
``HDEL``) in ``MULTI``/``EXEC`` pipelines: eight commands per message, four of them the
transaction's.  :class:`GuardedQoS` sends the same writes in plain pipelines (one round
trip each, as before).  Nothing needed the transaction: the index and the hash are only
read together by kombu's restore (``restore_by_tag``), which ``WATCH``es the hash and so
still sees an acknowledgement land in between, and by our lease scripts, which look a
message up by its tag in the hash.  Redis going away between the two writes of a record
leaves an index entry without its message (the pop is then kept in :data:`popped`, as
before); between the two of an acknowledgement (the message goes first) an index entry
whose message is gone: kombu's sweep finds nothing to restore and drops it.

kombu takes a message in two commands: it pops it (``BRPOP``), then records the delivery
as unacknowledged.  When Redis goes away between the two, kombu drops the message it
popped; :class:`GuardedQoS` keeps it (:data:`popped`) and the lease keeper puts it back
in its queue once Redis answers.  (A worker *killed* between the two still loses it:
the stalled-run pass publishes its run's unit again after ``stall_s``.)
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps

from orchestrator import forks

TRANSPORT = f"{__name__}:Transport"
"""The publisher's transport's path, for Celery's ``broker_transport`` setting."""
WORKER_TRANSPORT = f"{__name__}:WorkerTransport"
"""A worker's transport on a ``redis://`` or ``rediss://`` broker."""
WORKER_SENTINEL_TRANSPORT = f"{__name__}:WorkerSentinelTransport"
"""A worker's transport on a ``sentinel://`` broker."""

log = logging.getLogger(__name__)


class Captured:
    """The Redis commands kombu's Redis transport would have sent for the messages
    published under :func:`capture`: ``(name, (key or topic, value))`` in order, where
    name is ``lpush`` (a task message onto its queue), ``publish`` (an event to its
    fanout topic) or ``pexpire`` (a queue that expires).  kombu builds them as for its
    own publish batches (``_publish_batch``): byte for byte what it would send."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, tuple[Any, ...]]] = []

    def add(self, name: str, *args: Any) -> None:
        """kombu's batch interface: one command, buffered."""
        self.commands.append((name, args))


_capturing: ContextVar[Captured | None] = ContextVar("orchestrator_broker_capture",
                                                     default=None)


@contextmanager
def capture() -> Iterator[Captured]:
    """Hold, instead of sending, what this thread (or task) publishes through a
    :class:`Channel` meanwhile, so that a script can send it together with the store's
    bookkeeping in one round trip (see :meth:`orchestrator.runtime.progress.Progress.publish`).

    Only an app whose transport is this module's (:func:`captures`) holds them: on any
    other transport the messages go out at once, as always.
    """
    held = Captured()
    token = _capturing.set(held)
    try:
        yield held
    finally:
        _capturing.reset(token)


APART = "orchestrator_broker_apart"
"""A Celery setting of ours: True when the broker is not the run store's Redis
(``Settings.broker_apart``)."""


def captures(app: Any) -> bool:
    """Whether ``app`` (a Celery app) publishes through a :class:`Channel`, whose
    publishes :func:`capture` can hold (a plain ``redis://`` or ``rediss://`` broker; not
    Sentinel, whose channels are kombu's), onto the run store's own Redis (a script of
    the store sends what was held: not when the broker is another Redis)."""
    return (str(app.conf.broker_transport or "") in (TRANSPORT, WORKER_TRANSPORT)
            and not app.conf.get(APART, False))


_heading: ContextVar[bool] = ContextVar("orchestrator_broker_head", default=False)


@contextmanager
def to_head() -> Iterator[None]:
    """Send what this thread (or task) publishes meanwhile to the *head* of its queue,
    the end workers pop next, instead of kombu's tail: for a message that was due
    already (a store timer's: a retry, a copy deferred while another delivery held its
    step run's lease, a durable wait's wake-up), which at the tail waited behind the
    whole backlog (48 and 58 s in ``bench.chaos``'s ``all``, 2026-12-07).  Celery's own
    retries run at their ETA whatever the backlog (the worker holds them), and kombu's
    restore of an unacknowledged message puts it at the head: this is both.

    Only a worker's transports (:data:`WORKER_TRANSPORT`,
    :data:`WORKER_SENTINEL_TRANSPORT`: where the timers fire) and the publisher's
    (:data:`TRANSPORT`) do it; on kombu's own a message goes to the tail, as always.  A
    message :func:`capture` holds goes to the tail too (a script sends it).
    """
    token = _heading.set(True)
    try:
        yield
    finally:
        _heading.reset(token)


class _HeadPut:
    """A kombu Redis channel's ``_put`` that :func:`to_head` sends to the head of the
    queue (``RPUSH``: kombu pushes on the left and pops on the right)."""

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        chan: Any = self
        if (_heading.get() and kwargs.get("_publish_batch") is None
                and _capturing.get() is None
                and not (chan._expires and queue in chan._expires)):
            key = chan._q_for_pri(queue, chan._get_message_priority(message, reverse=False))
            with chan.conn_or_acquire() as client:
                client.rpush(key, dumps(message))  # type: ignore[no-untyped-call]
            return
        super()._put(queue, message, **kwargs)  # type: ignore[misc]


class Channel(_HeadPut, kombu_redis.Channel):
    """kombu's Redis channel that reuses its synchronous client, whose publishes
    :func:`capture` can hold and :func:`to_head` can put at the head."""

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        held = _capturing.get()
        if held is not None and kwargs.get("_publish_batch") is None:
            kwargs["_publish_batch"] = held
        super()._put(queue, message, **kwargs)

    def _put_fanout(self, exchange: str, message: Any, routing_key: str,
                    **kwargs: Any) -> None:
        held = _capturing.get()
        if held is not None and kwargs.get("_publish_batch") is None:
            kwargs["_publish_batch"] = held
        super()._put_fanout(exchange, message, routing_key,  # type: ignore[no-untyped-call]
                            **kwargs)

    _sync_client: tuple[Any, Any] | None = None
    """(the pool it was built on, the client)."""
    _sync_lock = forks.lock()

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # the consuming side's client (BRPOP, pub/sub): kombu's own
            return super()._create_client(asynchronous=True)  # type: ignore[no-untyped-call]
        pool = self.pool
        held = self._sync_client
        if held is None or held[0] is not pool:  # first use, or kombu made a new pool
            with self._sync_lock:
                held = self._sync_client
                if held is None or held[0] is not pool:
                    made = super()._create_client(False)  # type: ignore[no-untyped-call]
                    held = self._sync_client = (pool, made)
        return held[1]


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`Channel`."""

    Channel = Channel


stranded: deque[str] = deque(maxlen=100_000)
"""Delivery tags of messages a worker requeued while Redis could not take them back
(their connection was closed, or the reject failed): each may still be in kombu's unacked
index.  The worker's lease keeper (:mod:`workers.leases`) puts every one still there back
in its queue once Redis answers (:meth:`orchestrator.store.leases.Leases.requeue_unacked`),
instead of leaving it to the visibility timeout."""


at_head: set[str] = set()
"""Delivery tags whose next requeue goes to the *head* of their queue, not kombu's tail.
kombu's reject puts a requeued message at the tail (``LPUSH``, while workers pop the
other end: celery/kombu#254), where a step interrupted by a dead pool process or a Redis
outage waited behind the whole backlog (40 s in ``bench.chaos``'s ``all``).  A step
request marks its delivery here before its first requeue (:class:`workers.step.
StepRequest`); :meth:`GuardedQoS.reject` then leaves the message unacknowledged in Redis
and hands its tag to :data:`stranded`, and the lease keeper puts it back at the head
after it has sent the lease's release, so that the copy, popped next, takes the step
over at once.  (A mark, not a flag around the call: Celery sends a worker's rejects from
its event loop, later.)"""


popped: deque[tuple[str, dict[str, Any], str]] = deque(maxlen=100_000)
"""Messages this worker popped from their queue whose record as unacknowledged Redis
never confirmed (it went away between kombu's pop and that record): ``(delivery tag,
message, queue)``.  kombu drops such a message (it never reaches Celery), and nothing
in Redis names it any more, so the worker's lease keeper puts each one back at the head
of its queue once Redis answers (:meth:`orchestrator.store.leases.Leases.requeue_popped`),
instead of leaving its run to the stalled-run pass a minute later."""


class GuardedQoS(kombu_redis.QoS):
    """kombu's Redis QoS whose acknowledgements on a channel of a connection that is gone
    are dropped with a warning instead of raising, and whose deliveries Redis could not
    record are kept to be put back (see the module docstring and :data:`popped`)."""

    def append(self, message: Any, delivery_tag: Any) -> None:
        try:
            self._record(message, delivery_tag)
        except Exception:
            info = message.delivery_info
            popped.append((str(delivery_tag), message._raw, str(info["routing_key"])))
            log.warning("message %s was popped from queue %r but Redis could not record its "
                        "delivery: it goes back to its queue once Redis answers",
                        delivery_tag, info["routing_key"])
            raise
        virtual.QoS.append(self, message, delivery_tag)  # type: ignore[no-untyped-call]

    def _record(self, message: Any, delivery_tag: Any) -> None:
        """Record a delivery as unacknowledged: kombu's two writes, in one pipeline
        without ``MULTI``/``EXEC`` (see "Acknowledgements without transactions" in the
        module docstring)."""
        info = message.delivery_info
        record = dumps(  # type: ignore[no-untyped-call]
            [message._raw, info["exchange"], info["routing_key"]])
        with self.channel.conn_or_acquire() as client:
            client.pipeline(transaction=False) \
                .zadd(self.unacked_index_key, {delivery_tag: time.time()}) \
                .hset(self.unacked_key, delivery_tag, record).execute()

    def _gone(self) -> bool:
        """Whether kombu would build its client from a connection that is gone: the
        channel is closed, or its pools were disconnected and its transport has lost its
        connection (with a pool still there, kombu acknowledges through it, as always)."""
        transport = getattr(self.channel, "connection", None)
        if transport is None:
            return True
        return getattr(transport, "client", None) is None \
            and getattr(self.channel, "_pool", None) is None

    def ack(self, delivery_tag: Any) -> None:
        if self._gone():
            log.warning("message %s was acknowledged after its broker connection closed "
                        "(Redis restarted?): it stays in the unacked index and comes back "
                        "after the visibility timeout, where its ended step run makes it a "
                        "no-op", delivery_tag)
            self._quick_ack(delivery_tag)  # local bookkeeping only
            return
        with self.channel.conn_or_acquire() as client:
            # the message first, then its index entry: an entry left alone (Redis went
            # away in between) only makes kombu's sweep find nothing to restore
            client.pipeline(transaction=False).hdel(self.unacked_key, delivery_tag) \
                .zrem(self.unacked_index_key, delivery_tag).execute()
        virtual.QoS.ack(self, delivery_tag)  # type: ignore[no-untyped-call]

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        head = str(delivery_tag) in at_head
        at_head.discard(str(delivery_tag))
        if requeue and head and not self._gone():
            self._quick_ack(delivery_tag)  # kombu's own bookkeeping; Redis keeps it unacked
            stranded.append(str(delivery_tag))  # the lease keeper puts it back at the head
            return
        if self._gone():
            log.warning("message %s was rejected after its broker connection closed: it "
                        "stays unacknowledged%s", delivery_tag,
                        " and goes back to its queue once Redis answers" if requeue
                        else "; it comes back after the visibility timeout")
            self._quick_ack(delivery_tag)
            if requeue:
                stranded.append(str(delivery_tag))
            return
        try:
            super().reject(delivery_tag, requeue=requeue)  # type: ignore[no-untyped-call]
        except Exception:
            if requeue:  # Redis did not take it back: it may still be unacknowledged
                stranded.append(str(delivery_tag))
            raise

    def restore_unacked(self, client: Any = None) -> None:
        if client is None and self._gone():
            log.warning("%d unacknowledged message(s) of a closed broker connection are "
                        "left to the visibility timeout", len(self._delivered))
            self._delivered.clear()
            return
        super().restore_unacked(client)  # type: ignore[no-untyped-call]


class WorkerChannel(Channel):
    """The publisher's channel (one synchronous client, not one per message: a worker
    publishes the next steps, map items and task events) with :class:`GuardedQoS`."""

    QoS = GuardedQoS


class WorkerTransport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`WorkerChannel`."""

    Channel = WorkerChannel


class WorkerSentinelChannel(_HeadPut, kombu_redis.SentinelChannel):
    """kombu's Sentinel channel (its own clients, as a publisher's on Sentinel) with
    :class:`GuardedQoS`, whose publishes :func:`to_head` can put at the head."""

    QoS = GuardedQoS


class WorkerSentinelTransport(kombu_redis.SentinelTransport):
    """kombu's Sentinel transport with :class:`WorkerSentinelChannel`."""

    Channel = WorkerSentinelChannel
