"""A worker's broker transport (:mod:`orchestrator.runtime.broker`): acknowledging a
message whose broker connection closed (what a Redis restart does under a running task)
neither raises, which would end the worker, nor loses the message."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest
from kombu import Connection

from orchestrator.runtime import broker
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.redis


def _delivered_then_orphaned(url: str, transport: str | None) -> Any:
    """A message taken from queue ``q`` (unacknowledged), whose channel is then left as a
    Redis restart leaves a worker's old channel (what the crash's traceback shows): its
    pools disconnected, its transport's connection gone."""
    conn = Connection(url, transport=transport,
                      transport_options={"visibility_timeout": 1})
    q = conn.SimpleQueue("q")
    q.put({"n": 1})
    msg = q.get(timeout=5)
    msg.channel._disconnect_pools()
    msg.channel.connection.client = None
    return msg


def test_an_ack_after_the_connection_closed_leaves_the_message_to_the_sweep(
        redis_binary: str) -> None:
    with RedisServer(binary=redis_binary) as server:
        r = server.client()
        msg = _delivered_then_orphaned(server.url, broker.WORKER_TRANSPORT)
        msg.ack()  # kombu's own QoS raises AttributeError here (below)
        assert r.hlen("unacked") == 1 and r.llen("q") == 0  # kept for the sweep
        time.sleep(1.2)  # past the visibility timeout
        with Connection(server.url, transport=broker.WORKER_TRANSPORT,
                        transport_options={"visibility_timeout": 1}) as conn:
            conn.default_channel.qos.restore_visible()  # kombu's unacked sweep
            assert r.hlen("unacked") == 0 and r.llen("q") == 1
            again = conn.SimpleQueue("q").get(timeout=5)
            assert again.payload == {"n": 1}
            again.ack()


def test_kombus_own_transport_raises_there(redis_binary: str) -> None:
    """The failure the guard is for (if kombu fixes it, the guard can go)."""
    with RedisServer(binary=redis_binary) as server:
        msg = _delivered_then_orphaned(server.url, None)
        with pytest.raises(AttributeError, match="hostname"):
            msg.ack()
        msg.channel.qos._delivered.clear()  # or its exit-time restore raises the same


def test_with_its_pool_still_there_the_ack_goes_through(redis_binary: str) -> None:
    """Only a channel whose pools are gone too is guarded: with a pool, kombu's ack
    works, and the message leaves the unacked index at once."""
    with RedisServer(binary=redis_binary) as server:
        r = server.client()
        conn = Connection(server.url, transport=broker.WORKER_TRANSPORT)
        q = conn.SimpleQueue("q")
        q.put({"n": 1})
        msg = q.get(timeout=5)
        msg.channel.connection.client = None  # the transport lost its connection object
        msg.ack()
        assert r.hlen("unacked") == 0 and r.llen("q") == 0


def test_a_delivery_and_its_ack_send_kombus_writes_without_a_transaction(
        redis_binary: str) -> None:
    """The worker's transport records a delivery and acknowledges it with kombu's own
    writes (the message in the unacked hash and its tag in the index, then both gone)
    but sends no ``MULTI``/``EXEC``; kombu's own transport sends both, twice."""
    with RedisServer(binary=redis_binary) as server:
        r = server.client()
        for transport, transactions in ((broker.WORKER_TRANSPORT, 0), (None, 2)):
            with Connection(server.url, transport=transport) as conn:
                q = conn.SimpleQueue("q")
                q.put({"n": 1})
                r.config_resetstat()
                msg = q.get(timeout=5)
                assert r.hlen("unacked") == 1 and r.zcard("unacked_index") == 1
                tag = msg.delivery_tag
                assert r.zscore("unacked_index", tag) is not None
                msg.ack()
                assert r.hlen("unacked") == 0 and r.zcard("unacked_index") == 0
                stats = r.info("commandstats")
                assert stats.get("cmdstat_multi", {}).get("calls", 0) == transactions
                assert stats.get("cmdstat_exec", {}).get("calls", 0) == transactions
                q.close()


def test_an_index_entry_whose_message_is_gone_is_dropped_by_kombus_sweep(
        redis_binary: str) -> None:
    """Redis going away between an acknowledgement's two writes (the message goes
    first) leaves a tag in the unacked index with no message: kombu's sweep drops it and
    restores nothing, and a message still recorded is restored as before."""
    with RedisServer(binary=redis_binary) as server:
        r = server.client()
        conn = Connection(server.url, transport=broker.WORKER_TRANSPORT,
                          transport_options={"visibility_timeout": 1})
        q = conn.SimpleQueue("q")
        q.put({"n": 1})
        msg = q.get(timeout=5)
        r.zadd("unacked_index", {"half-acked": time.time() - 60})
        r.zadd("unacked_index", {msg.delivery_tag: time.time() - 60})
        conn.default_channel.qos.restore_visible()
        assert r.zcard("unacked_index") == 0 and r.hlen("unacked") == 0
        assert r.llen("q") == 1  # the recorded one, once
        conn.release()


