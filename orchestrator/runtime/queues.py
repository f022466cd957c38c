"""Queue depths and consumers: how many tasks wait in each Celery queue, and who reads it.

On the Redis transport a queue is a Redis list (one list per priority step when messages
carry a priority), so its depth is an ``LLEN`` per list.  That counts *waiting* messages
only: prefetched, running and countdown messages sit in kombu's global ``unacked`` hash.
With ``worker_prefetch_multiplier=1`` (see :mod:`orchestrator.runtime.celeryconf`) a depth above
zero therefore means work that no worker slot has taken yet, the same number KEDA's
Redis-list scaler reads.

A queue's priority bands (``default.high``, ``default.low``: see
:mod:`orchestrator.core.priorities`) are reported inside its entry, one list per band and
priority step; a band named on its own is reported alone.

The list names and the client come from kombu's own Redis channel, so the broker's
``global_keyprefix``, ``sep`` and ``priority_steps`` transport options, TLS and Sentinel are
honoured exactly as the workers see them.  Consumers come from Celery remote control
(``inspect().active_queues()``), so a worker that cannot answer within the timeout (a
``solo`` pool busy with a task, say) is not counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError
from kombu.utils.url import maybe_sanitize_url

from orchestrator.core.priorities import Priority, band_of, band_queue
from orchestrator.errors import DispatchError
from orchestrator.store import StoreError


@dataclass(frozen=True)
class QueueList:
    """One Redis list behind a queue.

    Attributes:
        key: the list's full Redis key, with the broker's ``global_keyprefix``: the
            ``listName`` a KEDA Redis-list trigger needs.
        priority: the priority step this list holds (0: messages without a priority).
        length: its ``LLEN``.
        band: the run priority band it holds (``normal``: the queue itself).
    """

    key: str
    priority: int
    length: int
    band: Priority = Priority.NORMAL


@dataclass(frozen=True)
class QueueDepth:
    """What waits in one queue and which workers consume it.

    Attributes:
        name: the queue's name.
        depth: waiting messages over all of its lists (bands and priority steps).
        lists: one entry per band (the queue itself, then high, then low) and priority
            step (kombu's order).
        consumers: node names of the workers consuming it (``name@host``), sorted.
        default: whether it is the app's default queue (join tasks and
            ``orchestrator.submit`` run there, so it must always have a consumer).
    """

    name: str
    depth: int
    lists: tuple[QueueList, ...]
    consumers: tuple[str, ...]
    default: bool = False


def queue_consumers(app: Celery, *, timeout_s: float = 1.0,
                    connection: Any = None) -> dict[str, tuple[str, ...]]:
    """Ask every worker which queues it consumes.

    Args:
        app: any Celery app on the broker (a client app will do).
        timeout_s: how long to collect replies, in seconds.
        connection: a kombu connection to reuse; default a new one.

    Returns:
        Queue name -> sorted worker node names.  Queues nobody consumes are absent.
    """
    replies = app.control.inspect(timeout=timeout_s, connection=connection).active_queues()
    out: dict[str, set[str]] = {}
    for worker, queues in (replies or {}).items():
        for queue in queues or ():
            out.setdefault(str(queue["name"]), set()).add(str(worker))
    return {name: tuple(sorted(workers)) for name, workers in out.items()}


def queue_depths(app: Celery, queues: Iterable[str] | None = None, *,
                 timeout_s: float = 1.0) -> list[QueueDepth]:
    """Depth and consumers of Celery queues on a Redis broker.

    Args:
        app: any Celery app configured for the broker (a client app will do).
        queues: the queues to report, in this order.  None: the app's default queue,
            then every queue some worker consumes, sorted.
        timeout_s: how long to wait for workers' remote-control replies, in seconds.

    Returns:
        One :class:`QueueDepth` per queue.

    Raises:
        DispatchError: the broker is not Redis, or cannot be reached.
    """
    default_queue = str(app.conf.task_default_queue)
    url = maybe_sanitize_url(app.conf.broker_url)
    try:
        with app.connection_for_read() as conn:
            if conn.transport.driver_type != "redis":
                raise DispatchError(
                    f"queue depths need a Redis broker; {url} uses "
                    f"{conn.transport.driver_type!r}")
            consumers = queue_consumers(app, timeout_s=timeout_s, connection=conn)
            if queues is None:
                names = [default_queue, *sorted(set(consumers) - {default_queue})]
                # the bands of a listed queue are shown in its entry, not on their own
                names = [n for n in names
                         if band_of(n)[1] is Priority.NORMAL or band_of(n)[0] not in names]
            else:
                names = list(dict.fromkeys(queues))
            channel = conn.channel()
            try:
                lengths = _list_lengths(channel, names)
            finally:
                channel.close()
    except (OperationalError, StoreError, OSError) as exc:
        detail = str(exc).rstrip(". ")
        raise DispatchError(f"cannot read queue depths from the broker at {url}: {detail}; "
                            "check that Redis is up and ORCH_REDIS_URL is right") from exc
    return [QueueDepth(name=name, depth=sum(q.length for q in lengths[name]),
                       lists=lengths[name], consumers=consumers.get(name, ()),
                       default=name == default_queue)
            for name in names]


def _bands(name: str) -> list[tuple[str, Priority]]:
    """The lists' queues of an entry: every band of a queue, or a band named alone."""
    if band_of(name)[1] is not Priority.NORMAL:
        return [(name, band_of(name)[1])]
    return [(band_queue(name, p), p)  # the queue's own lists first, as before bands
            for p in (Priority.NORMAL, Priority.HIGH, Priority.LOW)]


