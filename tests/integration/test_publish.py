"""Publishing a unit in one script: Celery's own messages, sent with the store's records.

``Progress.publish`` lets Celery build a unit's messages as always, holds the Redis
commands kombu would send for them (``broker.capture``) and sends them in
``publish_units.lua`` with the unit's claim, its ``published`` record and its entry steps'
``queued``.  No worker consumes the queue here: the messages stay in it to be read.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
import redis

from orchestrator.core.states import StepStatus
from orchestrator.runtime import broker
from orchestrator.runtime.canvas import signature
from orchestrator.runtime.catalog import discover
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.store import scripts
from tests.integration.conftest import make_settings

pytestmark = pytest.mark.redis

QUEUE = "nobody-reads"
ORDER = {"order_id": "o-1", "sku": "SKU-1", "qty": 1, "customer_email": "a@example.com"}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture
def coord(redis_url: str) -> Coordinator:
    settings = make_settings(redis_url, default_queue=QUEUE)
    return Coordinator(settings, discover(settings.workflow_packages))


def _shape(raw: bytes) -> Any:
    """A kombu message with its ids, delivery tag and sender's pid made uniform."""
    msg = json.loads(raw)
    msg["body"] = json.loads(base64.b64decode(msg["body"]))
    del msg["properties"]["delivery_tag"]
    text = UUID.sub("<id>", json.dumps(msg, sort_keys=True))
    return json.loads(re.sub(r'"gen\d+@', '"gen<pid>@', text))


def test_a_submit_sends_celerys_own_message_and_event_with_its_records(
        coord: Coordinator, redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    events = r.pubsub()
    events.psubscribe("*celeryev*")
    assert events.get_message(timeout=2) is not None  # the subscription's confirmation
    run_id = coord.submit("customer_order", ORDER)

    assert r.llen(QUEUE) == 1
    ours = r.rpop(QUEUE)
    assert ours is not None
    sent = events.get_message(timeout=2)
    assert sent is not None and sent["channel"].endswith(b"task.sent")
    # the same unit published by Celery itself, without holding anything
    d = coord.compile("customer_order")
    unit = d.plan.unit_map[d.plan.sources[0]]
    signature(coord.app, d, unit.canvas, run_id, QUEUE).apply_async()
    theirs = r.rpop(QUEUE)
    assert theirs is not None
    assert _shape(ours) == _shape(theirs)
    assert json.loads(base64.b64decode(json.loads(sent["data"])["body"]))["type"] == "task-sent"

    store = coord.store
    assert r.smembers(store.keys.units_published(run_id)) == {d.plan.sources[0].encode()}
    assert r.smembers(store.keys.units_claimed(run_id)) == {d.plan.sources[0].encode()}
    assert store.step_runs(run_id)["receive_order"].status is StepStatus.QUEUED
    assert r.zcard(store.keys.claims()) == 0
    events.close()


def test_nothing_reaches_redis_while_held(coord: Coordinator, redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    d = coord.compile("customer_order")
    unit = d.plan.unit_map[d.plan.sources[0]]
    assert broker.captures(coord.app)
    with broker.capture() as held:
        signature(coord.app, d, unit.canvas, "r-held", QUEUE).apply_async()
    assert r.llen(QUEUE) == 0
    assert [name for name, _ in held.commands] == ["lpush", "publish"]
    assert held.commands[0][1][0] == QUEUE


def test_a_unit_claimed_before_is_not_published_again(coord: Coordinator,
                                                      redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    run_id = coord.submit("customer_order", ORDER)
    d = coord.compile("customer_order")
    assert coord.progress.publish(d, run_id, d.plan.sources, claim=True) == []
    assert r.llen(QUEUE) == 1
    # without a claim (the caller claimed it: the reaper's replay) it goes out again
    assert coord.progress.publish(d, run_id, d.plan.sources) == list(d.plan.sources)
    assert r.llen(QUEUE) == 2


def test_a_run_that_is_gone_publishes_nothing(coord: Coordinator, redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    d = coord.compile("customer_order")
    assert coord.progress.publish(d, "no-such-run", d.plan.sources, claim=True) == []
    assert r.llen(QUEUE) == 0


def test_only_publishing_commands_are_sent(coord: Coordinator, redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    run_id = coord.submit("customer_order", ORDER)
    before = r.llen(QUEUE)
    with pytest.raises(ValueError, match="only LPUSH, PUBLISH and PEXPIRE"):
        coord.store.publish_units(run_id, [("u9", [], [("del", (QUEUE, ""))])], claim=True)
    # the script itself refuses before writing anything, even after a good command
    k = coord.store.keys
    keys = [k.run(run_id), k.steps(run_id), k.events(run_id), k.outputs(run_id),
            k.metrics(), k.units_claimed(run_id), k.units_published(run_id), k.claims(), QUEUE]
    with pytest.raises(redis.ResponseError, match="unexpected command"):
        scripts.PUBLISH_UNITS(r, keys, [run_id, "1", 0, "{}", "pending", "u9", 0, 2,
                                        "lpush", QUEUE, "x", "flushall", "", ""])
    assert r.llen(QUEUE) == before
    assert not r.sismember(k.units_claimed(run_id), "u9")