def test_a_requeue_redis_could_not_take_goes_back_once_redis_answers(
        redis_binary: str) -> None:
    """A task requeued (cancelled on a lost connection, or failed before its outcome was
    recorded) on a channel that is gone: the reject cannot reach Redis, the message stays
    unacknowledged, and its tag waits in ``broker.stranded``; the lease keeper's
    ``Leases.requeue_unacked`` then puts it back in its queue, marked redelivered, once
    (a second call finds nothing), instead of after the visibility timeout."""
    from orchestrator.store.keys import Keys
    from orchestrator.store.leases import Leases

    broker.stranded.clear()
    with RedisServer(binary=redis_binary) as server:
        r = server.client()
        msg = _delivered_then_orphaned(server.url, broker.WORKER_TRANSPORT)
        msg.reject(requeue=True)
        assert r.hlen("unacked") == 1 and r.llen("q") == 0
        assert list(broker.stranded) == [msg.delivery_tag]
        leases = Leases(server.client(decode_responses=True), Keys("orch"))
        assert leases.requeue_unacked(broker.stranded.popleft())
        assert r.hlen("unacked") == 0 and r.zcard("unacked_index") == 0 and r.llen("q") == 1
        assert not leases.requeue_unacked(msg.delivery_tag)  # done once
        with Connection(server.url, transport=broker.WORKER_TRANSPORT) as conn:
            again = conn.SimpleQueue("q").get(timeout=5)
            assert again.payload == {"n": 1} and again.delivery_info.get("redelivered")
            again.ack()


def test_a_message_popped_as_redis_went_away_goes_back_once_redis_answers(
        redis_binary: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """kombu takes a message in two commands: the pop, then its record as unacknowledged.
    Redis crashes between the two (a real crash: SIGKILL, back from its AOF): the pop
    persisted, the record did not, so neither the queue nor the unacked index has the
    message and kombu drops it.  The worker's transport keeps it (``broker.popped``) and
    ``Leases.requeue_popped`` puts it back in its queue, marked redelivered, once Redis
    answers; a second call for the same tag would find no record and put the worker's
    copy back again, so the keeper calls it once per popped message."""
    from orchestrator.store.keys import Keys
    from orchestrator.store.leases import Leases

    broker.popped.clear()
    with RedisServer(binary=redis_binary, appendonly=True,
                     extra_args=("--appendfsync", "always")) as server:
        conn = Connection(server.url, transport=broker.WORKER_TRANSPORT)
        q = conn.SimpleQueue("q")
        q.put({"n": 1})
        record = broker.GuardedQoS._record

        def crash_between(self: Any, message: Any, delivery_tag: Any) -> None:
            server.kill()  # after the pop, before the record
            record(self, message, delivery_tag)

        monkeypatch.setattr(broker.GuardedQoS, "_record", crash_between)
        with pytest.raises(Exception):  # noqa: B017 (kombu's or redis-py's connection error)
            q.get(timeout=5)
        monkeypatch.undo()
        server.restart()
        r = server.client()
        assert r.llen("q") == 0 and r.hlen("unacked") == 0  # lost, as far as Redis knows
        assert len(broker.popped) == 1
        tag, message, queue = broker.popped.popleft()
        assert queue == "q"
        leases = Leases(server.client(decode_responses=True), Keys("orch"))
        assert leases.requeue_popped(tag, message, queue) == 2
        assert r.llen("q") == 1
        with Connection(server.url, transport=broker.WORKER_TRANSPORT) as again_conn:
            again = again_conn.SimpleQueue("q").get(timeout=5)
            assert again.payload == {"n": 1} and again.delivery_info.get("redelivered")
            again.ack()
        with contextlib.suppress(Exception):  # its connection died with the crash
            conn.release()


@pytest.mark.parametrize("transport", [broker.TRANSPORT, broker.WORKER_TRANSPORT])
def test_a_message_published_to_the_head_is_taken_next(redis_binary: str,
                                                        transport: str) -> None:
    """Under ``broker.to_head`` a message goes to the end of its queue that consumers pop
    (a store timer's message: it was due already), ahead of a backlog published before
    it; outside it, and on kombu's own transport, publishes keep kombu's order."""
    with RedisServer(binary=redis_binary) as server:
        for name, expected in ((transport, [0, 1, 2, 3]), (None, [1, 2, 0, 3])):
            with Connection(server.url, transport=name) as conn:
                q = conn.SimpleQueue("q")
                for n in (1, 2):
                    q.put({"n": n})
                with broker.to_head():
                    q.put({"n": 0})
                q.put({"n": 3})
                got = []
                for _ in range(4):
                    m = q.get(timeout=5)
                    got.append(m.payload["n"])
                    m.ack()
                assert got == expected, name
                q.close()