def _list_lengths(channel: Any, names: Sequence[str]) -> dict[str, tuple[QueueList, ...]]:
    """``LLEN`` of every band's priority lists of ``names``, in one pipeline."""
    # kombu's own naming: `_q_for_pri` maps a priority to its list ("q", "q\x06\x163", ...)
    # and the channel's client adds `global_keyprefix` to every key it sends.
    steps = sorted(set(int(p) for p in channel.priority_steps))
    plan = [(name, band, step, str(channel._q_for_pri(queue, step))) for name in names
            for queue, band in _bands(name) for step in steps]
    with channel.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
        for *_, key in plan:
            pipe.llen(key)
        counts = pipe.execute()
    prefix = str(getattr(channel, "global_keyprefix", "") or "")
    out: dict[str, list[QueueList]] = {name: [] for name in names}
    for (name, band, step, key), count in zip(plan, counts, strict=True):
        out[name].append(QueueList(key=prefix + key, priority=step, length=int(count or 0),
                                   band=band))
    return {name: tuple(lists) for name, lists in out.items()}


def format_queues(depths: Sequence[QueueDepth]) -> str:
    """A table for the CLI: queue, waiting messages, consumers; then warnings.

    A warning line follows for every queue that has waiting messages and no consumer,
    and for a default queue without a consumer.
    """
    rows = [("QUEUE", "WAITING", "CONSUMERS")]
    for d in depths:
        extra = [f"{_label(d.name, q)}={q.length}" for q in d.lists
                 if q.length and (q.priority or q.band is not band_of(d.name)[1])]
        waiting = str(d.depth) + (f" ({', '.join(extra)})" if extra else "")
        rows.append((d.name, waiting, ", ".join(d.consumers) or "-"))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    lines = [f"{a:<{w0}}  {b:<{w1}}  {c}".rstrip() for a, b, c in rows]
    for d in depths:
        if d.consumers:
            continue
        if d.default:
            lines.append(f"warning: no worker consumes the default queue {d.name!r}; join "
                         "tasks and orchestrator.submit run there, so runs cannot finish. "
                         f"Start one: orchestrator worker --queues {d.name}")
        elif d.depth:
            lines.append(f"warning: {d.depth} task(s) wait in {d.name!r} and no worker "
                         f"consumes it. Start one: orchestrator worker --queues {d.name}")
    return "\n".join(lines)


def _label(name: str, q: QueueList) -> str:
    """``high``, ``p3`` or ``high p3``: what sets a list apart from its queue's first."""
    parts = [q.band.value] if q.band is not band_of(name)[1] else []
    return " ".join(parts + ([f"p{q.priority}"] if q.priority else []))
